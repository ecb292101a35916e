"""The real thing for patch coverage: a patch to mincore(2), which no shipped workload calls
(experiments/unexercised-mincore.toml), built and booted. The function profiler counts the changed
function in every phase of every counted boot of both kernels, finds no call, and the run says first
that it cannot tell what the patch does: no row of the variant claims no change."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.real

REPS = 3


def test_a_patch_no_workload_runs_is_not_exercised_in_the_headline_and_every_row(tmp_path):
    out = tmp_path / "mincore"
    result = subprocess.run([sys.executable, "-m", "harness", "bench", "-e", "unexercised-mincore", "--reps",
                             str(REPS), "-p", "size_mb=4", "--seed", "1", "-o", str(out)],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["object_code"]["mincore"]["changed"] == ["__x64_sys_mincore"], metadata["object_code"]
    assert metadata["calls"] == ["__x64_sys_mincore"]
    samples = pd.read_csv(out / "samples.csv")
    calls = samples[samples["metric"] == "calls.__x64_sys_mincore"]
    counted = samples[samples["mode"] == "counted"][["variant", "rep", "phase"]].drop_duplicates()
    assert len(calls) == len(counted) == 2 * REPS * 5, "every phase (idle included) of every counted boot"
    assert (calls["value"] == 0).all(), calls[calls["value"] != 0]
    rows = [r for r in json.loads((out / "comparison.json").read_text()) if r["variant"] == "mincore"]
    assert rows and {r["verdict"] for r in rows} == {"not exercised"}, {r["verdict"] for r in rows}
    assert {r["exercised"] for r in rows} == {False}
    report = (out / "report.md").read_text().splitlines()
    assert report[2].startswith("**`mincore`: no workload ran __x64_sys_mincore(): this run cannot tell what "
                                "the patch does.**"), report[2]
    assert "| swapcow/write | 0 -> 0 | no |" in report
    print(f"\n[figure] {report[2][:120]}")
