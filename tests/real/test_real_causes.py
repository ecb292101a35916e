"""The real thing for copy causes: the forkcow workload on 5.10 without and with the seed patch,
every phase's copies attributed through a kprobe whose offsets were compiled from the built tree.
The swap-cache side (swapcow and redis, base against patched) is in test_real_bench.py."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from harness.measure import causes

pytestmark = pytest.mark.real

SIZE_MB = 8
PAGES = SIZE_MB * 256


def test_forkcow_copies_what_a_child_still_maps_and_reuses_after_it_exited(tmp_path):
    out = tmp_path / "forkcow"
    result = subprocess.run([sys.executable, "-m", "harness", "run", "--workload", "forkcow", "--variant", "base",
                             "--variant", "patched", "-p", f"size_mb={SIZE_MB}", "-o", str(out)],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv")
    # Any warning is a fault: a count of a process that ran for less than a tick of a guest keeping time in
    # jiffies stands (harness-collect prints it whatever the run time).
    warned = set(runs["warnings"].dropna())
    assert runs["valid"].all() and not warned, runs[["variant", "reason", "warnings"]].to_dict("records")
    samples = pd.read_csv(out / "samples.csv")
    for variant in ("base", "patched"):
        mine = samples[samples["variant"] == variant]
        figures = {(row.phase, row.metric): row.value for row in mine.itertuples()}
        by_cause = {phase: {c: figures[(phase, f"cow_copies.{c}")] for c in causes.CAUSES
                            if figures[(phase, f"cow_copies.{c}")]} for phase in dict.fromkeys(mine["phase"])
                    if (phase, "cow_copies.shared") in figures}
        half = PAGES // 2
        assert half <= by_cause["shared"]["shared"] <= half + 8 and set(by_cause["shared"]) == {"shared"}
        assert by_cause["reuse"] == {} and figures[("reuse", "cow_copies")] == 0
        assert figures[("reuse", "wp_faults")] == half and figures[("reuse", "reuse_share")] == 1.0
        assert figures[("reuse", "vmstat.pgreuse")] >= half
        assert by_cause["zerowrite"] == {"zero_page": PAGES} and by_cause["ksmwrite"] == {"ksm": PAGES}
        for phase, found in by_cause.items():
            assert sum(found.values()) == figures[(phase, "cow_copies")], (variant, phase)
            system = sum(figures[(phase, f"system.cow_copies.{c}")] for c in causes.CAUSES)
            assert system == figures[(phase, "system.cow_copies")], (variant, phase)
        print(f"\n[figure] forkcow {SIZE_MB} MiB on {variant}: " + "; ".join(
            f"{phase} {found or 'no copies'}" for phase, found in by_cause.items()))
    metadata = json.loads((out / "metadata.json").read_text())
    layouts = metadata["cow_layout"]
    assert layouts["base"]["values"]["vm_fault_page"] == 64 and layouts["base"]["values"]["PG_swapcache"] == 10
