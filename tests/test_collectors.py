"""Parsers of harness-collect output, against output recorded from a real 5.10 guest."""

from harness import collectors
from tests.conftest import DATA


def recorded(name):
    before, after = (DATA / name).read_text().split("\n== AFTER\n")
    return before.replace("== BEFORE\n", "", 1), after


def test_swapcow_write_phase_golden():
    metrics, warnings = collectors.phase_metrics(*recorded("collect-swapcow-base-write.txt"), "wp_page_copy", True)
    assert warnings == []
    assert metrics["cow_copies"] == metrics["perf.wp_page_copy"] == 4096
    assert metrics["perf.system.wp_page_copy"] == metrics["ftrace.wp_page_copy"] == 4120
    assert metrics["perf.minor-faults"] == 4096 and metrics["perf.major-faults"] == 0
    assert metrics["vmstat.pgreuse"] == 174 and metrics["vmstat.pswpout"] == 0
    assert metrics["process.swapped_in_pages"] == 38 and metrics["process.vmswap_kb"] == 0
    assert not any(name.startswith("memcg.") for name in metrics), "swapcow has no cgroup"


def test_redis_reswap_phase_golden():
    metrics, warnings = collectors.phase_metrics(*recorded("collect-redis-base-reswap.txt"), "wp_page_copy", True)
    assert warnings == []
    assert metrics["vmstat.pswpout"] == 863 and metrics["vmstat.pswpin"] == 107
    assert metrics["process.swapped_out_pages"] == 835
    assert metrics["memcg.swap_current_kb"] == 6004 and metrics["memcg.oom_kill"] == 0
    assert metrics["cow_copies"] == 19 and metrics["perf.system.wp_page_copy"] == 73


def test_without_a_process_cow_copies_are_system_wide():
    metrics, _ = collectors.phase_metrics(*recorded("collect-swapcow-base-write.txt"), "wp_page_copy", False)
    assert metrics["cow_copies"] == 4120


def test_perf_csv_with_uncounted_events():
    text = "# started on x\n\n12,,kprobes:wp_page_copy,100,100.00,,\n<not counted>,,major-faults,0,0.00,,\n"
    assert collectors.parse_perf_csv(text) == {"kprobes:wp_page_copy": 12, "major-faults": None}


def test_profile_sums_every_cpu():
    table = ("  Function     Hit    Time\n  --------     ---    ----\n  wp_page_copy   10    1.0 us\n"
             "  do_wp_page   3    1.0 us\n")
    assert collectors.parse_profile(table + table) == {"wp_page_copy": 20, "do_wp_page": 6}


def test_cross_check_warns_beyond_one_percent():
    assert collectors.cross_check({"perf.system.wp_page_copy": 1000, "ftrace.wp_page_copy": 1009}, "wp_page_copy") == []
    [warning] = collectors.cross_check({"perf.system.wp_page_copy": 1000, "ftrace.wp_page_copy": 1020}, "wp_page_copy")
    assert "perf counted 1000, the function profiler 1020 (> 1% apart)" in warning
    assert collectors.cross_check({"perf.system.wp_page_copy": 3, "ftrace.wp_page_copy": 5}, "wp_page_copy") == []
    assert "no count from the function profiler" in collectors.cross_check({"perf.system.wp_page_copy": 3},
                                                                           "wp_page_copy")[0]


def test_event_list_is_empty_without_probes():
    assert collectors.perf_events([]) == ""
    assert collectors.perf_events(["wp_page_copy"]) == "kprobes:wp_page_copy,page-faults,major-faults,minor-faults"
