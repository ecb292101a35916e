import json
import shutil

import numpy as np
import pandas as pd
import pytest

from harness import compare, results
from harness.errors import NotComparable
from tests.conftest import DATA

RUN = DATA / "run-small"   # a real 2-rep run of the default experiment (swapcow 16 MiB, redis 4000 keys)


def rows_by_key(rows):
    return {(r.workload, r.phase, r.metric, r.variant): r for r in rows}


def test_hand_computed_statistics():
    rng = np.random.default_rng(compare.BOOTSTRAP_SEED)
    cell = compare.compare_cell(np.array([10.0, 11, 12, 13]), np.array([5.0, 6, 7, 8]), "cow_copies", rng)
    assert cell["n"] == 4 and cell["median"] == 6.5 and cell["mean"] == 6.5
    assert cell["stddev"] == pytest.approx(1.2909944, rel=1e-6)
    assert cell["change_pct"] == pytest.approx((6.5 / 11.5 - 1) * 100)
    assert cell["p_value"] == pytest.approx(2 / 70)          # exact: U = 0, two-sided, C(8, 4) orderings
    assert cell["verdict"] == "better"
    assert 5 <= cell["ci_low"] <= 6.5 <= cell["ci_high"] <= 8
    assert cell["change_ci_low"] < cell["change_pct"] < cell["change_ci_high"] < 0
    flipped = compare.compare_cell(np.array([10.0, 11, 12, 13]), np.array([5.0, 6, 7, 8]), "ops_per_s", rng)
    assert flipped["verdict"] == "worse", "fewer operations per second is worse"


def test_overlapping_samples_are_no_significant_change():
    rng = np.random.default_rng(1)
    cell = compare.compare_cell(np.array([10.0, 12, 11, 13, 9]), np.array([11.0, 10, 12, 13, 9.5]), "duration_s", rng)
    assert cell["verdict"] == "no significant change"


def test_small_samples_need_a_big_or_consistent_change():
    rng = np.random.default_rng(1)
    assert compare.compare_cell(np.array([4096.0, 4096]), np.array([0.0, 0]), "cow_copies", rng)["verdict"] == "better"
    assert compare.compare_cell(np.array([24.0, 24]), np.array([25.0, 25]), "cow_copies", rng)["verdict"] == \
        "no significant change", "one copy more in both runs is chance"
    assert compare.rank_test_can_reach_alpha(4, 4) and not compare.rank_test_can_reach_alpha(3, 3)


def test_golden_run_verdicts():
    samples, runs, _ = results.read(RUN)
    rows, invalid = compare.compare(samples, runs)
    assert invalid == 0
    found = rows_by_key(rows)
    assert found[("swapcow", "write", "cow_copies", "patched")].verdict == "better"
    assert found[("redis", "write", "cow_copies", "patched")].verdict == "better"
    assert found[("swapcow", "write", "cow_copies", "base")].median == 4096
    assert found[("swapcow", "swapout", "vmstat.pswpout", "patched")].verdict == "no significant change"


def test_invalid_runs_are_left_out_and_counted(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[(runs["variant"] == "patched") & (runs["workload"] == "swapcow") & (runs["rep"] == 2), "valid"] = False
    runs.to_csv(copy / "runs.csv", index=False)
    rows, invalid = compare.compare(*results.read(copy)[:2])
    assert invalid == 1
    assert rows_by_key(rows)[("swapcow", "write", "cow_copies", "patched")].n == 1
    assert rows_by_key(rows)[("redis", "write", "cow_copies", "patched")].n == 2


def test_runs_that_differ_in_a_comparability_field_are_refused(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[runs["variant"] == "patched", "swap_mb"] = 512
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=r"Runs differ in swap_mb \(1024 vs 512\)"):
        compare.compare(*results.read(copy)[:2])


def test_json_has_exactly_the_documented_keys(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "compare", str(RUN), "--format", "json"])
    assert result.exit_code == 0, result.output
    objects = json.loads(result.output)
    assert all(list(item) == ["workload", "phase", "metric", "variant", "baseline", "n", "median", "ci_low",
                              "ci_high", "change_pct", "change_ci_low", "change_ci_high", "p_value", "verdict"]
               for item in objects)
    assert {item["verdict"] for item in objects} <= {"better", "worse", "no significant change"}


def test_headline_table_fits_80_columns():
    rows, _ = compare.compare(*results.read(RUN)[:2])
    assert max(len(line) for line in compare.render_table(rows).splitlines()) <= 80
