"""Parsers of harness-collect output, against output recorded from a real 5.10 guest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import guest
from harness.errors import GuestCommandFailed
from harness.measure import collectors
from tests.conftest import DATA
from tests.fakes.guest import FakeSession, collector
from tests.measure.test_causes import no_run_time


def recorded(name):
    before, after = (DATA / name).read_text().split("\n== AFTER\n")
    return before.replace("== BEFORE\n", "", 1), after


PROBES = ("wp_page_copy", "do_wp_page", "do_swap_page")


def test_swapcow_write_phase_golden():
    metrics, warnings, problems = collectors.phase_metrics(*recorded("collect-swapcow-base-write.txt"), PROBES,
                                                           "wp_page_copy", True)
    assert warnings == [] and problems == []
    assert metrics["cow_copies"] == metrics["perf.wp_page_copy"] == 4096
    assert metrics["perf.system.wp_page_copy"] == metrics["ftrace.wp_page_copy"] == metrics["system.cow_copies"] == 4120
    assert metrics["ftrace.do_swap_page"] == 0, "a probed function the profiler never saw had 0 hits, not none"
    assert metrics["perf.minor-faults"] == 4096 and metrics["perf.major-faults"] == 0
    assert metrics["vmstat.pgreuse"] == 174 and metrics["vmstat.pswpout"] == 0
    assert metrics["process.swapped_in_pages"] == 38 and metrics["process.vmswap_kb"] == 0
    assert not any(name.startswith("memcg.") for name in metrics), "swapcow has no cgroup"


def test_redis_reswap_phase_golden():
    metrics, warnings, problems = collectors.phase_metrics(*recorded("collect-redis-base-reswap.txt"), PROBES,
                                                           "wp_page_copy", True)
    assert warnings == [] and problems == []
    assert metrics["vmstat.pswpout"] == 863 and metrics["vmstat.pswpin"] == 107
    assert metrics["process.swapped_out_pages"] == 835
    assert metrics["memcg.swap_current_kb"] == 6004 and metrics["memcg.oom_kill"] == 0
    assert metrics["cow_copies"] == 19 and metrics["perf.system.wp_page_copy"] == 73


def test_without_a_process_copies_have_their_own_system_wide_name():
    metrics, _, problems = collectors.phase_metrics(*recorded("collect-swapcow-base-write.txt"), PROBES,
                                                    "wp_page_copy", False)
    assert "cow_copies" not in metrics and metrics["system.cow_copies"] == 4120 and problems == []


def test_an_uncounted_event_or_a_missing_copy_count_is_a_problem():
    before, after = recorded("collect-swapcow-base-write.txt")
    uncounted = after.replace("4096,,kprobes:wp_page_copy", "<not counted>,,kprobes:wp_page_copy")
    metrics, _, problems = collectors.phase_metrics(before, uncounted, PROBES, "wp_page_copy", True)
    assert "cow_copies" not in metrics
    assert problems == ["perf did not count kprobes:wp_page_copy (process)",
                        "no count of wp_page_copy in the workload process from perf"]
    without_perf = after.split("== perf system")[0] + "== profile" + after.split("== profile")[1]
    assert collectors.phase_metrics(before, without_perf, PROBES, "wp_page_copy", True)[2] == [
        "no count of wp_page_copy from perf"]


def test_a_process_counted_for_no_time_keeps_its_counts():
    """A guest whose TSC failed calibration keeps time in jiffies: forkcow's reuse phase (512 write faults,
    in less than a tick) read a run time of 0 in a CI run, and its counts were once taken for a process
    that slept, so 0, and the boot was lost on its wp_faults gate. The counts are what the kernel counted."""
    before, after = recorded("collect-swapcow-base-write.txt")
    metrics, warnings, problems = collectors.phase_metrics(before, no_run_time(after), PROBES, "wp_page_copy", True)
    assert problems == [] and warnings == []
    assert metrics["cow_copies"] == metrics["perf.wp_page_copy"] == 4096 and metrics["perf.page-faults"] == 4096


def test_timed_boots_have_snapshots_only_and_no_problem():
    before, after = recorded("collect-swapcow-base-write.txt")
    snapshots = after.split("== perf system")[0] + "== vmstat" + after.split("== vmstat", 1)[1]
    metrics, warnings, problems = collectors.phase_metrics(before, snapshots, (), "wp_page_copy", True)
    assert problems == [] and warnings == [] and metrics["vmstat.pgreuse"] == 174
    assert not any(name.startswith(("perf.", "ftrace.")) or "cow_copies" in name for name in metrics)


def test_perf_csv_with_uncounted_events():
    text = "# started on x\n\n12,,kprobes:wp_page_copy,100,100.00,,\n<not counted>,,major-faults,0,0.00,,\n"
    assert collectors.parse_perf_csv(text) == {"kprobes:wp_page_copy": 12, "major-faults": None}


def test_profile_sums_every_cpu():
    table = ("  Function     Hit    Time\n  --------     ---    ----\n  wp_page_copy   10    1.0 us\n"
             "  do_wp_page   3    1.0 us\n")
    assert collectors.parse_profile(table + table) == {"wp_page_copy": 20, "do_wp_page": 6}


def test_cross_check_warns_beyond_one_percent_or_a_few_copies_at_the_window_edges():
    assert collectors.cross_check({"perf.system.wp_page_copy": 1000, "ftrace.wp_page_copy": 1009}, "wp_page_copy") == []
    [warning] = collectors.cross_check({"perf.system.wp_page_copy": 1000, "ftrace.wp_page_copy": 1020}, "wp_page_copy")
    assert "perf counted 1000, the function profiler 1020 (> 8 copies and 1% apart)" in warning
    assert collectors.cross_check({"perf.system.wp_page_copy": 3, "ftrace.wp_page_copy": 5}, "wp_page_copy") == []
    # seen in CI: the SSH server copied three pages between the opening of perf's window and the profiler's
    assert collectors.cross_check({"perf.system.wp_page_copy": 97, "ftrace.wp_page_copy": 94}, "wp_page_copy") == []
    [warning] = collectors.cross_check({"perf.system.wp_page_copy": 103, "ftrace.wp_page_copy": 94}, "wp_page_copy")
    assert "perf counted 103, the function profiler 94" in warning
    assert "no count from the function profiler" in collectors.cross_check({"perf.system.wp_page_copy": 3},
                                                                           "wp_page_copy")[0]


def test_event_list_is_empty_without_probes():
    assert collectors.perf_events([]) == ""
    assert collectors.perf_events(["wp_page_copy"]) == "kprobes:wp_page_copy,page-faults,major-faults,minor-faults"


def test_swap_in_past_half_the_swap_device_warns_naming_vm_swap_full():
    begin = {"swap": "SwapTotal 40956\nSwapFree 8192"}          # 80% in use as the phase begins
    end = {"swap": "SwapTotal 40956\nSwapFree 30000"}
    found, warnings = collectors.swap_use(begin, end, swapped_in=5500)
    assert found == {"swap.used_pct": 80.0}
    assert len(warnings) == 1 and warnings[0].startswith("vm_swap_full: swap was 80% used") and "5,500" in warnings[0]
    assert collectors.swap_use(end, begin, swapped_in=0)[1] == [], "no swap-in: nothing to warn about"
    assert collectors.swap_use(end, end, swapped_in=100) == ({"swap.used_pct": 26.75}, [])
    assert collectors.swap_use({}, {}, 100) == ({}, []), "a snapshot without the swap section: nothing"


def test_a_read_phase_past_half_the_swap_is_named_though_no_page_needed_io():
    """Recorded: swapcow 32 MiB read back with 48 MiB of swap. Its pages were still in the swap cache after
    MADV_PAGEOUT, so they came back without I/O (pswpin 0): the warning counts the pages the process got back."""
    metrics, warnings, problems = collectors.phase_metrics(*recorded("collect-swapcow-base-read-swap48.txt"), PROBES,
                                                           "wp_page_copy", True)
    assert metrics["vmstat.pswpin"] == 0 and metrics["process.swapped_in_pages"] == 8146
    assert metrics["swap.used_pct"] == 66.67 and problems == []
    said = [w for w in warnings if w.startswith("vm_swap_full")]
    assert said == ["vm_swap_full: swap was 67% used when this phase began swapping in (8,146 pages): past 50%, "
                    "the kernel frees the swap slot of each page it swaps in, so fewer pages stay in the swap cache"]


def test_the_functions_a_patch_changed_are_counted_as_calls_in_every_phase():
    """calls.FUNCTION from the profiler's table (every CPU, every copy of the name); 0 when it saw no call."""
    before, after = recorded("collect-swapcow-base-write.txt")
    metrics, warnings, problems = collectors.phase_metrics(before, after, PROBES, "wp_page_copy", True,
                                                           calls=("do_wp_page", "never_called"))
    assert problems == [] and warnings == []
    assert metrics["calls.do_wp_page"] == metrics["ftrace.do_wp_page"] > 0, "a probe keeps its cross-check name"
    assert metrics["calls.never_called"] == 0 and "ftrace.never_called" not in metrics


def guest_unable_to_profile(unseen) -> collectors.Collector:
    """A guest whose harness-collect calls names the functions of unseen: its kernel cannot profile them."""
    def calls(functions):
        return "".join(f"unseen {function}\n" for function in functions if function in unseen)
    answers = {"setup": lambda probes: "", "calls": calls, "count": lambda events: "", "warm": lambda fields: ""}
    return collectors.Collector(FakeSession(programs={"harness-collect": collector(answers)}))


def test_a_function_the_guest_cannot_profile_is_named_and_not_counted():
    guest = guest_unable_to_profile({"page_mapcount"})
    assert collectors.start(guest, PROBES, None, ("do_wp_page", "page_mapcount")) == ("", ["page_mapcount"])
    assert [line.split("\t")[0] for line in guest.process.sent] == ["setup", "calls", "count", "warm"]
    guest = guest_unable_to_profile(set())
    assert collectors.start(guest, PROBES) == ("", []) and len(guest.process.sent) == 3, "no functions: no calls"


def test_many_functions_are_asked_in_requests_the_helper_takes_and_every_unseen_one_named():
    functions = [f"function_{n}" for n in range(70)]
    guest = guest_unable_to_profile({"function_3", "function_69"})
    assert collectors.start(guest, PROBES, None, functions) == ("", ["function_3", "function_69"])
    asked = [line.split("\t") for line in guest.process.sent if line.startswith("calls\t")]
    assert [len(fields) - 1 for fields in asked] == [32, 32, 6] and sum((f[1:] for f in asked), []) == functions


def test_a_request_the_guest_refuses_fails_the_cell_naming_it():
    def count(events):
        raise ValueError("no event kprobes:wp_page_copy: No such file or directory")
    guest = collectors.Collector(FakeSession(programs={"harness-collect": collector(
        {"setup": lambda probes: "", "count": count})}))
    with pytest.raises(GuestCommandFailed, match="harness-collect count.*no event kprobes:wp_page_copy"):
        collectors.start(guest, PROBES)


@pytest.fixture(scope="module")
def helper(tmp_path_factory) -> Path:
    """The guest helper, compiled for this host as the image compiles it for the guest."""
    folder = tmp_path_factory.mktemp("helper")
    source = Path(guest.__file__).parent / "guest_tools" / "harness-collect.c"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Werror", "-o", folder / "harness-collect", source], check=True)
    return folder / "harness-collect"


def asked(helper: Path, tracing: Path, *requests) -> list[str]:
    """The helper's output for requests (lists of fields), run on this host against the tracing folder."""
    text = "".join("\t".join(str(field) for field in fields) + "\n" for fields in requests)
    return subprocess.run([helper], input=text, capture_output=True, text=True, check=True, timeout=60,
                          env={"HARNESS_TRACING": str(tracing)}).stdout.splitlines()


def tracing_folder(tmp_path: Path) -> Path:
    """A tracing folder laid out as the kernel's, for the requests that only write and read its files."""
    tracing = tmp_path / "tracing"
    tracing.mkdir()
    (tracing / "available_filter_functions").write_text("do_wp_page\nunmap_page_range\ndo_wp_page\nfoo.isra.0\n")
    for name in ("set_ftrace_filter", "kprobe_events", "function_profile_enabled"):
        (tracing / name).write_text("")
    return tracing


def test_the_guest_helper_profiles_the_functions_its_kernel_lists_and_names_the_rest(helper, tmp_path):
    tracing = tracing_folder(tmp_path)
    (tracing / "set_ftrace_filter").write_text("wp_page_copy\n")
    said = asked(helper, tracing, ["calls", "do_wp_page", "page_mapcount", "foo.isra.0", "foo"])
    assert said == ["unseen page_mapcount", "unseen foo", "== ok"]
    assert (tracing / "set_ftrace_filter").read_text().splitlines() == ["wp_page_copy", "do_wp_page", "foo.isra.0"]


def test_the_guest_helper_sets_up_probes_and_refuses_what_it_does_not_know(helper, tmp_path):
    tracing = tracing_folder(tmp_path)
    (tracing / "set_ftrace_filter").write_text("left_from_before\n")
    said = asked(helper, tracing, ["setup", "wp_page_copy", "do_wp_page"], ["count", "kprobes:nowhere"], ["bogus"])
    assert said[0] == "== ok"
    assert (tracing / "kprobe_events").read_text() == "p:wp_page_copy wp_page_copy\np:do_wp_page do_wp_page\n"
    assert (tracing / "set_ftrace_filter").read_text() == "wp_page_copy\ndo_wp_page\n", "emptied first"
    assert said[1] == "== error no event kprobes:nowhere: No such file or directory"
    assert said[2].startswith("== error unknown request bogus")
    too_many = ["calls", *(f"function_{n}" for n in range(70))]
    assert asked(helper, tracing, too_many, ["calls", "x" * 5000], ["calls", "do_wp_page"]) == [
        "== error request calls: longer than 4095 bytes or 64 fields"] * 2 + ["== ok"], \
        "never half a request: the next one is read whole"


def test_the_guest_helper_snapshots_the_workloads_cgroup_and_process_as_the_parsers_read_them(helper, tmp_path):
    """Snapshots only (a timed boot): the cgroup's files as cgroup v2 writes them ("key N", no colon), the
    process's status ("VmSwap:   N kB"); an OOM kill in the group between begin and end is counted."""
    cgroup = tmp_path / "harness-workload"
    cgroup.mkdir()
    def group(oom_kill: int, pgfault: int, current: int) -> None:
        (cgroup / "memory.events").write_text(f"low 0\nhigh 0\nmax 4\noom 1\noom_kill {oom_kill}\n"
                                              "oom_group_kill 0\n")
        (cgroup / "memory.stat").write_text(f"anon {current}\npgfault {pgfault}\npgmajfault 3\n")
        (cgroup / "memory.current").write_text(f"{current}\n")
        (cgroup / "memory.swap.current").write_text("8192\n")
    tracing = tracing_folder(tmp_path)
    group(0, 100, 1 << 20)
    before = "\n".join(asked(helper, tracing, ["begin", os.getpid(), cgroup])[:-1])
    group(1, 350, 3 << 20)
    after = "\n".join(asked(helper, tracing, ["end", cgroup, os.getpid()])[:-1])
    first, last = collectors.sections(before), collectors.sections(after)
    assert set(first) == set(last) == {"vmstat", "swap", "process", "memcg"}, "no counters without count"
    assert first["memcg"].splitlines()[:3] == ["memory.current 1048576", "memory.swap.current 8192",
                                               "memory.events.oom_kill 0"]
    metrics, warnings, problems = collectors.phase_metrics(before, after, (), "wp_page_copy", True)
    assert (metrics["memcg.oom_kill"], metrics["memcg.pgfault"], metrics["memcg.current_kb"]) == (1, 250, 3072)
    assert metrics["vmstat.pgfault"] >= 0 and "process.vmswap_kb" in metrics and problems == []


class HostSession:
    """A session whose start() is a process already started on this host."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def start(self, command) -> "HostProcess":
        return HostProcess(self.process)


class HostProcess:
    """GuestProcess's send, read_line and close for a process on this host."""

    def __init__(self, process: subprocess.Popen):
        self.process = process

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def read_line(self, timeout: float) -> str:
        return self.process.stdout.readline().rstrip("\n")

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


def test_the_guest_helper_counts_a_process_and_its_children_in_its_phase_only(helper, tmp_path):
    """Real perf_event_open on this host: the page faults of a process that touches 2,000 new pages in its phase
    (and 3,000 in a child it forks then), counted per process and in the whole machine, and none of the 1,000
    it touched before the phase began."""
    if os.geteuid() != 0 and Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip() not in ("-1", "0"):
        pytest.skip("system-wide counters need root or kernel.perf_event_paranoid <= 0")
    program = ("import mmap, os, sys\n"
               "def touch(n):\n"
               "    area = mmap.mmap(-1, n * 4096)\n"
               "    for page in range(n): area[page * 4096] = 1\n"
               "    return area\n"
               "kept = touch(1000)\n"
               "print('ready', flush=True); sys.stdin.readline()\n"
               "more = touch(2000)\n"
               "if os.fork() == 0:\n"
               "    touch(3000); os._exit(0)\n"
               "os.wait(); print('done', flush=True); sys.stdin.readline()\n")
    workload = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    try:
        assert workload.stdout.readline() == "ready\n"
        tracing = tracing_folder(tmp_path)
        helper_process = subprocess.Popen([helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          env={"HARNESS_TRACING": str(tracing)})
        replies = collectors.Collector(HostSession(helper_process))
        replies.told("count", "page-faults,minor-faults")
        before = replies.told("begin", workload.pid, "")
        workload.stdin.write("go\n")
        workload.stdin.flush()
        assert workload.stdout.readline() == "done\n"
        after = replies.told("end", "", workload.pid)
        replies.close()
        assert helper_process.returncode == 0, "told to quit, it exits, and is waited for"
    finally:
        workload.kill()
    first, last = collectors.sections(before), collectors.sections(after)
    assert set(first) == {"profile", "vmstat", "swap", "process"}
    process, system = collectors.parse_perf_csv(last["perf process"]), collectors.parse_perf_csv(last["perf system"])
    assert 5000 <= process["minor-faults"] < 5600, "the parent's 2,000 pages and its child's 3,000, not the 1,000"
    assert system["page-faults"] >= process["page-faults"] >= process["minor-faults"]
