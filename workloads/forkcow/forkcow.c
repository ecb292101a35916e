// SPDX-License-Identifier: GPL-2.0
/*
 * forkcow: the write-fault paths of private anonymous memory besides swap, one per phase, so
 * that the harness can tell which copies (and reuses) a patch changed.
 *
 *   forkcow SIZE_MB
 *
 * Before "ready": maps three areas of SIZE_MB, writes every page of the first (A, generation 1),
 * and forks a child that keeps A mapped until told to exit; it checks A when the parent asks (a
 * command pipe) and answers what it found (a result pipe). Prints "ready pid=PID pages=N", then
 * reads one phase name per line from stdin and answers "done PHASE pages=N seconds=S checked=C
 * wrong=W":
 *   shared     write the first half of A while the child maps it (copies: mapped twice), then
 *              check A (the first half holds generation 2, the second 1) and have the child check
 *              its view of A (all of it generation 1)
 *   exit       the child checks its view of A and exits (nothing is written)
 *   reuse      write the second half of A, write-protected since the fork and now mapped once
 *              (no copies: the page is reused), then check A (generation 2)
 *   zeroread   read and check every page of the untouched area B (maps the shared zero page: zeros)
 *   zerowrite  write every page of B (copies of the zero page), then check B
 *   ksmmerge   write the same bytes to every page of area C, madvise(MADV_MERGEABLE), run ksmd
 *              until it has merged them, then check C (pages= the area; merged= what ksmd merged)
 *   ksmwrite   write every page of C (copies of KSM pages; pages= the pages that were merged), then
 *              check C (the written words, and a word the write left alone: the merged bytes)
 *   quit       exit
 * A page is written as three 8-byte words keyed by area, page index and generation (the first,
 * the last, and one at an offset derived from the index; the first is written first, so the fault
 * is the one a write of its first byte would take). A check reads them (the first first) and the
 * word at offset 8, which nothing writes. checked= counts the pages checked by every process in
 * the phase, wrong= those that did not hold what was written; when wrong > 0, first=page:I (this
 * process) or child:I (the child) and expected=/found= give the first wrong word. A wrong page is
 * reported, never an error.
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

/* What a phase checked: pages checked, how many were wrong, and the first wrong word. */
struct check {
	unsigned long checked, wrong;
	char first[40];
	uint64_t expected, found;
};

/* The areas, for the words' keys. */
enum { AREA_A = 1, AREA_B, AREA_C };
#define KSM_BYTE 0x5a
#define KSM_WORD 0x5a5a5a5a5a5a5a5aULL

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

/* Write the words of pages first .. first + count - 1, the first word of a page first. */
static void write_pages(unsigned char *start, size_t first, size_t count, unsigned int tag, unsigned long gen)
{
	size_t i;

	for (i = first; i < first + count; i++) {
		volatile unsigned char *p = start + i * page;

		*(volatile uint64_t *)p = word(tag, i, gen, 0);
		*(volatile uint64_t *)(p + page - 8) = word(tag, i, gen, 1);
		*(volatile uint64_t *)(p + derived(i)) = word(tag, i, gen, 2);
	}
}

/*
 * Read and check pages first .. first + count - 1 (the first word of a page first): the words of
 * generation gen and the word at offset 8, which holds background (what the page held before it was
 * written). Generation 0 is a page never written: every word is background.
 */
static void check_pages(const unsigned char *start, size_t first, size_t count, unsigned int tag,
			unsigned long gen, uint64_t background, const char *who, struct check *c)
{
	size_t i;

	for (i = first; i < first + count; i++) {
		const volatile unsigned char *p = start + i * page;
		size_t at[4] = { 0, page - 8, derived(i), 8 };
		unsigned int slot;

		c->checked++;
		for (slot = 0; slot < 4; slot++) {
			uint64_t want = gen && slot < 3 ? word(tag, i, gen, slot) : background;
			uint64_t got = *(const volatile uint64_t *)(p + at[slot]);

			if (got != want) {
				if (!c->wrong++) {
					snprintf(c->first, sizeof(c->first), "%s:%zu", who, i);
					c->expected = want;
					c->found = got;
				}
				break;
			}
		}
	}
}

/* Add what another check (the child's) found to c: c's first wrong word stays the first. */
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

/*
 * The child: keeps A mapped and, for every command byte, checks its view of A (never written since
 * the fork: generation 1) and sends what it found; 'x' also exits, as does the pipe closing.
 */
static void __attribute__((noreturn)) child_serve(const unsigned char *a, size_t pages, int commands, int results)
{
	for (;;) {
		struct check check = { 0 };
		ssize_t got;
		char op;

		got = read(commands, &op, 1);
		if (got < 0 && errno == EINTR)
			continue;
		if (got != 1)
			_exit(0);
		check_pages(a, 0, pages, AREA_A, 1, 0, "child", &check);
		if (write(results, &check, sizeof(check)) != sizeof(check) || op == 'x')
			_exit(0);
	}
}

/* Ask the child to check A (op 'c', or 'x': check, then exit) and add what it found to c; -1 if it did not answer. */
static int ask_child(int commands, int results, char op, struct check *c)
{
	struct check found;
	size_t have = 0;

	if (write(commands, &op, 1) != 1)
		return -1;
	while (have < sizeof(found)) {
		ssize_t got = read(results, (char *)&found + have, sizeof(found) - have);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		have += got;
	}
	merge(c, &found);
	return 0;
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

	memset(start, KSM_BYTE, size);
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
	long merged = 0;
	int commands[2], results[2];
	char phase[64], said[160];
	struct check check;
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
	write_pages(a, 0, pages, AREA_A, 1);
	if (pipe(commands) || pipe(results)) {
		printf("error pipe %s\n", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);	/* a child gone is an error of the phase, not a signal */
	fflush(stdout);
	child = fork();
	if (child < 0) {
		printf("error fork %s\n", strerror(errno));
		return 1;
	}
	if (child == 0) {
		close(commands[1]);
		close(results[0]);
		child_serve(a, pages, commands[0], results[1]);	/* the child maps A until it exits */
	}
	close(commands[0]);
	close(results[1]);
	/* Written after the fork and before ready: no phase's first write to them copies a page the child shares. */
	memset(said, 0, sizeof(said));
	memset(&check, 0, sizeof(check));
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		size_t done = pages;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		memset(&check, 0, sizeof(check));
		if (!strcmp(phase, "shared")) {
			write_pages(a, 0, half, AREA_A, 2);
			check_pages(a, 0, half, AREA_A, 2, 0, "page", &check);
			check_pages(a, half, pages - half, AREA_A, 1, 0, "page", &check);
			if (child > 0 && ask_child(commands[1], results[0], 'c', &check)) {
				printf("error %s the child did not answer\n", phase);
				continue;
			}
			done = half;
		} else if (!strcmp(phase, "exit")) {
			if (child > 0) {
				int failed = ask_child(commands[1], results[0], 'x', &check);

				close(commands[1]);
				close(results[0]);
				waitpid(child, NULL, 0);
				child = -1;
				if (failed) {
					printf("error %s the child did not answer\n", phase);
					continue;
				}
			}
			done = 0;
		} else if (!strcmp(phase, "reuse")) {
			write_pages(a, half, pages - half, AREA_A, 2);
			check_pages(a, 0, pages, AREA_A, 2, 0, "page", &check);
			done = pages - half;
		} else if (!strcmp(phase, "zeroread")) {
			check_pages(b, 0, pages, AREA_B, 0, 0, "page", &check);
		} else if (!strcmp(phase, "zerowrite")) {
			write_pages(b, 0, pages, AREA_B, 1);
			check_pages(b, 0, pages, AREA_B, 1, 0, "page", &check);
		} else if (!strcmp(phase, "ksmmerge")) {
			merged = ksm_merge(c, size, pages);
			if (merged < 0) {
				printf("error %s no KSM in this kernel (%s)\n", phase, strerror(errno));
				continue;
			}
			check_pages(c, 0, pages, AREA_C, 0, KSM_WORD, "page", &check);	/* reads: stays merged */
			printf("done %s pages=%zu merged=%ld seconds=%.6f %s\n", phase, pages, merged, now() - started,
			       checked(&check, said, sizeof(said)));
			continue;
		} else if (!strcmp(phase, "ksmwrite")) {
			write_pages(c, 0, pages, AREA_C, 1);
			check_pages(c, 0, pages, AREA_C, 1, KSM_WORD, "page", &check);
			done = merged > 0 ? (size_t)merged : 0;
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f %s\n", phase, done, now() - started, checked(&check, said, sizeof(said)));
	}
	if (child > 0)
		kill(child, SIGKILL);
	return 0;
}
