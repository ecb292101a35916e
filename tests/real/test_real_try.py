"""The real thing for `harness try`: the seed patch and a patch to mincore(2), built from the default
kernel, the workloads chosen by counted boots of the built kernel, and the seed measured as a
discovery: the reviewer's one command, from a patch file to a report and a summary to mail."""

import csv
import json
import tomllib

import pytest

from harness import experiment
from harness.analysis import mail
from harness.project import ROOT
from tests.real.cli import harness

pytestmark = pytest.mark.real

SEED = ROOT / "patches" / "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-swapcache.patch"
MINCORE = next((ROOT / "patches" / "unexercised").glob("*.patch"))




def test_a_dry_run_of_the_seed_chooses_the_workloads_that_run_do_wp_page(tmp_path):
    result = harness("try", SEED, "--dry-run", check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "patched changes: do_wp_page" in out
    text = out[out.index("# Written by"):]
    data = tomllib.loads(text)
    assert {"swapcow", "redis"} <= set(data["workloads"]), data["workloads"]
    assert data["discovery"] is True and "primary" not in data
    assert data["source"] == experiment.load(None).source, "the default experiment's kernel"
    swapcow = next(line for line in out.splitlines() if line.startswith("  swapcow: "))
    calls = int(swapcow.split(" write do_wp_page ")[1].split(" ")[0].replace(",", ""))
    assert calls >= 16384, f"swapcow's write phase faults on each of its 16,384 pages: {swapcow}"
    assert not list((ROOT / "results").glob("*-try-*")), "a dry run writes no run folder"
    print(f"\n[figure] {swapcow.strip()}")


def test_a_patch_no_workload_runs_stops_before_any_measured_boot(tmp_path):
    # stress-ng's pageswap (2,000 calls) and madvise stressors call mincore(2): without them no shipped
    # workload phase does, which is what this test needs
    out = tmp_path / "mincore"
    result = harness("try", MINCORE, "-p", "stressors=vm,fork,mmap,fault", "-o", out, check=False)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-2]
    assert error.startswith("error: No shipped workload phase calls __x64_sys_mincore far more often than its "
                            "idle phase does"), error
    assert "--workload" in error and "--force" in error
    assert not out.exists(), "nothing was written, nothing was measured"
    print(f"\n[figure] {error[:160]}")


def test_try_of_the_seed_ends_with_a_better_headline_and_a_mail(tmp_path):
    """One workload asked for (swapcow, at 8 MiB) to keep the cost down; six boots a side, the discovery's first
    look; and, one boot a side, the workloads that check the kernel is right, which find nothing wrong."""
    out = tmp_path / "seed"
    result = harness("try", SEED, "--workload", "swapcow", "-p", "size_mb=8", "-o", out, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    headline = next(line for line in lines if line.startswith("On Linux 5.10.223 under "))
    assert "`patched` changes" in headline and "in the write phase of swapcow" in headline
    assert ": better (FDR)" in headline, headline
    assert any(line.startswith("Exploratory (a discovery: no rows declared): ") for line in lines)
    assert lines[-1] == f"report: {out / 'report.md'}"
    assert not any(line.startswith(("BROKEN", "WRONG")) for line in lines), "the seed is right"
    checked = next(line for line in lines if line.startswith("Data checked in "))
    written = experiment.load(str(out / "try.toml"))
    assert written.workloads == ("swapcow", "integrity", "selftests") and written.discovery
    assert len(written.variants) == 2
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["discovery"] is True and metadata["control"] == "control" and not metadata["primary"]
    confirm = experiment.load(str(out / "confirm.toml"))
    assert "swapcow/write" in {row.rsplit("/", 1)[0] for row in confirm.primary}, confirm.primary
    assert not confirm.discovery and confirm.variants == written.variants
    rows = json.loads((out / "comparison.json").read_text())
    control = [r for r in rows if r["variant"] == "control" and r["verdict"] in ("better", "worse")]
    assert not control, "the baseline kernel again moves nowhere"
    text = (out / "report.txt").read_text()
    assert max(map(len, text.splitlines())) <= mail.WIDTH and "B*" in text
    runs = [row for row in csv.DictReader(open(out / "runs.csv"))]
    assert sorted((r["workload"], r["variant"]) for r in runs if r["workload"] != "swapcow") == [
        (workload, variant) for workload in ("integrity", "selftests") for variant in ("base", "control", "patched")]
    assert all(r["valid"] == "True" and r["findings"] == "" for r in runs), "nothing read back wrong, no test failed"
    print(f"\n[figure] {headline[:200]}\n[figure] {checked}")
