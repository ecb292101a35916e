// SPDX-License-Identifier: GPL-2.0
/*
 * harness-collect: the guest half of harness/measure/collectors.py. One process per boot, started
 * over SSH, that counts around every phase without starting another: the counters are opened with
 * perf_event_open(2), the snapshots read with read(2), so that a phase boundary costs one line
 * sent and one reply, not a shell, two perf processes and their start-up.
 *
 * It reads one request per line (fields separated by tabs) and answers each with "=="-headed
 * sections, then a last line "== ok" or "== error WHY":
 *   setup PROBE...        kprobe events kprobes:PROBE, and the function profiler's filter of them
 *   calls FUNCTION...     add the functions the profiler can see to its filter (after setup);
 *                         says "unseen FUNCTION" for each one it cannot
 *   cause DEFINITION KB   a kprobe event (kprobe_events syntax) whose records go to the tracing
 *                         buffer (KB per CPU) in every counted phase
 *   count EVENT,...       open the whole guest's counters of the events (kprobes:NAME, page-faults,
 *                         major-faults, minor-faults) on every CPU, and start the function profiler:
 *                         the counters of the boot, read at every phase boundary, never restarted
 *   warm                  a phase boundary's begin and end, for nothing: what the guest does only the
 *                         first time (2 write faults in the SSH server as it passes on the first long
 *                         reply, seen in benchmarks/idle_background.py) then falls in no phase
 *   begin [PID] [CGROUP]  open PID's counters (each of its threads, children inherited), then the
 *                         snapshot: the profiler's counts so far, vmstat, swap, zswap, PID, CGROUP
 *   end [CGROUP] [PID]    the snapshot, then what the phase counted: perf stat -x, style lines of
 *                         the whole guest and of PID, and the cause records
 *   quit
 * The windows nest as they did around a perf process per phase: PID's counters and the whole guest's
 * reading outermost, then the cause records, then the profiler's reading, then the snapshot, so that
 * each sees the copies of the one inside it. Without count, begin and end are the snapshot alone (a
 * timed boot). Its memory is locked from the start: it takes no page fault in the phases it counts.
 * HARNESS_TRACING names another tracing folder: for a test on the host.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_EVENTS 16
#define MAX_CPUS 64
#define MAX_THREADS 256
#define MAX_FIELDS 64

static const char *tracing = "/sys/kernel/tracing";
static char cause[128];			/* the cause event's name, once set up */
static int counting;			/* count has opened the whole guest's counters */

struct event {
	char name[96];			/* as perf names it: kprobes:NAME, page-faults */
	uint32_t type;
	uint64_t config;
	int system[MAX_CPUS];		/* the whole guest's counter on each CPU */
	uint64_t at_begin;		/* their sum when the phase began */
	int process[MAX_THREADS];	/* the phase's counters of the workload's threads */
	int threads;
};

static struct event events[MAX_EVENTS];
static int nevents, ncpus;
static FILE *out;			/* where replies go */

static void error_reply(const char *format, const char *what, int error)
{
	fprintf(out, "== error ");
	fprintf(out, format, what);
	if (error)
		fprintf(out, ": %s", strerror(error));
	fprintf(out, "\n");
}

static int write_file(const char *path, const char *text, int append)
{
	int fd = open(path, O_WRONLY | (append ? O_APPEND : O_TRUNC));
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	n = n < 0 ? -errno : 0;
	close(fd);
	return n;
}

static int tracing_write(const char *file, const char *text, int append)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", tracing, file);
	return write_file(path, text, append);
}

/* Copy a file to stdout; each line with prefix before it when prefix is not NULL. */
static void print_file(const char *path, const char *prefix)
{
	static char buffer[65536];
	FILE *file = fopen(path, "r");

	if (!file)
		return;
	if (!prefix) {
		size_t n;

		while ((n = fread(buffer, 1, sizeof(buffer), file)) > 0)
			fwrite(buffer, 1, n, out);
	} else {
		while (fgets(buffer, sizeof(buffer), file))
			fprintf(out, "%s%s", prefix, buffer);
	}
	fclose(file);
}

/* The lines of path that are one of keys and a number ("Key: N kB" of /proc, "key N" of a cgroup's files), as
 * "Key N". */
static void print_keyed(const char *path, const char *const *keys, const char *rename_from, const char *rename_to)
{
	char line[512];
	FILE *file = fopen(path, "r");

	if (!file)
		return;
	while (fgets(line, sizeof(line), file)) {
		for (const char *const *key = keys; *key; key++) {
			size_t length = strlen(*key);
			const char *rest = line + length;
			unsigned long long value;

			if (strncmp(line, *key, length))
				continue;
			rest += *rest == ':';
			if ((*rest != ' ' && *rest != '\t') || sscanf(rest, "%llu", &value) != 1)
				continue;
			fprintf(out, "%s %llu\n", rename_from && !strcmp(*key, rename_from) ? rename_to : *key, value);
		}
	}
	fclose(file);
}

static int read_text(const char *path, char *text, size_t size)
{
	FILE *file = fopen(path, "r");
	size_t n;

	if (!file)
		return -1;
	n = fread(text, 1, size - 1, file);
	fclose(file);
	text[n] = 0;
	text[strcspn(text, "\n")] = 0;
	return 0;
}

static void snapshot(const char *cgroup, const char *pid)
{
	static const char *const swap[] = { "SwapTotal", "SwapFree", NULL };
	static const char *const status[] = { "VmSwap", "VmRSS", NULL };
	char path[512], value[64];
	const char *zswap = "/sys/kernel/debug/zswap";
	DIR *folder;

	fprintf(out, "== vmstat\n");
	print_file("/proc/vmstat", NULL);
	fprintf(out, "== swap\n");
	print_keyed("/proc/meminfo", swap, NULL, NULL);
	if (!read_text("/sys/module/zswap/parameters/enabled", value, sizeof(value)) && !strcmp(value, "Y") &&
	    (folder = opendir(zswap))) {
		struct dirent *entry;

		fprintf(out, "== zswap\n");
		while ((entry = readdir(folder))) {
			if (entry->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", zswap, entry->d_name);
			if (!read_text(path, value, sizeof(value)) && value[0])
				fprintf(out, "%s:%s\n", path, value);
		}
		closedir(folder);
	}
	snprintf(path, sizeof(path), "/proc/%s/status", pid);
	if (pid[0] && access(path, R_OK) == 0) {
		fprintf(out, "== process\n");
		print_keyed(path, status, NULL, NULL);
	}
	if (cgroup[0] && access(cgroup, X_OK) == 0) {
		static const char *const oom[] = { "oom_kill", NULL };

		fprintf(out, "== memcg\n");
		snprintf(path, sizeof(path), "%s/memory.current", cgroup);
		if (!read_text(path, value, sizeof(value)))
			fprintf(out, "memory.current %s\n", value);
		snprintf(path, sizeof(path), "%s/memory.swap.current", cgroup);
		if (!read_text(path, value, sizeof(value)))
			fprintf(out, "memory.swap.current %s\n", value);
		snprintf(path, sizeof(path), "%s/memory.events", cgroup);
		print_keyed(path, oom, "oom_kill", "memory.events.oom_kill");
		snprintf(path, sizeof(path), "%s/memory.stat", cgroup);
		print_file(path, "memory.stat.");
	}
}

static void profile(void)
{
	char path[512];

	fprintf(out, "== profile\n");
	for (int cpu = 0; cpu < ncpus; cpu++) {
		snprintf(path, sizeof(path), "%s/trace_stat/function%d", tracing, cpu);
		print_file(path, NULL);
	}
}

static int open_counter(struct event *event, pid_t pid, int cpu, int inherit)
{
	struct perf_event_attr attr = {
		.size = sizeof(attr), .type = event->type, .config = event->config, .inherit = inherit,
		.read_format = PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING,
	};

	return syscall(SYS_perf_event_open, &attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC);
}

/* Add a counter's value and the time it ran to *value and *running. */
static void add_reading(int fd, uint64_t *value, uint64_t *running)
{
	uint64_t read_values[3];

	if (fd >= 0 && read(fd, read_values, sizeof(read_values)) == sizeof(read_values)) {
		*value += read_values[0];
		*running += read_values[2];
	}
}

static uint64_t system_count(struct event *event)
{
	uint64_t value = 0, running = 0;

	for (int cpu = 0; cpu < ncpus; cpu++)
		add_reading(event->system[cpu], &value, &running);
	return value;
}

static int event_of(struct event *event, const char *name)
{
	static const struct { const char *name; uint64_t config; } software[] = {
		{ "page-faults", PERF_COUNT_SW_PAGE_FAULTS },
		{ "major-faults", PERF_COUNT_SW_PAGE_FAULTS_MAJ },
		{ "minor-faults", PERF_COUNT_SW_PAGE_FAULTS_MIN },
	};
	char path[512], id[32];

	snprintf(event->name, sizeof(event->name), "%s", name);
	for (size_t i = 0; i < sizeof(software) / sizeof(software[0]); i++) {
		if (!strcmp(name, software[i].name)) {
			event->type = PERF_TYPE_SOFTWARE;
			event->config = software[i].config;
			return 0;
		}
	}
	if (strncmp(name, "kprobes:", 8))
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/events/kprobes/%s/id", tracing, name + 8);
	if (read_text(path, id, sizeof(id)))
		return -errno;
	event->type = PERF_TYPE_TRACEPOINT;
	event->config = strtoull(id, NULL, 10);
	return 0;
}

static void count(char *list)
{
	int error;

	ncpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (ncpus > MAX_CPUS)
		ncpus = MAX_CPUS;
	for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
		struct event *event = &events[nevents];

		if (nevents == MAX_EVENTS)
			return error_reply("more than %s events", "16", 0);
		if ((error = event_of(event, name)))
			return error_reply("no event %s", name, -error);
		for (int cpu = 0; cpu < ncpus; cpu++) {
			event->system[cpu] = open_counter(event, -1, cpu, 0);
			if (event->system[cpu] < 0)
				return error_reply("perf_event_open of %s in the whole guest", name, errno);
		}
		nevents++;
	}
	if ((error = tracing_write("function_profile_enabled", "1", 0)))
		return error_reply("%s/function_profile_enabled", tracing, -error);
	counting = 1;
	fprintf(out, "== ok\n");
}

/* Open the counters of every thread of pid; their children are counted too (inherit). */
static void follow(const char *pid)
{
	char path[64];
	struct dirent *entry;
	DIR *tasks;

	snprintf(path, sizeof(path), "/proc/%s/task", pid);
	if (!pid[0] || !(tasks = opendir(path)))
		return;
	while ((entry = readdir(tasks))) {
		if (entry->d_name[0] == '.')
			continue;
		for (int i = 0; i < nevents; i++) {
			struct event *event = &events[i];

			if (event->threads < MAX_THREADS)
				event->process[event->threads++] = open_counter(event, atoi(entry->d_name), -1, 1);
		}
	}
	closedir(tasks);
}

/* perf stat -x, lines of the process's counters. The count stands whatever the run time says: a
 * software or tracepoint event is never multiplexed, and a guest whose TSC failed calibration keeps
 * time in jiffies, so a process that ran for less than a tick reads a run time of 0 with its counts. */
static void print_process(void)
{
	if (!nevents || !events[0].threads)
		return;
	fprintf(out, "== perf process\n");
	for (int i = 0; i < nevents; i++) {
		struct event *event = &events[i];
		uint64_t value = 0, running = 0;
		int opened = 0;

		for (int t = 0; t < event->threads; t++) {
			opened += event->process[t] >= 0;
			add_reading(event->process[t], &value, &running);
			if (event->process[t] >= 0)
				close(event->process[t]);
		}
		event->threads = 0;
		if (!opened)
			fprintf(out, "<not supported>,,%s,0,0.00,,\n", event->name);
		else
			fprintf(out, "%llu,,%s,%llu,100.00,,\n", (unsigned long long)value, event->name,
			       (unsigned long long)running);
	}
}

/* on: empty the tracing buffer and start recording causes; off: stop. */
static void cause_switch(int on)
{
	char path[512];

	if (!cause[0])
		return;
	snprintf(path, sizeof(path), "events/kprobes/%s/enable", cause);
	if (on)
		tracing_write("trace", "", 0);	/* empties every CPU's buffer and its lost counts */
	tracing_write(path, on ? "1" : "0", 0);
}

static void cause_records(void)
{
	char path[512];

	if (!cause[0])
		return;
	fprintf(out, "== cow causes lost\n");
	for (int cpu = 0; cpu < ncpus; cpu++) {
		snprintf(path, sizeof(path), "%s/per_cpu/cpu%d/stats", tracing, cpu);
		print_file(path, NULL);
	}
	fprintf(out, "== cow causes\n");
	snprintf(path, sizeof(path), "%s/trace", tracing);
	print_file(path, NULL);
}

static void begin(const char *pid, const char *cgroup)
{
	if (counting) {
		follow(pid);
		for (int i = 0; i < nevents; i++)
			events[i].at_begin = system_count(&events[i]);
		cause_switch(1);
		profile();
	}
	snapshot(cgroup, pid);
}

static void end(const char *cgroup, const char *pid)
{
	snapshot(cgroup, pid);
	if (counting) {
		uint64_t counted[MAX_EVENTS];
		FILE *reply = out;
		char *profiled = NULL;
		size_t size = 0;

		/* read inside the cause window, said after the counts: the cause records come last, since
		 * there can be many of them (harness/measure/collectors.py keeps the first few in raw/) */
		out = open_memstream(&profiled, &size);
		if (out)
			profile(), fclose(out);
		out = reply;
		cause_switch(0);
		for (int i = 0; i < nevents; i++)
			counted[i] = system_count(&events[i]) - events[i].at_begin;
		fprintf(out, "== perf system\n");
		for (int i = 0; i < nevents; i++)
			fprintf(out, "%llu,,%s,,100.00,,\n", (unsigned long long)counted[i], events[i].name);
		print_process();
		if (profiled)
			fwrite(profiled, 1, size, out);
		free(profiled);
		cause_records();
	}
}

static void setup(char **probes, int n)
{
	char line[256];
	int error;

	if ((error = tracing_write("set_ftrace_filter", "", 0)))
		return error_reply("%s/set_ftrace_filter", tracing, -error);
	for (int i = 0; i < n; i++) {
		snprintf(line, sizeof(line), "p:%s %s\n", probes[i], probes[i]);
		if ((error = tracing_write("kprobe_events", line, 1)))
			return error_reply("kprobe_events refused p:%s", probes[i], -error);
		snprintf(line, sizeof(line), "%s\n", probes[i]);
		if ((error = tracing_write("set_ftrace_filter", line, 1)))
			return error_reply("set_ftrace_filter refused %s", probes[i], -error);
	}
	fprintf(out, "== ok\n");
}

static void calls(char **functions, int n)
{
	char path[512], line[512];
	int found[MAX_FIELDS] = { 0 };
	FILE *available;

	snprintf(path, sizeof(path), "%s/available_filter_functions", tracing);
	available = fopen(path, "r");
	while (available && fgets(line, sizeof(line), available)) {	/* one pass, however many are asked */
		line[strcspn(line, "\n")] = 0;
		for (int i = 0; i < n; i++)
			found[i] |= !strcmp(line, functions[i]);
	}
	if (available)
		fclose(available);
	for (int i = 0; i < n; i++) {
		snprintf(line, sizeof(line), "%s\n", functions[i]);
		if (!found[i] || tracing_write("set_ftrace_filter", line, 1))
			fprintf(out, "unseen %s\n", functions[i]);
	}
	fprintf(out, "== ok\n");
}

static void cause_event(const char *definition, const char *kb)
{
	char name[128], path[512], line[1024];
	const char *start = strncmp(definition, "p:", 2) ? definition : definition + 2;

	snprintf(name, sizeof(name), "%.*s", (int)strcspn(start, " "), start);
	snprintf(line, sizeof(line), "%s\n", definition);
	snprintf(path, sizeof(path), "%s/events/kprobes/%s", tracing, name);
	if (tracing_write("kprobe_events", line, 1) || access(path, F_OK))
		return error_reply("kprobe_events refused: %s", definition, 0);
	snprintf(line, sizeof(line), "%s\n", kb);
	tracing_write("buffer_size_kb", line, 0);
	tracing_write("options/record-tgid", "1", 0);	/* absent before 4.13: no tgid column then */
	snprintf(cause, sizeof(cause), "%s", name);
	fprintf(out, "== ok\n");
}

int main(void)
{
	char line[4096];
	char *fields[MAX_FIELDS];

	if (getenv("HARNESS_TRACING"))
		tracing = getenv("HARNESS_TRACING");
	/* Every page of this program in memory before the first phase, and every page it maps later as it is
	 * mapped: its own faults and copies then stay out of the phases it counts. */
	mlockall(MCL_CURRENT | MCL_FUTURE);
	out = stdout;
	while (fgets(line, sizeof(line), stdin)) {
		int n = 0, whole = strchr(line, '\n') != NULL;
		char *tab = NULL;

		line[strcspn(line, "\n")] = 0;
		for (char *field = line; n < MAX_FIELDS; field = tab + 1) {
			tab = strchr(field, '\t');
			fields[n++] = field;
			if (!tab)
				break;
			*tab = 0;
		}
		if (!whole || tab) {	/* never half a request: a line too long, or too many fields */
			char name[33];

			snprintf(name, sizeof(name), "%s", fields[0]);
			while (!whole && fgets(line, sizeof(line), stdin) && !strchr(line, '\n'))
				;
			error_reply("request %s: longer than 4095 bytes or 64 fields", name, 0);
			fflush(out);
			continue;
		}
		if (!strcmp(fields[0], "quit"))
			break;
		else if (!strcmp(fields[0], "setup"))
			setup(fields + 1, n - 1);
		else if (!strcmp(fields[0], "calls"))
			calls(fields + 1, n - 1);
		else if (!strcmp(fields[0], "cause") && n == 3)
			cause_event(fields[1], fields[2]);
		else if (!strcmp(fields[0], "count") && n == 2 && !counting)
			count(fields[1]);
		else if (!strcmp(fields[0], "begin") && n == 3)
			begin(fields[1], fields[2]), fprintf(out, "== ok\n");
		else if (!strcmp(fields[0], "end") && n == 3)
			end(fields[1], fields[2]), fprintf(out, "== ok\n");
		else if (!strcmp(fields[0], "warm") && n == 1)
			begin("", ""), end("", ""), fprintf(out, "== ok\n");
		else
			error_reply("unknown request %s: setup, calls, cause, count, warm, begin, end or quit", fields[0], 0);
		fflush(out);
	}
	return 0;
}
