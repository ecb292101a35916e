// SPDX-License-Identifier: GPL-2.0
/*
 * swapcow: the reproducer of "swap out, read fault, write fault" on private anonymous
 * memory, driven phase by phase so that the harness can read counters in between.
 *
 *   swapcow SIZE_MB
 *
 * Prints "ready pid=PID pages=N", then reads one phase name per line from stdin and
 * answers "done PHASE pages=N seconds=S" (or "error PHASE ...") after doing it:
 *   fill     write every page (allocates the memory)
 *   swapout  madvise(MADV_PAGEOUT) over the whole area
 *   read     read one byte of every page (swap-in: mapped read-only)
 *   write    write one byte of every page (the write fault under test)
 *   quit     exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t size, pages, i;
	volatile unsigned char *area;
	unsigned long sum = 0;
	char phase[64];

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
		if (!strcmp(phase, "fill") || !strcmp(phase, "write")) {
			for (i = 0; i < pages; i++)
				area[i * page] = (unsigned char)(i + 1);
		} else if (!strcmp(phase, "swapout")) {
			if (madvise((void *)area, size, MADV_PAGEOUT)) {
				printf("error %s madvise %s\n", phase, strerror(errno));
				continue;
			}
		} else if (!strcmp(phase, "read")) {
			for (i = 0; i < pages; i++)
				sum += area[i * page];
		} else {
			printf("error %s unknown phase\n", phase);
			continue;
		}
		printf("done %s pages=%zu seconds=%.6f\n", phase, pages, now() - started);
	}
	return sum == 42 ? 3 : 0;	/* keeps the reads from being optimised away */
}
