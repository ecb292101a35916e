"""Every row of a comparison (harness/analysis/compare.py): primary and exploratory rows, gatekeeping, the
control and the whole-table test, --reps auto's stopping rule on rows, comparability, pooled folders, sweeps,
lost boots in the tables, and the JSON contract. The primary family itself (decide, tails, Tarone) is
test_family.py's; the exact statistics test_stats.py's."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from harness import experiment, results
from harness.analysis import analyse as analysis
from harness.analysis import compare, family, records, report, sampling, stats, tables
from harness.errors import NotComparable, PoolWithoutControl
from harness.project import ROOT
from tests.analysis.test_family import BASE_COPIES, BASE_IO, BASE_IO_RATE, cells_of, lost_decision, runs_of, verdicts
from tests.conftest import DATA

RUN = DATA / "run-small"   # a real 2-rep run of the default experiment (swapcow 16 MiB, redis 4000 keys)
PRIMARY = ("w/write/cow_copies", "w/reswap/vmstat.pswpout")


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

