"""The real thing for patch coverage: a patch to mincore(2), which swapcow never calls
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
    kept = json.loads((out / "metadata.json").read_text())["coverage"]["mincore"]     # written by the analysis
    assert kept["silent"] and kept["never_ran"] == ["__x64_sys_mincore"], kept
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


def counts_of(lines: list[str], function: str) -> dict[str, int]:
    """phase -> calls of function in swapcow, from what `harness workloads --covers` printed."""
    heading = next(index for index, line in enumerate(lines) if line.startswith(f"{function}: "))
    said = lines[heading + 1].removeprefix("  swapcow: ").split(", ")
    return {phase: int(calls.replace(",", "")) for phase, calls in (part.split(" ") for part in said)}


def test_the_workloads_that_call_a_function_are_found_by_a_boot_and_kept(tmp_path):
    """`harness workloads --covers`: swapcow's write phase faults on each of its 1,024 pages (do_wp_page), and
    so does its fill phase (handle_mm_fault, which no probe counts: only the coverage filter makes the
    profiler see it); nothing calls mincore(2); a notrace function and an init one are named with their
    reasons. Asked again, it boots nothing."""
    argv = [sys.executable, "-m", "harness", "workloads", "--covers", "do_wp_page", "__x64_sys_mincore",
            "handle_mm_fault", "page_mapcount", "swap_setup", "--workload", "swapcow", "-p", "size_mb=4"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.splitlines()
    [run_by] = [line for line in lines if line.startswith("do_wp_page: run by ")]
    assert run_by.startswith("do_wp_page: run by swapcow/") and "swapcow/write" in run_by, run_by
    counts = counts_of(lines, "do_wp_page")
    assert counts["write"] >= 1024, counts
    assert counts_of(lines, "handle_mm_fault")["fill"] >= 1024, "not a probe: counted because it was asked"
    assert "__x64_sys_mincore: no workload phase calls it" in lines
    assert "  swapcow: idle 0, fill 0, swapout 0, read 0, write 0" in lines
    assert any(line.startswith("page_mapcount: not counted: no __fentry__ call") for line in lines)
    assert any(line.startswith("swap_setup: not counted: in an init section") for line in lines)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr[-2000:]
    assert "profiling swapcow" not in again.stderr, "kept with the build: no boot"
    print(f"\n[figure] swapcow (4 MiB) calls of do_wp_page per phase: {counts}")
