"""`harness run`, `bench`, `compare` and `plot` end to end through the CLI, every cell a guest
replayed from a recorded real cell (tests/fakes/guest.py): no build, no boot, real everything else."""

import csv
import json
import re

import pytest
from click.testing import CliRunner

from harness import bench
from harness.cli import main
from harness.measure import cell, drivers
from tests.conftest import DATA
from tests.fakes.guest import FakeBooted, FakeBuild, ReplayedSession, booting, recordings


@pytest.fixture
def replayed(monkeypatch):
    """Every boot replays its variant's recorded cell (the control replays the baseline's)."""
    booted_variants = []

    def booted(built, *args, **kwargs):
        booted_variants.append(built.variant)
        variant = "base" if built.variant == "control" else built.variant
        return booting(FakeBooted(ReplayedSession(recordings("swapcow", variant))))(built, *args, **kwargs)

    monkeypatch.setattr(drivers, "IDLE_S", 0.0)
    monkeypatch.setattr(bench, "cores", lambda: 1)      # the replayed guests live in this process: one at a time
    monkeypatch.setattr(cell.boot, "booted", booted)
    monkeypatch.setattr(bench.source, "fetch", lambda *a: None)
    monkeypatch.setattr(bench.build, "build_all", lambda exp, variants, cache: [FakeBuild(v.name) for v in variants])
    monkeypatch.setattr(bench.image, "build", lambda cache: type("Image", (), {"digest": "d"})())
    monkeypatch.setattr(bench.vm, "qemu_version", lambda: "QEMU fake")
    return booted_variants


def invoke(tmp_path, *args):
    return CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), *args])


def test_run_records_every_cell_and_says_how_many_are_valid(tmp_path, replayed):
    result = invoke(tmp_path, "run", "--workload", "swapcow", "--reps", "2", "--timing", "--seed", "3", "-o",
                    str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"{tmp_path / 'run'}: 8 of 8 runs valid")
    runs = list(csv.DictReader(open(tmp_path / "run" / "runs.csv")))
    assert sorted((r["variant"], r["rep"], r["mode"]) for r in runs) == sorted(
        (v, r, m) for v in ("base", "patched") for r in ("1", "2") for m in ("counted", "timed"))
    assert sorted(replayed) == ["base"] * 4 + ["patched"] * 4


def test_run_says_how_many_boots_found_something_wrong(tmp_path, replayed, monkeypatch):
    """A patched boot whose write phase read back two wrong pages: the run's last line counts it."""
    import dataclasses

    def wrong(phase, recording):
        return dataclasses.replace(recording, said=recording.said.replace(
            "wrong=0", "wrong=2 first=page:7 expected=0x0100000000000007 found=0x0200000000000007"))

    def booted(built, *args, **kwargs):
        replayed_cell = [(phase, wrong(phase, rec) if built.variant == "patched" and phase == "write" else rec)
                         for phase, rec in recordings("swapcow", built.variant)]
        return booting(FakeBooted(ReplayedSession(replayed_cell)))(built, *args, **kwargs)
    monkeypatch.setattr(cell.boot, "booted", booted)
    result = invoke(tmp_path, "run", "--workload", "swapcow", "--reps", "1", "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(
        "2 of 2 runs valid; 1 found something wrong (runs.csv `findings`; `harness compare` judges them "
        "against the baseline)")
    [patched] = [r for r in csv.DictReader(open(tmp_path / "run" / "runs.csv")) if r["variant"] == "patched"]
    [finding] = json.loads(patched["findings"])
    assert (finding["phase"], finding["count"], finding["where"]) == ("write", 2, "page:7")


def test_bench_compare_and_plot_from_replayed_cells(tmp_path, replayed):
    out = tmp_path / "bench"
    result = invoke(tmp_path, "bench", "--workload", "swapcow", "--reps", "2", "--control", "--seed", "1", "-o",
                    str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"report: {out / 'report.md'}"
    assert lines[0].startswith("Calibration passed: `control` (the baseline kernel again)"), "the answer, at the end"
    opening = (out / "report.md").read_text().split("\n## ")[0].splitlines()
    headline = opening[4].replace("**", "")
    assert lines[1] == headline and "cow_copies_per_swapin in the write phase of swapcow" in headline, \
        "the headline sentence, after the calibration line, of the first primary row of a workload that ran"
    table = lines[lines.index("") + 1:-1]
    assert table[0] == "Data checked in 6 boots: 294,912 pages read back, none wrong"
    assert table[1].startswith("| row | variant | n |")
    assert [line.split(" | ")[:2] for line in table[3:]] == [["| swapcow/write/cow_copies_per_swapin", "patched"],
                                                            ["| swapcow/write/cow_copies_per_swapin", "control"]]
    assert not any(line.startswith("guest$") for line in lines), "the guest's commands only with -v"
    report = (out / "report.md").read_text()
    assert "Calibration passed: `control` (the baseline kernel again)" in report
    rows = json.loads(invoke(tmp_path, "compare", str(out), "--format", "json").output)
    [primary] = [r for r in rows if r["role"] == "primary" and r["variant"] == "patched" and r["phase"] != "boots"]
    [lost] = [r for r in rows if r["phase"] == "boots" and r["variant"] == "patched"]
    assert (lost["metric"], lost["role"], lost["verdict"], lost["median"]) == ("valid_share", "primary", "identical",
                                                                              1.0), "no boot lost on either side"
    assert (primary["workload"], primary["phase"], primary["metric"]) == ("swapcow", "write", "cow_copies_per_swapin")
    assert primary["verdict"] == "inconclusive", "2 boots a side cannot decide"
    table = invoke(tmp_path, "compare", str(out)).output
    recorded = (DATA / "cells" / "swapcow-patched-rep1-counted-04-write.txt").read_text()
    copied = int(re.search(r"^(\d+),,kprobes:wp_page_copy,\d+,", recorded, re.M).group(1))   # the process's count
    assert 0 < copied < 20 and copied / 16384 == pytest.approx(primary["median"], rel=0.01), \
        "the few pages of 16,384 still in an LRU pagevec at the write fault are copied"
    line = f"write   cow_copies_per_swapin * patched 2 {primary['median']:.3g} {primary['change_pct']:+.1f}% "
    assert "swapcow:" in table and line in table, table
    markdown = invoke(tmp_path, "compare", str(out), "--format", "markdown", "--all").output
    assert markdown.count("\n|") > 20
    csv_text = invoke(tmp_path, "compare", str(out), "--format", "csv").output
    assert csv_text.splitlines()[0].startswith("workload,phase,metric,variant")
    plotted = invoke(tmp_path, "plot", str(out)).output.split()
    assert plotted and all(path.endswith((".png", ".svg")) for path in plotted)


def test_resume_finishes_the_planned_cells(tmp_path, replayed, monkeypatch):
    calls = []
    real = cell.run_cell

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(cell, "run_cell", interrupted)
    out = tmp_path / "run"
    first = invoke(tmp_path, "run", "--workload", "swapcow", "--reps", "2", "-o", str(out))
    assert first.exit_code == 130 and "interrupted" in first.output
    assert len(list(csv.DictReader(open(out / "runs.csv")))) == 2
    again = invoke(tmp_path, "run", "--resume", str(out))
    assert again.exit_code == 0, again.output
    assert again.output.strip().endswith("4 of 4 runs valid")
