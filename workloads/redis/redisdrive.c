// SPDX-License-Identifier: GPL-2.0
/*
 * redisdrive: the client side of the redis workload, one phase per invocation.
 *
 *   redisdrive PHASE KEYS VALUE_BYTES PIPELINE [PORT [SECONDS]]
 *
 *   fill    SET key:I <VALUE_BYTES bytes>            for every key
 *   read    BITCOUNT key:I   (touches every byte of the value, replies with one integer)
 *   write   SETRANGE key:I 0 <VALUE_BYTES bytes>     overwrite every value in place
 *   mixed   KEYS operations on random keys, half BITCOUNT, half SETRANGE (limit mode); with
 *           SECONDS > 0, as many batches of them as SECONDS allow (a steady state's throughput)
 *   settle  mixed, with other random keys: brings the working set to its steady state first
 *   check   DBSIZE, and STRLEN of every key (pipelined too)
 *
 * Commands go out in pipelined batches of PIPELINE. Prints one line:
 *   done PHASE ops=N seconds=S p50_ms=X p99_ms=Y errors=E [keys=K short=S]
 * where the latencies are those of a whole pipelined batch, as the client sees them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sock;
static char inbuf[1 << 16];
static size_t inlen, inpos;
static char *out;
static size_t outlen, outcap;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	printf("error %s\n", what);
	exit(1);
}

static void put(const void *data, size_t len)
{
	if (outlen + len > outcap) {
		outcap = (outlen + len) * 2;
		out = realloc(out, outcap);
		if (!out)
			die("out of memory");
	}
	memcpy(out + outlen, data, len);
	outlen += len;
}

static void put_arg(const char *data, size_t len)
{
	char head[32];

	put(head, snprintf(head, sizeof(head), "$%zu\r\n", len));
	put(data, len);
	put("\r\n", 2);
}

static void command(int argc, const char **argv, const size_t *lens)
{
	char head[32];
	int i;

	put(head, snprintf(head, sizeof(head), "*%d\r\n", argc));
	for (i = 0; i < argc; i++)
		put_arg(argv[i], lens[i]);
}

static void flush_out(void)
{
	size_t sent = 0;

	while (sent < outlen) {
		ssize_t n = write(sock, out + sent, outlen - sent);

		if (n <= 0)
			die("write to redis failed");
		sent += n;
	}
	outlen = 0;
}

static int get_byte(void)
{
	if (inpos == inlen) {
		ssize_t n = read(sock, inbuf, sizeof(inbuf));

		if (n <= 0)
			die("redis closed the connection");
		inlen = n;
		inpos = 0;
	}
	return (unsigned char)inbuf[inpos++];
}

static void get_line(char *line, size_t size)
{
	size_t len = 0;
	int c;

	while ((c = get_byte()) != '\n')
		if (c != '\r' && len + 1 < size)
			line[len++] = c;
	line[len] = 0;
}

/* Reads one reply; returns its integer value (or bulk length), -1 on an error reply. */
static long long reply(void)
{
	char line[256];
	long long value, i;

	get_line(line, sizeof(line));
	switch (line[0]) {
	case '+':
		return 0;
	case ':':
		return atoll(line + 1);
	case '$':
		value = atoll(line + 1);
		for (i = 0; value >= 0 && i < value + 2; i++)
			get_byte();
		return value;
	default:
		return -1;
	}
}

static int compare(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	const char *phase;
	int mixed;
	long keys, value_bytes, pipeline, batches, done = 0, errors = 0, shortvals = 0, i, b = 0;
	struct sockaddr_in addr = { .sin_family = AF_INET };
	double started, seconds, *latency;
	char *value, key[32];
	int one = 1;

	if (argc < 5) {
		fprintf(stderr, "usage: redisdrive fill|read|write|mixed|settle|check KEYS VALUE_BYTES PIPELINE [PORT [SECONDS]]\n");
		return 2;
	}
	phase = argv[1];
	keys = atol(argv[2]);
	value_bytes = atol(argv[3]);
	pipeline = atol(argv[4]);
	addr.sin_port = htons(argc > 5 ? atoi(argv[5]) : 6379);
	mixed = !strcmp(phase, "mixed") || !strcmp(phase, "settle");
	seconds = argc > 6 && mixed ? atof(argv[6]) : 0;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (keys <= 0 || value_bytes <= 0 || pipeline <= 0)
		die("KEYS, VALUE_BYTES and PIPELINE must be positive");
	sock = socket(AF_INET, SOCK_STREAM, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof(addr)))
		die("cannot connect to redis");
	setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	value = malloc(value_bytes);
	batches = (keys + pipeline - 1) / pipeline;
	latency = calloc(batches + 1, sizeof(double));
	if (!value || !latency)
		die("out of memory");
	memset(value, strcmp(phase, "fill") ? 'w' : 'f', value_bytes);
	srandom(strcmp(phase, "settle") ? 1 : 2);

	started = now();
	if (!strcmp(phase, "check")) {
		const char *dbsize[] = { "DBSIZE" };
		size_t dbsize_len[] = { 6 };
		long long count;

		command(1, dbsize, dbsize_len);
		flush_out();
		count = reply();
		for (i = 0; i < keys; i += pipeline) {	/* in batches, as the phases: a round trip per key is slow */
			long j, n = keys - i < pipeline ? keys - i : pipeline;

			for (j = i; j < i + n; j++) {
				const char *strlen_cmd[] = { "STRLEN", key };
				size_t lens[] = { 6, (size_t)snprintf(key, sizeof(key), "key:%ld", j) };

				command(2, strlen_cmd, lens);
			}
			flush_out();
			for (j = 0; j < n; j++)
				if (reply() != value_bytes)
					shortvals++;
		}
		printf("done check ops=%ld seconds=%.6f p50_ms=0 p99_ms=0 errors=0 keys=%lld short=%ld\n",
		       keys + 1, now() - started, count, shortvals);
		return 0;
	}
	for (i = 0; seconds > 0 ? now() - started < seconds : i < keys; i += pipeline, b++) {
		long j, n = (seconds > 0 || keys - i >= pipeline) ? pipeline : keys - i;
		double sent = now();

		if (b >= batches) {
			batches *= 2;
			latency = realloc(latency, (batches + 1) * sizeof(double));
			if (!latency)
				die("out of memory");
		}
		for (j = 0; j < n; j++) {
			long k = mixed ? random() % keys : i + j;
			int write_op = !strcmp(phase, "write") || (mixed && (k & 1));
			size_t klen = snprintf(key, sizeof(key), "key:%ld", k);

			if (!strcmp(phase, "fill")) {
				const char *args[] = { "SET", key, value };
				size_t lens[] = { 3, klen, (size_t)value_bytes };

				command(3, args, lens);
			} else if (write_op) {
				const char *args[] = { "SETRANGE", key, "0", value };
				size_t lens[] = { 8, klen, 1, (size_t)value_bytes };

				command(4, args, lens);
			} else if (!strcmp(phase, "read") || mixed) {
				const char *args[] = { "BITCOUNT", key };
				size_t lens[] = { 8, klen };

				command(2, args, lens);
			} else {
				die("unknown phase");
			}
		}
		flush_out();
		for (j = 0; j < n; j++)
			if (reply() < 0)
				errors++;
		latency[b] = (now() - sent) * 1000;
		done += n;
	}
	qsort(latency, b, sizeof(double), compare);
	printf("done %s ops=%ld seconds=%.6f p50_ms=%.3f p99_ms=%.3f errors=%ld\n", phase, done, now() - started,
	       latency[b / 2], latency[(b * 99) / 100 < b ? (b * 99) / 100 : b - 1], errors);
	return errors ? 1 : 0;
}
