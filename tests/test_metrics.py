"""The metrics table: every metric a real run produces has an entry, directions are the ones a
kernel developer expects, and on the reference run the declared rates spread less than the
counts they stand for."""

import statistics

import pytest

from harness import metrics, results
from harness.analysis import sampling
from harness.project import ROOT
from tests.conftest import DATA

REFERENCE = max(ROOT.glob("results/reference-*"))


def test_every_metric_of_a_real_run_is_in_the_table():
    samples, _, _ = results.read(DATA / "run-small")
    unknown = sorted(name for name in samples["metric"].unique() if not metrics.known(name))
    assert unknown == []


@pytest.mark.parametrize("name, direction", [
    ("cow_copies", "lower"), ("cow_copies_per_swapin", "lower"), ("system.cow_copies", "lower"),
    ("vmstat.pgreuse", "higher"), ("vmstat.swap_ra_hit", "higher"), ("vmstat.swap_ra", "none"),
    ("ops_per_s", "higher"), ("latency_p99_ms", "lower"), ("pages", "none"), ("perf.do_wp_page", "none"),
    ("perf.system.do_swap_page", "none"), ("perf.page-faults", "lower"), ("ftrace.wp_page_copy", "none"),
    ("process.swapped_in_pages", "none"), ("memcg.swap_current_kb", "none"), ("vmstat.pswpout", "lower"),
    ("some.new.metric", "none"),
])
def test_directions(name, direction):
    assert metrics.meaning(name).direction == direction


def test_levels_and_timings():
    assert metrics.meaning("memcg.current_kb").kind == "level" and metrics.meaning("ops_per_s").kind == "level"
    assert metrics.meaning("duration_s").timing and not metrics.meaning("cow_copies").timing
    assert metrics.meaning("system.cow_copies").scope == "system" and metrics.meaning("cow_copies").scope == "process"


def coefficient_of_variation(values) -> float:
    return statistics.stdev(values) / statistics.fmean(values)


@pytest.mark.parametrize("workload, phase, count, rate", [
    ("redis", "write", "cow_copies", "cow_copies_per_swapin"),
    ("redis", "reswap", "vmstat.pswpout", "pswpout_per_swapout"),
])
def test_on_the_reference_run_the_rates_spread_less_than_the_counts(workload, phase, count, rate):
    samples, runs, _ = results.read(REFERENCE)
    cells = sampling.gather(sampling.valid_samples(samples, runs)[0], runs)
    counts, rates = cells[(workload, phase, count, "")]["base"][1], cells[(workload, phase, rate, "")]["base"][1]
    print(f"{REFERENCE.name} base {workload} {phase}: {count} spreads {coefficient_of_variation(counts):.2%}, "
          f"{rate} {coefficient_of_variation(rates):.2%}")
    assert coefficient_of_variation(rates) < coefficient_of_variation(counts) / 2
