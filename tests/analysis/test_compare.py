"""Verdicts: the primary family, equivalence, gatekeeping, the control, the looks of --reps auto,
pooled folders, and the JSON contract. The exact statistics themselves are in test_stats.py."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from harness import experiment, results
from harness.analysis import analyse as analysis
from harness.analysis import compare, family, looks, records, report, resample, sampling, stats, tables
from harness.errors import NotComparable, PoolWithoutControl
from harness.project import ROOT
from tests.conftest import DATA

RUN = DATA / "run-small"   # a real 2-rep run of the default experiment (swapcow 16 MiB, redis 4000 keys)
PRIMARY = ("w/write/cow_copies", "w/reswap/vmstat.pswpout")

FAR_ONE_OF_6 = "1 of 6 boots beyond the baseline's farthest boot by more than +-5% of its median"
FAR_ONE_OF_7 = "1 of 7 boots beyond the baseline's farthest boot by more than +-5% of its median"


def cells_of(values: dict) -> records.Cells:
    """{(phase, metric): {variant: [values, ...]}} -> Cells of workload 'w', reps 1..n."""
    return {("w", phase, metric, ""): {variant: (np.arange(1, len(v) + 1), np.asarray(v, dtype=float))
                                   for variant, v in by_variant.items()}
            for (phase, metric), by_variant in values.items()}


def verdicts(rows) -> dict:
    return {(r.phase, r.metric, r.variant): r for r in rows}


BASE_COPIES = [5204, 4751, 4757, 5531, 5342, 5100]
BASE_IO = [4890, 5024, 4600, 4949, 4884, 4800]
BASE_IO_RATE = [0.994, 0.987, 0.994, 0.981, 0.984, 0.990]     # swap-out I/O per page pushed out


def test_a_large_primary_effect_is_better_and_a_tight_one_equivalent():
    cells = cells_of({("write", "cow_copies"): {"base": BASE_COPIES, "patched": [3, 3, 3, 4, 3, 2]},
                      ("reswap", "vmstat.pswpout"): {"base": BASE_IO_RATE,
                                                     "patched": [v * 1.003 for v in BASE_IO_RATE]}})
    rows = verdicts(compare.compare_cells(cells, records.Plan("base", PRIMARY), ["base", "patched"]))
    copies, io = rows[("write", "cow_copies", "patched")], rows[("reswap", "vmstat.pswpout", "patched")]
    assert (copies.verdict, copies.role, copies.margin_pct) == ("better", "primary", 5.0)
    assert copies.p_value == pytest.approx(2 / 924) and copies.p_adjusted == pytest.approx(2 * 2 / 924)
    assert copies.change_pct < -99.9 and copies.change_ci_high < -99.9
    assert io.verdict == "equivalent" and -5 < io.change_ci_low < io.change_ci_high < 5
    assert rows[("write", "cow_copies", "base")].verdict == "baseline", "what the others are compared with"


def test_a_change_beyond_the_margin_is_not_equivalent_and_small_n_is_inconclusive():
    wide = cells_of({("reswap", "vmstat.pswpout"): {"base": BASE_IO, "patched": [v * 1.08 for v in BASE_IO]}})
    plan = records.Plan("base", ("w/reswap/vmstat.pswpout",))
    assert verdicts(compare.compare_cells(wide, plan, ["base", "patched"]))[
        ("reswap", "vmstat.pswpout", "patched")].verdict == "worse"
    small = cells_of({("write", "cow_copies"): {"base": [16384, 16384], "patched": [0, 0]}})
    row = verdicts(compare.compare_cells(small, records.Plan("base", ("w/write/cow_copies",)),
                                         ["base", "patched"]))[("write", "cow_copies", "patched")]
    assert row.verdict == "inconclusive", "2 + 2 boots cannot reach 5%, however far apart"
    assert row.p_value == pytest.approx(1 / 3) and row.change_ci_low == -100 and row.change_ci_high is None


def test_with_more_variants_the_family_grows_and_the_control_is_checked():
    cells = cells_of({("write", "cow_copies"): {"base": BASE_COPIES[:5], "patched": [3, 3, 3, 4, 3],
                                                "control": [5150, 4800, 4790, 5500, 5300]}})
    plan = records.Plan("base", ("w/write/cow_copies",), control="control")
    comparison = records.Comparison(compare.compare_cells(cells, plan, ["base", "patched", "control"]), 0, plan)
    rows = verdicts(comparison.rows)
    assert rows[("write", "cow_copies", "patched")].p_adjusted == pytest.approx(2 * 2 / 252)
    assert rows[("write", "cow_copies", "patched")].verdict == "better"
    assert rows[("write", "cow_copies", "control")].role == "control"
    assert rows[("write", "cow_copies", "control")].verdict in ("equivalent", "inconclusive")
    assert tables.calibration_line(comparison).startswith("Calibration passed")
    assert "standard deviations of a primary row with 80% probability" in tables.calibration_line(comparison)
    shifted = cells_of({("write", "cow_copies"): {"base": BASE_COPIES, "control": [v * 0.5 for v in BASE_COPIES]}})
    failed = records.Comparison(compare.compare_cells(shifted, plan, ["base", "control"]), 0, plan)
    assert tables.calibration_line(failed).startswith(
        "CALIBRATION FAILED: `control` (the baseline kernel again) differs")


def test_exploratory_verdicts_wait_for_a_primary_difference():
    strong = {"base": [10, 11, 12, 13, 14, 15], "patched": [50, 51, 52, 53, 54, 55]}
    same = {"base": BASE_COPIES, "patched": BASE_COPIES[::-1]}
    cells = cells_of({("write", "cow_copies"): same, ("read", "vmstat.pgfault"): strong,
                      ("read", "perf.do_wp_page"): strong})
    plan = records.Plan("base", ("w/write/cow_copies",))
    closed = verdicts(compare.compare_cells(cells, plan, ["base", "patched"]))
    assert closed[("read", "vmstat.pgfault", "patched")].verdict == "inconclusive", "the gate is closed"
    assert closed[("read", "vmstat.pgfault", "patched")].p_adjusted == pytest.approx(2 / 924 * 2 / 2)
    cells[("w", "write", "cow_copies", "")]["patched"] = (np.arange(1, 7), np.array([3.0, 3, 3, 4, 3, 2]))
    opened = verdicts(compare.compare_cells(cells, plan, ["base", "patched"]))
    assert opened[("read", "vmstat.pgfault", "patched")].verdict == "worse"
    assert opened[("read", "perf.do_wp_page", "patched")].verdict == "inconclusive", "no direction, no verdict"
    assert opened[("read", "vmstat.pgfault", "patched")].role == "exploratory"


def test_without_primary_rows_there_is_no_verdict_only_adjusted_p():
    strong = {"base": [10, 11, 12, 13, 14, 15], "patched": [50, 51, 52, 53, 54, 55]}
    cells = cells_of({("read", "vmstat.pgfault"): strong, ("read", "vmstat.pswpin"): strong,
                      ("idle", "vmstat.oom_kill"): {"base": [0] * 6, "patched": [0] * 6}})
    rows = verdicts(compare.compare_cells(cells, records.Plan(), ["base", "patched"]))
    assert rows[("read", "vmstat.pgfault", "patched")].verdict == "inconclusive", "nothing was declared"
    assert rows[("read", "vmstat.pgfault", "patched")].p_adjusted == pytest.approx(2 / 924)
    assert rows[("idle", "vmstat.oom_kill", "patched")].p_adjusted == 1.0, "identical everywhere: not in the family"


def test_sequential_looks_spend_alpha_and_stop_when_everything_is_decided():
    design = records.Design.sequential(6, 10)
    assert design.looks == (6, 7, 8, 9, 10) and sum(design.shares) == pytest.approx(1)
    plan = records.Plan("base", ("w/write/cow_copies",), design=design)
    cells = cells_of({("write", "cow_copies"): {"base": BASE_COPIES, "patched": [3, 3, 3, 4, 3, 2]}})
    assert family.all_decided(cells, plan, ["base", "patched"])
    row = verdicts(compare.compare_cells(cells, plan, ["base", "patched"]))[("write", "cow_copies", "patched")]
    assert row.verdict == "better" and row.decided_after == 6
    assert row.p_adjusted == pytest.approx(2 / 924 / design.shares[0]), "scaled by the first look's share"
    noisy = cells_of({("write", "cow_copies"): {"base": BASE_COPIES, "patched": BASE_COPIES[::-1]}})
    assert not family.all_decided(noisy, plan, ["base", "patched"])


def test_a_row_decided_at_a_look_keeps_its_verdict():
    base = [0.9812, 0.9787, 0.9863, 0.981, 0.9748, 0.9836, 0.9929, 0.9893, 0.9731, 0.9677]
    patched = [0.9934, 1.0, 0.9766, 0.9974, 0.9872, 0.9923, 0.9942, 0.9964, 1.0037, 1.0101]   # about +2%
    cells = cells_of({("reswap", "pswpout_per_swapout"): {"base": base, "patched": patched}})
    key = ("w", "reswap", "pswpout_per_swapout", "", "patched")
    fixed = family.decide(cells, records.Plan("base", ("w/reswap/pswpout_per_swapout",)), ["base", "patched"])[key]
    assert (fixed.verdict, fixed.note) == ("equivalent", "a difference smaller than the margin; "
                                           + looks.tail_allowance(10)), \
        "all ten boots at once find the 2%, and that it is smaller than the margin"
    plan = records.Plan("base", ("w/reswap/pswpout_per_swapout",), design=records.Design.sequential(6, 10))
    first = family.decide(resample.up_to(cells, 6), plan, ["base", "patched"])[key]
    last = family.decide(cells, plan, ["base", "patched"])[key]
    assert (first.verdict, first.decided_after) == ("equivalent", 6), "within the 5% margin after six"
    assert (last.verdict, last.decided_after) == ("equivalent", 6), "the stopping rule counted on that verdict"


RESWAP = "w/reswap/pswpout_per_swapout"
RESWAP_KEY = ("w", "reswap", "pswpout_per_swapout", "", "patched")


def test_a_difference_whose_interval_crosses_the_margin_is_a_verdict_one_inside_is_not():
    base = [0.981, 0.979, 0.986, 0.981, 0.975, 0.984]
    plan = records.Plan("base", (RESWAP,))
    for shift, verdict, note in ((1.045, "worse", ""), (1.08, "worse", ""),
                                 (1.04, "equivalent", "a difference smaller than the margin"),
                                 (1.006, "equivalent", "a difference smaller than the margin"),
                                 (1.003, "equivalent", "")):
        patched = [value * shift for value in reversed(base)]
        decision = family.decide(cells_of({("reswap", "pswpout_per_swapout"): {"base": base, "patched": patched}}),
                                  plan, ["base", "patched"])[RESWAP_KEY]
        low, high = stats.ratio_change(np.array(base), np.array(patched))[1]
        inside = 0.95 <= low and high <= 1.05
        note = "; ".join([note] * bool(note) + [looks.tail_allowance(6)] * (verdict == "equivalent"))
        assert (decision.verdict, decision.note) == (verdict, note), (shift, low, high, decision)
        assert (verdict == "worse") == (decision.p_adjusted <= records.ALPHA and not inside), (shift, low, high)


def test_no_equivalent_while_a_boot_of_the_variant_lies_outside_the_margin_and_none_of_the_baseline():
    """A patch that breaks in one boot of six: the middle of the boots is unchanged (the equivalence test alone
    passes), the tail is not."""
    share = "w/reuse/reuse_share"
    key = ("w", "reuse", "reuse_share", "", "patched")
    plan = records.Plan("base", (share,))
    whole = cells_of({("reuse", "reuse_share"): {"base": [1.0] * 6, "patched": [1.0] * 6}})
    assert family.decide(whole, plan, ["base", "patched"])[key].verdict == "identical"
    noisy_base = [0.99, 1.0, 1.01, 0.98, 1.0, 1.02]
    broken = cells_of({("reuse", "reuse_share"): {"base": noisy_base, "patched": [1.0, 0.99, 1.01, 0.0, 1.0, 1.0]}})
    assert stats_equivalence(broken, key) <= records.ALPHA, "the location test alone would say equivalent"
    decision = family.decide(broken, plan, ["base", "patched"])[key]
    assert decision.verdict == "inconclusive" and decision.note == FAR_ONE_OF_6
    [row] = [r for r in compare.compare_cells(broken, plan, ["base", "patched"]) if r.variant == "patched"]
    assert row.as_json()["note"] == decision.note
    assert "inconclusive [1]" in tables.render_table([row]) and \
        f"[1] w/reuse/reuse_share patched: {FAR_ONE_OF_6}" in tables.render_markdown([row])
    # the baseline has a boot outside too: one against one is no evidence, six of ten against one is (Fisher)
    both = cells_of({("reuse", "reuse_share"): {"base": noisy_base[:5] + [0.9],
                                               "patched": [1.0, 0.99, 1.01, 0.9, 1.0, 1.0]}})
    assert family.decide(both, plan, ["base", "patched"])[key].verdict == "equivalent"
    ten = np.array(noisy_base[:5] + [0.9] + noisy_base[1:5])
    assert looks.tails(ten, np.array([1.0] * 5 + [0.9] * 5), 0.05) == "", "5 of 10 against 1 of 10: p = 0.07"
    assert looks.tails(ten, np.array([1.0] * 4 + [0.9] * 6), 0.05) == \
        "6 of 10 boots outside +-5% (baseline: 1 of 10)", "6 of 10 against 1 of 10: p = 0.029"


def stats_equivalence(cells, key) -> float:
    by_variant = cells[key[:4]]
    return stats.equivalence_p(by_variant["base"][1], by_variant["patched"][1], 0.05)


def test_a_broken_boot_withholds_equivalent_however_noisy_the_baseline():
    """Issue 37: with one baseline boot outside the margin too, Fisher's test (one against one) let `equivalent`
    stand on a sample holding a broken boot, at any distance. A boot beyond the baseline's farthest by more than
    the margin withholds it; one inside the baseline's spread does not."""
    key = ("w", "reswap", "pswpout_per_swapout", "", "patched")
    plan = records.Plan("base", ("w/reswap/pswpout_per_swapout",))
    base = [0.98, 0.99, 1.0, 1.0, 1.01, 0.91]         # one boot at -9%, as on redis/swapout/system.cow_copies
    for last, verdict in ((0.92, "equivalent"), (0.87, "equivalent"), (0.85, "inconclusive"), (0.5, "inconclusive")):
        patched = [1.0, 0.99, 1.01, 1.0, 0.98, last]
        decision = family.decide(cells_of({("reswap", "pswpout_per_swapout"): {"base": base, "patched": patched}}),
                                  plan, ["base", "patched"])[key]
        assert decision.verdict == verdict, (last, decision)
        if verdict == "inconclusive":
            assert decision.note == FAR_ONE_OF_6, decision
        else:
            assert decision.note.endswith("a failure in up to 39% of boots is not ruled out (95%)"), decision
    assert looks.tail_allowance(6) == ("no boot of 6 beyond the baseline's by the margin: a failure in up to 39% "
                                         "of boots is not ruled out (95%)")


def test_a_row_decided_equivalent_is_opened_again_by_a_later_broken_boot():
    share = "w/reuse/reuse_share"
    key = ("w", "reuse", "reuse_share", "", "patched")
    plan = records.Plan("base", (share,), design=records.Design.sequential(6, 10))
    cells = cells_of({("reuse", "reuse_share"): {"base": [1.0] * 7, "patched": [1.0] * 6 + [0.0]}})
    first = family.decide(resample.up_to(cells, 6), plan, ["base", "patched"])[key]
    assert (first.verdict, first.decided_after) == ("identical", 6)
    later = family.decide(cells, plan, ["base", "patched"])[key]
    assert later.verdict == "inconclusive" and later.note == FAR_ONE_OF_7
    assert not family.all_decided(cells, plan, ["base", "patched"]), "the run goes on: more boots may show more"
    noisy = [1.0, 0.99, 1.01, 1.0, 0.98, 1.02]
    cells = cells_of({("reuse", "reuse_share"): {"base": noisy + [1.0], "patched": noisy[::-1] + [0.0]}})
    first = family.decide(resample.up_to(cells, 6), plan, ["base", "patched"])[key]
    assert (first.verdict, first.decided_after) == ("equivalent", 6)
    later = family.decide(cells, plan, ["base", "patched"])[key]
    assert later.verdict == "inconclusive" and later.note == FAR_ONE_OF_7
    assert not family.all_decided(cells, plan, ["base", "patched"]), "the run goes on: more boots may show more"


def test_another_baseline_has_no_control(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    metadata["control"] = "patched"           # pretend: patched was the control of this run
    (copy / "metadata.json").write_text(json.dumps(metadata))
    assert analysis.comparison([copy]).plan.control == "patched"
    assert analysis.comparison([copy], baseline="patched").plan.control is None, \
        "a control is the recorded baseline again: it says nothing about another baseline"


def row_values(samples: pd.DataFrame, row: records.Row) -> tuple[np.ndarray, np.ndarray]:
    """The values of a row's baseline and variant in one mode (the counted boots' when both have it)."""
    mine = samples[(samples["workload"] == row.workload) & (samples["phase"] == row.phase) &
                   (samples["metric"] == row.metric)]
    mode = "counted" if (mine["mode"] == "counted").any() else "timed"
    mine = mine[mine["mode"] == mode]
    return (mine[mine["variant"] == row.baseline]["value"].to_numpy(),
            mine[mine["variant"] == row.variant]["value"].to_numpy())


def test_the_golden_run_cannot_decide_with_two_boots_a_side():
    samples, runs, metadata = results.read(RUN)
    comparison = compare.compare(samples, runs, records.Plan.from_metadata(metadata))
    assert comparison.invalid == 0
    measured = [r for r in comparison.rows if (r.phase, r.metric) != sampling.BOOTS]
    assert {r.verdict for r in measured
            if not sampling.one_value(*row_values(samples, r)) and r.variant != r.baseline} == {"inconclusive"}
    assert {r.verdict for r in comparison.rows if r.variant == r.baseline} == {"baseline"}
    assert {r.verdict for r in measured if r.variant != r.baseline and
            sampling.one_value(*row_values(samples, r))} == {"identical"}, "a counter at 0 in all four boots"
    assert {(r.workload, r.verdict, r.median) for r in comparison.rows if (r.phase, r.metric) == sampling.BOOTS
            and r.variant != r.baseline} == {("swapcow", "identical", 1.0), ("redis", "identical", 1.0)}
    found = {(r.workload, r.phase, r.metric, r.variant): r for r in comparison.rows}
    assert found[("swapcow", "write", "cow_copies", "base")].median == 4096
    assert found[("swapcow", "write", "cow_copies", "patched")].median == 0


def test_invalid_runs_are_left_out_and_counted(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[(runs["variant"] == "patched") & (runs["workload"] == "swapcow") & (runs["rep"] == 2), "valid"] = False
    runs.to_csv(copy / "runs.csv", index=False)
    comparison = compare.compare(*results.read(copy)[:2])
    found = {(r.workload, r.phase, r.metric, r.variant): r for r in comparison.rows}
    assert comparison.invalid == int((runs["valid"].astype(str) != "True").sum()) >= 1
    assert found[("swapcow", "write", "cow_copies", "patched")].n == 1
    assert found[("redis", "write", "cow_copies", "patched")].n == 2


def test_runs_that_differ_in_a_comparability_field_are_refused(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[runs["variant"] == "patched", "swap_mb"] = 512
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=r"Runs differ in swap_mb \(1024 vs 512\)"):
        compare.compare(*results.read(copy)[:2])


def test_variants_from_another_kernel_are_compared_only_when_allowed_and_marked(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[runs["variant"] == "patched", ["source", "config_hash"]] = ["debian:linux-source-6.1=6.1.192-2", "c61"]
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match="Runs differ in source"):
        analysis.comparison([copy])
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "mixed_sources": True}))
    comparison = analysis.comparison([copy])
    assert {r.variant for r in comparison.rows if r.other_source} == {"patched"}
    assert any("Other kernel: patched built from another kernel source" in line
               for line in tables.summary_lines(comparison))
    assert "patched (other kernel)" in tables.render_table(comparison.rows)
    runs.loc[(runs["variant"] == "patched") & (runs["rep"] == 1), "config_hash"] = "other"
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match="config_hash"):
        analysis.comparison([copy])     # within one variant the kernel must still be one


def test_a_variant_with_the_baselines_object_code_is_judged_as_a_control(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "as_control": ["patched"]}))
    comparison = analysis.comparison([copy])
    assert {r.role for r in comparison.rows if r.variant == "patched"} == {"control"}
    assert "`patched` (object code identical to the baseline)" in tables.calibration_line(comparison)
    assert {r.role for r in analysis.comparison([copy], baseline="patched").rows} != {"control"}
    sentence = report.headline_sentence(comparison.rows, "redis/write/cow_copies_per_swapin", "5.10.223", "tcg")
    assert sentence.startswith("Every variant here ran as an A/A control against `base` (patched: "), sentence


def split_by_variant(tmp_path, controls=True):
    """The golden run as two folders: the baseline's boots in one, the patched boots in the other, each
    with a control (the baseline's boots again, standing in for the baseline kernel booted again)."""
    folders = []
    for variant in ("base", "patched"):
        folder = tmp_path / variant
        shutil.copytree(RUN, folder)
        for name in ("runs.csv", "samples.csv"):
            frame = pd.read_csv(folder / name)
            kept = [frame[frame["variant"] == variant]]
            if controls:
                kept.append(frame[frame["variant"] == "base"].assign(variant="control"))
            pd.concat(kept).to_csv(folder / name, index=False)
        if controls:
            metadata = json.loads((folder / "metadata.json").read_text())
            metadata["control"] = "control"
            (folder / "metadata.json").write_text(json.dumps(metadata))
        folders.append(folder)
    return folders


def test_folders_are_pooled_like_one_run(tmp_path):
    pooled = analysis.comparison(split_by_variant(tmp_path))
    single = analysis.comparison([RUN])
    as_values = sorted((r.key, r.variant, r.n, r.median, r.p_value) for r in single.rows)
    assert sorted((r.key, r.variant, r.n, r.median, r.p_value) for r in pooled.rows
                  if r.variant != "control") == as_values
    assert pooled.plan.control == "control" and pooled.plan.design == records.Design()
    notes = tables.summary_lines(pooled)
    assert "Pooled: 2 run folders, one look at all their boots at 1 of alpha; each variant against the baseline " \
           "kernel's boots of its own folders (the baseline and the controls)" in notes
    assert any(line.startswith("Drift between folders: the baseline kernel's boots of each folder against") and
               "none moved" in line for line in notes)
    assert not any(line.startswith("Pooled") for line in tables.summary_lines(single))


def test_a_pooled_comparison_needs_a_control_in_each_folder(tmp_path):
    base, patched = split_by_variant(tmp_path / "none", controls=False)
    with pytest.raises(PoolWithoutControl, match=rf"Pooling 2 run folders needs a control in each .*: {base}, "
                                                 rf"{patched} have none; re-run with --control"):
        analysis.comparison([base, patched])
    base, patched = split_by_variant(tmp_path / "one")
    runs = pd.read_csv(patched / "runs.csv")
    runs[runs["variant"] != "control"].to_csv(patched / "runs.csv", index=False)     # declared, never booted
    with pytest.raises(PoolWithoutControl, match=rf": {patched} has none;"):
        analysis.comparison([base, patched])
    runs.loc[runs["variant"] == "control", "valid"] = False
    runs.to_csv(patched / "runs.csv", index=False)                                   # booted, none valid
    with pytest.raises(PoolWithoutControl, match=rf": {patched} has none;"):
        analysis.comparison([base, patched])
    assert analysis.comparison([base]).rows, "one folder needs no control"


def test_pooled_folders_that_differ_are_refused_naming_them(tmp_path):
    base, patched = split_by_variant(tmp_path)
    runs = pd.read_csv(patched / "runs.csv")
    runs["accelerator"] = "kvm"
    runs.to_csv(patched / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=rf"accelerator \(kvm in {patched} vs tcg in {base}\)"):
        analysis.comparison([base, patched])
    metadata = json.loads((patched / "metadata.json").read_text())
    metadata["workloads"]["swapcow"]["size_mb"] = 64
    (patched / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(NotComparable, match=rf"Runs differ in workloads .* in {base} vs .* in {patched}"):
        analysis.comparison([base, patched])


def test_a_row_with_fewer_values_than_boots_says_how_many_and_why(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs, samples = pd.read_csv(copy / "runs.csv"), pd.read_csv(copy / "samples.csv")
    runs.loc[(runs["variant"] == "base") & (runs["workload"] == "redis") & (runs["rep"] == 2)
             & (runs["mode"] == "counted"), "valid"] = False
    runs.to_csv(copy / "runs.csv", index=False)
    dropped = ((samples["variant"] == "base") & (samples["workload"] == "swapcow") & (samples["rep"] == 1)
               & (samples["mode"] == "counted") & (samples["phase"] == "write")
               & samples["metric"].isin(["cow_copies_per_swapin", "cow_copies"]))
    samples[~dropped].to_csv(copy / "samples.csv", index=False)
    rows = {(r.key, r.variant): r for r in analysis.comparison([copy]).rows}
    rate = rows[("swapcow/write/cow_copies_per_swapin", "base")]
    assert (rate.n, rate.n_missing, rate.missing_reason) == (1, 1, "1 with denominator 0")
    count = rows[("swapcow/write/cow_copies", "base")]
    assert (count.n, count.n_missing, count.missing_reason) == (1, 1, "1 not recorded")
    redis = rows[("redis/write/cow_copies_per_swapin", "base")]
    assert (redis.n, redis.n_missing, redis.missing_reason) == (1, 1, "1 invalid")
    timed = rows[("redis/write/duration_s", "base")]
    assert timed.n_missing == 0 and timed.missing_reason == "", "the timed boots of redis base are all valid"
    whole = rows[("swapcow/write/cow_copies_per_swapin", "patched")]
    assert whole.n_missing == 0
    comparison = analysis.comparison([copy])
    line = next(line for line in tables.summary_lines(comparison) if line.startswith("Fewer values"))
    assert "redis/write/cow_copies_per_swapin base 1/2 (1 invalid)" in line
    assert "| swapcow | write | cow_copies_per_swapin * | base | 1/2 |" in tables.render_markdown(comparison.rows)


def test_json_has_exactly_the_documented_keys(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "compare", str(RUN), "--format", "json"])
    assert result.exit_code == 0, result.output
    objects = json.loads(result.output)
    assert all(list(item) == ["workload", "phase", "metric", "variant", "baseline", "n", "n_missing",
                              "missing_reason", "median", "ci_low", "ci_high", "change_pct", "change_ci_low",
                              "change_ci_high", "p_value", "verdict", "role", "p_adjusted", "margin_pct", "note",
                              "exercised", "changed_calls"]
               for item in objects)
    assert {item["verdict"] for item in objects} <= {"better", "worse", "equivalent", "identical", "inconclusive",
                                                     "baseline"}
    assert {item["verdict"] for item in objects if item["variant"] == item["baseline"]} == {"baseline"}
    assert {item["role"] for item in objects} <= {"primary", "exploratory", "control"}
    primary = [item for item in objects if item["role"] == "primary" and item["phase"] != "boots"]
    assert primary and all(item["margin_pct"] == 5.0 for item in primary)
    assert {(item["role"], item["margin_pct"]) for item in objects if item["phase"] == "boots"} == {("primary", None)}
    assert all(item["margin_pct"] is None for item in objects if item["role"] == "exploratory")


def test_a_run_without_a_valid_boot_compares_to_nothing(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs["valid"] = False
    runs.to_csv(copy / "runs.csv", index=False)
    comparison = analysis.comparison([copy])
    assert comparison.invalid == len(runs)
    assert {(r.phase, r.metric, r.median) for r in comparison.rows} == {("boots", "valid_share", 0.0)}, \
        "nothing measured: only the lost boots"
    assert not analysis.decided(results.RunDirectory.load(copy))
    report = analysis.analyse(copy, experiment.load(None)).read_text()
    assert "No valid samples of cow_copies_per_swapin in the write phase of redis: see runs.csv for why." in report


def swept(tmp_path, second_swap_mb=512):
    """run-small as a sweep of two points: every boot again at guest.swap_mb=SECOND, its copies halved."""
    copy = tmp_path / "sweep"
    shutil.copytree(RUN, copy)
    runs, samples = pd.read_csv(copy / "runs.csv"), pd.read_csv(copy / "samples.csv")
    other_runs = runs.assign(point=f"guest.swap_mb={second_swap_mb}", swap_mb=second_swap_mb)
    other_samples = samples.assign(point=f"guest.swap_mb={second_swap_mb}")
    halved = other_samples["metric"] == "cow_copies"
    other_samples.loc[halved, "value"] = other_samples.loc[halved, "value"] / 2
    pd.concat([runs.assign(point="guest.swap_mb=1024"), other_runs]).to_csv(copy / "runs.csv", index=False)
    pd.concat([samples.assign(point="guest.swap_mb=1024"), other_samples]).to_csv(copy / "samples.csv", index=False)
    return copy


def test_a_sweep_compares_point_by_point_and_the_family_counts_every_point(tmp_path):
    plan = records.Plan("base", ("swapcow/write/cow_copies",))
    single = {(r.key, r.variant): r for r in compare.compare(*results.read(RUN)[:2], plan).rows}
    rows = compare.compare(*results.read(swept(tmp_path))[:2], plan).rows
    by_point = {(r.point, r.key, r.variant): r for r in rows}
    one, other = by_point[("guest.swap_mb=1024", "swapcow/write/cow_copies", "base")], \
        by_point[("guest.swap_mb=512", "swapcow/write/cow_copies", "base")]
    assert one.median == single[("swapcow/write/cow_copies", "base")].median == 2 * other.median
    primary = [r for r in rows if r.margin_pct is not None and r.variant == "patched"]
    assert {r.point for r in primary} == {"guest.swap_mb=1024", "guest.swap_mb=512"}
    alone = single[("swapcow/write/cow_copies", "patched")].p_adjusted
    assert all(r.p_adjusted >= min(1.0, alone * 2) - 1e-12 for r in primary), "two points: twice the hypotheses"
    assert all("point" in r.as_json() for r in rows)
    assert "at guest.swap_mb=512" in tables.render_table(rows)


def test_a_sweep_may_vary_its_axis_between_points_but_nothing_else_within_one(tmp_path):
    copy = swept(tmp_path)
    compare.compare(*results.read(copy)[:2])
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[(runs["variant"] == "patched") & (runs["point"] == "guest.swap_mb=512"), "guest_memory_mb"] = 2048
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=r"guest_memory_mb \(1024 vs 2048\)"):
        compare.compare(*results.read(copy)[:2])


def test_cells_from_two_hosts_are_refused_unless_the_experiment_allows_or_the_host_is_an_axis(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    assert set(results.read(copy)[1]["host"]) == {"vm"}, "an older folder ran on the host its metadata names"
    runs = pd.read_csv(copy / "runs.csv")
    runs["host"] = np.where(runs["rep"] == 1, "vm", "w2")
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=r"host \(vm vs w2\).*sweep host.name or set mixed_hosts = true"):
        analysis.comparison([copy])
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "mixed_hosts": True}))
    assert analysis.comparison([copy]).rows
    (copy / "metadata.json").write_text(json.dumps(metadata))
    runs["point"] = "host.name=" + runs["host"]
    runs.to_csv(copy / "runs.csv", index=False)
    samples = pd.read_csv(copy / "samples.csv")
    samples["point"] = "host.name=" + np.where(samples["rep"] == 1, "vm", "w2")
    samples.to_csv(copy / "samples.csv", index=False)
    rows = analysis.comparison([copy]).rows
    assert {row.point for row in rows} == {"host.name=vm", "host.name=w2"}, "each host a point of its own"


def test_guests_with_other_vcpus_are_not_compared(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs.loc[runs["variant"] == "patched", "cpus"] = 1
    runs.to_csv(copy / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=r"Runs differ in cpus \(1 vs 2\)"):
        analysis.comparison([copy])


@pytest.mark.parametrize("value", [0.0, -0.0, 3.0, 4096.0, 1e-7, float("inf")])
def test_a_row_of_one_value_gets_the_figures_of_the_general_path(value):
    """describe and change work out a row that holds one value everywhere once per (value, sizes); what they
    give must be what the general path gives, sign of zero and infinities included."""
    for n, m in ((6, 6), (3, 5), (1, 1), (10, 7)):
        base, other = np.full(n, value), np.full(m, value)
        worked_out = compare._change(base, other, sampling.one_value(base, other))
        assert repr(compare.change(base, other)) == repr(worked_out), (value, n, m)
        assert repr(compare.describe(other)) == repr(compare._described(other)), (value, m)
    assert repr(compare.describe(np.full(6, -0.0))["median"]) == "-0.0"
    assert compare.change(np.full(6, 2.0), np.full(6, 3.0))["p_value"] < 0.01, "two values: the general path"


def runs_of(lost: dict, reps: int = 6, reason: str = "reswap gate: too few pages swapped out") -> pd.DataFrame:
    """runs.csv of workload 'w': base and patched, counted and timed boots; lost: {variant: [rep, ...]} whose
    counted boot failed with `reason`."""
    return pd.DataFrame([{"variant": variant, "workload": "w", "rep": rep, "mode": mode,
                          "valid": not (mode == "counted" and rep in lost.get(variant, ())),
                          "reason": reason if mode == "counted" and rep in lost.get(variant, ()) else None}
                         for variant in ("base", "patched") for rep in range(1, reps + 1)
                         for mode in ("counted", "timed")])


def test_a_repetition_is_lost_when_a_boot_of_it_fails_or_the_harness_does_but_not_when_its_worker_is_lost():
    runs = runs_of({"patched": [2, 5]})
    runs.loc[(runs["variant"] == "base") & (runs["rep"] == 3) & (runs["mode"] == "timed"),
             ["valid", "reason"]] = [False, "failed: harness fault KeyError: 'x'"]
    runs.loc[(runs["variant"] == "base") & (runs["rep"] == 4), ["valid", "reason"]] = \
        [False, "failed: worker tcp://h:1 on h was lost during the cell; it runs once more on another worker"]
    cells = sampling.boot_cells(runs)
    reps, values = cells[("w", "boots", "valid_share", "")]["patched"]
    assert reps.tolist() == [1, 2, 3, 4, 5, 6] and values.tolist() == [1, 0, 1, 1, 0, 1]
    reps, values = cells[("w", "boots", "valid_share", "")]["base"]
    assert reps.tolist() == [1, 2, 3, 5, 6] and values.tolist() == [1, 1, 0, 1, 1], \
        "rep 3 lost its timed boot to a fault of the harness; rep 4 had nothing but boots its worker lost"


def lost_decision(lost: dict, reps: int = 6, design: records.Design = records.Design()):
    runs = runs_of(lost, reps)
    primary = {"base": [0.98, 0.99, 1.0, 1.01, 1.02, 0.97, 0.985, 1.005, 0.995, 1.015][:reps]}
    primary["patched"] = primary["base"][::-1]
    cells = cells_of({("reswap", "pswpout_per_swapout"): primary}) | sampling.boot_cells(runs)
    plan = records.Plan("base", (RESWAP,), design=design)
    decisions = family.decide(cells, plan, ["base", "patched"])
    return decisions[("w", "boots", "valid_share", "", "patched")], decisions[RESWAP_KEY]


def test_a_variant_that_loses_more_repetitions_is_worse_inside_the_primary_family():
    clean, row = lost_decision({})
    assert clean.verdict == "identical" and row.verdict == "equivalent"
    _, alone = lost_decision({"base": [1]})
    assert alone.p_adjusted == row.p_adjusted, "a loss that cannot reach the bar does not grow the family"
    one, with_one = lost_decision({"patched": [3]})
    assert (one.verdict, one.note) == ("inconclusive", "1 of 6 repetitions lost a boot (baseline: 0 of 6)")
    assert (with_one.verdict, with_one.note) == ("inconclusive", "1 of 6 repetitions lost a boot (baseline: 0 of 6): "
                                                 "the boots left are those that passed"), \
        "no claim of no change about the boots a gate left"
    assert with_one.p_equivalence == row.p_equivalence
    _, with_base_lost = lost_decision({"base": [2], "patched": [3]})
    assert with_base_lost.verdict == "equivalent", "lost alike: the boots left are a fair sample"
    every, with_every = lost_decision({"patched": [1, 2, 3, 4, 5, 6]})
    assert every.verdict == "worse" and every.p_adjusted == pytest.approx(2 * (1 / 924)), \
        "6 of 6 against 0 of 6: Fisher's p 1/924, in a family of two groups"
    assert with_every.p_adjusted >= row.p_adjusted, "the family grew by one"
    ten, _ = lost_decision({"patched": [1, 2, 4, 5, 7, 8, 9]}, reps=10)
    assert ten.verdict == "worse", "7 of 10 against 0 of 10: p = 0.0015"
    auto = records.Design.sequential(6, 10)
    assert family.all_decided(cells_of({("reswap", "pswpout_per_swapout"): {"base": [1.0] * 6,
                                                                            "patched": [1.0] * 6}})
                               | sampling.boot_cells(runs_of({"base": [3]})),
                               records.Plan("base", (RESWAP,), design=auto), ["base", "patched"]), \
        "a lost-boots row where the baseline lost more does not hold the run"
    assert not family.all_decided(cells_of({("reswap", "pswpout_per_swapout"): {"base": [1.0] * 6,
                                                                                "patched": [1.0] * 6}})
                                   | sampling.boot_cells(runs_of({"patched": [3]})),
                                   records.Plan("base", (RESWAP,), design=auto), ["base", "patched"]), \
        "one where the variant lost more does: more repetitions can show it"


def with_lost_boots(source, copy, workload: str, reason: str):
    """A copy of the run in source whose counted boots of `patched` in workload all failed with reason."""
    shutil.copytree(source, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs["reason"] = runs["reason"].astype(object)
    lost = (runs["variant"] == "patched") & (runs["workload"] == workload) & (runs["mode"] == "counted")
    runs.loc[lost, ["valid", "reason"]] = [False, reason]
    runs.to_csv(copy / "runs.csv", index=False)
    return copy


def test_lost_boots_are_a_row_of_every_table_with_their_reasons(tmp_path):
    copy = with_lost_boots(RUN, tmp_path / "run", "swapcow", "gate: the write phase copied nothing")
    comparison = analysis.comparison([copy])
    rows = {(r.key, r.variant): r for r in comparison.rows}
    row = rows[("swapcow/boots/valid_share", "patched")]
    assert (row.n, row.median, row.change_pct, row.verdict) == (2, 0.0, -100.0, "inconclusive")
    assert row.note == "2 of 2 repetitions lost a boot (baseline: 0 of 2): 2 x gate: the write phase copied nothing"
    assert rows[("redis/boots/valid_share", "patched")].verdict == "identical"
    assert row.as_json()["metric"] == "valid_share"
    table = tables.render_table(comparison.rows)
    assert "boots   valid_share" in table and "[1] swapcow/boots/valid_share patched: 2 of 2 repetitions" in table


def lose(run, copy, workload: str, variant: str, reps, reason: str):
    """A copy of run whose boots of variant in workload at reps failed with reason."""
    shutil.copytree(run, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs["reason"] = runs["reason"].astype(object)
    lost = (runs["variant"] == variant) & (runs["workload"] == workload) & runs["rep"].isin(reps)
    runs.loc[lost, ["valid", "reason"]] = [False, reason]
    runs.to_csv(copy / "runs.csv", index=False)
    return copy


def test_a_verdict_on_the_boots_that_passed_says_so(tmp_path):
    """A `better` that stands on the boots left after the variant lost more than the baseline carries the loss."""
    reference = max(ROOT.glob("results/reference-*"))
    copy = lose(reference, tmp_path / "run", "swapcow", "patched", [6], "write: a gate failed")
    rows = {(r.key, r.variant): r for r in analysis.comparison([copy]).rows}
    lost = "1 of 6 repetitions lost a boot (baseline: 0 of 6): "
    explored = rows[("swapcow/write/cow_copies", "patched")]
    assert (explored.n, explored.verdict) == (5, "better"), explored
    assert explored.note == lost + "this rests on the boots that passed", "behind the open gate (redis's)"
    row = rows[("swapcow/write/cow_copies_per_swapin", "patched")]
    assert row.n == 5 and row.margin_pct is not None and row.note == lost + (
        "this rests on the boots that passed" if row.verdict == "better" else "the boots left are those that passed"), \
        row
    assert rows[("redis/write/cow_copies_per_swapin", "patched")].note == "", "redis lost nothing"


def split_reference(tmp_path, auto: bool, drift: float = 1.0, row=("redis", "write", "cow_copies_per_swapin"),
                    moved=("control",)) -> list:
    """The reference run as two folders: base and control in the first, patched and control in the second,
    the second's values of row, of the variants moved, times `drift`."""
    reference = max(ROOT.glob("results/reference-*"))
    folders = []
    for kept, scale in ((("base", "control"), 1.0), (("patched", "control"), drift)):
        folder = tmp_path / kept[0]
        folder.mkdir(parents=True)
        for name in ("runs.csv", "samples.csv"):
            frame = pd.read_csv(reference / name)
            frame = frame[frame["variant"].isin(kept)]
            if name == "samples.csv":
                scaled = frame["variant"].isin(moved) & (frame["workload"] == row[0]) & \
                    (frame["phase"] == row[1]) & (frame["metric"] == row[2])
                frame.loc[scaled, "value"] *= scale
            frame.to_csv(folder / name, index=False)
        metadata = json.loads((reference / "metadata.json").read_text())
        if not auto:
            metadata["reps"] = 6
        (folder / "metadata.json").write_text(json.dumps(metadata))
        folders.append(folder)
    return folders


def test_pooled_folders_of_reps_auto_take_the_alpha_their_designs_allow(tmp_path):
    fixed = analysis.comparison(split_reference(tmp_path / "fixed", auto=False))
    assert fixed.plan.design.whole == 1.0
    auto = analysis.comparison(split_reference(tmp_path / "auto", auto=True))
    assert auto.plan.design.whole == pytest.approx(1 / 25), "two designs of 5 looks: 25 ways to have stopped"
    line = next(line for line in tables.summary_lines(auto) if line.startswith("Primary"))
    assert "one look at all repetitions, at 0.04 of alpha (the folders' --reps auto designs could have stopped " \
           "at 25 combinations of repetitions)" in line
    key = ("redis/write/cow_copies_per_swapin", "patched")
    row, alone = {(r.key, r.variant): r for r in auto.rows}[key], {(r.key, r.variant): r for r in fixed.rows}[key]
    assert alone.verdict == "better"
    assert row.p_adjusted == pytest.approx(alone.p_adjusted * 25) and row.verdict == "inconclusive", \
        "6 + 6 boots cannot pass a bar 25 times lower: pool folders of a fixed design"


def test_a_baseline_that_moved_between_pooled_folders_is_named(tmp_path):
    steady = tables.summary_lines(analysis.comparison(split_reference(tmp_path / "steady", auto=False)))
    assert any(line.startswith("Drift between folders:") and "none moved" in line for line in steady)
    moved = analysis.comparison(split_reference(tmp_path / "moved", auto=False, drift=1.5))
    line = tables.calibration_line(moved)
    assert line.startswith("CALIBRATION FAILED") and moved.failed, line
    assert "moved between the pooled folders (redis/write/cow_copies_per_swapin in" in line, line


def test_a_day_effect_between_pooled_folders_is_no_change_of_the_patch(tmp_path):
    """Issue 37: folder A held base + control, folder B patched + control, and B's values of one row were scaled
    by 1.06, a pure day effect. `harness compare A B` printed the drift line, passed the calibration and called
    patched `worse`, +6.1% [4.9, 7.4]. Now patched is judged against B's control (the baseline kernel on its own
    day), and the drift fails the calibration."""
    row = ("redis", "reswap", "pswpout_per_swapout")
    folders = split_reference(tmp_path, auto=False, drift=1.06, row=row, moved=("patched", "control"))
    pooled = analysis.comparison(folders)
    rows = {(r.key, r.variant): r for r in pooled.rows}
    judged = rows[("/".join(row), "patched")]
    assert judged.verdict not in ("better", "worse") and abs(judged.change_pct) < 2, judged
    line = tables.calibration_line(pooled)
    assert pooled.failed and line.startswith("CALIBRATION FAILED"), line
    assert "moved between the pooled folders (redis/reswap/pswpout_per_swapout in" in line, line
    steady = analysis.comparison(split_reference(tmp_path / "steady", auto=False, row=row, moved=("patched",
                                                                                                   "control")))
    assert steady.drift == () and rows[("/".join(row), "patched")].median != \
        {(r.key, r.variant): r for r in steady.rows}[("/".join(row), "patched")].median


def test_the_control_is_judged_on_every_row_at_once(tmp_path):
    reference = max(ROOT.glob("results/reference-*"))
    samples, runs, metadata = results.read(reference)
    plan = records.Plan.from_metadata(metadata)
    clean = compare.compare(samples, runs, plan)
    [(name, p, rows)] = clean.whole_table
    assert name == "control" and p > records.ALPHA and rows > 500
    assert f"over all {rows} rows at once (whole boots permuted) `control` against `base`: p = " in \
        tables.calibration_line(clean)
    # the patched kernel standing in for the control: every row at once sees it, p at the resolution of the
    # 2,000 permutations
    swapped = runs.assign(variant=runs["variant"].replace({"control": "spare", "patched": "control"}))
    moved = samples.assign(variant=samples["variant"].replace({"control": "spare", "patched": "control"}))
    standing_in = compare.compare(moved, swapped, plan)
    [(_, p, _)] = standing_in.whole_table
    assert p <= records.ALPHA and tables.calibration_line(standing_in).startswith("CALIBRATION FAILED"), p


def test_lost_boots_alone_open_no_exploratory_gate_and_a_row_left_out_shows_its_family_p():
    runs = runs_of({"patched": [1, 2, 3, 4, 5, 6]})
    cells = cells_of({("write", "cow_copies"): {"base": BASE_COPIES, "patched": [3, 3, 3, 4, 3, 2]}}) | \
        sampling.boot_cells(runs)
    rows = {(r.phase, r.metric, r.variant): r for r in compare.compare_cells(cells, records.Plan("base", ()),
                                                                             ["base", "patched"])}
    assert rows[("boots", "valid_share", "patched")].verdict == "worse"
    assert rows[("write", "cow_copies", "patched")].verdict == "inconclusive", \
        "a lost-boots verdict is no declared finding: the exploratory rows stay closed"
    left_out, _ = lost_decision({"patched": [1, 2, 3, 4]})
    assert left_out.verdict == "inconclusive" and left_out.p_adjusted == pytest.approx(
        min(1.0, stats.more_often(4, 6, 0, 6) * 2)), "the p it would have had in a family of two"

