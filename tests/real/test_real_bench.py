"""The real thing end to end: a reduced `harness bench` of the default experiment with --reps auto,
and an A/A bench (the baseline kernel and its control: the same kernel twice) that must come out
clean and say that the calibration passed."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real

SMALL = ("-p", "size_mb=16", "-p", "keys=4000")


def bench(out, *args):
    result = subprocess.run([sys.executable, "-m", "harness", "bench", "-o", str(out), *SMALL, *args],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def rows(out) -> dict:
    return {(r["workload"], r["phase"], r["metric"], r["variant"]): r
            for r in json.loads((out / "comparison.json").read_text())}


def test_reduced_bench_with_auto_repetitions(tmp_path):
    out = tmp_path / "bench"
    result = bench(out, "--reps", "auto", "--max-reps", "7", "--seed", "1")
    assert f"report: {out / 'report.md'}" in result.stdout
    found = rows(out)
    for workload in ("swapcow", "redis"):
        row = found[(workload, "write", "cow_copies_per_swapin", "patched")]
        assert (row["verdict"], row["role"], row["margin_pct"]) == ("better", "primary", 5.0), row
        assert row["change_pct"] < -95 and row["p_adjusted"] <= 0.05
        assert found[(workload, "write", "cow_copies", "patched")]["change_pct"] < -90
    assert found[("swapcow", "write", "cow_copies", "base")]["median"] == 4096
    report = (out / "report.md").read_text()
    assert "**better**" in report.splitlines()[2]
    assert "## Instrumentation cost" in report and "- Repetitions: auto" in report
    for name in ("copies", "copy-rate", "write-duration", "ops", "swapins", "swapouts", "reswap"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000
    metadata = json.loads((out / "metadata.json").read_text())
    assert (metadata["reps"], metadata["min_reps"], metadata["max_reps"]) == ("auto", 6, 7)
    assert metadata["reps_done"] in (6, 7) and len(metadata["plan"]) == 2 * 2 * 2 * metadata["reps_done"]
    assert set(metadata["stage_seconds"]) >= {"fetch", "build", "image", "boots", "workloads", "analysis"}
    runs = (out / "runs.csv").read_text()
    assert runs.count(",timed,") == runs.count(",counted,") == 2 * 2 * metadata["reps_done"]


def test_the_baseline_against_its_control_gets_no_verdict(tmp_path):
    out = tmp_path / "aa"
    bench(out, "--variant", "base", "--control", "--reps", "5")
    found = rows(out)
    claims = [(key, r["verdict"], r["p_value"], r["p_adjusted"]) for key, r in found.items()
              if r["verdict"] in ("better", "worse")]
    assert claims == []
    assert {r["role"] for key, r in found.items() if key[3] == "control"} == {"control"}
    assert found[("swapcow", "write", "cow_copies", "control")]["median"] == 4096
    assert found[("redis", "write", "cow_copies_per_swapin", "control")]["n"] == 5
    assert "Calibration passed: `control`" in (out / "report.md").read_text().splitlines()[2]
    valid = (out / "runs.csv").read_text().count(",True,")
    assert valid == 2 * 2 * 2 * 5, "every boot valid"
