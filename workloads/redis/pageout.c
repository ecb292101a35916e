// SPDX-License-Identifier: GPL-2.0
/*
 * pageout PID: process_madvise(MADV_PAGEOUT) over every private writable mapping of PID,
 * pushing that process's anonymous memory to swap from outside. Prints
 * "done pageout ranges=N bytes=B".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif
#define MADV_PAGEOUT_ 21

int main(int argc, char **argv)
{
	char path[64], line[512], perms[8];
	unsigned long start, end, total = 0;
	struct iovec iov[512];
	int pidfd, n = 0, ranges = 0;
	FILE *maps;

	if (argc != 2) {
		fprintf(stderr, "usage: pageout PID\n");
		return 2;
	}
	pidfd = syscall(SYS_pidfd_open, atoi(argv[1]), 0);
	snprintf(path, sizeof(path), "/proc/%s/maps", argv[1]);
	maps = fopen(path, "r");
	if (pidfd < 0 || !maps) {
		printf("error cannot open process %s\n", argv[1]);
		return 1;
	}
	while (fgets(line, sizeof(line), maps)) {
		if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3 || perms[1] != 'w' || perms[3] != 'p')
			continue;
		iov[n].iov_base = (void *)start;
		iov[n].iov_len = end - start;
		total += end - start;
		ranges++;
		if (++n == 512) {
			syscall(SYS_process_madvise, pidfd, iov, n, MADV_PAGEOUT_, 0);
			n = 0;
		}
	}
	if (n && syscall(SYS_process_madvise, pidfd, iov, n, MADV_PAGEOUT_, 0) < 0) {
		perror("process_madvise");
		return 1;
	}
	printf("done pageout ranges=%d bytes=%lu\n", ranges, total);
	return 0;
}
