// SPDX-License-Identifier: GPL-2.0
/*
 * reclaim: reclaim and the LRU lists under a memory cgroup's memory.max, with anonymous memory and
 * page cache together, one step per phase.
 *
 *   reclaim ANON_MB FILE_MB DEVICE
 *
 * Runs inside a memory cgroup whose memory.max is below ANON_MB + FILE_MB (the harness puts it
 * there). Maps ANON_MB of private anonymous memory (4 KiB pages) and opens DEVICE, a disk read
 * through the page cache (buffered reads of a block device: file pages on the file LRU, with
 * shadow entries when reclaimed). Before "ready" (not measured) it writes a pattern to the first
 * FILE_MB of DEVICE with O_DIRECT (or write(), fsync() and POSIX_FADV_DONTNEED where O_DIRECT is
 * refused), so that the page cache holds none of it: the harness gives a fresh disk of zeros. Prints
 * "ready pid=PID pages=N", then reads one phase name per line from stdin and answers
 * "done PHASE pages=N seconds=S checked=C wrong=W anon_pages=A file_pages=F":
 *   fill     write every anonymous page, then read the first FILE_MB of DEVICE: what does not fit
 *            under memory.max is reclaimed (anonymous pages to swap, file pages dropped); every
 *            block read is checked
 *   refault  read and check every anonymous page and read the file again: what was reclaimed
 *            comes back (swap-ins and refaults), and reclaim makes room for it again
 *   stream   read the file twice more and leave the anonymous memory alone: how much of the
 *            idle anonymous memory reclaim takes for page cache that is used once
 *   quit     exit
 * An anonymous page and a 4 KiB block of the disk hold three 8-byte words keyed by their index (the
 * first, the last, and one at an offset derived from the index; the first is written first, so the
 * fault is the one a write of its first byte would take) and zeros elsewhere. A check reads them
 * and the word at offset 8 (zero). checked= counts the pages and blocks checked, wrong= those that
 * did not hold what was written; when wrong > 0, first=page:I (anonymous) or file:B (block B of the
 * disk) and expected=/found= give the first wrong word. A wrong page is reported, never an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 << 10)
#define BLOCK 4096

/* The buffer of the disk's reads. */
static unsigned char buffer[CHUNK];

/* What a phase checked: pages and blocks checked, how many were wrong, and the first wrong word. */
struct check {
	unsigned long checked, wrong;
	char first[40];
	uint64_t expected, found;
};

/* What the words are keyed by besides the index. */
enum { ANON = 1, FILE_BLOCK };

static uint64_t mix(uint64_t x)	/* splitmix64's finaliser */
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Word slot (0: first, 1: last, 2: derived) of page or block index of kind tag, generation 1. */
static uint64_t word(unsigned int tag, size_t index, unsigned int slot)
{
	return mix(mix(((uint64_t)tag << 48) ^ 1) ^ ((uint64_t)index << 2 | slot));
}

/* The derived word's offset in a page or block of len bytes: 16 .. len - 24, never the word at 8. */
static size_t derived(size_t index, size_t len)
{
	return 16 + 8 * ((index * 2654435761UL) % (len / 8 - 4));
}

/* Write the words of a page or block of len bytes, the first word first. */
static void write_words(volatile unsigned char *p, size_t len, unsigned int tag, size_t index)
{
	*(volatile uint64_t *)p = word(tag, index, 0);
	*(volatile uint64_t *)(p + len - 8) = word(tag, index, 1);
	*(volatile uint64_t *)(p + derived(index, len)) = word(tag, index, 2);
}

/* Read and check the words of a page or block (the first word first) and the word at offset 8 (zero). */
static void check_words(const volatile unsigned char *p, size_t len, unsigned int tag, size_t index,
			const char *who, struct check *c)
{
	size_t at[4] = { 0, len - 8, derived(index, len), 8 };
	unsigned int slot;

	c->checked++;
	for (slot = 0; slot < 4; slot++) {
		uint64_t want = slot < 3 ? word(tag, index, slot) : 0;
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

/*
 * Write the pattern of every block to the first size bytes of path, past the page cache: O_DIRECT, or
 * where that is refused, write(), fsync() and POSIX_FADV_DONTNEED. Returns 0, or -1 with errno set.
 */
static int write_pattern(const char *path, size_t size)
{
	/* a buffer of its own, unmapped after: the reads' buffer is first touched in fill, as before */
	unsigned char *out = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int direct = 1, error = 0, fd;
	size_t done = 0;

	if (out == MAP_FAILED)
		return -1;
	fd = open(path, O_WRONLY | O_DIRECT);
	if (fd < 0 && errno == EINVAL) {
		direct = 0;
		fd = open(path, O_WRONLY);
	}
	if (fd < 0) {
		error = errno;
		munmap(out, CHUNK);
		errno = error;
		return -1;
	}
	while (!error && done < size) {
		size_t want = size - done < CHUNK ? size - done : CHUNK, have = 0, i;

		memset(out, 0, want);
		for (i = 0; i + BLOCK <= want; i += BLOCK)
			write_words(out + i, BLOCK, FILE_BLOCK, (done + i) / BLOCK);
		while (!error && have < want) {
			ssize_t put = write(fd, out + have, want - have);

			if (put < 0 && errno == EINTR)
				continue;
			if (put <= 0)
				error = put < 0 ? errno : ENOSPC;
			else
				have += put;
		}
		done += have;
	}
	if (!error && (fsync(fd) || (!direct && posix_fadvise(fd, 0, size, POSIX_FADV_DONTNEED))))
		error = errno;
	if (close(fd) && !error)
		error = errno;
	munmap(out, CHUNK);
	errno = error;
	return error ? -1 : 0;
}

/* Read size bytes of fd from its start through the page cache, checking every block; -1 on an error or a short disk. */
static long read_file(int fd, size_t size, struct check *c)
{
	size_t done = 0;

	errno = 0;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	while (done < size) {
		size_t want = size - done < CHUNK ? size - done : CHUNK, have = 0, i;

		while (have < want) {
			ssize_t got = read(fd, buffer + have, want - have);

			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				return -1;
			have += got;
		}
		for (i = 0; i + BLOCK <= have; i += BLOCK)
			check_words(buffer + i, BLOCK, FILE_BLOCK, (done + i) / BLOCK, "file", c);
		done += have;
	}
	return (long)done;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t anon_size, file_size, anon_pages, file_pages, i;
	volatile unsigned char *anon;
	char phase[64], said[160];
	struct check check;
	int fd;

	if (argc != 4 || atol(argv[1]) <= 0 || atol(argv[2]) <= 0) {
		fprintf(stderr, "usage: reclaim ANON_MB FILE_MB DEVICE\n");
		return 2;
	}
	anon_size = (size_t)atol(argv[1]) << 20;
	file_size = (size_t)atol(argv[2]) << 20;
	anon_pages = anon_size / page;
	file_pages = file_size / page;
	anon = mmap(NULL, anon_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED) {
		printf("error mmap %s\n", strerror(errno));
		return 1;
	}
	madvise((void *)anon, anon_size, MADV_NOHUGEPAGE);
	if (write_pattern(argv[3], file_size)) {
		printf("error writing %s: %s\n", argv[3], strerror(errno));
		return 1;
	}
	fd = open(argv[3], O_RDONLY);
	if (fd < 0) {
		printf("error open %s %s\n", argv[3], strerror(errno));
		return 1;
	}
	posix_fadvise(fd, 0, file_size, POSIX_FADV_DONTNEED);	/* nothing of the disk cached before fill */
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), anon_pages + file_pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		size_t anon_done = anon_pages, file_done = file_pages;
		long got = 0;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		memset(&check, 0, sizeof(check));
		if (!strcmp(phase, "fill")) {
			for (i = 0; i < anon_pages; i++)
				write_words(anon + i * page, page, ANON, i);
			got = read_file(fd, file_size, &check);
		} else if (!strcmp(phase, "refault")) {
			for (i = 0; i < anon_pages; i++)
				check_words(anon + i * page, page, ANON, i, "page", &check);
			got = read_file(fd, file_size, &check);
		} else if (!strcmp(phase, "stream")) {
			got = read_file(fd, file_size, &check);
			if (got >= 0)
				got = read_file(fd, file_size, &check);
			anon_done = 0;
			file_done = 2 * file_pages;
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		if (got < 0) {
			printf("error %s reading %s: %s\n", phase, argv[3],
			       errno ? strerror(errno) : "the disk is shorter than FILE_MB");
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f %s anon_pages=%zu file_pages=%zu\n", phase, anon_done + file_done,
		       now() - started, checked(&check, said, sizeof(said)), anon_done, file_done);
	}
	return 0;
}
