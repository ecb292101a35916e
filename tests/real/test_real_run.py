"""The real thing: swapcow and redis on base and patched, counted by perf in the guest."""

import csv
from collections import defaultdict

import pytest

from tests.real.cli import harness

pytestmark = pytest.mark.real


def harness_run(tmp_path, *args):
    out = tmp_path / "run"
    harness("run", "-o", out, *args, timeout=1200)
    runs = list(csv.DictReader(open(out / "runs.csv")))
    values = defaultdict(float)
    for row in csv.DictReader(open(out / "samples.csv")):
        values[(row["variant"], row["phase"], row["metric"])] = float(row["value"])
    return out, runs, values


def test_swapcow_copies_every_page_unpatched_and_almost_none_patched(tmp_path):
    out, runs, values = harness_run(tmp_path, "--workload", "swapcow", "-p", "size_mb=16")
    assert sorted((r["variant"], r["valid"]) for r in runs) == [("base", "True"), ("patched", "True")], runs
    for variant in ("base", "patched"):
        assert values[(variant, "read", "process.swapped_in_pages")] >= 0.9 * 4096
        assert values[(variant, "swapout", "vmstat.pswpout")] >= 0.9 * values[(variant, "swapout", "pages")]
        assert values[(variant, "write", "pages")] == 4096
    assert values[("base", "write", "cow_copies")] >= 0.9 * values[("base", "write", "pages")]
    assert values[("patched", "write", "cow_copies")] <= 0.1 * values[("patched", "write", "pages")]
    assert ("base", "idle", "system.cow_copies") in values, "the whole guest is counted before the workload too"
    assert values[("base", "idle", "system.cow_copies")] <= 2, "the collectors copy nothing: a quiet guest stays quiet"
    assert values[("base", "write", "system.cow_copies")] >= values[("base", "write", "cow_copies")]
    assert ("base", "idle", "cow_copies") not in values, "the idle phase has no workload process"
    assert values[("base", "write", "cow_copies_per_swapin")] > 0.95
    assert values[("patched", "write", "cow_copies_per_swapin")] < 0.05
    assert values[("base", "read", "ftrace.do_wp_page")] >= 0
    for variant in ("base", "patched"):     # what it read back after the swap-in and after the write is its own
        for phase in ("fill", "read", "write"):
            assert values[(variant, phase, "checked_pages")] == 4096, (variant, phase)
            assert values[(variant, phase, "wrong_pages")] == 0 and (variant, phase, "wrong_pages") in values
    assert all(r["findings"] == "" for r in runs)
    assert (out / "metadata.json").is_file() and list((out / "raw").glob("console-base-*.log"))
    assert all(r["accelerator"] in ("kvm", "tcg") and r["kernel_release"].startswith("5.10.223") for r in runs)


def test_redis_copies_what_it_swapped_in_unpatched_and_keeps_its_keys(tmp_path):
    out, runs, values = harness_run(tmp_path, "--workload", "redis", "-p", "keys=6000")
    assert sorted((r["variant"], r["valid"]) for r in runs) == [("base", "True"), ("patched", "True")], runs
    for variant in ("base", "patched"):
        swapped_in = values[(variant, "read", "process.swapped_in_pages")]
        assert swapped_in > 200, "the read phase brought values back from swap"
        assert values[(variant, "reswap", "vmstat.pswpout")] > 0
        assert values[(variant, "write", "ops_per_s")] > 0
    base_copies = values[("base", "write", "cow_copies")]
    assert base_copies >= 0.5 * values[("base", "read", "process.swapped_in_pages")]
    assert values[("patched", "write", "cow_copies")] <= 0.1 * base_copies
    for variant in ("base", "patched"):     # every value read back by content: BITCOUNT after swap-in, GET at the end
        assert values[(variant, "read", "checked_values")] == 6000
        assert values[(variant, "check", "checked_values")] == 6000
        assert values[(variant, "read", "wrong_values")] == values[(variant, "check", "wrong_values")] == 0
    assert all(r["findings"] == "" for r in runs)


def test_redis_limit_mode_swaps_under_a_fixed_memory_max(tmp_path):
    out, runs, values = harness_run(tmp_path, "--workload", "redis", "--variant", "base",
                                    "-p", "mode=limit", "-p", "keys=6000", "-p", "duration_s=4")
    assert [(r["variant"], r["valid"]) for r in runs] == [("base", "True")], runs
    assert 4 <= values[("base", "mixed", "duration_s")] < 6, "the measured phase runs duration_s seconds"
    assert values[("base", "settle", "vmstat.pswpin")] > 500, "the settle pass swaps before the measurement"
    mixed = {metric: values[("base", "mixed", metric)] for metric in ("ops_per_s", "duration_s", "latency_p99_ms")}
    print(f"\n[figure] redis limit mode, 6,000 keys, 12 MiB, base: {mixed['ops_per_s']:,.0f} ops/s over "
          f"{mixed['duration_s']:.1f} s, p99 {mixed['latency_p99_ms']:.1f} ms")
    assert values[("base", "mixed", "vmstat.pswpin")] > 500, "reads and writes keep faulting pages back in"
    assert values[("base", "mixed", "vmstat.pswpout")] > 500
    assert values[("base", "mixed", "memcg.current_kb")] <= 12 * 1024, "memory.max of limit_mb holds"
    assert values[("base", "mixed", "cow_copies")] > 100, "unpatched, writes after swap-in copy"
    assert values[("base", "mixed", "ops_per_s")] > 0


def test_redis_madvise_mode_pushes_the_server_out_with_process_madvise(tmp_path):
    out, runs, values = harness_run(tmp_path, "--workload", "redis", "--variant", "base",
                                    "-p", "mode=madvise", "-p", "keys=4000")
    assert [(r["variant"], r["valid"]) for r in runs] == [("base", "True")], runs
    swapout = values[("base", "swapout", "process.swapped_out_pages")]
    assert swapout >= 0.9 * values[("base", "swapout", "pages")] and swapout > 1500
    assert values[("base", "write", "cow_copies")] > 0.5 * values[("base", "read", "process.swapped_in_pages")]


def test_timed_boots_run_without_probes_beside_counted_ones(tmp_path):
    out = tmp_path / "run"
    harness("run", "-o", out, "--workload", "swapcow", "--variant", "base", "--timing", "-p", "size_mb=16",
            timeout=1200)
    runs = list(csv.DictReader(open(out / "runs.csv")))
    assert sorted((r["mode"], r["valid"]) for r in runs) == [("counted", "True"), ("timed", "True")], runs
    metrics = defaultdict(set)
    for row in csv.DictReader(open(out / "samples.csv")):
        metrics[row["mode"]].add(row["metric"])
    assert {"cow_copies", "perf.page-faults", "ftrace.wp_page_copy"} <= metrics["counted"]
    assert not {m for m in metrics["timed"] if m.startswith(("perf.", "ftrace.")) or "cow_copies" in m}
    assert {"duration_s", "vmstat.pswpout", "process.swapped_in_pages"} <= metrics["timed"]
    raw = (out / "raw" / "swapcow-base-rep1-timed-04-write.txt").read_text()
    assert "== workload\npages 4096\nduration_s " in raw and "== perf" not in raw
