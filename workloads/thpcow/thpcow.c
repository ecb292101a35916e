// SPDX-License-Identifier: GPL-2.0
/*
 * thpcow: the write-fault, collapse and swap paths of transparent huge pages, one per phase.
 *
 *   thpcow SIZE_MB
 *
 * Before "ready": maps four areas of SIZE_MB (rounded up to whole huge pages), each aligned to a
 * huge page and in its own VMA: A and C with MADV_HUGEPAGE, B with MADV_NOHUGEPAGE (4 KiB pages),
 * D for multi-size THP (a PROT_NONE guard after each). Writes every page of B and of C (generation 1). Prints "ready pid=PID pages=N", then
 * reads one phase name per line from stdin and answers "done PHASE pages=N seconds=S checked=C wrong=W ..." where
 * pages= counts 4 KiB pages and the other figures are the program's own:
 *   fault      write every page of A: huge pages at the fault (hugepages= the huge pages A spans,
 *              huge= the huge pages mapped there after it, from AnonHugePages); then check A
 *   collapse   MADV_HUGEPAGE on B and khugepaged at full speed until B is huge pages (or 30 s):
 *              hugepages= the huge pages B spans, huge= the huge pages mapped there after it (before
 *              any fork: khugepaged leaves alone a region whose page tables a fork write-protected);
 *              then check B (what the collapse copied)
 *   fork       fork a child that keeps A mapped until exit (nothing is written or checked)
 *   cow        write the first half of every huge page of A while the child maps it: each first
 *              write splits the huge mapping, every write copies a page of a huge page; then check
 *              A (the first halves generation 2, the second 1) and have the child check its view
 *              of A (all generation 1)
 *   exit       the child checks its view of A and exits
 *   reuse      write the second half of every huge page of A, now mapped by this process only,
 *              but by page tables (a split huge page): reused or copied, as the kernel decides; then
 *              check A (generation 2)
 *   swapout    MADV_PAGEOUT over C (huge pages swapped out whole or split first)
 *   swapin     read and check every page of C
 *   mthpfault  multi-size THP (Linux 6.10+, which counts it): with 64 KiB folios on and PMD-size ones off, write every
 *              page of D (folios= the 64 KiB folios the kernel says it allocated at faults, -1 when it
 *              does not say; wanted= the 64 KiB folios D spans); then check D
 *   mthpcow    fork a second child that maps D, write every page of D, check D, have the child check
 *              its view of D (the values of mthpfault) and exit
 *   quit       exit
 * A page is written as three 8-byte words keyed by area, page index and generation (the first,
 * the last, and one at an offset derived from the index; the first is written first, so the fault
 * is the one a write of its first byte would take). A check reads them (the first first) and the
 * word at offset 8, which nothing writes (zero); checks come after the phase's writes, so they
 * fault nothing the writes did not. A child checks when the parent asks on a command pipe and
 * sends back what it found. checked= counts the pages checked by every process in the phase,
 * wrong= those that did not hold what was written; when wrong > 0, first=page:I (this process)
 * or child:I (a child) and expected=/found= give the first wrong word. A wrong page is reported,
 * never an error.
 * The harness (harness/measure/drivers.py) runs the phases in workload.toml's order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
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

/* What a phase checked: pages checked, how many were wrong, and the first wrong word. */
struct check {
	unsigned long checked, wrong;
	char first[40];
	uint64_t expected, found;
};

/* The areas, for the words' keys. */
enum { AREA_A = 1, AREA_B, AREA_C, AREA_D };

static uint64_t mix(uint64_t x)	/* splitmix64's finaliser */
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Word slot (0: first, 1: last, 2: derived) of page index of area tag written in generation gen. */
static uint64_t word(unsigned int tag, size_t index, unsigned long gen, unsigned int slot)
{
	return mix(mix(((uint64_t)tag << 48) ^ gen) ^ ((uint64_t)index << 2 | slot));
}

/* The derived word's offset: 16 .. page - 24, never the untouched word at 8. */
static size_t derived(size_t index)
{
	return 16 + 8 * ((index * 2654435761UL) % (page / 8 - 4));
}

/*
 * Write pages first to last (excluded) of each huge page, in that order, the first word of a page
 * first (the fault a write of its first byte would take); returns the pages written.
 */
static size_t write_part(unsigned char *start, size_t size, size_t first, size_t last, unsigned int tag,
			 unsigned long gen)
{
	size_t written = 0, huge, i;

	for (huge = 0; huge < size; huge += HUGE)
		for (i = first; i < last; i++, written++) {
			size_t index = (huge + i * page) / page;
			volatile unsigned char *p = start + huge + i * page;

			*(volatile uint64_t *)p = word(tag, index, gen, 0);
			*(volatile uint64_t *)(p + page - 8) = word(tag, index, gen, 1);
			*(volatile uint64_t *)(p + derived(index)) = word(tag, index, gen, 2);
		}
	return written;
}

/*
 * Read and check pages first to last (excluded) of each huge page (the first word of a page first):
 * the words of generation gen and the word at offset 8, which nothing writes (zero).
 */
static void check_part(const unsigned char *start, size_t size, size_t first, size_t last, unsigned int tag,
		       unsigned long gen, const char *who, struct check *c)
{
	size_t huge, i;

	for (huge = 0; huge < size; huge += HUGE)
		for (i = first; i < last; i++) {
			size_t index = (huge + i * page) / page;
			const volatile unsigned char *p = start + huge + i * page;
			size_t at[4] = { 0, page - 8, derived(index), 8 };
			unsigned int slot;

			c->checked++;
			for (slot = 0; slot < 4; slot++) {
				uint64_t want = slot < 3 ? word(tag, index, gen, slot) : 0;
				uint64_t got = *(const volatile uint64_t *)(p + at[slot]);

				if (got != want) {
					if (!c->wrong++) {
						snprintf(c->first, sizeof(c->first), "%s:%zu", who, index);
						c->expected = want;
						c->found = got;
					}
					break;
				}
			}
		}
}

/* Add what another check (a child's) found to c: c's first wrong word stays the first. */
static void merge(struct check *c, const struct check *more)
{
	if (!c->wrong && more->wrong) {
		memcpy(c->first, more->first, sizeof(c->first));
		c->expected = more->expected;
		c->found = more->found;
	}
	c->checked += more->checked;
	c->wrong += more->wrong;
}

/*
 * "checked=C wrong=W [first=WHERE expected=0x.. found=0x..]" for a done line, into text (the caller's,
 * on its stack: a static buffer would sit on a page that its first write after a fork copies).
 */
static const char *checked(const struct check *c, char *text, size_t size)
{
	int len = snprintf(text, size, "checked=%lu wrong=%lu", c->checked, c->wrong);

	if (c->wrong)
		snprintf(text + len, size - len, " first=%s expected=0x%016llx found=0x%016llx", c->first,
			 (unsigned long long)c->expected, (unsigned long long)c->found);
	return text;
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

/* A child that keeps every mapping: its pid, the pipe it takes commands on and the one it answers on. */
struct keeper {
	pid_t pid;
	int commands, results;
};

/* A command: check all of an area (written in generation gen) and answer; exit after it if told to. */
struct command {
	const unsigned char *start;
	size_t size;
	unsigned int tag;
	unsigned long gen;
	int exit;
};

/* Fork a child that keeps every mapping until its command pipe closes (or it is told to exit); -1 on failure. */
static int keep_mapped(struct keeper *k)
{
	int commands[2], results[2];

	if (pipe(commands))
		return -1;
	if (pipe(results)) {
		close(commands[0]);
		close(commands[1]);
		return -1;
	}
	fflush(stdout);
	k->pid = fork();
	if (k->pid < 0) {
		close(commands[0]);
		close(commands[1]);
		close(results[0]);
		close(results[1]);
		return -1;
	}
	if (k->pid == 0) {
		close(commands[1]);
		close(results[0]);
		for (;;) {
			struct command command;
			struct check check = { 0 };
			ssize_t got = read(commands[0], &command, sizeof(command));

			if (got < 0 && errno == EINTR)
				continue;
			if (got != sizeof(command))
				_exit(0);
			check_part(command.start, command.size, 0, HUGE / page, command.tag, command.gen, "child", &check);
			if (write(results[1], &check, sizeof(check)) != sizeof(check) || command.exit)
				_exit(0);
		}
	}
	close(commands[0]);
	close(results[1]);
	k->commands = commands[1];
	k->results = results[0];
	return 0;
}

/* Have the child check an area (and exit after it if told to), adding what it found to c; -1 if it did not answer. */
static int ask(struct keeper *k, const unsigned char *start, size_t size, unsigned int tag, unsigned long gen,
	       int exit_after, struct check *c)
{
	struct command command = { start, size, tag, gen, exit_after };
	struct check found;
	size_t have = 0;

	if (write(k->commands, &command, sizeof(command)) != sizeof(command))
		return -1;
	while (have < sizeof(found)) {
		ssize_t got = read(k->results, (char *)&found + have, sizeof(found) - have);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		have += got;
	}
	merge(c, &found);
	return 0;
}

static void let_go(struct keeper *k)
{
	if (k->pid <= 0)
		return;
	close(k->commands);
	close(k->results);
	waitpid(k->pid, NULL, 0);
	k->pid = -1;
}

int main(int argc, char **argv)
{
	size_t size, pages, half;
	unsigned char *a, *b, *c, *d;
	struct keeper child = { -1, -1, -1 }, child2 = { -1, -1, -1 };
	char phase[64], said[160];
	struct check check;

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
	write_part(b, size, 0, HUGE / page, AREA_B, 1);
	write_part(c, size, 0, HUGE / page, AREA_C, 1);
	signal(SIGPIPE, SIG_IGN);	/* a child gone is an error of the phase, not a signal */
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		size_t done = pages;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		memset(&check, 0, sizeof(check));
		if (!strcmp(phase, "fault")) {
			write_part(a, size, 0, HUGE / page, AREA_A, 1);
			check_part(a, size, 0, HUGE / page, AREA_A, 1, "page", &check);
			printf("done %s pages=%zu seconds=%.6f %s hugepages=%zu huge=%ld\n", phase, pages,
			       now() - started, checked(&check, said, sizeof(said)), size / HUGE, huge_kb(a) / (long)(HUGE >> 10));
			continue;
		} else if (!strcmp(phase, "fork")) {
			if (keep_mapped(&child)) {
				printf("error %s fork %s\n", phase, strerror(errno));
				continue;
			}
			done = 0;
		} else if (!strcmp(phase, "cow")) {
			done = write_part(a, size, 0, half, AREA_A, 2);
			check_part(a, size, 0, half, AREA_A, 2, "page", &check);
			check_part(a, size, half, HUGE / page, AREA_A, 1, "page", &check);
			if (child.pid > 0 && ask(&child, a, size, AREA_A, 1, 0, &check)) {
				printf("error %s the child did not answer\n", phase);
				continue;
			}
		} else if (!strcmp(phase, "exit")) {
			if (child.pid > 0) {
				int failed = ask(&child, a, size, AREA_A, 1, 1, &check);

				let_go(&child);
				if (failed) {
					printf("error %s the child did not answer\n", phase);
					continue;
				}
			}
			done = 0;
		} else if (!strcmp(phase, "reuse")) {
			done = write_part(a, size, half, HUGE / page, AREA_A, 2);
			check_part(a, size, 0, HUGE / page, AREA_A, 2, "page", &check);
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
			check_part(b, size, 0, HUGE / page, AREA_B, 1, "page", &check);	/* what the collapse copied */
			printf("done %s pages=%zu seconds=%.6f %s hugepages=%zu huge=%ld\n", phase, pages,
			       now() - started, checked(&check, said, sizeof(said)), size / HUGE, huge_kb(b) / (long)(HUGE >> 10));
			continue;
		} else if (!strcmp(phase, "swapout")) {
			if (madvise(c, size, MADV_PAGEOUT)) {
				printf("error %s madvise %s\n", phase, strerror(errno));
				continue;
			}
		} else if (!strcmp(phase, "swapin")) {
			check_part(c, size, 0, HUGE / page, AREA_C, 1, "page", &check);
		} else if (!strcmp(phase, "mthpfault")) {
			long before = get(MTHP "stats/anon_fault_alloc"), after;

			if (set(MTHP "enabled", "always") || set(PMD_THP "enabled", "never")) {
				int error = errno;

				set(MTHP "enabled", "never");
				set(PMD_THP "enabled", "inherit");
				printf("error %s no multi-size THP in this kernel (%s)\n", phase, strerror(error));
				continue;
			}
			write_part(d, size, 0, HUGE / page, AREA_D, 1);
			after = get(MTHP "stats/anon_fault_alloc");
			set(MTHP "enabled", "never");
			set(PMD_THP "enabled", "inherit");
			check_part(d, size, 0, HUGE / page, AREA_D, 1, "page", &check);
			printf("done %s pages=%zu seconds=%.6f %s folios=%ld wanted=%zu\n", phase, pages, now() - started,
			       checked(&check, said, sizeof(said)), before >= 0 && after >= 0 ? after - before : -1, size / (64 << 10));
			continue;
		} else if (!strcmp(phase, "mthpcow")) {
			int failed;

			if (keep_mapped(&child2)) {
				printf("error %s fork %s\n", phase, strerror(errno));
				continue;
			}
			write_part(d, size, 0, HUGE / page, AREA_D, 2);
			check_part(d, size, 0, HUGE / page, AREA_D, 2, "page", &check);
			failed = ask(&child2, d, size, AREA_D, 1, 1, &check);
			let_go(&child2);
			if (failed) {
				printf("error %s the child did not answer\n", phase);
				continue;
			}
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f %s\n", phase, done, now() - started, checked(&check, said, sizeof(said)));
	}
	if (child.pid > 0)
		kill(child.pid, SIGKILL);
	if (child2.pid > 0)
		kill(child2.pid, SIGKILL);
	return 0;
}
