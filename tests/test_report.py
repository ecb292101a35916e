import shutil

from harness import analysis, experiment, matrix, results, workloads
from tests.conftest import DATA

RUN = DATA / "run-small"


def test_plots_and_report_from_a_golden_run(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(RUN, copy)
    report = analysis.analyse(copy, experiment.load(None))
    text = report.read_text()
    first = text.splitlines()[2]
    assert first.startswith("On Linux 5.10.223 under TCG, `patched` changes cow_copies in the write phase of redis")
    assert "**better**" in first and "n = 2 + 2" in first
    assert "| redis | write | cow_copies | patched |" in text
    for name in ("copies", "write-duration", "ops", "swapins", "swapouts", "reswap"):
        png, svg = copy / "plots" / f"{name}.png", copy / "plots" / f"{name}.svg"
        assert png.stat().st_size > 10_000 and svg.is_file(), name
        assert f"![{name}](plots/{name}.png)" in text
    svg = (copy / "plots" / "write-duration.svg").read_text()
    assert "TCG" in svg and "emulated" in svg
    assert "Reproduce: `harness bench" in text and "patch hash" in text and "config hash" in text
    assert (copy / "comparison.json").is_file() and (copy / "comparison.md").is_file()
    assert "analysis" in results.RunDirectory.load(copy).metadata()["stage_seconds"]


def test_cells_are_interleaved_in_blocks_with_a_recorded_seed():
    spec = experiment.load(None)
    swapcow = workloads.load("swapcow")
    request = matrix.RunRequest(spec, ((swapcow, swapcow.params()),), tuple(spec.variants), 3, DATA)
    first, again, other = matrix.plan(request, 7), matrix.plan(request, 7), matrix.plan(request, 8)
    assert first == again
    assert len(first) == 6 and sorted(first) == sorted(other)
    for block in range(3):
        assert {variant for _, variant, _ in first[block * 2:block * 2 + 2]} == {"base", "patched"}


def test_resume_runs_only_the_cells_not_done(tmp_path, monkeypatch):
    spec = experiment.load(None)
    swapcow = workloads.load("swapcow")
    request = matrix.RunRequest(spec, ((swapcow, swapcow.params()),), tuple(spec.variants), 2, tmp_path / "run",
                                seed=3)
    ran = []

    class FakeBuild:
        def __init__(self, name):
            self.variant, self.key, self.release, self.patches = name, name, "linux-5.10.223", ()
            self.patch_hash, self.config_hash, self.compiler = "none", "c", "gcc"

    def fake_cell(request, cell, built, image, directory, cache_dir):
        ran.append((built.variant, cell.rep))
        if len(ran) == 3 and not request.resume:
            raise KeyboardInterrupt   # the run is interrupted in its third cell
        return {"variant": built.variant, "workload": "swapcow", "rep": cell.rep, "valid": True}, []

    monkeypatch.setattr(matrix.source, "fetch", lambda *a: None)
    monkeypatch.setattr(matrix.build, "build_all", lambda exp, variants, cache: [FakeBuild(v.name) for v in variants])
    monkeypatch.setattr(matrix.image, "build", lambda cache: type("Image", (), {"digest": "d"})())
    monkeypatch.setattr(matrix.vm, "qemu_version", lambda: "QEMU fake")
    monkeypatch.setattr(matrix, "run_cell", fake_cell)
    try:
        matrix.run(request, tmp_path / "cache")
    except KeyboardInterrupt:
        pass
    assert len(results.RunDirectory.load(tmp_path / "run").runs) == 2, "two cells were recorded before the stop"
    done_before = list(ran[:2])
    ran.clear()
    resumed = matrix.RunRequest(spec, request.workloads, request.variants, 2, tmp_path / "run", resume=True)
    directory = matrix.run(resumed, tmp_path / "cache")
    assert len(ran) == 2 and not set(ran) & set(done_before)
    assert len(directory.runs) == 4
    assert "finished" in directory.metadata()
