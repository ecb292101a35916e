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
 * shadow entries when reclaimed). Prints "ready pid=PID pages=N", then reads one phase name per
 * line from stdin and answers "done PHASE pages=N seconds=S anon_pages=A file_pages=F":
 *   fill     write every anonymous page, then read the first FILE_MB of DEVICE: what does not fit
 *            under memory.max is reclaimed (anonymous pages to swap, file pages dropped)
 *   refault  read every anonymous page and read the file again: what was reclaimed comes back
 *            (swap-ins and refaults), and reclaim makes room for it again
 *   stream   read the file twice more and leave the anonymous memory alone: how much of the
 *            idle anonymous memory reclaim takes for page cache that is used once
 *   quit     exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 << 10)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Read size bytes of fd from its start through the page cache; -1 on an error or a short disk. */
static long read_file(int fd, size_t size, unsigned long *sum)
{
	static unsigned char buffer[CHUNK];
	size_t done = 0;

	errno = 0;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	while (done < size) {
		ssize_t got = read(fd, buffer, size - done < CHUNK ? size - done : CHUNK);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return -1;
		*sum += buffer[0];
		done += got;
	}
	return (long)done;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t anon_size, file_size, anon_pages, file_pages, i;
	volatile unsigned char *anon;
	unsigned long sum = 0;
	char phase[64];
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
	fd = open(argv[3], O_RDONLY);
	if (fd < 0) {
		printf("error open %s %s\n", argv[3], strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready pid=%d pages=%zu\n", getpid(), anon_pages + file_pages);

	while (fgets(phase, sizeof(phase), stdin)) {
		double started = now();
		size_t anon_done = anon_pages, file_done = file_pages;
		long got = 0;

		phase[strcspn(phase, "\n")] = 0;
		if (!strcmp(phase, "quit"))
			break;
		if (!strcmp(phase, "fill")) {
			for (i = 0; i < anon_pages; i++)
				anon[i * page] = (unsigned char)(i + 1);
			got = read_file(fd, file_size, &sum);
		} else if (!strcmp(phase, "refault")) {
			for (i = 0; i < anon_pages; i++)
				sum += anon[i * page];
			got = read_file(fd, file_size, &sum);
		} else if (!strcmp(phase, "stream")) {
			got = read_file(fd, file_size, &sum);
			if (got >= 0)
				got = read_file(fd, file_size, &sum);
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
		printf("done %s pages=%zu seconds=%.6f anon_pages=%zu file_pages=%zu\n", phase, anon_done + file_done,
		       now() - started, anon_done, file_done);
	}
	return sum == 42 ? 3 : 0;	/* keeps the reads from being optimised away */
}
