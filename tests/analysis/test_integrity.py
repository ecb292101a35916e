"""`broken` above every other verdict: what the boots read back wrong, judged against the baseline kernel, in
every format, and the exit status of the commands that compare. The run is a real 2-rep run of the default
experiment (tests/data/run-small) with findings put into its boots, as a kernel that leaks one process's
writes into another would have them."""

import csv
import shutil
from dataclasses import replace

import pytest
from click.testing import CliRunner

from harness import experiment, results
from harness.analysis import analyse as analysis
from harness.analysis import compare, family, integrity, records, tables
from harness.cli import BROKEN_EXIT, main
from harness.results import Finding
from tests.conftest import DATA

RUN = DATA / "run-small"    # base and patched, 2 reps, swapcow and redis; patched's write copies go to ~0
LEAK = Finding("write", "wrong_pages", 4096, 4096, "child:0", "0x0100000000000001", "0x0200000000000001")


def run_with(tmp_path, findings: dict, checked: dict | None = None, control: bool = False):
    """A copy of RUN whose counted boots (variant, rep) -> findings have them, and whose counted boots checked
    `checked` (phase -> pages) of swapcow: as a workload that checks its data would have said."""
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    directory = results.RunDirectory.load(copy)
    runs = []
    for run in directory.runs:
        if control and run.variant == "base":
            runs.append(replace(run, variant="control", findings=tuple(findings.get(("control", run.rep), ()))
                                if run.workload == "swapcow" and run.mode == "counted" else ()))
        runs.append(replace(run, findings=tuple(findings.get((run.variant, run.rep), ())))
                    if run.workload == "swapcow" and run.mode == "counted" else run)
    samples = list(directory.samples)
    for run in runs:
        for phase, pages in (checked if checked is not None else {"write": 4096}).items():
            if run.workload == "swapcow" and run.mode == "counted":
                wrong = sum(f.count for f in run.findings if f.phase == phase)
                samples += [results.Sample(run.variant, "swapcow", run.rep, "counted", phase, "checked_pages", pages),
                            results.Sample(run.variant, "swapcow", run.rep, "counted", phase, "wrong_pages", wrong)]
    if control:
        samples += [replace(s, variant="control") for s in directory.samples if s.variant == "base"]
        directory.update_metadata(control="control",
                                  variants=[*directory.metadata.variants, results.VariantRecord("control")])
    fresh = results.RunDirectory(copy, directory.metadata, [], [])
    for run in runs:
        fresh.add(run, [s for s in samples if (s.variant, s.workload, s.rep, s.mode) ==
                        (run.variant, run.workload, run.rep, run.mode)])
    return copy


def judged(path):
    return analysis.comparison([path])


def test_findings_go_through_runs_csv_as_they_were():
    run = results.Run("patched", "swapcow", 1, "counted", valid=True, findings=(LEAK, Finding(
        "cow", "failed_test", where="Basic COW after fork() with base page")))
    row = run.to_row()
    assert set(row) == set(results.RUN_COLUMNS) and '"child:0"' in row["findings"]
    assert results.Run.from_row(row) == run
    assert results.Run.from_row({**row, "findings": ""}).findings == ()
    assert LEAK.said() == "4,096 of 4,096 pages wrong, first child:0: expected 0x0100000000000001, found " \
                          "0x0200000000000001"


def test_one_wrong_page_on_the_variant_alone_is_broken_with_the_phase_the_pages_and_the_first_value(tmp_path):
    one = replace(LEAK, count=1)
    result = judged(run_with(tmp_path, {("patched", 2): [one]}))
    [broken] = result.broken
    assert (broken.variant, broken.workload, broken.phase, broken.boots, broken.of_boots, broken.rep) == \
        ("patched", "swapcow", "write", 1, 4, 2), "one wrong page in one boot of 4 (2 counted, 2 timed) is enough"
    assert broken.baseline_boots == 2, "the baseline's two counted boots checked that phase and found nothing"
    first = tables.summary_lines(result)[0]
    assert first.startswith("BROKEN: `patched` reads back wrong data in swapcow/write: 1 of 4,096 pages wrong in "
                            "1 of 4 boots (rep 2: first child:0: expected 0x0100000000000001, found "
                            "0x0200000000000001); `base` had none in 2 boots that ran the same check"), first
    row = {(r.variant, r.phase, r.metric): r for r in result.rows if r.workload == "swapcow"}
    assert row[("patched", "write", "wrong_pages")].verdict == "broken"
    assert row[("patched", "write", "cow_copies_per_swapin")].verdict != "broken", "the statistics stay as they are"
    assert "broken" in records.VERDICTS and "broken" in [r.verdict for r in tables.headline_rows(result.rows)]


def test_wrong_pages_on_the_baseline_too_are_the_kernels_problem_not_the_patchs(tmp_path):
    result = judged(run_with(tmp_path, {("patched", 1): [LEAK], ("base", 1): [replace(LEAK, count=3)]}))
    assert result.broken == []
    said = tables.summary_lines(result)
    assert said[0].startswith("WRONG ON THE BASELINE KERNEL: `base` in swapcow/write: 3 of 4,096 pages wrong")
    assert "the kernel's or the harness's problem, not a patch's" in said[0]
    assert said[1].startswith("Wrong on `patched` in swapcow/write as on the baseline kernel: 4,096 of 4,096")
    row = next(r for r in result.rows if (r.variant, r.phase, r.metric) == ("patched", "write", "wrong_pages"))
    assert row.verdict != "broken" and row.note.startswith("also on the baseline: ")


def test_a_control_that_reads_back_wrong_data_makes_the_baseline_kernel_suspect(tmp_path):
    result = judged(run_with(tmp_path, {("control", 1): [LEAK], ("patched", 1): [LEAK]}, control=True))
    assert result.broken == [], "the baseline booted again found it too: not the patch's"
    assert tables.summary_lines(result)[0].startswith("WRONG ON THE BASELINE KERNEL: `control` in swapcow/write")


def test_wrong_data_where_the_baseline_never_checked_is_said_and_judged_by_no_one(tmp_path):
    result = judged(run_with(tmp_path, {("patched", 1): [replace(LEAK, phase="read")]}, checked={"write": 4096}))
    assert result.broken == []
    assert tables.summary_lines(result)[0].startswith("WRONG, UNJUDGED: `patched` in swapcow/read: 4,096 of 4,096")


def test_a_selftest_that_fails_on_the_variant_alone_is_broken_and_one_failing_on_both_is_not(tmp_path):
    cow = Finding("write", "failed_test", where="Basic COW after fork() with base page")
    other = Finding("write", "failed_test", where="R/O GUP pin on R/O-mapped shared page")
    result = judged(run_with(tmp_path, {("patched", 1): [cow, other], ("patched", 2): [cow], ("base", 2): [other]}))
    [broken] = result.broken
    assert (broken.first.where, broken.boots, broken.count) == ("Basic COW after fork() with base page", 2, 2)
    assert tables.summary_lines(result)[0].startswith(
        "BROKEN: `patched` fails a test of the kernel's own in swapcow/write: test 'Basic COW after fork() with "
        "base page' failed in 2 of 4 boots; `base` had none")
    shared = [w for w in result.wrong if w.judged == integrity.SHARED]
    assert [w.first.where for w in shared] == ["R/O GUP pin on R/O-mapped shared page"]


def test_a_kernel_bug_on_the_variant_alone_is_broken_wherever_it_came_and_one_shared_is_not(tmp_path):
    bug = Finding("write", "kernel_bug", where="kernel BUG at mm/memory.c in do_swap_page",
                  found="kernel BUG at mm/memory.c:3983!")
    warn = Finding("boot", "kernel_bug", where="WARNING at mm/rmap.c in page_remove_rmap")
    result = judged(run_with(tmp_path, {("patched", 1): [bug, warn], ("base", 2): [replace(warn, phase="read")]}))
    [broken] = result.broken
    assert broken.first == bug and broken.baseline_boots == 8, "every boot of the baseline kernel, of any workload"
    assert tables.summary_lines(result)[0].startswith(
        "BROKEN: `patched` makes the kernel find itself wrong in swapcow/write: kernel BUG at mm/memory.c in "
        "do_swap_page in 1 of 8 boots (rep 1: kernel BUG at mm/memory.c:3983!)")
    assert sorted(w.judged for w in result.wrong if w.first.where == warn.where) == [integrity.SHARED,
                                                                                     integrity.ON_BASELINE]


def test_the_baseline_kernels_names_are_said_when_a_control_ran_beside_it(tmp_path):
    result = judged(run_with(tmp_path, {("patched", 1): [LEAK]}, control=True))
    assert "; the baseline kernel (`base`, `control`) had none in 4 boots that ran the same check" in \
        tables.summary_lines(result)[0]


def test_a_clean_run_says_what_it_checked_and_nothing_is_broken(tmp_path):
    result = judged(run_with(tmp_path, {}))
    assert result.broken == [] and result.wrong == ()
    assert "Data checked in 4 boots: 16,384 pages read back, none wrong" in tables.summary_lines(result)


def test_broken_opens_the_report_the_mail_and_the_console_and_the_commands_exit_non_zero(tmp_path):
    path = run_with(tmp_path, {("patched", 1): [LEAK]})
    report = analysis.analyse(path, experiment.load(None))
    assert report.read_text().splitlines()[0].startswith("**BROKEN: `patched` reads back wrong data in swapcow/write")
    mail = (path / analysis.MAIL).read_text().splitlines()
    assert mail[0].startswith("BROKEN: patched reads back wrong data in") and max(map(len, mail)) <= 72
    assert "X broken" in (path / analysis.MAIL).read_text(), "the legend names the mark"
    said = CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), "compare", str(path)])
    assert said.exit_code == BROKEN_EXIT and said.output.startswith("BROKEN: `patched` reads back wrong data")
    said = CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), "report", str(path)])
    assert said.exit_code == BROKEN_EXIT and said.output.startswith("BROKEN: patched reads back wrong data")
    clean = run_with(tmp_path / "clean", {})
    said = CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), "compare", str(clean)])
    assert said.exit_code == 0 and "BROKEN" not in said.output


def test_an_older_run_without_findings_reads_as_one_that_found_nothing():
    _, runs, _ = results.read(RUN)
    assert list(runs["findings"]) == [()] * len(runs)
    with open(RUN / "runs.csv", newline="") as stream:
        assert "findings" not in next(csv.reader(stream))


@pytest.mark.parametrize("rows", [["valid"], []])
def test_judge_without_findings_judges_nothing(rows):
    import pandas as pd
    assert integrity.judge(pd.DataFrame({name: [] for name in rows}), pd.DataFrame(), "base") == ()


def test_judge_reads_findings_however_a_reader_left_the_column():
    import pandas as pd
    runs = pd.DataFrame({"variant": ["base", "patched", "patched"], "workload": ["integrity"] * 3, "rep": [1, 1, 2],
                         "findings": [float("nan"), results.findings_text((LEAK,)), ""]})
    samples = pd.DataFrame({"variant": ["base"], "workload": ["integrity"], "rep": [1], "mode": ["counted"],
                            "phase": ["write"], "metric": ["checked_pages"], "value": [4096.0]})
    [wrong] = integrity.judge(runs, samples, "base")
    assert (wrong.variant, wrong.judged, wrong.count, wrong.boots, wrong.of_boots) == ("patched", "broken", 4096, 1, 2)


def test_rows_judged_by_a_rule_join_no_family_and_hold_no_run_open():
    import numpy as np
    cells = {("integrity", "swapwrite", "cow_copies", ""): {"base": (np.array([1]), np.array([1024.0])),
                                                             "patched": (np.array([1]), np.array([3.0]))},
             ("swapcow", "write", "cow_copies", ""): {"base": (np.arange(1, 7), np.full(6, 4096.0)),
                                                      "patched": (np.arange(1, 7), np.array([0, 1, 0, 2, 0, 1.0]))},
             ("integrity", "boots", "valid_share", ""): {"base": (np.array([1]), np.array([1.0])),
                                                          "patched": (np.array([1]), np.array([0.0]))}}
    plan = records.Plan("base", discovery=True)
    rows = {(r.workload, r.variant): r for r in compare.compare_cells(cells, plan, ["base", "patched"])
            if r.metric == "cow_copies"}
    assert rows[("integrity", "patched")].p_adjusted is None, "n = 1 + 1 is not a member of the discovery's family"
    assert rows[("swapcow", "patched")].p_adjusted is not None
    assert family.all_decided(cells, records.Plan("base", ("swapcow/write/cow_copies",)), ["base", "patched"]), \
        "integrity's lost boot cannot be repeated: it holds --reps auto open for nothing"
