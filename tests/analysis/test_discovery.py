"""A discovery: no row declared, every row judged by the false-discovery rate, and the confirmatory
experiment written from what it found (the error rates by simulation: test_verdict_errors.py)."""

import json
import shutil
import tomllib
from dataclasses import replace

import pytest

from harness import experiment, results
from harness.analysis import analyse as analysis
from harness.analysis import discovery, records, report, sampling, stats, tables
from harness.errors import BadExperiment
from harness.project import ROOT

REFERENCE = max(ROOT.glob("results/reference-*"))
DISCOVERY = """description = "the seed, as a discovery"
source = "{source}"
kconfigs = ["qemu-guest", "instrumentation", "cow-paths"]
probes = ["wp_page_copy", "do_wp_page", "do_swap_page"]
workloads = ["swapcow", "redis", "forkcow"]
headline = "redis/write/duration_s"
discovery = true    # no rows declared

[[variants]]
name = "base"

[[variants]]
name = "patched"
patches = ["0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-swapcache.patch"]
"""


@pytest.fixture(scope="module", params=["    # no rows declared", ""], ids=["with-comment", "bare"])
def discovered(tmp_path_factory, request):
    """The reference run's boots, judged as a discovery; its experiment file written beside them."""
    run = tmp_path_factory.mktemp("discovery") / REFERENCE.name
    shutil.copytree(REFERENCE, run, ignore=shutil.ignore_patterns("raw.tar.xz", "plots"))
    file = run / "experiment.toml"
    file.write_text(DISCOVERY.format(source=experiment.load(None).source).replace("    # no rows declared",
                                                                                 request.param))
    metadata = json.loads((run / "metadata.json").read_text())
    metadata.update(primary=[], discovery=True, experiment_file=str(file))
    (run / "metadata.json").write_text(json.dumps(metadata))
    return run, analysis.comparison([run])


def test_every_row_is_judged_without_a_gate(discovered):
    _, result = discovered
    assert result.plan.discovery and not result.plan.primary
    moved = discovery.discoveries(result.rows)
    assert {r.variant for r in moved} == {"patched"}
    assert not result.calibration_failed, "the control (the baseline again, a family of its own) moves nowhere"
    control = [r for r in result.rows if r.variant == "control" and r.p_adjusted is not None]
    patched = [r for r in result.rows if r.variant == "patched" and r.p_adjusted is not None]
    assert control and min(r.p_adjusted for r in control) > min(r.p_adjusted for r in patched), \
        "the patch's 28 discoveries do not lower the control's bar"
    assert all(r.role == "exploratory" and tables.verdict_text(r).endswith("(FDR)") for r in moved)
    keys = {r.key for r in moved}
    assert {"swapcow/write/cow_copies_per_swapin", "redis/write/cow_copies_per_swapin"} <= keys
    assert not any(r.workload == "forkcow" for r in moved), "the seed leaves fork's reuse alone"
    summary = "\n".join(tables.summary_lines(result))
    assert "Discovery: no rows were declared" in summary and "a verdict only for a variant" not in summary
    shown = {r.key for r in tables.headline_rows(result.rows)}
    assert keys <= shown, "every row that moved is in the short table"


def test_the_confirmation_declares_one_row_per_phase(discovered):
    run, result = discovered
    path = analysis.write_confirmation(run, result, results.read_metadata(run))
    data = tomllib.loads(path.read_text())
    assert "discovery" not in data and data["headline"] == data["primary"][0]
    assert len(data["primary"]) == len({tuple(row.split("/")[:2]) for row in data["primary"]}) <= 8
    assert {"swapcow/write", "redis/write"} <= {row.rsplit("/", 1)[0] for row in data["primary"]}
    spec = experiment.load(str(path))
    assert spec.primary == tuple(data["primary"]) and not spec.discovery
    assert spec.variants[1].patches[0].is_file(), "the patch resolves from the confirmation's folder too"
    sentence = report.discovery_sentence(result, path)
    assert sentence.startswith("Exploratory (a discovery: no rows declared): ")
    assert f"`harness bench -e {path} --control`" in sentence


def test_a_discovery_that_found_nothing_writes_no_confirmation(discovered):
    run, result = discovered
    quiet = records.Comparison([r for r in result.rows if r.variant != "patched"], 0, result.plan)
    assert analysis.write_confirmation(run, quiet, results.read_metadata(run)) is None
    assert "no row of" in report.discovery_sentence(quiet, None)


def test_a_discovery_too_small_to_find_anything_says_so(discovered):
    _, result = discovered
    rows = [replace(r, n=2, p_adjusted=1.0, verdict="inconclusive") if r.variant == "patched" else
            replace(r, n=2) if r.variant == r.baseline else r for r in result.rows]
    quiet = records.Comparison(rows, 0, result.plan)
    tested = sum(r.variant == "patched" and r.role == "exploratory" and r.verdict != "identical" for r in rows)
    sentence = report.discovery_sentence(quiet, None)
    assert f"no row of {tested + sum(r.variant == 'control' and r.p_adjusted is not None for r in rows)}" \
        in sentence or "no row of" in sentence
    assert "(the smallest exact p, 0.33, cannot pass a family of" in sentence, sentence


def test_discovery_with_declared_rows_is_refused(tmp_path):
    file = tmp_path / "both.toml"
    file.write_text('discovery = true\nprimary = ["swapcow/write/cow_copies"]\n[[variants]]\nname = "base"\n')
    with pytest.raises(BadExperiment, match="discovery = true tests every row as exploratory"):
        experiment.load(str(file))


def test_a_moved_run_finds_its_experiment_beside_it(discovered, tmp_path):
    run, result = discovered
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    metadata = json.loads((moved / "metadata.json").read_text())
    (moved / "metadata.json").write_text(json.dumps({**metadata, "experiment": "experiment",
                                                     "experiment_file": str(tmp_path / "gone" / "experiment.toml")}))
    spec = analysis.recorded_experiment(moved)
    assert spec is not None and spec.discovery and spec.path == moved / "experiment.toml"
    assert analysis.write_confirmation(moved, result, results.read_metadata(moved)).is_file()


def test_the_discovery_says_its_clusters_and_the_repetitions_a_lone_row_needs(discovered):
    """The seed's rows moved together in the same boots: a handful of clusters, not dozens of findings; and at
    6 + 6 a row that moves alone cannot pass, which the sentence says with the repetitions it would need."""
    run, result = discovered
    moved = discovery.discoveries(result.rows)
    grouped = [set(group) for group in result.clusters]
    assert sum(map(len, grouped)) == len(moved) and 1 <= len(grouped) < len(moved) / 2, (len(grouped), len(moved))
    assert all(len({key.split("/")[0] for key, _ in group}) == 1 for group in grouped), "one workload's boots each"
    sentence = report.discovery_sentence(result, None)
    assert f"in {len(grouped)} clusters of rows that moved together in the same boots" in sentence, sentence
    tested = sum(r.role == "exploratory" and r.variant == "patched" and r.p_adjusted is not None
                 and r.verdict != "identical" for r in result.rows)
    needed = discovery.discovery_reps(tested)
    samples, runs, _ = results.read(run)
    cells = sampling.gather(sampling.valid_samples(samples, runs)[0], runs)
    assert discovery.tested_rows(cells, result.plan, ["base", "patched", "control"]) == tested, \
        "the rows the report counts are those --reps auto counts: it takes the repetitions the report names"
    assert needed is not None and needed > 6
    assert f"A row that moves alone, in every boot, passes at {needed} + {needed} boots; this run has 6 + 6" in \
        sentence, sentence
    assert stats.smallest_p(needed, needed) <= records.ALPHA / tested < \
        stats.smallest_p(needed - 1, needed - 1)
