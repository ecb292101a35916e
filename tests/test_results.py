"""The run folder's files: every stored format read into the same records, a newer one refused, and
folders pooled only when they measured the same thing."""

import json
import shutil

import pandas as pd
import pytest

from harness import results
from harness.errors import NewerFormat, NotAResultDirectory, NotComparable
from harness.project import ROOT
from tests.conftest import DATA

FORMATS = {2: DATA / "run-small", 3: DATA / "sweep-run", 4: DATA / "run-coverage"}
COMMITTED = sorted(path for path in (ROOT / "results").iterdir() if (path / "metadata.json").is_file())


def format_1(tmp_path):
    """run-small as the first harness wrote it: no mode column, no format number, all boots counted."""
    copy = tmp_path / "format-1"
    shutil.copytree(DATA / "run-small", copy)
    data = json.loads((copy / "metadata.json").read_text())
    del data["format"]
    (copy / "metadata.json").write_text(json.dumps(data))
    for name in ("runs.csv", "samples.csv"):
        pd.read_csv(copy / name).drop(columns=["mode"]).to_csv(copy / name, index=False)
    return copy


@pytest.mark.parametrize("written", sorted(FORMATS))
def test_every_stored_format_reads_into_the_same_records(written):
    directory = results.RunDirectory.load(FORMATS[written])
    metadata = directory.metadata
    assert metadata.format == written
    assert metadata.variant_names[0] == metadata.baseline == "base"
    assert all(isinstance(v, results.VariantRecord) and v.source for v in metadata.variants), \
        "a variant without its own source was built from the run's"
    assert all(isinstance(b, results.BuildFacts) and b.config_hash for b in metadata.builds.values())
    assert isinstance(metadata.host, results.HostFacts) and metadata.host.hostname
    assert all(isinstance(d, results.ObjectCode) for d in metadata.object_code.values())
    assert all(isinstance(cell, tuple) and len(cell) in (4, 5) for cell in metadata.plan)
    assert {run.host for run in directory.runs} == {metadata.host.hostname}, "before format 4: the metadata's host"
    assert {run.mode for run in directory.runs} <= {"counted", "timed"}


def test_format_1_has_no_modes_and_every_boot_was_counted(tmp_path):
    directory = results.RunDirectory.load(format_1(tmp_path))
    assert directory.metadata.format == 1
    assert {run.mode for run in directory.runs} == {sample.mode for sample in directory.samples} == {"counted"}


@pytest.mark.parametrize("folder", COMMITTED + list(FORMATS.values()), ids=lambda path: path.name)
def test_metadata_survives_its_json_unchanged(folder):
    metadata = results.read_metadata(folder)
    again = results.RunMetadata.from_dict(json.loads(json.dumps(metadata.to_dict())))
    assert again == metadata
    stored = json.loads((folder / "metadata.json").read_text())
    kept(stored, json.loads(json.dumps(metadata.to_dict())), "metadata")


def kept(stored, written, where: str) -> None:
    """Every value stored is written back as it was (records may add fields the older file lacked)."""
    if isinstance(stored, dict):
        assert isinstance(written, dict), where
        for key, value in stored.items():
            assert key in written, f"{where}.{key} is not written back"
            kept(value, written[key], f"{where}.{key}")
    elif isinstance(stored, list) and stored and isinstance(stored[0], dict):
        assert len(stored) == len(written), where
        for number, (value, again) in enumerate(zip(stored, written)):
            kept(value, again, f"{where}[{number}]")
    else:
        assert stored == written, where


def test_a_key_this_harness_does_not_know_is_kept(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(DATA / "run-small", copy)
    data = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**data, "from_a_later_harness": {"x": 1}}))
    directory = results.RunDirectory.load(copy)
    assert directory.metadata.extra == {"from_a_later_harness": {"x": 1}}
    directory.update_metadata(finished="later")
    assert json.loads((copy / "metadata.json").read_text())["from_a_later_harness"] == {"x": 1}
    assert results.read_metadata(copy).finished == "later"


def test_fields_are_updated_from_records_or_their_stored_dicts(tmp_path):
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata(experiment="e"))
    directory.update_metadata(placement={"jobs": 2, "workers": {"vm": {"cores": 2, "cells_at_once": 2}}},
                              as_control=["control"])
    placement = results.read_metadata(tmp_path / "run").placement
    assert placement.jobs == 2 and placement.workers["vm"] == results.WorkerFacts(cores=2, cells_at_once=2)
    assert results.read_metadata(tmp_path / "run") == directory.metadata
    assert directory.metadata.as_control == ("control",)


def test_a_newer_format_is_refused_naming_it(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(DATA / "run-coverage", copy)
    data = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**data, "format": results.FORMAT + 1}))
    with pytest.raises(NewerFormat, match=f"results format {results.FORMAT + 1}"):
        results.read(copy)


@pytest.mark.parametrize("broken", ['{"variants": 5}', '{"format": "two"}', "[1, 2]", '{"host": "vm"}', "{"])
def test_metadata_that_is_not_a_runs_is_refused_naming_the_file(tmp_path, broken):
    (tmp_path / "metadata.json").write_text(broken)
    with pytest.raises(NotAResultDirectory, match="metadata.json"):
        results.read_metadata(tmp_path)


def split(tmp_path, changed: dict | None = None):
    """run-small as two folders of one variant each (the second one's metadata changed)."""
    folders = []
    for variant in ("base", "patched"):
        folder = tmp_path / variant
        shutil.copytree(DATA / "run-small", folder)
        for name in ("runs.csv", "samples.csv"):
            frame = pd.read_csv(folder / name)
            frame[frame["variant"] == variant].to_csv(folder / name, index=False)
        folders.append(folder)
    data = json.loads((folders[1] / "metadata.json").read_text())
    (folders[1] / "metadata.json").write_text(json.dumps({**data, **(changed or {})}))
    return folders


def test_folders_that_measured_the_same_are_pooled(tmp_path):
    base, patched = split(tmp_path, {"discovery": False})     # a run from before discovery was recorded: none
    samples, runs, metadata = results.read_many([base, patched])
    assert set(runs["variant"]) == {"base", "patched"} and len(metadata) == 2
    assert runs.groupby("run_dir")["rep"].min().tolist() == [1, 3], "repetitions made unique across folders"


@pytest.mark.parametrize("field,value", [("primary", ["swapcow/write/cow_copies"]), ("margin_pct", 10.0),
                                         ("guest", {"memory_mb": 512}), ("discovery", True),
                                         ("probes", ["do_wp_page"])])
def test_folders_that_measured_differently_are_refused_naming_the_field(tmp_path, field, value):
    base, patched = split(tmp_path, {field: value})
    with pytest.raises(NotComparable, match=rf"differ in {field} \(.* in {base} vs .* in {patched}\)"):
        results.read_many([base, patched])


def test_a_variant_name_that_means_other_patches_is_refused(tmp_path):
    base, patched = split(tmp_path)
    for folder in (base, patched):
        (folder / "runs.csv").write_text((DATA / "run-small" / "runs.csv").read_text())
    runs = pd.read_csv(patched / "runs.csv")
    runs.loc[runs["variant"] == "patched", "patch_hash"] = "0123456789abcdef"
    runs.to_csv(patched / "runs.csv", index=False)
    with pytest.raises(NotComparable, match=r"patch_hash of variant patched"):
        results.read_many([base, patched])
