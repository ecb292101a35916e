"""The real thing end to end: a reduced `harness bench` of the default experiment, and an A/A run."""

import json
import subprocess
import sys

import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.real


def bench(out, *args):
    result = subprocess.run([sys.executable, "-m", "harness", "bench", "--reps", "2", "-o", str(out), *args],
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def verdicts(out) -> dict:
    return {(r["workload"], r["phase"], r["metric"], r["variant"]): r
            for r in json.loads((out / "comparison.json").read_text())}


def test_reduced_bench_of_the_default_experiment(tmp_path):
    out = tmp_path / "bench"
    result = bench(out, "-p", "size_mb=16", "-p", "keys=4000", "--seed", "1")
    assert f"report: {out / 'report.md'}" in result.stdout
    found = verdicts(out)
    for workload in ("swapcow", "redis"):
        row = found[(workload, "write", "cow_copies", "patched")]
        assert row["verdict"] == "better", row
        assert row["change_pct"] < -90
    assert found[("swapcow", "write", "cow_copies", "base")]["median"] == 4096
    report = (out / "report.md").read_text()
    assert "**better**" in report.splitlines()[2]
    for name in ("copies", "write-duration", "ops", "swapins", "swapouts", "reswap"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["seed"] == 1 and len(metadata["plan"]) == 8
    assert set(metadata["stage_seconds"]) >= {"fetch", "build", "image", "boots", "workloads", "analysis"}


def test_a_kernel_against_itself_shows_no_significant_change(tmp_path):
    out = tmp_path / "aa"
    bench(out, "-e", str(DATA / "aa.toml"), "-p", "size_mb=16")
    found = verdicts(out)
    for phase in ("fill", "swapout", "read", "write"):
        assert found[("swapcow", phase, "cow_copies", "again")]["verdict"] == "no significant change"
    assert found[("swapcow", "write", "cow_copies", "again")]["median"] == 4096
