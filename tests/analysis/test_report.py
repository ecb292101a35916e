import dataclasses
import json
import shutil

import matplotlib.pyplot as plt
import pandas as pd

from harness import experiment, metrics, results
from harness import sweep as sweeps
from harness.analysis import analyse as analysis
from harness.analysis import discovery, plots, report, sampling
from harness.project import ROOT
from tests.analysis.test_compare import with_lost_boots
from tests.conftest import DATA

RUN = DATA / "run-small"
FIGURES = ("copies", "copy-rate", "write-duration", "ops", "swapins", "swapouts", "reswap")


def test_plots_and_report_from_a_golden_run(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    report = analysis.analyse(copy, experiment.load(None))
    text = report.read_text()
    first = text.splitlines()[2]
    assert first.startswith("On Linux 5.10.223 under TCG, `patched` changes cow_copies_per_swapin in the write "
                            "phase of redis")
    assert "**inconclusive**" in first and "n = 2 + 2" in first, "2 boots a side cannot decide anything"
    assert "| redis/write/cow_copies_per_swapin | patched | 2 + 2 |" in text
    assert "## Instrumentation cost" in text and "| swapcow | write | duration_s | base |" in text
    assert "- redis, patched, timed: 2 valid of 2" in text and "- Repetitions: 2 (fixed)" in text
    assert "cannot give the seconds or the ratio that hardware would show" in text
    for name in FIGURES:
        png, svg = copy / "plots" / f"{name}.png", copy / "plots" / f"{name}.svg"
        assert png.stat().st_size > 10_000 and svg.is_file(), name
        assert f"![{name}](plots/{name}.png)" in text
    svg = (copy / "plots" / "write-duration.svg").read_text()
    assert "TCG" in svg and "emulated" in svg and "patched: inconclusive" in svg, "the tables' word"
    assert "Reproduce: `harness run" in text and "patch hash" in text and "config hash" in text
    comparison = json.loads((copy / "comparison.json").read_text())
    assert {row["role"] for row in comparison} == {"primary", "exploratory"}
    assert "analysis" in results.RunDirectory.load(copy).metadata.stage_seconds




def test_the_report_lists_the_functions_whose_code_a_variant_changed(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    directory = results.RunDirectory.load(copy)
    bloat = "add/remove: 0/0 grow/shrink: 1/0 up/down: 64/0 (64)\nFunction  old  new  delta\ndo_wp_page  442  506  +64"
    directory.update_metadata(object_code={"patched": {
        "variant": "patched", "baseline": "base", "identical": False, "changed": ["do_wp_page", "unmap_page_range"],
        "added": [], "removed": [], "sections": {".text": [10, 10]}, "bloat": bloat}})
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    assert "## Object code" in text
    assert "- `patched`: code changed in `do_wp_page`, `unmap_page_range`" in text and "do_wp_page  442  506" in text


def test_the_report_says_which_state_of_a_dir_tree_was_built(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    directory = results.RunDirectory.load(copy)
    builds = {name: vars(facts) | {} for name, facts in directory.metadata.builds.items()}
    builds["base"]["source_state"] = {"path": "/src/linux", "git_commit": "0123456789abcdef" * 2 + "01234567",
                                      "diff_sha256": "fe" * 32, "changed_files": 1, "untracked_files": 2,
                                      "untracked_sha256": "ab" * 32}
    builds["patched"]["source_state"] = {"path": "/src/other", "files": 70614, "listing_sha256": "cd" * 32}
    directory.update_metadata(builds=builds)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    assert ("; tree /src/linux at 0123456789ab with 1 changed and 2 untracked files (diff sha256 fefefefefefe)"
            in text)
    assert "; tree /src/other of 70,614 files (listing sha256 cdcdcdcdcdcd)" in text


def test_every_warning_a_cell_recorded_is_listed_in_the_report(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    warned = (runs["variant"] == "base") & (runs["workload"] == "swapcow")
    runs["warnings"] = runs["warnings"].astype(object)
    runs.loc[warned, "warnings"] = "read: vm_swap_full: swap was 80% used; write: no copy causes"
    runs.to_csv(copy / "runs.csv", index=False)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    total = int(warned.sum())
    assert "## Warnings" in text
    assert f"- swapcow, `base`, {total} of {total} boots: read: vm_swap_full: swap was 80% used" in text
    assert f"- swapcow, `base`, {total} of {total} boots: write: no copy causes" in text
    assert "`patched`" not in text.split("## Warnings")[1].split("##")[0]


def test_a_run_of_one_variant_says_so_in_its_first_line(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    for name in ("runs.csv", "samples.csv"):
        frame = pd.read_csv(copy / name)
        frame[frame["variant"] == "base"].to_csv(copy / name, index=False)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    first = text.splitlines()[2]
    assert first.startswith("Only `base` ran here, so there is nothing to compare it with: "
                            "cow_copies_per_swapin in the write phase of redis has a median of"), first
    assert "No valid samples" not in text and "## Warnings" not in text


def test_a_variant_whose_boots_all_failed_is_named_in_the_first_line(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    runs = pd.read_csv(copy / "runs.csv")
    runs["reason"] = runs["reason"].astype(object)
    runs.loc[runs["variant"] == "patched", "valid"] = False
    runs.loc[runs["variant"] == "patched", "reason"] = "failed: kernel panic"
    runs.to_csv(copy / "runs.csv", index=False)
    lines = [line for line in analysis.analyse(copy, experiment.load(None)).read_text().splitlines()[2:6] if line]
    assert lines[0].startswith("**Lost boots: a variant lost more repetitions than `base`: `patched` in swapcow: 2 of "
                               "2 repetitions lost a boot (baseline: 0 of 2): 4 x failed: kernel panic"), lines
    assert lines[1].startswith("No valid samples of cow_copies_per_swapin in the write phase of redis from "
                               "`patched`: see runs.csv for why (`base` has a median of"), lines


def test_the_first_line_is_of_a_declared_row_whose_workload_ran(tmp_path):
    """The default experiment's headline is redis's; a run of swapcow alone opens with swapcow's primary row, not
    with "No valid samples" of a workload nobody asked for."""
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    for name in ("runs.csv", "samples.csv"):
        table = pd.read_csv(copy / name)
        table[table["workload"] == "swapcow"].to_csv(copy / name, index=False)
    first = analysis.analyse(copy, experiment.load(None)).read_text().splitlines()[2]
    assert "cow_copies_per_swapin in the write phase of swapcow from a median of 1.01 to 0" in first, first


def test_a_declared_row_of_a_phase_the_workload_does_not_have_is_never_the_first_line(tmp_path):
    """Held out: `try` of a patch only stress-ng ran opened with "No valid samples of cow_copies in the write
    phase of stressng: see runs.csv for why" though every boot was valid: stressng has no write phase."""
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    declared = dataclasses.replace(experiment.load(None), headline="swapcow/pageswap/cow_copies",
                       primary=("swapcow/pageswap/cow_copies",))
    first = analysis.analyse(copy, declared).read_text().splitlines()[2]
    assert "No valid samples" not in first and "pageswap" not in first, first
    assert first.startswith("On Linux 5.10.223 under TCG, `patched` changes cow_copies in the write phase of"), first
    runs = pd.read_csv(copy / "runs.csv")
    runs["reason"] = runs["reason"].astype(object)
    lost = runs["workload"] == "swapcow"
    runs.loc[lost, "valid"], runs.loc[lost, "reason"] = False, "failed: kernel panic"
    runs.to_csv(copy / "runs.csv", index=False)
    first = analysis.analyse(copy, declared).read_text().splitlines()[2]
    assert first == "No valid samples of cow_copies in the pageswap phase of swapcow: see runs.csv for why.", \
        "a declared row of a workload that measured nothing is the first line, and says so"


def test_a_closed_gate_still_says_what_moved_and_how_to_judge_it(tmp_path):
    """Held out: a patch that turned swap readahead off, run with the default primary rows: all `equivalent`,
    rightly, and nothing else said while major faults in redis's read phase rose 523%. Here the reference run
    with forkcow's reuse share (identical) as its only primary row: the copies that moved are named, unjudged,
    and confirm.toml declares them primary for a run on fresh boots."""
    copy = tmp_path / "run"
    shutil.copytree(max(ROOT.glob("results/reference-*")), copy)
    recorded = json.loads((copy / "metadata.json").read_text())
    recorded.update(primary=["forkcow/reuse/reuse_share"],
                    experiment_file=str(ROOT / "experiments" / "do-wp-page-swapcache.toml"))
    (copy / "metadata.json").write_text(json.dumps(recorded))
    text = analysis.analyse(copy, analysis.recorded_experiment(copy)).read_text()
    said = next(line for line in text.splitlines() if line.startswith("At the exploratory level"))
    assert "rows moved that have no verdict, since no primary row of their variant moved: `patched` " in said, said
    assert f"Judge them on fresh boots: `harness bench -e {copy / 'confirm.toml'} --control`." in said
    confirm = experiment.load(str(copy / "confirm.toml"))
    assert confirm.primary and "forkcow/reuse/reuse_share" not in confirm.primary, confirm.primary
    assert any(row.startswith(("swapcow/write/", "redis/write/")) for row in confirm.primary), confirm.primary
    comparison = analysis.comparison([copy])
    rows = {(r.key, r.variant): r for r in comparison.rows}
    assert not [r for r in comparison.rows if r.role == "exploratory" and r.verdict in ("better", "worse")]
    assert rows[("swapcow/write/cow_copies", "patched")] in discovery.unjudged(comparison.rows, comparison.plan)
    assert not [r for r in discovery.unjudged(comparison.rows, comparison.plan) if r.variant == "control"], \
        "the A/A control moved nothing"


def test_a_sweeps_warnings_count_the_boots_of_their_own_point():
    runs = pd.DataFrame({"workload": ["swapcow"] * 4, "variant": ["base"] * 4, "rep": [1, 2, 1, 2],
                         "point": ["swap_mb=72", "swap_mb=72", "swap_mb=256", "swap_mb=256"],
                         "warnings": ["read: vm_swap_full", "", "", ""]})
    assert report.warning_lines(runs)[-2] == "- swapcow at swap_mb=72, `base`, 1 of 2 boots: read: vm_swap_full"


def test_figures_name_each_variants_kernel_when_they_differ():
    samples, runs, metadata = results.read(RUN)
    assert analysis.plots.subtitle(metadata, runs).startswith("Linux 5.10.223, TCG | base: no patches; patched: ")
    mixed = runs.copy()
    mixed.loc[mixed["variant"] == "patched", "kernel_release"] = "6.1.192"
    text = analysis.plots.subtitle(metadata, mixed)
    assert text.startswith("TCG | base: Linux 5.10.223, no patches; patched: Linux 6.1.192, "), text


def with_causes(copy):
    """run-small with copy causes added to its counted boots: the write phase's copies were swap-cache
    copies on base and are gone on patched; a few shared copies everywhere."""
    samples = pd.read_csv(copy / "samples.csv")
    counted = samples[(samples["metric"] == "cow_copies") & (samples["mode"] == "counted")]
    added = []
    for row in counted.itertuples(index=False):
        swapcache = row.value if row.phase == "write" else 0
        for cause, value in (("swapcache", swapcache), ("shared", row.value - swapcache), ("zero_page", 0)):
            added.append({**row._asdict(), "metric": f"cow_copies.{cause}", "value": value})
    pd.concat([samples, pd.DataFrame(added)]).to_csv(copy / "samples.csv", index=False)


def test_copies_by_cause_are_stacked_per_variant_and_the_report_names_the_cause_that_moved(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    with_causes(copy)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    samples = pd.read_csv(copy / "samples.csv")
    write = samples[(samples["phase"] == "write") & (samples["metric"] == "cow_copies.swapcache")
                    & (samples["workload"] == "redis")]
    base, patched = (write[write["variant"] == name]["value"].median() for name in ("base", "patched"))
    assert base > 100 * patched
    sentence = next(line for line in text.splitlines() if line.startswith("By cause"))
    assert sentence == (f"By cause, in the write phase of redis: in `patched` the swap-cache copies went from "
                        f"{base:,.0f} to {patched:,.0f}.")
    assert (copy / "plots" / "causes.png").stat().st_size > 10_000
    svg = (copy / "plots" / "causes.svg").read_text()
    assert "swapcache" in svg and "shared" in svg and "by cause" in svg
    assert "![causes](plots/causes.png)" in text


def test_without_cause_metrics_there_is_no_cause_figure_or_sentence(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    assert "By cause" not in text and not (copy / "plots" / "causes.png").exists()


SWEEP = DATA / "sweep-run"   # real: swapcow 32 MiB at 48, 96 and 160 MiB of swap, base and patched, 2 reps


def test_a_sweep_is_drawn_along_its_axis_with_the_experiments_reference_lines(tmp_path):
    samples, runs, metadata = results.read(SWEEP)
    sweep = sweeps.Sweep.from_dict(metadata.sweep)
    cells = sampling.gather(sampling.valid_samples(samples, runs)[0], runs)
    data = {point: by_variant for (w, p, m, point), by_variant in cells.items()
            if (w, p, m) == ("swapcow", "write", "cow_copies")}
    rows = analysis.comparison([SWEEP]).rows
    figure = plots.sweep_figure("swapcow/write/cow_copies", sweep.axes_of("swapcow"), data, sweep, metadata, runs,
                                rows, ["base", "patched"])
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    plt.close(figure)
    half = lines["half the swap device (vm_swap_full)"]
    assert list(half.get_xdata()) == [48, 96, 160] and list(half.get_ydata()) == [6143.5, 12287.5, 20479.5]
    assert list(lines["pages the workload swapped out"].get_ydata()) == [8192] * 3
    assert list(lines["the workload is half the swap"].get_xdata()) == [64, 64], "a vertical line at 2 x 32 MiB"
    assert "vm_swap_full: 50% in use" not in lines, "a reference of another metric stays off this plot"
    medians = samples[(samples["metric"] == "cow_copies") & (samples["phase"] == "write")].groupby(
        ["variant", "point"])["value"].median()
    base, patched = lines["base (baseline)"], lines["patched"]
    assert list(base.get_ydata()) == [medians[("base", f"guest.swap_mb={swap}")] for swap in (48, 96, 160)]
    assert list(patched.get_ydata()) == [medians[("patched", f"guest.swap_mb={swap}")] for swap in (48, 96, 160)]
    assert base.get_ydata()[0] < 0.8 * 8192 <= base.get_ydata()[1], "past half the swap, fewer copies"


def test_a_sweeps_report_names_the_points_past_half_the_swap(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(SWEEP, copy)
    text = analysis.analyse(copy, experiment.load(str(SWEEP / "experiment.toml"))).read_text()
    assert "## Along the sweep" in text and "Axes: `guest.swap_mb` = 48, 96, 160." in text
    assert "- swapcow at guest.swap_mb=48: 4 of 4 cells" in text and "guest.swap_mb=96:" not in text.split(
        "## Along the sweep")[1].split("##")[0]
    assert "### swapcow at guest.swap_mb=160" in text
    drawn = sorted(path.name for path in (copy / "plots").glob("*.png"))
    assert drawn == ["sweep-swapcow-read-swap_used_pct.png", "sweep-swapcow-write-cow_copies.png"], \
        "a sweep is drawn along its axis, not pooled into the one-point figures"
    assert "At guest.swap_mb=48: `patched` changes cow_copies" in text


def test_a_variant_that_loses_more_repetitions_is_named_under_the_first_line(tmp_path):
    """The reference run with every counted forkcow boot of `patched` failing a gate: 6 of 6 repetitions lost
    against 0 of 6 is worse inside the primary family, and the report says so under its first line."""
    copy = with_lost_boots(max(ROOT.glob("results/reference-*")), tmp_path / "run", "forkcow",
                           "shared-copy gate: the child's pages were not copied")
    comparison = analysis.comparison([copy])
    [row] = [r for r in comparison.rows if r.key == "forkcow/boots/valid_share" and r.variant == "patched"]
    assert (row.verdict, row.median) == ("worse", 0.0)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    lines = text.splitlines()
    lost = next(line for line in lines[:8] if line.startswith("**Lost boots"))
    assert "`patched` in forkcow: 6 of 6 repetitions lost a boot (baseline: 0 of 6): 6 x shared-copy gate" in lost
    assert any(line.startswith("LOST BOOTS: `patched` lost more repetitions of forkcow") for line in lines)
    assert "- forkcow, patched, counted: 0 valid of 6 (invalid: 6 x shared-copy gate: the child's pages were " \
           "not copied)" in lines


def test_a_calibration_failed_by_the_whole_table_alone_is_bold(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(max(ROOT.glob("results/reference-*")), copy)
    for name in ("runs.csv", "samples.csv"):        # the patched kernel's boots as the control's
        frame = pd.read_csv(copy / name)
        frame = frame[frame["variant"] != "control"]
        frame = pd.concat([frame, frame[frame["variant"] == "patched"].assign(variant="control")])
        frame.to_csv(copy / name, index=False)
    comparison = analysis.comparison([copy])
    assert comparison.whole_table_failed and comparison.failed
    lines = analysis.analyse(copy, experiment.load(None)).read_text().splitlines()
    assert lines[2].startswith("**CALIBRATION FAILED: `control` (the baseline kernel again) differs from `base`"), \
        lines[2]


def test_figures_a_cover_letter_can_carry(tmp_path):
    """The reference run's figures: none wider than 1,600 pixels (panels wrap into rows), patches named by
    subject, a caption saying what the marks are, and the same bytes when drawn again."""
    from PIL import Image
    reference = max(ROOT.glob("results/reference-*"))
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("metadata.json", "runs.csv", "samples.csv"):
        shutil.copy(reference / name, copy / name)
    samples, runs, metadata = results.read(copy)
    rows = analysis.comparison([copy]).rows
    paths = plots.plot_all(samples, runs, metadata, copy / "plots", rows)
    pngs = [path for path in paths if path.suffix == ".png"]
    assert len(pngs) >= 6
    for png in pngs:
        assert Image.open(png).size[0] <= 1600, png.name
    svg = (copy / "plots" / "copies.svg").read_text()
    assert "mm: optimize do_wp_page() for exclusive pages in the swapcache" in svg, "named by its subject"
    assert "0001-mm" not in svg and "Points: one boot each; bar: the median; whiskers:" in svg
    again = plots.plot_all(samples, runs, metadata, tmp_path / "again", rows)
    assert [path.read_bytes() for path in paths] == [path.read_bytes() for path in again], "deterministic"


def test_report_of_a_run_rewrites_nothing_it_wrote_before(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    analysis.analyse(copy, experiment.load(None), timed=False)
    before = {path.name: path.read_bytes() for path in sorted(copy.rglob("*")) if path.is_file()}
    analysis.analyse(copy, experiment.load(None), timed=False)
    after = {path.name: path.read_bytes() for path in sorted(copy.rglob("*")) if path.is_file()}
    assert after == before


def test_a_run_without_timed_boots_says_why_in_one_line_and_has_no_timing_row(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    for name in ("runs.csv", "samples.csv"):
        table = pd.read_csv(copy / name, keep_default_na=False)
        table[table["mode"] == "counted"].to_csv(copy / name, index=False)
    why = "the guests run under TCG (no kernel output in 5 s), where a guest second is the emulator's"
    results.RunDirectory.load(copy).update_metadata(modes=("counted",), timing="kvm", untimed=why)
    text = analysis.analyse(copy, experiment.load(None)).read_text()
    section = text.split("## What the timings can carry\n\n", 1)[1].split("\n\n", 1)[0]
    assert section == f"No timed boots were taken: {why}. `--timing` takes them anyway."
    assert "## Instrumentation cost" not in text and "cannot give the seconds" not in text
    rows = json.loads((copy / "comparison.json").read_text())
    assert rows and [row["metric"] for row in rows if metrics.meaning(row["metric"]).timing] == []
