"""Counters around a phase: /proc/vmstat and memcg deltas, perf counts of kprobe and software
events (for the workload process and system-wide), and the ftrace function profiler as a
cross-check of the copy count, and the cause of every copy (harness.measure.causes) from a
kprobe event that records the old page's fields in the tracing buffer. The guest half is
guest_tools/harness-collect.c, one process per boot that opens the counters with perf_event_open
once and reads them at every phase boundary (the workload process's at every phase start, as
`perf stat -p` did) and takes the snapshots inside the counting window, so that vmstat, perf and
the cause records count over the same instructions. It prints the counts as `perf stat -x,` does.

Nothing goes missing silently: a probed function that the profiler did not see has 0 hits;
an event perf did not count, or a missing copy count, is a problem that makes the run invalid."""

import re
from dataclasses import dataclass, field

from harness.errors import GuestCommandFailed, HarnessError
from harness.kernel.layout import Layout
from harness.measure import causes

VMSTAT_FIELDS = ("pswpin", "pswpout", "pgfault", "pgmajfault", "pgreuse", "swap_ra", "swap_ra_hit",
                 "pgscan_direct", "pgscan_kswapd", "pgsteal_direct", "pgsteal_kswapd",
                 "workingset_refault_anon", "oom_kill",
                 # reclaim and the LRU (5.8 and later split scans and steals into anon and file)
                 "pgscan_anon", "pgscan_file", "pgsteal_anon", "pgsteal_file", "pgactivate", "pgdeactivate",
                 "pgrefill", "workingset_refault_file", "workingset_activate_anon", "workingset_activate_file",
                 "workingset_restore_anon", "workingset_restore_file",
                 # transparent huge pages (a kernel without THP has none of them)
                 "thp_fault_alloc", "thp_fault_fallback", "thp_collapse_alloc", "thp_collapse_alloc_failed",
                 "thp_split_page", "thp_split_pmd", "thp_deferred_split_page", "thp_swpout", "thp_swpout_fallback",
                 # zswap (6.x counts these in vmstat; 5.10 only in debugfs: the zswap section)
                 "zswpin", "zswpout", "zswpwb")
MEMCG_DELTAS = ("memory.events.oom_kill", "memory.stat.pgfault", "memory.stat.pgmajfault",
                "memory.stat.workingset_refault_anon", "memory.stat.workingset_refault_file",
                "memory.stat.workingset_activate_anon", "memory.stat.workingset_activate_file",
                "memory.stat.pgscan", "memory.stat.pgsteal", "memory.stat.pgactivate", "memory.stat.pgdeactivate",
                "memory.stat.pgrefill")
# zswap's debugfs files (what 5.10 has of zswap's counters): levels are read at the end of the phase, the
# rest are events over the phase.
ZSWAP_LEVELS = ("stored_pages", "pool_total_size", "same_filled_pages")
MEMCG_LEVELS = ("memory.current", "memory.swap.current")
SOFTWARE_EVENTS = ("page-faults", "major-faults", "minor-faults")
CROSS_CHECK_TOLERANCE = 0.01
# Whole-guest counts may differ by a few copies more: the windows of perf and of the profiler (and the cause
# records) open and close one after the other, and another process (the SSH server, a child of the collector's
# shell) can copy a page in between. Measured over 19,506 phases of earlier runs: 19,494 equal, 8 one apart,
# 4 three apart; the most seen, 4 apart of 270. A broken counter is off by far more.
EDGE_COPIES = {"": 2, "system.": 8}
SWAP_FULL_PCT = 50           # vm_swap_full(): past half, swap-in frees the swap slot (no swap cache left)
PAGE = 4096
CAUSE_BUFFER_KB = 8192       # per CPU: about 100,000 copies' records
RAW_RECORDS = 40             # cause records kept in raw/ per phase (all of them are counted)
QUIT_S = 10                  # what harness-collect may take to exit once told to quit
CALLS_PER_REQUEST = 32       # functions in one `calls` request: harness-collect takes at most 63 fields a line


@dataclass
class PhaseCounters:
    """What one phase did, as metric name -> value; warnings to keep with the sample; problems
    that make the run invalid."""
    metrics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    raw: str = ""


def perf_events(probes) -> str:
    """The perf event list; '' (counters off) when there are no probes."""
    return ",".join([f"kprobes:{probe}" for probe in probes] + list(SOFTWARE_EVENTS)) if probes else ""


class Collector:
    """The guest's harness-collect (guest_tools/harness-collect.c), one process per boot, spoken to a request
    per line: its counters are opened once and read at every phase boundary, so that a boundary costs one
    request and its reply, not a shell and a perf process started and stopped in the guest."""

    def __init__(self, session):
        self.process = session.start(["harness-collect"])

    def ask(self, *requests: tuple, timeout: float = 120) -> list[tuple[str, str]]:
        """(reply, error) of each request (its fields), sent at once and answered in order: one round trip
        however many are asked. error is '' or what the guest said went wrong."""
        for fields in requests:
            self.process.send("\t".join(str(field) for field in fields))
        return [self._reply(timeout) for _ in requests]

    def _reply(self, timeout: float) -> tuple[str, str]:
        lines = []
        while True:
            line = self.process.read_line(timeout)
            if line == "== ok" or line.startswith("== error "):
                return "\n".join(lines) + "\n", line.removeprefix("== error ").removeprefix("== ok")
            lines.append(line)

    def told(self, *fields, timeout: float = 120) -> str:
        """The reply of one request; GuestCommandFailed, naming the request, when the guest says it failed."""
        reply, error = self.ask(fields, timeout=timeout)[0]
        if error:
            raise refused(fields[0], error)
        return reply

    def close(self) -> None:
        """Let it go, and wait until it has exited, as a workload's program is let go: dropbear, still tearing
        down the channel of a program that is exiting, failed to open the next command's channel ("Unable to
        open channel.", once in an empty-cache .ci/run). A guest that is gone already cannot be told, and that
        is no new error."""
        try:
            self.process.send("quit")
            self.process.wait(timeout=QUIT_S)
        except HarnessError:
            pass
        self.process.close()


def refused(request: str, error: str) -> GuestCommandFailed:
    """The error of a request harness-collect refused, naming it and saying why."""
    return GuestCommandFailed(command=f"harness-collect {request}", status=1, tail=error)


def start(collector: Collector, probes, layout: Layout | None = None, functions=()) -> tuple[str, list[str]]:
    """Set up the counting of a freshly booted guest in one round trip: the kprobe events and the profiler's
    filter of the probes, the cause event when the kernel's layout is known, the functions the profiler
    also counts in every phase (calls.FUNCTION), then the whole guest's counters and the profiler started,
    and a phase boundary for nothing: the idle phase then holds no first-time work of the collector's.
    Returns (why the guest refused the cause event, or '': the run then has no cause metrics; the functions
    its kernel cannot profile: not in available_filter_functions, as absent, notrace, or in an init section
    freed after boot)."""
    causes_too = layout is not None and not layout.unavailable
    requests = [("setup", *probes)] + ([("cause", layout.event(causes.EVENT), CAUSE_BUFFER_KB)] if causes_too else [])
    functions = list(functions)
    requests += [("calls", *functions[at:at + CALLS_PER_REQUEST]) for at in range(0, len(functions), CALLS_PER_REQUEST)]
    requests += [("count", perf_events(probes)), ("warm",)]
    replies = list(zip((request[0] for request in requests), collector.ask(*requests)))
    failed = [(name, error) for name, (_, error) in replies if error and name != "cause"]
    if failed:
        raise refused(*failed[0])
    no_cause = next((error for name, (_, error) in replies if name == "cause"), "")
    said = f"the guest refused the cause probe ({no_cause}): the cause metrics are absent" if no_cause else ""
    unseen = [line.split(" ", 1)[1] for name, (reply, _) in replies if name == "calls" for line in reply.splitlines()
              if line.startswith("unseen ")]
    return said, unseen


class Phase:
    """Context manager around one phase: `with Phase(...) as counters:`; counters filled on exit."""

    def __init__(self, collector: Collector, probes, cow_probe: str, pid: int | None = None, cgroup: str = "",
                 layout: Layout | None = None, fault_probe: str = "", calls=()):
        self.collector, self.probes, self.cow_probe, self.calls = collector, tuple(probes), cow_probe, tuple(calls)
        self.pid, self.cgroup = pid, cgroup
        self.layout = layout if layout is not None and not layout.unavailable and probes else None
        self.fault_probe = fault_probe
        self.counters = PhaseCounters()
        self.before = ""

    def __enter__(self) -> PhaseCounters:
        self.before = self.collector.told("begin", self.pid or "", self.cgroup)
        return self.counters

    def __exit__(self, kind, value, traceback):
        if kind is not None:    # the phase failed: the cell is over and the guest goes; nothing to count
            return False
        after = self.collector.told("end", self.cgroup, self.pid or "")
        metrics, warnings, problems = counted_phase(self.before, after, self.probes, self.cow_probe, self.pid,
                                                    self.layout, self.fault_probe, self.calls)
        self.counters.metrics.update(metrics)
        self.counters.warnings.extend(warnings)
        self.counters.problems.extend(problems)
        self.counters.raw = "== BEFORE\n" + self.before + "\n== AFTER\n" + shortened(after)
        return False


def counted_phase(before: str, after: str, probes, cow_probe: str, pid: int | None, layout: Layout | None,
                  fault_probe: str = "", calls=()) -> tuple[dict, list, list]:
    """(metrics, warnings, problems) of one phase: the counters, and the copies by cause when layout is given."""
    metrics, warnings, problems = phase_metrics(before, after, probes, cow_probe, has_process=pid is not None,
                                                fault_probe=fault_probe, calls=calls)
    if layout is not None:
        found, said = cause_metrics(sections(after), layout, pid, metrics)
        metrics.update(found)
        warnings.extend(said)
    return metrics, warnings, problems


def sections(text: str) -> dict[str, str]:
    """'== name' headed sections of harness-collect output."""
    found, name, lines = {}, None, []
    for line in text.splitlines():
        if line.startswith("== "):
            if name is not None:
                found[name] = "\n".join(lines)
            name, lines = line[3:].strip(), []
        else:
            lines.append(line)
    if name is not None:
        found[name] = "\n".join(lines)
    return found


def parse_keyed_numbers(text: str) -> dict[str, int]:
    """'name value' lines (/proc/vmstat, the memcg snapshot) -> {name: value}."""
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            values[parts[0]] = int(parts[1])
    return values


def parse_perf_csv(text: str) -> dict[str, int | None]:
    """perf stat -x, output -> {event: count}; None for '<not counted>' / '<not supported>'."""
    counts = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(",")
        if len(fields) < 3:
            continue
        value, event = fields[0], fields[2]
        counts[event] = int(value) if re.fullmatch(r"\d+", value) else None
    return counts


def parse_profile(text: str) -> dict[str, int]:
    """trace_stat/function* (one table per CPU) -> {function: hits summed over CPUs}."""
    hits: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and re.fullmatch(r"\d+", parts[1]) and parts[0] not in ("Function", "--------"):
            hits[parts[0]] = hits.get(parts[0], 0) + int(parts[1])
    return hits


def _event_name(event: str) -> str:
    return event.split(":", 1)[1] if event.startswith("kprobes:") else event


def phase_metrics(before: str, after: str, probes, cow_probe: str, has_process: bool,
                  fault_probe: str = "", calls=()) -> tuple[dict, list, list]:
    """(metrics, warnings, problems) of one phase from harness-collect's begin and end output. calls: the
    functions the profiler counts for patch coverage (count_calls()), each as calls.FUNCTION (every copy of
    it, in the whole guest), 0 when the profiler saw no call."""
    first, last = sections(before), sections(after)
    metrics: dict[str, float] = {}
    metrics.update(_vmstat(first, last))
    metrics.update(_memcg(first, last))
    metrics.update(_zswap(first, last))
    metrics.update(_process(first, last))
    swap, swap_warnings = swap_use(first, last, _swapped_in(metrics))
    metrics.update(swap)
    counted, problems = _perf(last)
    metrics.update(counted)
    metrics.update(_profiled(first, last, probes, calls))
    metrics.update(_copy_counts(metrics, cow_probe, fault_probe, has_process))
    problems += _missing_copy_counts(metrics, probes, cow_probe, has_process)
    warnings = swap_warnings + (cross_check(metrics, cow_probe) if "perf system" in last else [])
    return metrics, warnings, problems


def _swapped_in(metrics: dict) -> float:
    """Pages that came back from swap in the phase: a page still in the swap cache comes back without I/O
    (no pswpin), so the process's own count may be the higher."""
    return max(metrics.get("vmstat.pswpin", 0), metrics.get("process.swapped_in_pages", 0))


def _perf(last: dict) -> tuple[dict, list[str]]:
    """(perf.EVENT of the workload process and perf.system.EVENT, problems: the events perf did not count).
    A count of the process stands whatever run time perf gives it: harness-collect's events are never
    multiplexed, and a guest keeping time in jiffies gives a process that ran for less than a tick a run
    time of 0 (forkcow's reuse phase: 512 write faults, run time 0)."""
    counted: dict[str, float] = {}
    problems: list[str] = []
    for scope, prefix in (("system", "perf.system."), ("process", "perf.")):
        if f"perf {scope}" not in last:
            continue
        for event, count in parse_perf_csv(last[f"perf {scope}"]).items():
            if count is None:
                problems.append(f"perf did not count {event} ({scope})")
            else:
                counted[prefix + _event_name(event)] = count
    return counted, problems


def _profiled(first: dict, last: dict, probes, calls) -> dict:
    """The function profiler's hits in the phase (its counts at the end less those at the start: it runs for
    the whole boot): ftrace.FUNCTION of the probes and of every other function it saw that is not one of the
    calls, and calls.FUNCTION of each of the calls (0 when it saw none)."""
    if "profile" not in last:
        return {}
    before = parse_profile(first.get("profile", ""))
    hits = {function: count - before.get(function, 0) for function, count in parse_profile(last["profile"]).items()
            if count > before.get(function, 0)}
    found = {}
    for function in dict.fromkeys([*probes, *hits]):
        if function in probes or function not in calls:
            found[f"ftrace.{function}"] = hits.get(function, 0)
    for function in calls:
        found[f"calls.{function}"] = hits.get(function, 0)
    return found


def _copy_counts(metrics: dict, cow_probe: str, fault_probe: str, has_process: bool) -> dict:
    """system.cow_copies, cow_copies and wp_faults: perf's counts of the copy and fault probes."""
    found = {}
    if f"perf.system.{cow_probe}" in metrics:
        found["system.cow_copies"] = metrics[f"perf.system.{cow_probe}"]
    if has_process and f"perf.{cow_probe}" in metrics:
        found["cow_copies"] = metrics[f"perf.{cow_probe}"]
    if has_process and fault_probe and f"perf.{fault_probe}" in metrics:
        found["wp_faults"] = metrics[f"perf.{fault_probe}"]
    return found


def _missing_copy_counts(metrics: dict, probes, cow_probe: str, has_process: bool) -> list[str]:
    """The problem of a probed copy count that perf did not give, in the whole guest or in the process."""
    if not (probes and cow_probe in probes):
        return []
    if "system.cow_copies" not in metrics:
        return [f"no count of {cow_probe} from perf"]
    if has_process and "cow_copies" not in metrics:
        return [f"no count of {cow_probe} in the workload process from perf"]
    return []


def swap_use(first: dict, last: dict, swapped_in: float) -> tuple[dict, list[str]]:
    """(swap.used_pct: the higher of the phase's start and end, in % of the swap device; a warning when
    the phase swapped in while more than half of swap was in use): vm_swap_full() then frees the swap
    slot of each page swapped in, so writes after it find no swap cache and copy nothing."""
    used = []
    for snapshot in (first, last):
        values = parse_keyed_numbers(snapshot.get("swap", ""))
        if values.get("SwapTotal"):
            used.append(100 * (values["SwapTotal"] - values.get("SwapFree", 0)) / values["SwapTotal"])
    if not used:
        return {}, []
    warnings = []
    if len(used) == 2 and swapped_in and used[0] > SWAP_FULL_PCT:
        warnings.append(f"vm_swap_full: swap was {used[0]:.0f}% used when this phase began swapping in "
                        f"({swapped_in:,.0f} pages): past {SWAP_FULL_PCT}%, the kernel frees the swap slot of "
                        "each page it swaps in, so fewer pages stay in the swap cache")
    return {"swap.used_pct": round(max(used), 2)}, warnings


def _vmstat(first: dict, last: dict) -> dict:
    before, after = parse_keyed_numbers(first.get("vmstat", "")), parse_keyed_numbers(last.get("vmstat", ""))
    return {f"vmstat.{name}": after[name] - before[name] for name in VMSTAT_FIELDS if name in after and name in before}


def _memcg(first: dict, last: dict) -> dict:
    if "memcg" not in last:
        return {}
    before, after = parse_keyed_numbers(first.get("memcg", "")), parse_keyed_numbers(last["memcg"])
    found = {f"memcg.{name.split('.')[-1]}": after[name] - before[name] for name in MEMCG_DELTAS
             if name in after and name in before}
    found.update({f"memcg.{name.replace('memory.', '').replace('.', '_')}_kb": after[name] // 1024
                  for name in MEMCG_LEVELS if name in after})
    return found


def _zswap(first: dict, last: dict) -> dict:
    """zswap.NAME from its debugfs files ('/sys/kernel/debug/zswap/NAME:VALUE' lines): the levels at the end
    of the phase (pool_total_size in KiB as zswap.pool_kb), every other file as its change over the phase."""
    if "zswap" not in last or "zswap" not in first:
        return {}
    def read(text):
        return {line.rsplit("/", 1)[-1].split(":")[0]: int(line.rsplit(":", 1)[1]) for line in text.splitlines()
                if re.fullmatch(r"\S+:-?\d+", line.strip())}
    before, after = read(first["zswap"]), read(last["zswap"])
    found = {}
    for name, value in after.items():
        if name == "pool_total_size":
            found["zswap.pool_kb"] = value // 1024
        elif name in ZSWAP_LEVELS:
            found[f"zswap.{name}"] = value
        elif name in before:
            found[f"zswap.{name}"] = value - before[name]
    return found


def _process(first: dict, last: dict) -> dict:
    if "process" not in last or "process" not in first:
        return {}
    before, after = parse_keyed_numbers(first["process"]), parse_keyed_numbers(last["process"])
    if "VmSwap" not in after or "VmSwap" not in before:
        return {}
    moved = (after["VmSwap"] - before["VmSwap"]) * 1024 // PAGE
    return {"process.vmswap_kb": after["VmSwap"], "process.swapped_out_pages": max(moved, 0),
            "process.swapped_in_pages": max(-moved, 0)}


def cross_check(metrics: dict, cow_probe: str) -> list[str]:
    """perf (system-wide) and the function profiler must agree on the copy count within 1%."""
    perf, profiled = metrics.get(f"perf.system.{cow_probe}"), metrics.get(f"ftrace.{cow_probe}")
    if perf is None or profiled is None:
        missing = "perf" if perf is None else "the function profiler"
        return [f"cross-check of {cow_probe}: no count from {missing}"]
    if abs(perf - profiled) > max(EDGE_COPIES["system."], CROSS_CHECK_TOLERANCE * max(perf, profiled)):
        return [f"cross-check of {cow_probe}: perf counted {perf}, the function profiler {profiled} "
                f"(> {EDGE_COPIES['system.']} copies and 1% apart)"]
    return []


def cause_metrics(last: dict, layout: Layout, pid: int | None, counted: dict) -> tuple[dict, list[str]]:
    """(cow_copies.CAUSE of the process's thread group and system.cow_copies.CAUSE, warnings) from the end
    of a phase. Records the buffer lost leave the causes absent (never guessed); sums that differ from
    perf's copy counts warn."""
    if "cow causes" not in last:
        return {}, ["no cause records from the guest: the cause metrics are absent"]
    lost = causes.parse_lost(last.get("cow causes lost", ""))
    if lost:
        return {}, [f"the tracing buffer lost {lost} cause records (more copies than {CAUSE_BUFFER_KB} KiB per CPU "
                    "holds): the cause metrics are absent"]
    records, unreadable = causes.parse(last["cow causes"])
    found = causes.metrics(records, layout, pid)
    warnings = [f"{unreadable} cause records could not be read"] if unreadable else []
    return found, warnings + _unequal_sums(found, counted, ("system.", ""))


def _unequal_sums(found: dict, counted: dict, scopes) -> list[str]:
    """A warning for each scope ('system.' the whole guest, '' the workload process) whose copies by cause
    do not add up to perf's count of its copies."""
    warnings = []
    for scope in scopes:
        total, parts = counted.get(f"{scope}cow_copies"), [found.get(f"{scope}cow_copies.{c}") for c in causes.CAUSES]
        if total is None or None in parts:
            continue
        if abs(sum(parts) - total) > max(EDGE_COPIES[scope], CROSS_CHECK_TOLERANCE * total):
            where = "the whole guest" if scope else "the workload process"
            warnings.append(f"copies by cause add up to {sum(parts)}, but perf counted {total:.0f} copies in {where}")
    return warnings


def shortened(after: str) -> str:
    """The end-of-phase output for raw/, with the cause records cut to the first RAW_RECORDS (every other
    section kept whole, wherever it is)."""
    head, marker, rest = after.partition("== cow causes\n")
    if not marker:
        return after
    lines = rest.splitlines()
    last = next((index for index, line in enumerate(lines) if line.startswith("== ")), len(lines))
    records = [line for line in lines[:last] if line and not line.startswith("#")]
    kept = records[:RAW_RECORDS] + ([f"... {len(records) - RAW_RECORDS} more records"]
                                    if len(records) > RAW_RECORDS else [])
    return head + marker + "\n".join(kept + lines[last:])
