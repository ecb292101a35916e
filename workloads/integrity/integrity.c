// SPDX-License-Identifier: GPL-2.0
/*
 * integrity: a copy-on-write integrity checker. Every phase drives one of the ways the kernel
 * decides between copying a page and reusing it at a write fault, with a forked child, and checks
 * that a write by one process is never seen by the other and never lost by the writer.
 *
 *   integrity SIZE_MB ROUNDS
 *
 * Prints "ready pid=PID pages=N" (N: the pages of a SIZE_MB area), then reads one phase name per
 * line from stdin and answers one line per phase:
 *
 *   done PHASE pages=N seconds=S checked=C wrong=W [first=WHO:PAGE expected=0xX found=0xX] [KEY=N ...]
 *
 * pages= the pages of the phase's area, seconds= its wall time, checked= the page checks made by
 * every process (a page checked by the child and by the parent counts twice), wrong= the checks
 * that found a wrong word, and only when there are some, the first of them: who looked (child,
 * parent, or pipe: the pages read back from a pipe), the page's index in the area and its first
 * wrong word. A page check reads every 8-byte word of the page. A wrong page is a finding, not an
 * error: the phase goes on and says it. Each phase runs its scenario ROUNDS times, on a fresh
 * area each time; every count adds up over the rounds. "error PHASE why" is a setup failure.
 *
 * Word w of page p written at generation g holds ((g << 56) ^ (p << 20) ^ (w * 0x9E3779B97F4A7C15)) | 1:
 * never 0, different for every page and word, and different at every generation of the same word.
 * Memory never written is expected to read as 0. Every area is private anonymous memory, aligned
 * to a huge page between PROT_NONE guards, mapped at the start of its phase and unmapped at its
 * end; the base-page areas (SIZE_MB) have MADV_NOHUGEPAGE, the THP ones are 2 huge pages (4 MiB).
 * The child is forked in the phase, waits on a pipe for the parent's go before it touches the
 * area, sends its counts back on another pipe, and is waited for before "done".
 *
 *   forkparent     write gen 1, fork; the parent writes gen 2 (copies of pages mapped twice); the
 *                  child checks gen 1, the parent gen 2
 *   forkchild      write gen 1, fork; the child writes gen 2 and checks it; the parent checks gen 1
 *   swapbefore     write gen 1, MADV_PAGEOUT, fork; the child reads every page (swap-in while the
 *                  parent still holds its swap entries), then the parent writes gen 2 (write faults
 *                  on swap entries whose page the child brought back); the child checks gen 1,
 *                  the parent gen 2
 *   swapafter      write gen 1, fork, then memory.max of this process's memory cgroup is lowered
 *                  by the area's size and put back (MADV_PAGEOUT leaves alone pages mapped twice),
 *                  which pushes the area to swap from both processes; the parent writes gen 2;
 *                  the child checks gen 1, the parent gen 2. Without any swap in the system the
 *                  squeeze is left out (it could only call the OOM killer): swapped=0 says so
 *   swapwrite      write gen 1, MADV_PAGEOUT, fork; the parent writes gen 2 to its swap entries
 *                  while the child holds its own; the child checks gen 1, the parent gen 2
 *   swapreadwrite  write gen 1, MADV_PAGEOUT, fork; the parent reads every page (swap-in: mapped
 *                  read-only, still in the swap cache), then writes gen 2 to every page while the
 *                  child holds its swap entries; the child checks gen 1 (a kernel that reuses the
 *                  swap-cache page shows it gen 2), the parent gen 2
 *                  The four swap phases report swapped= the pages of the area that
 *                  /proc/self/pagemap shows swapped out in the parent just before the first access
 *                  after the swap-out.
 *   zeropage       read every page of an untouched area (the shared zero page), fork; the parent
 *                  writes gen 2; the child checks all zero, the parent gen 2 (zero_pages= pages
 *                  that mapped the zero page after the reads, from /proc/kpageflags)
 *   ksm            two areas, every page of both the same bytes, MADV_MERGEABLE, ksmd at full
 *                  speed until 90% of their pages are KSM pages (/proc/kpageflags; without it,
 *                  what ksmd's counters gained) or 60 s (its settings put back after); fork;
 *                  the parent writes gen 2 to the first area; the child checks the first area
 *                  unchanged, the parent the second unchanged (its pages counted after the first
 *                  area's in first=) and the first at gen 2. pages= and merged= are of the first
 *                  area (merged: KSM pages there, from /proc/kpageflags; without it half of what
 *                  ksmd's counters gained)
 *   thppmd         a THP area (MADV_HUGEPAGE) written at gen 1: huge pages at the fault; fork;
 *                  the parent writes gen 2 (splits its huge mappings, copies 4 KiB pages); the
 *                  child checks gen 1, writes gen 3 (its huge mappings, now its own) and checks
 *                  it; the parent checks gen 2
 *   thppte         as thppmd, but before the fork mprotect() of one 4 KiB page of every huge page
 *                  to read-only and back splits the huge mappings into page tables (the huge
 *                  pages stay whole); fork; the parent writes gen 2; the child checks gen 1, the
 *                  parent gen 2
 *   thpcollapse    a THP area written at gen 1 in 4 KiB pages (MADV_NOHUGEPAGE), then
 *                  MADV_HUGEPAGE and a collapse into huge pages: MADV_COLLAPSE (Linux 6.1+), or
 *                  khugepaged at full speed until the area is huge or 30 s (khugepaged=1 says
 *                  so; its settings put back after); fork; the parent writes gen 2; the child
 *                  checks gen 1, the parent gen 2
 *                  The THP phases report, before the fork, huge= the huge pages mapped by PMDs
 *                  (AnonHugePages in /proc/self/smaps) and huge_pages= the 4 KiB pages of the
 *                  area that belong to huge pages (from /proc/kpageflags; without it, from
 *                  AnonHugePages, taken before the split in thppte)
 *   childexit      write gen 1, fork; the child exits at once; the parent writes gen 2 (pages
 *                  mapped once again: reused) and checks it, then MADV_PAGEOUT (swapped= as
 *                  above), reads the area back and checks gen 2 again
 *   mprotect       write gen 1, fork; the parent makes the area read-only and writable again and
 *                  writes gen 2; the child checks gen 1, the parent gen 2; after the child
 *                  exited, the parent makes it read-only and writable again, writes gen 3 and
 *                  checks it
 *   vmsplice       (CVE-2020-29374) an area of min(SIZE_MB, 1 MiB) at gen 1 and a pipe of its
 *                  size (at most fs.pipe-max-size: then the steps go chunk by chunk), fork; the
 *                  child vmsplice()s the area into the pipe (a read-only pin), unmaps it and
 *                  exits; the parent writes gen 2 (mapped once, but pinned by the pipe), then
 *                  reads the pipe, which must give gen 1 (first=pipe:PAGE when not), and checks
 *                  gen 2 in its area
 *   quit           exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define HUGE (2UL << 20)
#define THP_SIZE (2 * HUGE)
#define VMSPLICE_MAX (1UL << 20)
#define KSM "/sys/kernel/mm/ksm/"
#define KHUGEPAGED "/sys/kernel/mm/transparent_hugepage/khugepaged/"
#define KSM_WAIT_S 60
#define COLLAPSE_WAIT_S 30
#define SQUEEZES 4			/* memory.max squeezes before swapafter gives up on the rest */
#define PM_PFN ((1ULL << 55) - 1)	/* /proc/self/pagemap: page frame number, */
#define PM_SWAP (1ULL << 62)		/* swapped out, */
#define PM_PRESENT (1ULL << 63)		/* present */
#define KPF_KSM 21			/* /proc/kpageflags */
#define KPF_THP 22
#define KPF_ZERO_PAGE 24
#define FIGURES 8

static long page;
static size_t words;		/* 8-byte words in a page */
static size_t base_size;	/* SIZE_MB in bytes */

/* Page checks, and the first wrong one (sent as is from child to parent). */
struct tally {
	uint64_t checked;
	uint64_t wrong;
	char who[8];
	uint64_t page;
	uint64_t expected;
	uint64_t found;
};

/* One phase over all its rounds. */
struct run {
	size_t pages;
	struct tally tally;
	const char *names[FIGURES];	/* the phase's own KEY=NUMBER figures */
	long values[FIGURES];
	int figures;
	char why[512];			/* a setup failure */
};

/* An area aligned to a huge page, in a PROT_NONE reservation that keeps it a VMA of its own. */
struct area {
	unsigned char *start;
	size_t size;
	size_t pages;
	unsigned char *mapped;
	size_t mapped_size;
};

/* The other end of a forked child: go (parent to child) and back (child to parent). */
struct child {
	pid_t pid;
	int go;
	int back;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fail(struct run *r, const char *what)
{
	snprintf(r->why, sizeof(r->why), "%s: %s", what, strerror(errno));
	return -1;
}

static void figure(struct run *r, const char *name, long value)
{
	int i;

	for (i = 0; i < r->figures; i++)
		if (!strcmp(r->names[i], name))
			break;
	if (i == r->figures) {
		if (i == FIGURES)
			return;
		r->names[i] = name;
		r->values[i] = 0;
		r->figures++;
	}
	r->values[i] += value;
}

static uint64_t pattern(unsigned int gen, uint64_t index, uint64_t word)
{
	if (!gen)
		return 0;	/* never written */
	return (((uint64_t)gen << 56) ^ (index << 20) ^ (word * 0x9E3779B97F4A7C15ULL)) | 1;
}

/* Writes generation gen to every word of pages first.. (all with page 0's values when same). */
static void fill(unsigned char *start, size_t pages, uint64_t first, unsigned int gen, int same)
{
	size_t p, w;

	for (p = 0; p < pages; p++) {
		volatile uint64_t *word = (volatile uint64_t *)(start + p * page);

		for (w = 0; w < words; w++)
			word[w] = pattern(gen, same ? 0 : first + p, w);
	}
}

static void check_page(const unsigned char *data, uint64_t index, unsigned int gen, int same,
		       const char *who, struct tally *t)
{
	const volatile uint64_t *word = (const volatile uint64_t *)data;
	size_t w;

	t->checked++;
	for (w = 0; w < words; w++) {
		uint64_t found = word[w], expected = pattern(gen, same ? 0 : index, w);

		if (found != expected) {
			if (!t->wrong++) {
				snprintf(t->who, sizeof(t->who), "%s", who);
				t->page = index;
				t->expected = expected;
				t->found = found;
			}
			return;
		}
	}
}

/* Checks every word of pages first.. against generation gen. */
static void check(const unsigned char *start, size_t pages, uint64_t first, unsigned int gen, int same,
		  const char *who, struct tally *t)
{
	size_t p;

	for (p = 0; p < pages; p++)
		check_page(start + p * page, first + p, gen, same, who, t);
}

static void merge(struct tally *into, const struct tally *from)
{
	if (!into->wrong && from->wrong) {
		memcpy(into->who, from->who, sizeof(into->who));
		into->who[sizeof(into->who) - 1] = 0;
		into->page = from->page;
		into->expected = from->expected;
		into->found = from->found;
	}
	into->checked += from->checked;
	into->wrong += from->wrong;
}

/* Reads one word of every page (a fault where nothing is mapped). */
static void touch(const unsigned char *start, size_t pages)
{
	static volatile uint64_t sink;
	size_t p;

	for (p = 0; p < pages; p++)
		sink += *(const volatile uint64_t *)(start + p * page);
}

static int map_area(struct run *r, struct area *a, size_t size, int advice)
{
	a->size = size;
	a->pages = size / page;
	a->mapped_size = size + 2 * HUGE;
	a->mapped = mmap(NULL, a->mapped_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (a->mapped == MAP_FAILED) {
		a->mapped = NULL;
		return fail(r, "mmap");
	}
	a->start = (unsigned char *)(((unsigned long)a->mapped + page + HUGE - 1) & ~(HUGE - 1));
	if (mprotect(a->start, size, PROT_READ | PROT_WRITE)) {
		fail(r, "mprotect");
		munmap(a->mapped, a->mapped_size);
		a->mapped = NULL;
		return -1;
	}
	if (advice == MADV_NOHUGEPAGE)
		madvise(a->start, size, advice);	/* EINVAL without THP: 4 KiB pages anyway */
	else if (madvise(a->start, size, advice)) {
		fail(r, advice == MADV_HUGEPAGE ? "madvise(MADV_HUGEPAGE)" : "madvise");
		munmap(a->mapped, a->mapped_size);
		a->mapped = NULL;
		return -1;
	}
	return 0;
}

static void unmap_area(struct area *a)
{
	if (a->mapped)
		munmap(a->mapped, a->mapped_size);
	a->mapped = NULL;
}

/* A base-page area of SIZE_MB, written at gen 1. */
static int base_area(struct run *r, struct area *a)
{
	if (map_area(r, a, base_size, MADV_NOHUGEPAGE))
		return -1;
	fill(a->start, a->pages, 0, 1, 0);
	return 0;
}

/* The area's /proc/self/pagemap entries into entries[] (pages of them), or -1. */
static int pagemap(const struct area *a, uint64_t *entries)
{
	size_t want = a->pages * sizeof(*entries);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	ssize_t got;

	if (fd < 0)
		return -1;
	got = pread(fd, entries, want, (off_t)((unsigned long)a->start / page * sizeof(*entries)));
	close(fd);
	return got == (ssize_t)want ? 0 : -1;
}

/* Pages of the area swapped out, or -1. */
static long swapped(const struct area *a)
{
	uint64_t *entries = malloc(a->pages * sizeof(*entries));
	long count = 0;
	size_t p;

	if (!entries || pagemap(a, entries)) {
		free(entries);
		return -1;
	}
	for (p = 0; p < a->pages; p++)
		count += !!(entries[p] & PM_SWAP);
	free(entries);
	return count;
}

/* Pages of the area whose /proc/kpageflags has the flag, or -1 when no frame can be read (not root). */
static long flagged(const struct area *a, int flag)
{
	uint64_t *entries = malloc(a->pages * sizeof(*entries)), flags;
	long count = 0, frames = 0;
	int fd = -1;
	size_t p;

	if (!entries || pagemap(a, entries))
		goto out;
	fd = open("/proc/kpageflags", O_RDONLY);
	if (fd < 0)
		goto out;
	for (p = 0; p < a->pages; p++) {
		uint64_t pfn = entries[p] & PM_PFN;

		if (!(entries[p] & PM_PRESENT) || !pfn)
			continue;
		if (pread(fd, &flags, sizeof(flags), (off_t)(pfn * sizeof(flags))) != sizeof(flags))
			continue;
		frames++;
		count += !!(flags & (1ULL << flag));
	}
out:
	if (fd >= 0)
		close(fd);
	free(entries);
	return frames ? count : -1;
}

/* AnonHugePages of the VMAs inside the area, in KiB, or -1. */
static long huge_kb(const struct area *a)
{
	unsigned long from, to, start = (unsigned long)a->start, end = start + a->size;
	FILE *smaps = fopen("/proc/self/smaps", "r");
	char line[256];
	long kb = 0, value;
	int inside = 0;

	if (!smaps)
		return -1;
	while (fgets(line, sizeof(line), smaps)) {
		if (sscanf(line, "%lx-%lx ", &from, &to) == 2)
			inside = from >= start && to <= end;
		else if (inside && sscanf(line, "AnonHugePages: %ld kB", &value) == 1)
			kb += value;
	}
	fclose(smaps);
	return kb;
}

/* huge= and huge_pages= of a THP area (fallback_kb: AnonHugePages when kpageflags cannot say). */
static void huge_figures(struct run *r, const struct area *a, long fallback_kb)
{
	long kb = huge_kb(a), in_huge = flagged(a, KPF_THP);

	figure(r, "huge", kb > 0 ? kb / (long)(HUGE >> 10) : 0);
	if (in_huge < 0)
		in_huge = fallback_kb > 0 ? fallback_kb / (page >> 10) : 0;
	figure(r, "huge_pages", in_huge);
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

static int get_text(const char *path, char *text, size_t len)
{
	FILE *file = fopen(path, "r");
	int ok;

	if (!file)
		return -1;
	ok = fgets(text, (int)len, file) != NULL;
	fclose(file);
	if (!ok)
		return -1;
	text[strcspn(text, "\n")] = 0;
	return 0;
}

static int set(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY);
	ssize_t done;

	if (fd < 0)
		return -1;
	done = write(fd, value, strlen(value));
	if (close(fd) || done != (ssize_t)strlen(value))
		return -1;
	return 0;
}

static int set_number(const char *path, long value)
{
	char text[32];

	snprintf(text, sizeof(text), "%ld", value);
	return set(path, text);
}

/*
 * fork(): -1 on failure, 0 in the child, the child's pid in the parent. The child waits for go()
 * before it does anything and the parent waits for its counts (collect()) before it goes on.
 */
static pid_t spawn(struct child *c)
{
	int go[2], back[2];

	c->pid = -1;
	if (pipe(go))
		return -1;
	if (pipe(back)) {
		close(go[0]);
		close(go[1]);
		return -1;
	}
	fflush(stdout);
	c->pid = fork();
	if (c->pid < 0) {
		close(go[0]);
		close(go[1]);
		close(back[0]);
		close(back[1]);
		return -1;
	}
	if (c->pid == 0) {
		close(go[1]);
		close(back[0]);
		c->go = go[0];
		c->back = back[1];
		return 0;
	}
	close(go[0]);
	close(back[1]);
	c->go = go[1];
	c->back = back[0];
	return c->pid;
}

/* In the child: wait for the parent's go; a parent that closed the pipe ends the child. */
static void await(struct child *c)
{
	ssize_t got;
	char byte;

	do
		got = read(c->go, &byte, 1);
	while (got < 0 && errno == EINTR);
	if (got != 1)
		_exit(1);
}

/* In the child: send the counts so far. */
static void send_tally(struct child *c, const struct tally *t)
{
	const char *data = (const char *)t;
	size_t sent = 0;
	ssize_t done;

	while (sent < sizeof(*t)) {
		done = write(c->back, data + sent, sizeof(*t) - sent);
		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0)
			_exit(1);
		sent += done;
	}
}

static void __attribute__((noreturn)) finish(struct child *c, const struct tally *t)
{
	send_tally(c, t);
	_exit(0);
}

static int go(struct child *c)
{
	char byte = 'g';

	return write(c->go, &byte, 1) == 1 ? 0 : -1;
}

/* In the parent: the child's counts (added to the phase's), or -1 when it died. */
static int collect(struct run *r, struct child *c)
{
	struct tally t;
	char *data = (char *)&t;
	size_t got = 0;
	ssize_t done;

	while (got < sizeof(t)) {
		done = read(c->back, data + got, sizeof(t) - got);
		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0) {
			snprintf(r->why, sizeof(r->why), "the child died before it reported");
			return -1;
		}
		got += done;
	}
	merge(&r->tally, &t);
	return 0;
}

/* go() and collect(): one step of the child. */
static int step(struct run *r, struct child *c)
{
	if (go(c)) {
		snprintf(r->why, sizeof(r->why), "the child is gone: %s", strerror(errno));
		return -1;
	}
	return collect(r, c);
}

/* In the parent: wait for the child (killed first when the phase failed); a child that did not
 * exit with 0 fails the phase. */
static int reap(struct run *r, struct child *c, int ret)
{
	int status;

	if (c->pid <= 0)
		return ret;
	if (ret)
		kill(c->pid, SIGKILL);
	close(c->go);
	close(c->back);
	while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
		;
	c->pid = -1;
	if (!ret && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		snprintf(r->why, sizeof(r->why), "the child ended with status 0x%x", status);
		return -1;
	}
	return ret;
}

/* A child that waits for go, checks the area at gen, and exits. */
static int spawn_checker(struct run *r, struct child *c, const struct area *a, unsigned int gen, int same)
{
	struct tally mine = { 0 };

	switch (spawn(c)) {
	case -1:
		return fail(r, "fork");
	case 0:
		await(c);
		check(a->start, a->pages, 0, gen, same, "child", &mine);
		finish(c, &mine);
	}
	return 0;
}

static int forkparent(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	if (spawn_checker(r, &c, &a, 1, 0))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static int forkchild(struct run *r)
{
	struct child c = { .pid = -1 };
	struct tally mine = { 0 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	switch (spawn(&c)) {
	case -1:
		fail(r, "fork");
		goto out;
	case 0:
		await(&c);
		fill(a.start, a.pages, 0, 2, 0);
		check(a.start, a.pages, 0, 2, 0, "child", &mine);
		finish(&c, &mine);
	}
	if (step(r, &c))	/* the child has written */
		goto out;
	check(a.start, a.pages, 0, 1, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

/* swapped= of the parent's area just before its first access since the swap-out. */
static int count_swapped(struct run *r, const struct area *a)
{
	long count = swapped(a);

	if (count < 0)
		return fail(r, "/proc/self/pagemap");
	figure(r, "swapped", count);
	return 0;
}

static int pageout(struct run *r, const struct area *a)
{
	return madvise(a->start, a->size, MADV_PAGEOUT) ? fail(r, "madvise(MADV_PAGEOUT)") : 0;
}

static int swapbefore(struct run *r)
{
	struct child c = { .pid = -1 };
	struct tally mine = { 0 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	if (pageout(r, &a))
		goto out;
	switch (spawn(&c)) {
	case -1:
		fail(r, "fork");
		goto out;
	case 0:
		await(&c);
		touch(a.start, a.pages);	/* swap-in by the child */
		send_tally(&c, &mine);
		await(&c);
		check(a.start, a.pages, 0, 1, 0, "child", &mine);
		finish(&c, &mine);
	}
	if (count_swapped(r, &a) || step(r, &c))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static int swap_configured(void)
{
	FILE *meminfo = fopen("/proc/meminfo", "r");
	char line[128];
	long kb = 0;

	if (!meminfo)
		return 0;
	while (fgets(line, sizeof(line), meminfo))
		if (sscanf(line, "SwapTotal: %ld kB", &kb) == 1)
			break;
	fclose(meminfo);
	return kb > 0;
}

/* The folder of this process's cgroup v2 group, or -1 (none, or the root, which has no memory.max). */
static int cgroup_dir(struct run *r, char *dir, size_t len)
{
	FILE *file = fopen("/proc/self/cgroup", "r");
	char line[256];
	int found = 0;

	if (!file)
		return fail(r, "/proc/self/cgroup");
	while (!found && fgets(line, sizeof(line), file))
		found = !strncmp(line, "0::", 3);
	fclose(file);
	line[strcspn(line, "\n")] = 0;
	if (!found || !strcmp(line + 3, "/")) {
		snprintf(r->why, sizeof(r->why), "not in a cgroup v2 group of its own (%s)",
			 found ? line : "no 0:: line");
		return -1;
	}
	snprintf(dir, len, "/sys/fs/cgroup%s", line + 3);
	return 0;
}

/* Only this process and its child in the group: the squeeze takes the memory of no one else. */
static int cgroup_ours(struct run *r, const char *dir, pid_t child)
{
	char path[320];
	FILE *procs;
	long pid;
	int ours = 1;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	procs = fopen(path, "r");
	if (!procs)
		return fail(r, path);
	while (fscanf(procs, "%ld", &pid) == 1)
		if (pid != getpid() && pid != child)
			ours = 0;
	fclose(procs);
	if (!ours) {
		snprintf(r->why, sizeof(r->why), "%s holds other processes: no squeeze", dir);
		return -1;
	}
	return 0;
}

/*
 * Pushes the area to swap while both processes map it: memory.max lowered to memory.current minus
 * the bytes of the area not yet swapped out (a few times, as reclaim may take other pages first),
 * then the old memory.max put back.
 */
static int squeeze(struct run *r, const struct area *a, pid_t child)
{
	char dir[300], max_path[320], current_path[320], old[64];
	long current, left;
	int i, ret = 0;

	if (!swap_configured())
		return 0;
	if (cgroup_dir(r, dir, sizeof(dir)) || cgroup_ours(r, dir, child))
		return -1;
	snprintf(max_path, sizeof(max_path), "%s/memory.max", dir);
	snprintf(current_path, sizeof(current_path), "%s/memory.current", dir);
	if (get_text(max_path, old, sizeof(old)))
		return fail(r, max_path);
	for (i = 0; i < SQUEEZES; i++) {
		left = swapped(a);
		if (left < 0) {
			ret = fail(r, "/proc/self/pagemap");
			break;
		}
		left = (long)a->pages - left;
		if (!left)
			break;
		current = get(current_path);
		if (current < 0) {
			ret = fail(r, current_path);
			break;
		}
		if (current - left * page <= 0)
			errno = ERANGE;
		if (current - left * page <= 0 || set_number(max_path, current - left * page)) {
			ret = fail(r, max_path);
			break;
		}
	}
	if (set(max_path, old) && !ret)
		ret = fail(r, max_path);
	return ret;
}

static int swapafter(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	if (spawn_checker(r, &c, &a, 1, 0))
		goto out;
	if (squeeze(r, &a, c.pid) || count_swapped(r, &a))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

/* swapwrite (read first: swapreadwrite): the parent writes its swap entries, the child holds its own. */
static int swap_write(struct run *r, int read_first)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	if (pageout(r, &a) || spawn_checker(r, &c, &a, 1, 0) || count_swapped(r, &a))
		goto out;
	if (read_first)
		touch(a.start, a.pages);
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static int swapwrite(struct run *r)
{
	return swap_write(r, 0);
}

static int swapreadwrite(struct run *r)
{
	return swap_write(r, 1);
}

static int zeropage(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1;

	if (map_area(r, &a, base_size, MADV_NOHUGEPAGE))
		return -1;
	touch(a.start, a.pages);
	figure(r, "zero_pages", flagged(&a, KPF_ZERO_PAGE));
	if (spawn_checker(r, &c, &a, 0, 0))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

/* ksmd at full speed until it merged 90% of both areas or KSM_WAIT_S; its settings put back. */
static int ksm_merge(struct run *r, const struct area *a, const struct area *b)
{
	long run = get(KSM "run"), scan = get(KSM "pages_to_scan"), sleep = get(KSM "sleep_millisecs");
	long before = get(KSM "pages_sharing") + get(KSM "pages_shared"), merged = 0, kpf;
	double deadline = now() + KSM_WAIT_S;
	int ret = 0;

	if (run < 0 || scan < 0 || sleep < 0 || before < 0) {
		errno = ENOENT;
		return fail(r, "no KSM in this kernel (" KSM ")");
	}
	if (madvise(a->start, a->size, MADV_MERGEABLE) || madvise(b->start, b->size, MADV_MERGEABLE))
		return fail(r, "madvise(MADV_MERGEABLE)");
	if (set(KSM "pages_to_scan", "10000") || set(KSM "sleep_millisecs", "0") || set(KSM "run", "1")) {
		ret = fail(r, KSM);
	} else {
		while (now() < deadline) {
			long in_a = flagged(a, KPF_KSM), in_b = flagged(b, KPF_KSM);

			/* KSM pages in the areas; without kpageflags, what ksmd's counters gained */
			if (in_a >= 0 && in_b >= 0)
				merged = in_a + in_b;
			else
				merged = get(KSM "pages_sharing") + get(KSM "pages_shared") - before;
			if (merged * 10 >= (long)(a->pages + b->pages) * 9)
				break;
			usleep(20000);
		}
	}
	set_number(KSM "run", run);	/* merged pages stay merged */
	set_number(KSM "pages_to_scan", scan);
	set_number(KSM "sleep_millisecs", sleep);
	kpf = flagged(a, KPF_KSM);
	figure(r, "merged", kpf >= 0 ? kpf : merged / 2);
	return ret;
}

static int ksm(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a, b = { .mapped = NULL };
	int ret = -1;

	if (map_area(r, &a, base_size, MADV_NOHUGEPAGE))
		return -1;
	if (map_area(r, &b, base_size, MADV_NOHUGEPAGE))
		goto out;
	fill(a.start, a.pages, 0, 1, 1);
	fill(b.start, b.pages, a.pages, 1, 1);
	if (ksm_merge(r, &a, &b) || spawn_checker(r, &c, &a, 1, 1))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(b.start, b.pages, a.pages, 1, 1, "parent", &r->tally);
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	unmap_area(&b);
	return ret;
}

static int thppmd(struct run *r)
{
	struct child c = { .pid = -1 };
	struct tally mine = { 0 };
	struct area a;
	int ret = -1;

	if (map_area(r, &a, THP_SIZE, MADV_HUGEPAGE))
		return -1;
	fill(a.start, a.pages, 0, 1, 0);
	huge_figures(r, &a, huge_kb(&a));
	switch (spawn(&c)) {
	case -1:
		fail(r, "fork");
		goto out;
	case 0:
		await(&c);
		check(a.start, a.pages, 0, 1, 0, "child", &mine);
		fill(a.start, a.pages, 0, 3, 0);
		check(a.start, a.pages, 0, 3, 0, "child", &mine);
		finish(&c, &mine);
	}
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static int thppte(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	size_t huge;
	long before;
	int ret = -1;

	if (map_area(r, &a, THP_SIZE, MADV_HUGEPAGE))
		return -1;
	fill(a.start, a.pages, 0, 1, 0);
	before = huge_kb(&a);
	for (huge = 0; huge < a.size; huge += HUGE) {
		unsigned char *one = a.start + huge + HUGE / 2;

		if (mprotect(one, page, PROT_READ) || mprotect(one, page, PROT_READ | PROT_WRITE)) {
			fail(r, "mprotect");
			goto out;
		}
	}
	huge_figures(r, &a, before);
	if (spawn_checker(r, &c, &a, 1, 0))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

/* khugepaged at full speed until the area is huge pages or COLLAPSE_WAIT_S; its settings put back. */
static int khugepaged(struct run *r, const struct area *a)
{
	long scan_sleep = get(KHUGEPAGED "scan_sleep_millisecs");
	long alloc_sleep = get(KHUGEPAGED "alloc_sleep_millisecs");
	long to_scan = get(KHUGEPAGED "pages_to_scan");
	double deadline = now() + COLLAPSE_WAIT_S;
	int ret = 0;

	if (scan_sleep < 0 || alloc_sleep < 0 || to_scan < 0) {
		errno = ENOENT;
		return fail(r, "no khugepaged (" KHUGEPAGED ")");
	}
	if (set(KHUGEPAGED "pages_to_scan", "4096") || set(KHUGEPAGED "alloc_sleep_millisecs", "0") ||
	    set(KHUGEPAGED "scan_sleep_millisecs", "0"))
		ret = fail(r, KHUGEPAGED);
	else
		while (huge_kb(a) < (long)(a->size >> 10) && now() < deadline)
			usleep(20000);
	set_number(KHUGEPAGED "scan_sleep_millisecs", scan_sleep);
	set_number(KHUGEPAGED "alloc_sleep_millisecs", alloc_sleep);
	set_number(KHUGEPAGED "pages_to_scan", to_scan);
	return ret;
}

static int thpcollapse(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1, slow = 0;

	if (map_area(r, &a, THP_SIZE, MADV_NOHUGEPAGE))
		return -1;
	fill(a.start, a.pages, 0, 1, 0);
	if (madvise(a.start, a.size, MADV_HUGEPAGE)) {
		fail(r, "madvise(MADV_HUGEPAGE)");
		goto out;
	}
	if (madvise(a.start, a.size, MADV_COLLAPSE)) {
		slow = 1;	/* EINVAL before Linux 6.1; EAGAIN, ENOMEM: khugepaged may still manage */
		if (khugepaged(r, &a))
			goto out;
	}
	figure(r, "khugepaged", slow);
	huge_figures(r, &a, huge_kb(&a));
	if (spawn_checker(r, &c, &a, 1, 0))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static int childexit(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	switch (spawn(&c)) {
	case -1:
		fail(r, "fork");
		goto out;
	case 0:
		_exit(0);	/* at once, without touching the area */
	}
	ret = reap(r, &c, 0);
	if (ret)
		goto out;
	ret = -1;
	fill(a.start, a.pages, 0, 2, 0);
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	if (pageout(r, &a) || count_swapped(r, &a))
		goto out;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static int protect_cycle(struct run *r, const struct area *a)
{
	if (mprotect(a->start, a->size, PROT_READ) || mprotect(a->start, a->size, PROT_READ | PROT_WRITE))
		return fail(r, "mprotect");
	return 0;
}

static int mprotect_phase(struct run *r)
{
	struct child c = { .pid = -1 };
	struct area a;
	int ret = -1;

	if (base_area(r, &a))
		return -1;
	if (spawn_checker(r, &c, &a, 1, 0) || protect_cycle(r, &a))
		goto out;
	fill(a.start, a.pages, 0, 2, 0);
	if (step(r, &c))
		goto out;
	ret = reap(r, &c, 0);
	if (ret)
		goto out;
	ret = -1;
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	if (protect_cycle(r, &a))
		goto out;
	fill(a.start, a.pages, 0, 3, 0);
	check(a.start, a.pages, 0, 3, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

/* A pipe that holds size bytes, or as much as fs.pipe-max-size allows: its size, or -1. */
static long big_pipe(struct run *r, int *fds, size_t size)
{
	long max = get("/proc/sys/fs/pipe-max-size"), got;

	if (pipe(fds))
		return fail(r, "pipe");
	if (max > 0 && (size_t)max < size)
		size = max;
	got = fcntl(fds[1], F_SETPIPE_SZ, (int)size);
	if (got < 0)
		got = fcntl(fds[1], F_GETPIPE_SZ);
	if (got < page) {
		fail(r, "fcntl(F_SETPIPE_SZ)");
		close(fds[0]);
		close(fds[1]);
		fds[0] = fds[1] = -1;	/* closed: the caller's cleanup must not close them again */
		return -1;
	}
	return got;
}

static int read_all(int fd, unsigned char *buffer, size_t size)
{
	size_t got = 0;
	ssize_t done;

	while (got < size) {
		done = read(fd, buffer + got, size - got);
		if (done < 0 && errno == EINTR)
			continue;
		if (done <= 0)
			return -1;
		got += done;
	}
	return 0;
}

static int vmsplice_phase(struct run *r)
{
	struct child c = { .pid = -1 };
	unsigned char *buffer = NULL;
	int ret = -1, fds[2] = { -1, -1 };
	size_t chunk, offset, size = base_size < VMSPLICE_MAX ? base_size : VMSPLICE_MAX;
	struct area a;
	long piped;

	if (map_area(r, &a, size, MADV_NOHUGEPAGE))
		return -1;
	piped = big_pipe(r, fds, size);
	if (piped < 0)
		goto out;
	chunk = (size_t)piped < size ? (size_t)piped / page * page : size;
	buffer = malloc(chunk);
	if (!buffer) {
		fail(r, "malloc");
		goto out;
	}
	fill(a.start, a.pages, 0, 1, 0);
	for (offset = 0; offset < size; offset += chunk) {
		size_t length = size - offset < chunk ? size - offset : chunk;
		struct iovec iov = { a.start + offset, length };
		ssize_t done;
		size_t p;

		switch (spawn(&c)) {
		case -1:
			fail(r, "fork");
			goto out;
		case 0:
			await(&c);
			while (iov.iov_len) {
				done = vmsplice(fds[1], &iov, 1, 0);	/* no SPLICE_F_GIFT */
				if (done < 0 && errno == EINTR)
					continue;
				if (done <= 0)
					_exit(2);
				iov.iov_base = (char *)iov.iov_base + done;
				iov.iov_len -= done;
			}
			munmap(a.mapped, a.mapped_size);
			_exit(0);
		}
		if (go(&c)) {
			fail(r, "the child is gone");
			goto out;
		}
		ret = reap(r, &c, 0);	/* the pages are mapped once again, and pinned by the pipe */
		if (ret) {
			snprintf(r->why + strlen(r->why), sizeof(r->why) - strlen(r->why),
				 " (exit 2: vmsplice failed)");
			goto out;
		}
		ret = -1;
		fill(a.start + offset, length / page, offset / page, 2, 0);
		if (read_all(fds[0], buffer, length)) {
			fail(r, "read from the pipe");
			goto out;
		}
		for (p = 0; p < length / page; p++)
			check_page(buffer + p * page, offset / page + p, 1, 0, "pipe", &r->tally);
	}
	check(a.start, a.pages, 0, 2, 0, "parent", &r->tally);
	ret = 0;
out:
	ret = reap(r, &c, ret);
	if (fds[0] >= 0) {
		close(fds[0]);
		close(fds[1]);
	}
	free(buffer);
	r->pages += a.pages;
	unmap_area(&a);
	return ret;
}

static const struct {
	const char *name;
	int (*run)(struct run *r);
} phases[] = {
	{ "forkparent", forkparent },
	{ "forkchild", forkchild },
	{ "swapbefore", swapbefore },
	{ "swapafter", swapafter },
	{ "swapwrite", swapwrite },
	{ "swapreadwrite", swapreadwrite },
	{ "zeropage", zeropage },
	{ "ksm", ksm },
	{ "thppmd", thppmd },
	{ "thppte", thppte },
	{ "thpcollapse", thpcollapse },
	{ "childexit", childexit },
	{ "mprotect", mprotect_phase },
	{ "vmsplice", vmsplice_phase },
};

int main(int argc, char **argv)
{
	long rounds;
	char phase[64];

	page = sysconf(_SC_PAGESIZE);
	words = page / sizeof(uint64_t);
	if (argc != 3 || atol(argv[1]) <= 0 || atol(argv[2]) <= 0) {
		fprintf(stderr, "usage: integrity SIZE_MB ROUNDS\n");
		return 2;
	}
	base_size = (size_t)atol(argv[1]) << 20;
	rounds = atol(argv[2]);
	signal(SIGPIPE, SIG_IGN);	/* a dead child is an error of the phase, not of the program */
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), base_size / page);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		struct run r;
		size_t i;
		long round;
		int ret = 0, f;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		for (i = 0; i < sizeof(phases) / sizeof(phases[0]); i++)
			if (!strcmp(phase, phases[i].name))
				break;
		if (i == sizeof(phases) / sizeof(phases[0])) {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		memset(&r, 0, sizeof(r));
		for (round = 0; round < rounds && !ret; round++)
			ret = phases[i].run(&r);
		/* an error line still says what was read back wrong before it (a child killed by bad data) */
		if (ret)
			printf("error %s %s checked=%llu wrong=%llu", phase, r.why,
			       (unsigned long long)r.tally.checked, (unsigned long long)r.tally.wrong);
		else
			printf("done %s pages=%zu seconds=%.6f checked=%llu wrong=%llu", phase, r.pages,
			       now() - started, (unsigned long long)r.tally.checked,
			       (unsigned long long)r.tally.wrong);
		if (r.tally.wrong)
			printf(" first=%s:%llu expected=0x%016llx found=0x%016llx", r.tally.who,
			       (unsigned long long)r.tally.page, (unsigned long long)r.tally.expected,
			       (unsigned long long)r.tally.found);
		for (f = 0; f < r.figures && !ret; f++)
			printf(" %s=%ld", r.names[f], r.values[f]);
		printf("\n");
	}
	return 0;
}
