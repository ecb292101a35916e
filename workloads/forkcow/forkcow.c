// SPDX-License-Identifier: GPL-2.0
/*
 * forkcow: the write-fault paths of private anonymous memory besides swap, one per phase, so
 * that the harness can tell which copies (and reuses) a patch changed.
 *
 *   forkcow SIZE_MB
 *
 * Before "ready": maps three areas of SIZE_MB, writes every page of the first (A), and forks a
 * child that keeps A mapped until told to exit. Prints "ready pid=PID pages=N", then reads one
 * phase name per line from stdin and answers "done PHASE pages=N seconds=S":
 *   shared     write the first half of A while the child maps it (copies: mapped twice)
 *   exit       the child exits (nothing is written)
 *   reuse      write the second half of A, write-protected since the fork and now mapped once
 *              (no copies: the page is reused)
 *   zeroread   read every page of the untouched area B (maps the shared zero page)
 *   zerowrite  write every page of B (copies of the zero page)
 *   ksmmerge   write the same bytes to every page of area C, madvise(MADV_MERGEABLE), run ksmd
 *              until it has merged them (pages= the area; merged= what ksmd merged)
 *   ksmwrite   write every page of C (copies of KSM pages; pages= the pages that were merged)
 *   quit       exit
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

#define KSM "/sys/kernel/mm/ksm/"
#define KSM_WAIT_S 120

static long page;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned char *area(size_t size)
{
	unsigned char *start = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (start == MAP_FAILED) {
		printf("error mmap %s\n", strerror(errno));
		exit(1);
	}
	/* Huge pages would change what is copied and what ksmd can merge. */
	madvise(start, size, MADV_NOHUGEPAGE);
	return start;
}

static void write_pages(volatile unsigned char *start, size_t pages, int value)
{
	size_t i;

	for (i = 0; i < pages; i++)
		start[i * page] = (unsigned char)(value ? value : i + 1);
}

static unsigned long read_pages(volatile unsigned char *start, size_t pages)
{
	unsigned long sum = 0;
	size_t i;

	for (i = 0; i < pages; i++)
		sum += start[i * page];
	return sum;
}

static int ksm_set(const char *name, const char *value)
{
	char path[128];
	FILE *file;

	snprintf(path, sizeof(path), KSM "%s", name);
	file = fopen(path, "w");
	if (!file)
		return -1;
	fputs(value, file);
	return fclose(file);
}

static long ksm_get(const char *name)
{
	char path[128];
	long value = -1;
	FILE *file;

	snprintf(path, sizeof(path), KSM "%s", name);
	file = fopen(path, "r");
	if (!file)
		return -1;
	if (fscanf(file, "%ld", &value) != 1)
		value = -1;
	fclose(file);
	return value;
}

/* Merge the pages of C; returns the pages ksmd merged into shared ones, or -1 without KSM. */
static long ksm_merge(unsigned char *start, size_t size, size_t pages)
{
	long before = ksm_get("pages_sharing") + ksm_get("pages_shared");
	long merged = 0;
	double deadline = now() + KSM_WAIT_S;

	memset(start, 0x5a, size);
	if (before < 0 || madvise(start, size, MADV_MERGEABLE))
		return -1;
	if (ksm_set("pages_to_scan", "10000") || ksm_set("sleep_millisecs", "0") || ksm_set("run", "1"))
		return -1;
	while (now() < deadline) {
		merged = ksm_get("pages_sharing") + ksm_get("pages_shared") - before;
		if (merged >= (long)pages)
			break;
		usleep(20000);
	}
	ksm_set("run", "0");	/* stops ksmd; merged pages stay merged */
	return merged;
}

int main(int argc, char **argv)
{
	size_t size, pages, half;
	unsigned char *a, *b, *c;
	unsigned long sum = 0;
	long merged = 0;
	int tell_child[2];
	char phase[64];
	pid_t child;

	page = sysconf(_SC_PAGESIZE);
	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: forkcow SIZE_MB\n");
		return 2;
	}
	size = (size_t)atol(argv[1]) << 20;
	pages = size / page;
	half = pages / 2;
	a = area(size);
	b = area(size);
	c = area(size);
	write_pages(a, pages, 0);
	if (pipe(tell_child)) {
		printf("error pipe %s\n", strerror(errno));
		return 1;
	}
	fflush(stdout);
	child = fork();
	if (child < 0) {
		printf("error fork %s\n", strerror(errno));
		return 1;
	}
	if (child == 0) {
		char byte;

		close(tell_child[1]);
		while (read(tell_child[0], &byte, 1) < 0 && errno == EINTR)
			;
		_exit(a[0] == 42 ? 3 : 0);	/* the child still maps A until here */
	}
	close(tell_child[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		size_t done = pages;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		if (!strcmp(phase, "shared")) {
			write_pages(a, half, 0);
			done = half;
		} else if (!strcmp(phase, "exit")) {
			close(tell_child[1]);
			waitpid(child, NULL, 0);
			child = -1;
			done = 0;
		} else if (!strcmp(phase, "reuse")) {
			write_pages(a + half * page, pages - half, 0);
			done = pages - half;
		} else if (!strcmp(phase, "zeroread")) {
			sum += read_pages(b, pages);
		} else if (!strcmp(phase, "zerowrite")) {
			write_pages(b, pages, 0);
		} else if (!strcmp(phase, "ksmmerge")) {
			merged = ksm_merge(c, size, pages);
			if (merged < 0) {
				printf("error %s no KSM in this kernel (%s)\n", phase, strerror(errno));
				continue;
			}
			printf("done %s pages=%zu merged=%ld seconds=%.6f\n", phase, pages, merged, now() - started);
			continue;
		} else if (!strcmp(phase, "ksmwrite")) {
			write_pages(c, pages, 0);
			done = merged > 0 ? (size_t)merged : 0;
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f\n", phase, done, now() - started);
	}
	if (child > 0)
		kill(child, SIGKILL);
	return sum == 42 ? 3 : 0;	/* keeps the reads from being optimised away */
}
