// SPDX-License-Identifier: GPL-2.0
/*
 * redisdrive: the client side of the redis workload, one phase per invocation.
 *
 *   redisdrive PHASE KEYS VALUE_BYTES PIPELINE [PORT [SECONDS]]
 *
 *   fill    SET key:I <VALUE_BYTES bytes>            for every key
 *   read    BITCOUNT key:I   (touches every byte of the value, replies with one integer), each
 *           reply checked against the bit count the key's value has
 *   write   SETRANGE key:I 0 <VALUE_BYTES bytes>     overwrite every value in place
 *   mixed   KEYS operations on random keys, half BITCOUNT (checked, as in read), half SETRANGE
 *           (limit mode); with SECONDS > 0, as many batches of them as SECONDS allow (a steady
 *           state's throughput)
 *   settle  mixed, with other random keys: brings the working set to its steady state first
 *   check   DBSIZE, and GET of every key (pipelined too): its length and its whole content
 *
 * Commands go out in pipelined batches of PIPELINE. Prints one line:
 *   done PHASE ops=N seconds=S checked=C wrong=W [first=key:I expected=0x.. found=0x.. offset=O]
 *        p50_ms=X p99_ms=Y errors=E [keys=K short=S]
 * where the latencies are those of a whole pipelined batch, as the client sees them. checked= counts
 * the values checked (BITCOUNT replies, or GET replies in check; 0 in fill and write), wrong= those
 * that were not what was written; when wrong > 0, first= names the first wrong key and expected=/found=
 * its bit count (read, mixed, settle) or, in check, the 8 bytes at the first byte that differs
 * (offset=, found=nil for a key that is gone). A wrong value is reported, never an error.
 *
 * Every value says what it is: 16 bytes of header (the magic "RDv1", the key's index, the generation
 * that wrote it and its complement, all 32-bit little-endian), then the key's own pseudo-random
 * pattern rotated by an amount the generation gives. Every write of a key (fill, write, settle, mixed)
 * writes one, so the bit count of a key's value is the same whatever its generation, and check knows
 * the whole content from the key and the generation. A value under 16 bytes is the first bytes of
 * the pattern. Each phase that writes records the generation it left every key at in
 * /tmp/redisdrive-PORT.gens (fill starts it; a phase that fails removes it), which check then
 * demands: a write that was lost is a wrong value too.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* Reads more of what redis sent into inbuf, once it has all been consumed. */
static void fill_in(void)
{
	ssize_t n = read(sock, inbuf, sizeof(inbuf));

	if (n <= 0)
		die("redis closed the connection");
	inlen = n;
	inpos = 0;
}

static int get_byte(void)
{
	if (inpos == inlen)
		fill_in();
	return (unsigned char)inbuf[inpos++];
}

static void get_line(char *line, size_t size);

/*
 * Reads one reply; returns its integer value, or a bulk reply's length (-1 for nil), -1 on an error
 * reply (*failed set, when given). Up to cap bytes of a bulk reply go to data.
 */
static long long reply_data(unsigned char *data, size_t cap, int *failed)
{
	char line[256];
	long long value, have = 0;

	if (failed)
		*failed = 0;
	get_line(line, sizeof(line));
	switch (line[0]) {
	case '+':
		return 0;
	case ':':
		return atoll(line + 1);
	case '$':
		value = atoll(line + 1);
		while (value >= 0 && have < value + 2) {	/* the bytes, then CR LF */
			size_t n;

			if (inpos == inlen)
				fill_in();
			n = inlen - inpos < (size_t)(value + 2 - have) ? inlen - inpos : (size_t)(value + 2 - have);
			if (data && (size_t)have < cap)
				memcpy(data + have, inbuf + inpos, cap - have < n ? cap - have : n);
			inpos += n;
			have += n;
		}
		return value;
	default:
		if (failed)
			*failed = 1;
		return -1;
	}
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

/* Reads one reply; returns its integer value (or bulk length, -1 for nil), -1 on an error reply. */
static long long reply(void)
{
	return reply_data(NULL, 0, NULL);
}

static int compare(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The phases' generations: a write of settle or mixed adds its batch's number (below 2^20). */
#define GEN_FILL 1u
#define GEN_WRITE 2u
#define GEN_SETTLE 0x100000u
#define GEN_MIXED 0x200000u
#define BATCH_GENS 0xfffffu
#define MAGIC 0x31764452u	/* "RDv1" little-endian */
#define HEADER 16

static long value_bytes;
static unsigned char *pattern;	/* the pattern of the key last asked for: value_bytes (rounded up to 8) */

static uint64_t mix(uint64_t x)	/* splitmix64's finaliser */
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The bytes of the body (after the header; all of a value under HEADER bytes). */
static size_t body_bytes(void)
{
	return value_bytes >= HEADER ? (size_t)value_bytes - HEADER : (size_t)value_bytes;
}

/* Key k's pattern (xorshift64 from a seed of the key): body_bytes() bytes into pattern; its bit count. */
static long make_pattern(long k)
{
	size_t len = body_bytes(), i;
	uint64_t x = mix(0x5eed000000000000ULL ^ (uint64_t)k) | 1;
	long bits = 0;

	for (i = 0; i < len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(pattern + i, &x, 8);	/* pattern has room for the last whole word */
		bits += __builtin_popcountll(len - i >= 8 ? x : x & ((1ULL << (8 * (len - i))) - 1));
	}
	return bits;
}

static void put32(unsigned char *to, uint32_t value)
{
	to[0] = value;
	to[1] = value >> 8;
	to[2] = value >> 16;
	to[3] = value >> 24;
}

static uint32_t get32(const unsigned char *from)
{
	return from[0] | from[1] << 8 | from[2] << 16 | (uint32_t)from[3] << 24;
}

/* Key k's value of generation gen into value (value_bytes). */
static void make_value(unsigned char *value, long k, uint32_t gen)
{
	size_t len = body_bytes(), rot;

	make_pattern(k);
	if (value_bytes < HEADER) {
		memcpy(value, pattern, len);
		return;
	}
	put32(value, MAGIC);
	put32(value + 4, (uint32_t)k);
	put32(value + 8, gen);
	put32(value + 12, ~gen);
	rot = len ? (size_t)((gen * 2654435761u) % len) : 0;
	memcpy(value + HEADER, pattern + rot, len - rot);
	memcpy(value + HEADER + len - rot, pattern, rot);
}

/* The bit count every value of key k has, whatever its generation. */
static long value_bits(long k)
{
	long bits = make_pattern(k);

	if (value_bytes >= HEADER)
		bits += __builtin_popcount(MAGIC) + __builtin_popcount((uint32_t)k) + 32;
	return bits;
}

/* What a phase checked: values checked, how many were wrong, and the first wrong one. */
struct check {
	long checked, wrong;
	char first[40], expected[40], found[40];
	long offset;
};

/* Record a wrong value of key k (the first one is kept). */
static void wrong(struct check *c, long k, const char *expected, const char *found, long offset)
{
	if (!c->wrong++) {
		snprintf(c->first, sizeof(c->first), "key:%ld", k);
		snprintf(c->expected, sizeof(c->expected), "%s", expected);
		snprintf(c->found, sizeof(c->found), "%s", found);
		c->offset = offset;
	}
}

/* "0x" and the hex of up to 8 bytes of data from offset (of len), in their order; "none" when there are none. */
static const char *hex8(char *text, const unsigned char *data, long len, long offset)
{
	long i;
	int at = 2;

	if (offset >= len)
		return strcpy(text, "none");
	strcpy(text, "0x");
	for (i = offset; i < len && i < offset + 8; i++)
		at += sprintf(text + at, "%02x", data[i]);
	return text;
}

/* "checked=C wrong=W [first=key:I expected=.. found=.. [offset=O]]" for a done line. */
static const char *checked(const struct check *c)
{
	static char text[256];
	int len = snprintf(text, sizeof(text), "checked=%ld wrong=%ld", c->checked, c->wrong);

	if (c->wrong)
		len += snprintf(text + len, sizeof(text) - len, " first=%s expected=%s found=%s", c->first, c->expected,
				c->found);
	if (c->wrong && c->offset >= 0)
		snprintf(text + len, sizeof(text) - len, " offset=%ld", c->offset);
	return text;
}

/* Check a BITCOUNT reply of key k. */
static void check_bits(struct check *c, long k, long long bits)
{
	long want = value_bits(k);
	char expected[24], found[24];

	c->checked++;
	if (bits == want)
		return;
	snprintf(expected, sizeof(expected), "0x%lx", want);
	snprintf(found, sizeof(found), "0x%llx", bits);
	wrong(c, k, expected, found, -1);
}

/*
 * Check a GET reply of key k (len bytes, of which the first cap are in got; -1: no such key) against
 * generation gen (0: the one the value says). want: room for value_bytes.
 */
static void check_value(struct check *c, long k, const unsigned char *got, long long len, long cap, uint32_t gen,
			unsigned char *want)
{
	char expected[24], found[24];
	long i, end;

	c->checked++;
	if (!gen)	/* no record of the generation: the one the value says, if it is one of ours */
		gen = value_bytes >= HEADER && len >= HEADER && get32(got + 8) == ~get32(got + 12) ? get32(got + 8) : GEN_FILL;
	make_value(want, k, gen);
	if (len < 0) {
		wrong(c, k, hex8(expected, want, value_bytes, 0), "nil", 0);
		return;
	}
	end = len < value_bytes ? len : value_bytes;
	for (i = 0; i < end && got[i] == want[i]; i++)
		;
	if (i == value_bytes && len == value_bytes)
		return;
	hex8(expected, want, value_bytes, i);
	hex8(found, got, len < cap ? len : cap, i);
	wrong(c, k, expected, found, i);
}

/* The generations file of this port: what each key was last written with. */
static char gens_path[64];

/* The generation of every key, as the last phase that wrote left them; NULL when not known. */
static uint32_t *load_gens(long keys)
{
	uint32_t *gens = NULL;
	struct stat st;
	FILE *file = fopen(gens_path, "r");

	if (!file)
		return NULL;
	if (!fstat(fileno(file), &st) && st.st_size == keys * (long)sizeof(uint32_t)) {
		gens = malloc(st.st_size);
		if (gens && fread(gens, sizeof(uint32_t), keys, file) != (size_t)keys) {
			free(gens);
			gens = NULL;
		}
	}
	fclose(file);
	return gens;
}

static void save_gens(const uint32_t *gens, long keys)
{
	char partial[80];
	FILE *file;

	snprintf(partial, sizeof(partial), "%s.partial", gens_path);
	file = fopen(partial, "w");
	if (!file)
		return;
	if (fwrite(gens, sizeof(uint32_t), keys, file) != (size_t)keys) {
		fclose(file);
		unlink(partial);
		return;
	}
	if (fclose(file) || rename(partial, gens_path))
		unlink(partial);
}

int main(int argc, char **argv)
{
	const char *phase;
	int mixed, fill, port;
	long keys, pipeline, batches, done = 0, errors = 0, shortvals = 0, i, b = 0, *asked;
	long long *answers;
	int *writes;
	struct sockaddr_in addr = { .sin_family = AF_INET };
	double started, seconds, *latency;
	unsigned char *value, *got;
	char key[32];
	struct check check = { .offset = -1 };
	uint32_t *gens, phase_gen;
	int one = 1;

	if (argc < 5) {
		fprintf(stderr, "usage: redisdrive fill|read|write|mixed|settle|check KEYS VALUE_BYTES PIPELINE [PORT [SECONDS]]\n");
		return 2;
	}
	phase = argv[1];
	keys = atol(argv[2]);
	value_bytes = atol(argv[3]);
	pipeline = atol(argv[4]);
	port = argc > 5 ? atoi(argv[5]) : 6379;
	addr.sin_port = htons(port);
	mixed = !strcmp(phase, "mixed") || !strcmp(phase, "settle");
	fill = !strcmp(phase, "fill");
	seconds = argc > 6 && mixed ? atof(argv[6]) : 0;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (keys <= 0 || value_bytes <= 0 || pipeline <= 0)
		die("KEYS, VALUE_BYTES and PIPELINE must be positive");
	sock = socket(AF_INET, SOCK_STREAM, 0);
	if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof(addr)))
		die("cannot connect to redis");
	setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	value = malloc(value_bytes * pipeline);	/* a batch's values */
	got = malloc(value_bytes + 16);
	pattern = malloc(value_bytes + 8);
	batches = (keys + pipeline - 1) / pipeline;
	latency = calloc(batches + 1, sizeof(double));
	asked = malloc(pipeline * sizeof(long));	/* a batch's keys, */
	writes = malloc(pipeline * sizeof(int));	/* whether each command writes, */
	answers = malloc(pipeline * sizeof(long long));	/* and what redis answered */
	if (!value || !got || !pattern || !latency || !asked || !writes || !answers)
		die("out of memory");
	snprintf(gens_path, sizeof(gens_path), "/tmp/redisdrive-%d.gens", port);
	gens = fill ? calloc(keys, sizeof(uint32_t)) : load_gens(keys);
	if (fill && !gens)
		die("out of memory");
	if (fill || !strcmp(phase, "write") || mixed)
		unlink(gens_path);	/* until this phase has written all it meant to */
	phase_gen = fill ? GEN_FILL : !strcmp(phase, "write") ? GEN_WRITE : !strcmp(phase, "settle") ? GEN_SETTLE : GEN_MIXED;
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
				const char *get_cmd[] = { "GET", key };
				size_t lens[] = { 3, (size_t)snprintf(key, sizeof(key), "key:%ld", j) };

				command(2, get_cmd, lens);
			}
			flush_out();
			for (j = i; j < i + n; j++) {
				int failed;
				long long len = reply_data(got, value_bytes + 16, &failed);

				if (len != value_bytes)
					shortvals++;
				check_value(&check, j, got, failed ? -1 : len, value_bytes + 16, gens ? gens[j] : 0, value);
			}
		}
		printf("done check ops=%ld seconds=%.6f %s p50_ms=0 p99_ms=0 errors=0 keys=%lld short=%ld\n",
		       keys + 1, now() - started, checked(&check), count, shortvals);
		return 0;
	}
	for (i = 0; seconds > 0 ? now() - started < seconds : i < keys; i += pipeline, b++) {
		long j, n = (seconds > 0 || keys - i >= pipeline) ? pipeline : keys - i;
		uint32_t gen = mixed ? phase_gen + (uint32_t)(b & BATCH_GENS) : phase_gen;
		double sent;

		if (b >= batches) {
			batches *= 2;
			latency = realloc(latency, (batches + 1) * sizeof(double));
			if (!latency)
				die("out of memory");
		}
		for (j = 0; j < n; j++) {	/* the batch's keys and values, before its clock starts */
			long k = mixed ? random() % keys : i + j;

			asked[j] = k;
			writes[j] = fill || !strcmp(phase, "write") || (mixed && (k & 1));
			if (writes[j]) {
				make_value(value + j * value_bytes, k, gen);
				if (gens)
					gens[k] = gen;
			}
		}
		sent = now();
		for (j = 0; j < n; j++) {
			size_t klen = snprintf(key, sizeof(key), "key:%ld", asked[j]);

			if (fill) {
				const char *args[] = { "SET", key, (char *)value + j * value_bytes };
				size_t lens[] = { 3, klen, (size_t)value_bytes };

				command(3, args, lens);
			} else if (writes[j]) {
				const char *args[] = { "SETRANGE", key, "0", (char *)value + j * value_bytes };
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
			answers[j] = reply();
		latency[b] = (now() - sent) * 1000;
		done += n;
		for (j = 0; j < n; j++) {	/* after the clock: the bit counts the values must have */
			if (answers[j] < 0)
				errors++;
			else if (!writes[j])
				check_bits(&check, asked[j], answers[j]);
		}
	}
	qsort(latency, b, sizeof(double), compare);
	printf("done %s ops=%ld seconds=%.6f %s p50_ms=%.3f p99_ms=%.3f errors=%ld\n", phase, done, now() - started,
	       checked(&check), latency[b / 2], latency[(b * 99) / 100 < b ? (b * 99) / 100 : b - 1], errors);
	if (gens && !errors && (fill || !strcmp(phase, "write") || mixed))
		save_gens(gens, keys);
	return errors ? 1 : 0;
}
