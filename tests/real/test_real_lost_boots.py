"""The real thing for lost boots: a patch that breaks some boots only (experiments/known-bad-some-boots.toml:
from the second repetition on, read by the kernel from harness.rep=N on its command line, anonymous reads get
no zero page, so forkcow's zero-page gate fails). The variant loses 5 of 6 repetitions, the comparison calls
that `worse` inside the primary family, the report says so under its first line, and no forkcow row claims no
change from the one boot that passed."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.real

REPS = 6


def test_a_patch_that_breaks_some_boots_is_worse_on_lost_boots_and_never_equivalent(tmp_path):
    out = tmp_path / "some-boots"
    result = subprocess.run([sys.executable, "-m", "harness", "run", "-e", "known-bad-some-boots", "--reps",
                             str(REPS), "-p", "size_mb=4", "--seed", "1", "-o", str(out)],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    lost = runs[~runs["valid"]]
    assert runs[runs["variant"] == "base"]["valid"].all()
    assert sorted(lost["rep"]) == list(range(2, REPS + 1)) and set(lost["variant"]) == {"some-boots"}, \
        runs[["variant", "rep", "valid", "reason"]].to_dict("records")
    assert lost["reason"].str.startswith("zerowrite: cow_copies.zero_page is 0, below 0.9 x").all(), \
        lost["reason"].tolist()
    found = subprocess.run([sys.executable, "-m", "harness", "compare", str(out), "--format", "json"],
                           capture_output=True, text=True, timeout=600)
    assert found.returncode == 0, found.stderr[-2000:]
    rows = {(r["phase"], r["metric"], r["variant"]): r for r in json.loads(found.stdout)}
    boots = rows[("boots", "valid_share", "some-boots")]
    assert (boots["verdict"], boots["n"], boots["median"]) == ("worse", REPS, 1 / REPS), boots
    assert boots["note"].startswith(f"{REPS - 1} of {REPS} repetitions lost a boot (baseline: 0 of {REPS}): "
                                    f"{REPS - 1} x "), boots["note"]
    share = rows[("reuse", "reuse_share", "some-boots")]
    assert share["n"] == 1 and share["verdict"] == "inconclusive" and "the boots left are those that passed" in \
        share["note"], share
    claims = [key for key, r in rows.items() if key[2] == "some-boots" and r["verdict"] in ("equivalent",
                                                                                            "identical")]
    assert claims == [], "no claim of no change from the boot that passed"
    written = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], capture_output=True, text=True,
                             timeout=600)
    assert written.returncode == 0, written.stderr[-2000:]
    report = (out / "report.md").read_text().splitlines()
    said = next(line for line in report[:8] if line.startswith("**Lost boots"))
    assert f"`some-boots` in forkcow: {REPS - 1} of {REPS} repetitions lost a boot" in said, said
    print(f"\n[figure] {said}")
    print(f"[figure] forkcow/reuse/reuse_share some-boots: {share['verdict']}, {share['note']}")
