"""Patch coverage on recorded runs: the seed's variant ran do_wp_page in every phase of swapcow (the write
phase over 4,000 times); a patch to mincore(2) ran in no phase, so none of its rows may claim no change."""

import json
import shutil

import pandas as pd

from harness import results
from harness.analysis import analyse, compare, coverage, family, records, report, sampling, tables
from tests.conftest import DATA

SEED = DATA / "run-coverage"          # the default experiment, swapcow 16 MiB, 2 + 2 counted boots
UNRUN = DATA / "run-unexercised"      # experiments/unexercised-mincore.toml, swapcow 4 MiB, 3 + 3 counted boots


def by_key(comparison) -> dict:
    return {(r.phase, r.metric, r.variant): r for r in comparison.rows}


def test_the_seed_ran_its_changes_in_every_phase_and_its_verdicts_stand():
    samples, runs, metadata = results.read(SEED)
    cover = coverage.of(samples, runs, metadata, "base")
    mine = cover.changed["patched"]
    assert mine.functions == ("do_wp_page", "page_mapcount", "unmap_page_range")
    assert mine.counted == ("do_wp_page", "unmap_page_range") and mine.untraced == ("page_mapcount",)
    calls = cover.calls("patched", "swapcow", "", "write")
    assert calls["do_wp_page"][0] >= 4096 and calls["do_wp_page"][1] >= 4096, "a write fault on every page"
    assert cover.exercised("patched", "swapcow", "", "write") is True and not cover.silent("patched")
    plain = compare.compare(samples, runs, records.Plan.from_metadata(metadata))
    judged = analyse.comparison([SEED])
    assert [r.verdict for r in judged.rows] == [r.verdict for r in plain.rows], "code that ran: nothing to change"
    row = by_key(judged)[("write", "cow_copies", "patched")]
    assert row.exercised is True and row.changed_calls["do_wp_page"] == calls["do_wp_page"]
    assert row.as_json()["exercised"] is True and by_key(judged)[("write", "cow_copies", "base")].exercised is None
    lines = coverage.section(cover)
    assert lines[0] == "## Patch coverage" and any(line.startswith("| swapcow/write | ") for line in lines)
    assert any("Not counted: `page_mapcount`: no `__fentry__` call" in line for line in lines)
    assert cover.headline() == ""
    kept = cover.as_dict()["patched"]
    assert kept["phases"]["swapcow/write"] == {"calls": calls, "exercised": True}
    assert kept["untraced"] == ["page_mapcount"] and not kept["silent"] and kept["never_ran"] == []


def test_a_patch_no_workload_runs_makes_no_claim_of_no_change(tmp_path):
    comparison = analyse.comparison([UNRUN])
    mine = [r for r in comparison.rows if r.variant == "mincore"]
    assert mine and {r.verdict for r in mine} == {"not exercised"}, {r.verdict for r in mine}
    assert {r.exercised for r in mine} == {False}
    assert all(r.changed_calls == {"__x64_sys_mincore": [0.0, 0.0]} for r in mine if r.phase != "boots")
    cover = comparison.coverage
    assert cover.silent("mincore") and cover.never_ran("mincore") == ["__x64_sys_mincore"]
    assert cover.headline() == ("**`mincore`: no workload ran __x64_sys_mincore(): this run cannot tell what the "
                                "patch does.**")
    assert "Patch coverage of `mincore`: changed __x64_sys_mincore: no workload ran" in \
        "\n".join(tables.summary_lines(comparison))
    copy = tmp_path / "run"
    shutil.copytree(UNRUN, copy)
    report.write(copy, comparison, [], "swapcow/write/cow_copies_per_swapin")
    text = (copy / "report.md").read_text().splitlines()
    assert text[2].startswith("**`mincore`: no workload ran __x64_sys_mincore(): this run cannot tell"), text[2]
    assert text.index("## Patch coverage") < text.index("## Comparison")
    assert cover.as_dict()["mincore"]["silent"] and cover.as_dict()["mincore"]["phases"]["swapcow/write"] == {
        "calls": {"__x64_sys_mincore": [0.0, 0.0]}, "exercised": False}


def with_metadata(source, copy, **changed):
    """A copy of a recorded run whose object-code record of its variant is changed."""
    shutil.copytree(source, copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    for variant in metadata["object_code"]:
        metadata["object_code"][variant].update(changed)
    (copy / "metadata.json").write_text(json.dumps(metadata))
    return copy


def test_a_change_the_profiler_cannot_see_leaves_the_verdicts_alone(tmp_path):
    """Another changed function without __fentry__ might have run unseen: no phase is called unexercised."""
    copy = with_metadata(UNRUN, tmp_path / "run", changed=["__x64_sys_mincore", "page_mapcount (7 -> 6 copies)"],
                         untraced=["page_mapcount"])
    comparison = analyse.comparison([copy])
    assert not comparison.coverage.silent("mincore")
    assert "not exercised" not in {r.verdict for r in comparison.rows}
    assert {r.exercised for r in comparison.rows if r.variant == "mincore"} == {None}


def test_changes_only_in_init_sections_are_said_and_judged_as_usual(tmp_path):
    copy = with_metadata(UNRUN, tmp_path / "run", changed=["swap_setup"], init=["swap_setup"])
    comparison = analyse.comparison([copy])
    assert "not exercised" not in {r.verdict for r in comparison.rows}
    assert comparison.coverage.headline().startswith("**`mincore` changes only code in init sections (swap_setup)")


def test_a_phase_that_ran_none_of_the_changes_has_no_claim_of_no_change(tmp_path):
    """The seed's run with the read phase's calls set to 0 on both kernels (and page_mapcount, which the
    profiler cannot see, left out of its changes): its resting verdicts become `not exercised`, while the
    write phase's stand."""
    copy = with_metadata(SEED, tmp_path / "run", changed=["do_wp_page", "unmap_page_range"], untraced=[])
    samples = pd.read_csv(copy / "samples.csv")
    quiet = (samples["phase"] == "read") & samples["metric"].str.startswith("calls.")
    samples.loc[quiet, "value"] = 0
    samples.to_csv(copy / "samples.csv", index=False)
    comparison = analyse.comparison([copy])
    rows = by_key(comparison)
    assert not comparison.coverage.silent("patched")
    read = [r for r in comparison.rows if r.phase == "read" and r.variant == "patched"]
    assert {r.exercised for r in read} == {False}
    assert "not exercised" in {r.verdict for r in read}
    assert not {r.verdict for r in read} & set(records.RESTING), "no claim of no change in the read phase"
    said = next(r for r in read if r.verdict == "not exercised")
    assert said.note == "the read phase of swapcow ran none of the functions `patched` changed"
    assert rows[("write", "cow_copies", "patched")].exercised is True
    assert rows[("write", "cow_copies", "patched")].verdict != "not exercised"


def test_more_boots_are_not_asked_for_a_patch_no_workload_runs(tmp_path):
    """--reps auto stops at the first look when no variant's changes ran: its rows cannot be decided by more.
    The recorded run with the variant's primary values spread, so that 3 + 3 boots leave the row undecided."""
    copy = tmp_path / "run"
    shutil.copytree(UNRUN, copy)
    samples = pd.read_csv(copy / "samples.csv")
    primary = (samples["variant"] == "mincore") & (samples["metric"] == "cow_copies_per_swapin")
    samples.loc[primary, "value"] = samples.loc[primary, "value"] * [0.9, 1.0, 1.1]
    samples.to_csv(copy / "samples.csv", index=False)
    plan = records.Plan.from_metadata(results.read_metadata(copy))
    kept, _ = sampling.valid_samples(samples, pd.read_csv(copy / "runs.csv"))
    cells = sampling.gather(kept, pd.read_csv(copy / "runs.csv"))
    assert not family.all_decided(cells, plan, ["base", "mincore"]), "undecided by the statistics alone"
    assert analyse.decided(results.RunDirectory.load(copy))
    assert not analyse.decided(results.RunDirectory.load(SEED)), "2 + 2 boots decide nothing, and the seed ran"


def with_calls(tmp_path, change):
    """A copy of the mincore run whose calls samples change(samples) edits."""
    copy = tmp_path / "run"
    shutil.copytree(UNRUN, copy)
    samples = pd.read_csv(copy / "samples.csv")
    samples = change(samples)
    samples.to_csv(copy / "samples.csv", index=False)
    return copy


def test_a_call_in_one_boot_of_three_is_a_phase_that_ran_the_patch(tmp_path):
    """Issue 37: the median decided, so a function called in 2 of 6 boots read as "ran none". Every boot counts:
    5 calls in one boot's write phase, none in any idle phase, is a phase that ran the patch."""
    def one_call(samples):
        first = samples.index[(samples["metric"] == "calls.__x64_sys_mincore") & (samples["phase"] == "write")
                              & (samples["variant"] == "mincore")][0]
        samples.loc[first, "value"] = 5
        return samples
    comparison = analyse.comparison([with_calls(tmp_path, one_call)])
    cover = comparison.coverage
    assert not cover.silent("mincore") and cover.never_ran("mincore") == [] and cover.headline() == ""
    assert cover.exercised("mincore", "swapcow", "", "write") is True
    assert cover.exercised("mincore", "swapcow", "", "read") is False, "no call in any boot of the read phase"
    write = [r for r in comparison.rows if r.variant == "mincore" and r.phase == "write"]
    assert "not exercised" not in {r.verdict for r in write} and {r.exercised for r in write} == {True}


def test_a_phase_that_calls_no_more_often_than_idle_did_not_run_the_patch(tmp_path):
    """The guest's background (the idle phase, before the workload starts) calls the function 1,000 times a second,
    the write phase 900: the phase says nothing of what the workload made the kernel do."""
    def background(samples):
        samples = samples.copy()
        calls = samples["metric"] == "calls.__x64_sys_mincore"
        seconds = samples[samples["metric"] == "duration_s"].set_index(["variant", "rep", "phase"])["value"]
        for index in samples.index[calls & samples["phase"].isin(["idle", "write"])]:
            row = samples.loc[index]
            per_second = 1000 if row["phase"] == "idle" else 900
            samples.loc[index, "value"] = round(per_second * seconds[(row["variant"], row["rep"], row["phase"])])
        return samples
    comparison = analyse.comparison([with_calls(tmp_path, background)])
    cover = comparison.coverage
    assert cover.exercised("mincore", "swapcow", "", "write") is False and cover.background("mincore", "swapcow",
                                                                                            "", "write")
    assert not cover.silent("mincore"), "called, so not silent: only that phase ran nothing of its own"
    write = [r for r in comparison.rows if r.variant == "mincore" and r.phase == "write"]
    assert "not exercised" in {r.verdict for r in write} and not {r.verdict for r in write} & set(records.RESTING)
    assert any(r.note.endswith("the write phase of swapcow called the functions `mincore` changed no more often "
                               "per second than the idle phase (the guest's background)") for r in write), \
        [r.note for r in write]


def test_a_kernel_that_gave_no_count_leaves_the_phase_unknown(tmp_path):
    """A function both kernels have, counted on the baseline only in the write phase: the run cannot tell."""
    def dropped(samples):
        return samples[~((samples["metric"] == "calls.__x64_sys_mincore") & (samples["phase"] == "write")
                         & (samples["variant"] == "mincore"))]
    comparison = analyse.comparison([with_calls(tmp_path, dropped)])
    assert comparison.coverage.exercised("mincore", "swapcow", "", "write") is None
    assert not comparison.coverage.silent("mincore")
    write = [r for r in comparison.rows if r.variant == "mincore" and r.phase == "write"]
    assert "not exercised" not in {r.verdict for r in write}


def test_a_phase_with_no_more_calls_than_idle_is_marked_as_background(tmp_path):
    samples, runs, metadata = results.read(SEED)
    cover = coverage.of(samples, runs, metadata, "base")
    assert not cover.background("patched", "swapcow", "", "write"), "4,000 calls in 0.05 s against 125 in 0.5 s"
    raised = samples.copy()
    idle = (raised["phase"] == "idle") & raised["metric"].str.startswith("calls.")
    raised.loc[idle, "value"] = 1_000_000
    loud = coverage.of(raised, runs, metadata, "base")
    assert loud.background("patched", "swapcow", "", "write") and not loud.background("patched", "swapcow", "",
                                                                                       "idle")
    assert loud.exercised("patched", "swapcow", "", "write") is None, "page_mapcount is not counted: it may have run"
    assert any("no more often per second than idle" in line for line in coverage.section(loud))


def test_a_patch_that_changed_many_functions_shows_the_busiest_and_names_the_rest(monkeypatch):
    samples, runs, metadata = results.read(SEED)
    monkeypatch.setattr(coverage, "TABLE_FUNCTIONS", 1)
    lines = coverage.section(coverage.of(samples, runs, metadata, "base"))
    assert "| workload/phase | `do_wp_page` | ran the patch |" in lines, "about 4,260 calls in a phase beat 189"
    assert any(line.startswith("- 1 more counted functions, called less") and "`unmap_page_range`" in line
               for line in lines)
