// SPDX-License-Identifier: GPL-2.0
/*
 * swapcow: the reproducer of "swap out, read fault, write fault" on private anonymous
 * memory, driven phase by phase so that the harness can read counters in between.
 *
 *   swapcow SIZE_MB
 *
 * Prints "ready pid=PID pages=N", then reads one phase name per line from stdin and
 * answers "done PHASE pages=N seconds=S checked=C wrong=W" (or "error PHASE ...") after doing it:
 *   fill     write every page (allocates the memory): generation 1, then check every page
 *   swapout  madvise(MADV_PAGEOUT) over the whole area
 *   read     read and check every page (swap-in: mapped read-only)
 *   write    write every page with the next generation (the write fault under test), then check
 *            every page
 *   quit     exit
 * A page holds three 8-byte words keyed by its index and the generation that wrote it (the first,
 * the last, and one at an offset derived from the index; the first is written first, so the fault
 * is the one a write of its first byte would take) and zeros elsewhere. checked= counts the pages
 * checked, wrong= those that did not hold what was written last; when wrong > 0, first=page:I and
 * expected=/found= give the first wrong word. A wrong page is reported, never an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static long page;

/* What a phase checked: pages checked, how many were wrong, and the first wrong word. */
struct check {
	unsigned long checked, wrong;
	char first[40];
	uint64_t expected, found;
};

static uint64_t mix(uint64_t x)	/* splitmix64's finaliser */
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Word slot (0: first, 1: last, 2: derived) of page index written in generation gen. */
static uint64_t word(unsigned int tag, size_t index, unsigned long gen, unsigned int slot)
{
	return mix(mix(((uint64_t)tag << 48) ^ gen) ^ ((uint64_t)index << 2 | slot));
}

/* The derived word's offset: 16 .. page - 24, never the untouched word at 8. */
static size_t derived(size_t index)
{
	return 16 + 8 * ((index * 2654435761UL) % (page / 8 - 4));
}

/* Write the words of a page, the first word first (the fault a write of the page takes). */
static void write_page(volatile unsigned char *p, unsigned int tag, size_t index, unsigned long gen)
{
	*(volatile uint64_t *)p = word(tag, index, gen, 0);
	*(volatile uint64_t *)(p + page - 8) = word(tag, index, gen, 1);
	*(volatile uint64_t *)(p + derived(index)) = word(tag, index, gen, 2);
}

/*
 * Read the words of a page (the first word first) and check them: the written ones and the one
 * at offset 8, which nothing writes (zero). Generation 0 is a page never written: all zero.
 */
static void check_page(const volatile unsigned char *p, unsigned int tag, size_t index, unsigned long gen,
		       const char *who, struct check *c)
{
	size_t at[4] = { 0, page - 8, derived(index), 8 };
	unsigned int slot;

	c->checked++;
	for (slot = 0; slot < 4; slot++) {
		uint64_t want = gen && slot < 3 ? word(tag, index, gen, slot) : 0;
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t size, pages, i;
	volatile unsigned char *area;
	unsigned long gen = 0;	/* the generation every page holds: 0 before fill */
	char phase[64], said[160];
	struct check check;

	page = sysconf(_SC_PAGESIZE);
	if (argc != 2 || atol(argv[1]) <= 0) {
		fprintf(stderr, "usage: swapcow SIZE_MB\n");
		return 2;
	}
	size = (size_t)atol(argv[1]) << 20;
	pages = size / page;
	area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED) {
		printf("error mmap %s\n", strerror(errno));
		return 1;
	}
	/* Huge pages would change what is copied; the kernel under test has THP off anyway. */
	madvise((void *)area, size, MADV_NOHUGEPAGE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		memset(&check, 0, sizeof(check));
		if (!strcmp(phase, "fill") || !strcmp(phase, "write")) {
			gen++;
			for (i = 0; i < pages; i++)
				write_page(area + i * page, 1, i, gen);
			for (i = 0; i < pages; i++)	/* mapped and writable now: no faults */
				check_page(area + i * page, 1, i, gen, "page", &check);
		} else if (!strcmp(phase, "swapout")) {
			if (madvise((void *)area, size, MADV_PAGEOUT)) {
				printf("error %s madvise %s\n", phase, strerror(errno));
				continue;
			}
		} else if (!strcmp(phase, "read")) {
			for (i = 0; i < pages; i++)
				check_page(area + i * page, 1, i, gen, "page", &check);
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f %s\n", phase, pages, now() - started, checked(&check, said, sizeof(said)));
	}
	return 0;
}
