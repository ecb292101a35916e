// SPDX-License-Identifier: GPL-2.0
/*
 * thpcow: the write-fault, collapse and swap paths of transparent huge pages, one per phase.
 *
 *   thpcow SIZE_MB
 *
 * Before "ready": maps four areas of SIZE_MB (rounded up to whole huge pages), each aligned to a
 * huge page and in its own VMA: A and C with MADV_HUGEPAGE, B with MADV_NOHUGEPAGE (4 KiB pages),
 * D for multi-size THP (a PROT_NONE guard after each). Writes every page of B and of C. Prints "ready pid=PID pages=N", then
 * reads one phase name per line from stdin and answers "done PHASE pages=N seconds=S ..." where
 * pages= counts 4 KiB pages and the other figures are the program's own:
 *   fault      write every page of A: huge pages at the fault (hugepages= the huge pages A spans,
 *              huge= the huge pages mapped there after it, from AnonHugePages)
 *   collapse   MADV_HUGEPAGE on B and khugepaged at full speed until B is huge pages (or 30 s):
 *              hugepages= the huge pages B spans, huge= the huge pages mapped there after it (before
 *              any fork: khugepaged leaves alone a region whose page tables a fork write-protected)
 *   fork       fork a child that keeps A mapped until exit (nothing is written)
 *   cow        write the first half of every huge page of A while the child maps it: each first
 *              write splits the huge mapping, every write copies a page of a huge page
 *   exit       the child exits
 *   reuse      write the second half of every huge page of A, now mapped by this process only,
 *              but by page tables (a split huge page): reused or copied, as the kernel decides
 *   swapout    MADV_PAGEOUT over C (huge pages swapped out whole or split first)
 *   swapin     read every page of C
 *   mthpfault  multi-size THP (Linux 6.10+, which counts it): with 64 KiB folios on and PMD-size ones off, write every
 *              page of D (folios= the 64 KiB folios the kernel says it allocated at faults, -1 when it
 *              does not say; wanted= the 64 KiB folios D spans)
 *   mthpcow    fork a second child that maps D, write every page of D, let the child exit
 *   quit       exit
 * The harness (harness/measure/drivers.py) runs the phases in workload.toml's order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#define HUGE (2UL << 20)
#define THP "/sys/kernel/mm/transparent_hugepage/"
#define KHUGEPAGED THP "khugepaged/"
#define MTHP THP "hugepages-64kB/"
#define PMD_THP THP "hugepages-2048kB/"
#define COLLAPSE_WAIT_S 30

static long page;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A private anonymous area of size bytes, aligned to a huge page, that stays one VMA of its own: a
 * PROT_NONE guard after it keeps a later madvise() from merging it with the next area.
 */
static unsigned char *area(size_t size, int advice)
{
	size_t mapped_size = size + 2 * HUGE;
	unsigned char *mapped = mmap(NULL, mapped_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *start, *end;

	if (mapped == MAP_FAILED) {
		printf("error mmap %s\n", strerror(errno));
		exit(1);
	}
	start = (unsigned char *)(((unsigned long)mapped + HUGE - 1) & ~(HUGE - 1));
	end = start + size;
	if (start > mapped)
		munmap(mapped, start - mapped);
	if (mprotect(end, HUGE, PROT_NONE)) {
		printf("error mprotect %s\n", strerror(errno));
		exit(1);
	}
	if (mapped + mapped_size > end + HUGE)
		munmap(end + HUGE, mapped + mapped_size - (end + HUGE));
	if (advice >= 0 && madvise(start, size, advice)) {
		printf("error madvise %s\n", strerror(errno));
		exit(1);
	}
	return start;
}

/* Write one byte of every page from page first to page last (excluded) of each huge page. */
static size_t write_part(volatile unsigned char *start, size_t size, size_t first, size_t last)
{
	size_t written = 0, huge, i;

	for (huge = 0; huge < size; huge += HUGE)
		for (i = first; i < last; i++, written++)
			start[huge + i * page] = (unsigned char)(i + 1);
	return written;
}

static unsigned long read_all(volatile unsigned char *start, size_t size)
{
	unsigned long sum = 0;
	size_t i;

	for (i = 0; i < size; i += page)
		sum += start[i];
	return sum;
}

/* AnonHugePages of the VMA that starts at start, in KiB (-1 when /proc/self/smaps does not say). */
static long huge_kb(unsigned char *start)
{
	char line[256], want[32];
	FILE *smaps = fopen("/proc/self/smaps", "r");
	long kb = -1;
	int inside = 0;

	if (!smaps)
		return -1;
	snprintf(want, sizeof(want), "%lx-", (unsigned long)start);
	while (fgets(line, sizeof(line), smaps)) {
		if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' '))
			inside = !strncmp(line, want, strlen(want));
		else if (inside && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(smaps);
	return kb;
}

static int set(const char *path, const char *value)
{
	FILE *file = fopen(path, "w");

	if (!file)
		return -1;
	fputs(value, file);
	return fclose(file);
}

static long get(const char *path)
{
	FILE *file = fopen(path, "r");
	long value = -1;

	if (!file)
		return -1;
	if (fscanf(file, "%ld", &value) != 1)
		value = -1;
	fclose(file);
	return value;
}

/* Fork a child that keeps every mapping until its pipe closes; returns the write end. */
static int keep_mapped(pid_t *child)
{
	int tell[2];

	if (pipe(tell))
		return -1;
	fflush(stdout);
	*child = fork();
	if (*child < 0) {
		close(tell[0]);
		close(tell[1]);
		return -1;
	}
	if (*child == 0) {
		char byte;

		close(tell[1]);
		while (read(tell[0], &byte, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(tell[0]);
	return tell[1];
}

static void let_go(int *tell, pid_t *child)
{
	if (*child <= 0)
		return;
	close(*tell);
	waitpid(*child, NULL, 0);
	*child = -1;
}

int main(int argc, char **argv)
{
	size_t size, pages, half;
	unsigned char *a, *b, *c, *d;
	unsigned long sum = 0;
	pid_t child = -1, child2 = -1;
	int tell = -1, tell2 = -1;
	char phase[64];

	page = sysconf(_SC_PAGESIZE);
	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: thpcow SIZE_MB\n");
		return 2;
	}
	size = (((size_t)atol(argv[1]) << 20) + HUGE - 1) & ~(HUGE - 1);
	pages = size / page;
	half = HUGE / page / 2;
	a = area(size, MADV_HUGEPAGE);
	b = area(size, MADV_NOHUGEPAGE);
	c = area(size, MADV_HUGEPAGE);
	d = area(size, -1);
	write_part(b, size, 0, HUGE / page);
	write_part(c, size, 0, HUGE / page);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		size_t done = pages;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		if (!strcmp(phase, "fault")) {
			write_part(a, size, 0, HUGE / page);
			printf("done %s pages=%zu seconds=%.6f hugepages=%zu huge=%ld\n", phase, pages,
			       now() - started, size / HUGE, huge_kb(a) / (long)(HUGE >> 10));
			continue;
		} else if (!strcmp(phase, "fork")) {
			tell = keep_mapped(&child);
			if (tell < 0) {
				printf("error %s fork %s\n", phase, strerror(errno));
				continue;
			}
			done = 0;
		} else if (!strcmp(phase, "cow")) {
			done = write_part(a, size, 0, half);
		} else if (!strcmp(phase, "exit")) {
			let_go(&tell, &child);
			done = 0;
		} else if (!strcmp(phase, "reuse")) {
			done = write_part(a, size, half, HUGE / page);
		} else if (!strcmp(phase, "collapse")) {
			double deadline = started + COLLAPSE_WAIT_S;
			long scan_sleep = get(KHUGEPAGED "scan_sleep_millisecs");
			long alloc_sleep = get(KHUGEPAGED "alloc_sleep_millisecs");
			char old[32];

			int failed = madvise(b, size, MADV_HUGEPAGE) || set(KHUGEPAGED "scan_sleep_millisecs", "0") ||
				     set(KHUGEPAGED "alloc_sleep_millisecs", "0") ||
				     set(KHUGEPAGED "pages_to_scan", "4096");
			int error = errno;

			while (!failed && huge_kb(b) < (long)(size >> 10) && now() < deadline)
				usleep(20000);
			snprintf(old, sizeof(old), "%ld", scan_sleep);	/* khugepaged back at its own pace */
			set(KHUGEPAGED "scan_sleep_millisecs", old);
			snprintf(old, sizeof(old), "%ld", alloc_sleep);
			set(KHUGEPAGED "alloc_sleep_millisecs", old);
			if (failed) {
				printf("error %s khugepaged %s\n", phase, strerror(error));
				continue;
			}
			printf("done %s pages=%zu seconds=%.6f hugepages=%zu huge=%ld\n", phase, pages,
			       now() - started, size / HUGE, huge_kb(b) / (long)(HUGE >> 10));
			continue;
		} else if (!strcmp(phase, "swapout")) {
			if (madvise(c, size, MADV_PAGEOUT)) {
				printf("error %s madvise %s\n", phase, strerror(errno));
				continue;
			}
		} else if (!strcmp(phase, "swapin")) {
			sum += read_all(c, size);
		} else if (!strcmp(phase, "mthpfault")) {
			long before = get(MTHP "stats/anon_fault_alloc"), after;

			if (set(MTHP "enabled", "always") || set(PMD_THP "enabled", "never")) {
				int error = errno;

				set(MTHP "enabled", "never");
				set(PMD_THP "enabled", "inherit");
				printf("error %s no multi-size THP in this kernel (%s)\n", phase, strerror(error));
				continue;
			}
			write_part(d, size, 0, HUGE / page);
			after = get(MTHP "stats/anon_fault_alloc");
			set(MTHP "enabled", "never");
			set(PMD_THP "enabled", "inherit");
			printf("done %s pages=%zu seconds=%.6f folios=%ld wanted=%zu\n", phase, pages, now() - started,
			       before >= 0 && after >= 0 ? after - before : -1, size / (64 << 10));
			continue;
		} else if (!strcmp(phase, "mthpcow")) {
			tell2 = keep_mapped(&child2);
			if (tell2 < 0) {
				printf("error %s fork %s\n", phase, strerror(errno));
				continue;
			}
			write_part(d, size, 0, HUGE / page);
			let_go(&tell2, &child2);
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f\n", phase, done, now() - started);
	}
	if (child > 0)
		kill(child, SIGKILL);
	if (child2 > 0)
		kill(child2, SIGKILL);
	return sum == 42 ? 3 : 0;	/* keeps the reads from being optimised away */
}
