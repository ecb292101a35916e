"""The matrix: cells interleaved in blocks, resumed, extended by the stop rule (cells faked)."""

import pytest

from harness import experiment, results
from harness.errors import HarnessError
from harness.measure import cell, matrix, workloads
from tests.fakes.guest import FakeBuild


def request_for(tmp_path, reps=3, modes=("counted",), max_reps=None, **more):
    spec = experiment.load(None)
    swapcow = workloads.load("swapcow")
    return matrix.RunRequest(spec, ((swapcow, swapcow.params()),), tuple(spec.variants), reps, tmp_path / "run",
                             modes=modes, max_reps=max_reps, **more)


def test_cells_are_interleaved_in_blocks_with_a_recorded_seed(tmp_path):
    request = request_for(tmp_path, modes=matrix.MODES)
    first, again, other = matrix.plan(request, 7), matrix.plan(request, 7), matrix.plan(request, 8)
    assert first == again
    assert len(first) == 12 and sorted(first) == sorted(other) and first != other
    for block in range(3):
        assert {(variant, mode) for _, variant, _, mode, _ in first[block * 4:block * 4 + 4]} == {
            ("base", "counted"), ("base", "timed"), ("patched", "counted"), ("patched", "timed")}
    assert matrix.plan(request, 7, reps=5)[:12] == first, "a longer plan starts like the shorter one"


class Ran(list):
    interrupt_at: int | None = None       # the cell (1, 2, ...) that Ctrl-C interrupts


@pytest.fixture
def fake_cells(monkeypatch):
    """run_cell replaced: records (variant, rep, mode); the cell numbered ran.interrupt_at is interrupted."""
    ran = Ran()

    def fake_cell(job, raw_dir, cache_dir):
        ran.append((job.kernel.variant, job.cell.rep, job.cell.mode))
        if len(ran) == ran.interrupt_at:
            raise KeyboardInterrupt
        return results.Run(job.kernel.variant, "swapcow", job.cell.rep, job.cell.mode, valid=True), []

    monkeypatch.setattr(matrix.source, "fetch", lambda *a: None)
    monkeypatch.setattr(matrix.build, "build_all", lambda exp, variants, cache: [FakeBuild(v.name) for v in variants])
    monkeypatch.setattr(matrix.image, "build", lambda cache: type("Image", (), {"digest": "d"})())
    monkeypatch.setattr(matrix.vm, "qemu_version", lambda: "QEMU fake")
    monkeypatch.setattr(cell, "run_cell", fake_cell)
    return ran


def test_resume_runs_only_the_cells_not_done(tmp_path, fake_cells):
    request = request_for(tmp_path, reps=2, seed=3)
    fake_cells.interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        matrix.run(request, tmp_path / "cache")
    assert len(results.RunDirectory.load(tmp_path / "run").runs) == 2, "two cells were recorded before the stop"
    done_before = list(fake_cells[:2])
    fake_cells.clear()
    fake_cells.interrupt_at = None
    directory = matrix.run(request_for(tmp_path, reps=2, resume=True), tmp_path / "cache")
    assert len(fake_cells) == 2 and not set(fake_cells) & set(done_before)
    assert len(directory.runs) == 4
    assert "finished" in directory.metadata() and directory.metadata()["stage_seconds"]["cells"] >= 0
    assert directory.metadata()["placement"]["where"] == "one cell at a time on this machine"


def test_auto_repetitions_add_blocks_until_the_stop_rule_says_so(tmp_path, fake_cells):
    asked = []

    def stop(directory):
        asked.append(len(directory.runs))
        return len(directory.runs) >= 4 * 2      # decided once 4 repetitions of 2 variants are in

    request = request_for(tmp_path, reps=2, max_reps=6, seed=5)
    directory = matrix.run(request, tmp_path / "cache", stop=stop)
    assert asked == [4, 6, 8] and len(directory.runs) == 8
    metadata = directory.metadata()
    assert (metadata["reps"], metadata["min_reps"], metadata["max_reps"], metadata["reps_done"]) == ("auto", 2, 6, 4)
    assert [tuple(cell) for cell in metadata["plan"]] == matrix.plan(request, 5, reps=4)
    never = request_for(tmp_path / "again", reps=2, max_reps=3, seed=5)
    assert len(matrix.run(never, tmp_path / "cache", stop=lambda directory: False).runs) == 6, "max_reps holds"


def test_sweep_points_are_a_cell_dimension_interleaved_like_variants(tmp_path):
    spec = experiment.from_dict({"variants": [{"name": "base"}, {"name": "patched"}],
                                 "sweep": {"guest": {"swap_mb": [24, 48]}, "swapcow": {"size_mb": [8, 16]}}},
                                tmp_path / "sweep.toml")
    swapcow, redis = workloads.load("swapcow"), workloads.load("redis")
    request = matrix.RunRequest(spec, ((swapcow, swapcow.params()), (redis, redis.params())), spec.variants, 2,
                                tmp_path / "run", sweep=spec.sweep)
    cells = matrix.plan(request, 5)
    assert len(cells) == 2 * (2 * 4 + 2 * 2), "swapcow at 4 points, redis at the 2 of the guest axis"
    first_block = cells[:8]
    assert {(c[0], c[1], c[4]) for c in first_block} == {
        ("swapcow", variant, f"guest.swap_mb={swap},swapcow.size_mb={size}")
        for variant in ("base", "patched") for swap in (24, 48) for size in (8, 16)}
    assert {c[4] for c in cells if c[0] == "redis"} == {"guest.swap_mb=24", "guest.swap_mb=48"}
    cell = matrix.cell_at(request, swapcow, swapcow.params(), 1, "counted", "guest.swap_mb=48,swapcow.size_mb=8")
    assert cell.parameters["size_mb"] == 8 and cell.point.guest(spec.guest).swap_mb == 48


def test_a_setting_may_not_fix_what_the_sweep_varies(tmp_path):
    spec = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"swapcow": {"size_mb": [8, 16]}}},
                                tmp_path / "sweep.toml")
    with pytest.raises(HarnessError, match="-p size_mb is the sweep axis swapcow.size_mb"):
        matrix.new_request(spec, ("swapcow",), ("size_mb=32",), (), 1, tmp_path / "run", "tcg", ("counted",), "",
                           None, None, False)
    request = matrix.new_request(spec, ("swapcow",), ("cycles=2",), (), 1, tmp_path / "run", "tcg", ("counted",),
                                 "", None, None, False)
    assert request.sweep == spec.sweep and request.workloads[0][1]["cycles"] == 2


def test_a_setting_for_another_workload_does_not_fix_a_sweep_axis(tmp_path):
    file = tmp_path / "sweep.toml"
    file.write_text('workloads = ["swapcow", "forkcow"]\n[sweep]\nswapcow.size_mb = [8, 16]\n'
                    '[[variants]]\nname = "base"\n')
    spec = experiment.load(str(file))
    names = ("swapcow", "forkcow")
    matrix._check_sweep(spec, workloads.choose(names, ("forkcow.size_mb=8",)), ("forkcow.size_mb=8",))
    for setting in ("size_mb=8", "swapcow.size_mb=8"):
        with pytest.raises(HarnessError, match="is the sweep axis swapcow.size_mb"):
            matrix._check_sweep(spec, workloads.choose(names, (setting,)), (setting,))
