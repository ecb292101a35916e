"""The matrix: cells interleaved in blocks, resumed, extended by the stop rule (cells faked)."""

import logging

import pytest

from harness import bench, experiment, results, workloads
from harness.errors import BadExperiment, HarnessError, OutputNotEmpty, ResumeTakesNoChoices
from harness.measure import cell, worker
from harness.progress import Progress
from tests.fakes.guest import FakeBuild
from tests.kernel.test_patches import FORMAT_PATCH
from tests.test_trial import Built


def request_for(tmp_path, reps=3, modes=("counted",), max_reps=None, **more):
    spec = experiment.load(None)
    swapcow = workloads.load("swapcow")
    return bench.RunRequest(spec, ((swapcow, swapcow.params()),), tuple(spec.variants), reps, tmp_path / "run",
                             modes=modes, max_reps=max_reps, **more)


def test_cells_are_interleaved_in_blocks_with_a_recorded_seed(tmp_path):
    request = request_for(tmp_path, modes=bench.MODES)
    first, again, other = bench.plan(request, 7), bench.plan(request, 7), bench.plan(request, 8)
    assert first == again
    assert len(first) == 12 and sorted(first) == sorted(other) and first != other
    for block in range(3):
        assert {(variant, mode) for _, variant, _, mode, _ in first[block * 4:block * 4 + 4]} == {
            ("base", "counted"), ("base", "timed"), ("patched", "counted"), ("patched", "timed")}
    assert bench.plan(request, 7, reps=5)[:12] == first, "a longer plan starts like the shorter one"


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

    monkeypatch.setattr(bench.source, "fetch", lambda *a: None)
    monkeypatch.setattr(bench.build, "build_all", lambda exp, variants, cache: [FakeBuild(v.name) for v in variants])
    monkeypatch.setattr(bench.image, "build", lambda cache: type("Image", (), {"digest": "d"})())
    monkeypatch.setattr(bench.vm, "qemu_version", lambda: "QEMU fake")
    monkeypatch.setattr(cell, "run_cell", fake_cell)
    return ran


def test_resume_runs_only_the_cells_not_done(tmp_path, fake_cells):
    request = request_for(tmp_path, reps=2, seed=3)
    fake_cells.interrupt_at = 3
    with pytest.raises(KeyboardInterrupt):
        bench.run(request, tmp_path / "cache")
    assert len(results.RunDirectory.load(tmp_path / "run").runs) == 2, "two cells were recorded before the stop"
    done_before = list(fake_cells[:2])
    fake_cells.clear()
    fake_cells.interrupt_at = None
    directory = bench.run(request_for(tmp_path, reps=2, resume=True), tmp_path / "cache")
    assert len(fake_cells) == 2 and not set(fake_cells) & set(done_before)
    assert len(directory.runs) == 4
    assert directory.metadata.finished and directory.metadata.stage_seconds["cells"] >= 0
    assert list(directory.metadata.stage_seconds) == ["fetch", "build", "image", "object code", "cow layout", "cells",
                                                      "boots", "workloads"], "the stages in the order they ran"
    assert directory.metadata.placement.where == "one cell at a time on this machine"


def test_auto_repetitions_add_blocks_until_the_stop_rule_says_so(tmp_path, fake_cells):
    asked = []

    def stop(directory):
        asked.append(len(directory.runs))
        return len(directory.runs) >= 4 * 2      # decided once 4 repetitions of 2 variants are in

    request = request_for(tmp_path, reps=2, max_reps=6, seed=5)
    directory = bench.run(request, tmp_path / "cache", stop=stop)
    assert asked == [4, 6, 8] and len(directory.runs) == 8
    metadata = directory.metadata
    assert (metadata.reps, metadata.min_reps, metadata.max_reps, metadata.reps_done) == ("auto", 2, 6, 4)
    assert list(metadata.plan) == bench.plan(request, 5, reps=4)
    never = request_for(tmp_path / "again", reps=2, max_reps=3, seed=5)
    assert len(bench.run(never, tmp_path / "cache", stop=lambda directory: False).runs) == 6, "max_reps holds"


def test_sweep_points_are_a_cell_dimension_interleaved_like_variants(tmp_path):
    spec = experiment.from_dict({"variants": [{"name": "base"}, {"name": "patched"}],
                                 "sweep": {"guest": {"swap_mb": [24, 48]}, "swapcow": {"size_mb": [8, 16]}}},
                                tmp_path / "sweep.toml")
    swapcow, redis = workloads.load("swapcow"), workloads.load("redis")
    request = bench.RunRequest(spec, ((swapcow, swapcow.params()), (redis, redis.params())), spec.variants, 2,
                                tmp_path / "run", sweep=spec.sweep)
    cells = bench.plan(request, 5)
    assert len(cells) == 2 * (2 * 4 + 2 * 2), "swapcow at 4 points, redis at the 2 of the guest axis"
    first_block = cells[:8]
    assert {(c[0], c[1], c[4]) for c in first_block} == {
        ("swapcow", variant, f"guest.swap_mb={swap},swapcow.size_mb={size}")
        for variant in ("base", "patched") for swap in (24, 48) for size in (8, 16)}
    assert {c[4] for c in cells if c[0] == "redis"} == {"guest.swap_mb=24", "guest.swap_mb=48"}
    cell = bench.cell_at(request, swapcow, swapcow.params(), 1, "counted", "guest.swap_mb=48,swapcow.size_mb=8")
    assert cell.parameters["size_mb"] == 8 and cell.point.guest(spec.guest).swap_mb == 48


def test_primary_rows_count_every_point_and_every_judged_variant(tmp_path):
    spec = experiment.from_dict({"variants": [{"name": "base"}, {"name": "patched"}, {"name": "other"}],
                                 "sweep": {"guest": {"swap_mb": [24, 48]}, "swapcow": {"size_mb": [8, 16]}}},
                                tmp_path / "sweep.toml")
    swapcow, redis = workloads.load("swapcow"), workloads.load("redis")
    request = bench.RunRequest(spec, ((swapcow, swapcow.params()), (redis, redis.params())), spec.variants, 2,
                               tmp_path / "run", sweep=spec.sweep, primary=("swapcow/write/reuse_share",
                                                                            "redis/load/ops_per_s"))
    assert bench.primary_rows(request) == (4 + 2) * 2, "swapcow at 4 points, redis at 2; two variants judged"
    assert bench.primary_rows(request_for(tmp_path)) == 0


def test_a_setting_may_not_fix_what_the_sweep_varies(tmp_path):
    spec = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"swapcow": {"size_mb": [8, 16]}}},
                                tmp_path / "sweep.toml")
    with pytest.raises(HarnessError, match="-p size_mb is the sweep axis swapcow.size_mb"):
        bench.new_request(spec, workload_names=("swapcow",), settings=("size_mb=32",), reps=1, out_dir=tmp_path / "run")
    request = bench.new_request(spec, workload_names=("swapcow",), settings=("cycles=2",), reps=1,
                                out_dir=tmp_path / "run")
    assert request.sweep == spec.sweep and request.workloads[0][1]["cycles"] == 2


def test_a_setting_for_another_workload_does_not_fix_a_sweep_axis(tmp_path):
    file = tmp_path / "sweep.toml"
    file.write_text('workloads = ["swapcow", "forkcow"]\n[sweep]\nswapcow.size_mb = [8, 16]\n'
                    '[[variants]]\nname = "base"\n')
    spec = experiment.load(str(file))
    names = ("swapcow", "forkcow")
    bench._check_sweep(spec, workloads.choose(names, ("forkcow.size_mb=8",)), ("forkcow.size_mb=8",))
    for setting in ("size_mb=8", "swapcow.size_mb=8"):
        with pytest.raises(HarnessError, match="is the sweep axis swapcow.size_mb"):
            bench._check_sweep(spec, workloads.choose(names, (setting,)), (setting,))


def test_a_cell_that_ran_elsewhere_is_recorded_with_its_raw_files_and_log_lines(tmp_path, caplog):
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata())
    progress = Progress("cell", 2, logger=bench.log)
    started, finished = bench._recorder(directory, progress, parallel=True)
    swapcow = workloads.load("swapcow")
    job = cell.Job(cell.Cell(swapcow, swapcow.params(), 1), cell.Kernel("base", tmp_path / "bzImage"), None,
                   experiment.load(None), experiment.load(None).guest)
    invalid = results.Run("base", "swapcow", 1, "counted", valid=False, reason="gate: too few swapins", host="w1")
    outcome = worker.Outcome(invalid, [results.Sample("base", "swapcow", 1, "counted", "write", "cow_copies", 7)],
                             {"swapcow-base-rep1-counted-04-write.txt": b"figures\n"},
                             [("harness.matrix", logging.INFO, "  base rep 1 counted write"),
                              ("harness.measure.collectors", logging.WARNING, "copies by cause add up to 3")])
    with caplog.at_level(logging.DEBUG, "harness"):
        finished(job, outcome)
    assert (directory.path / "raw" / "swapcow-base-rep1-counted-04-write.txt").read_bytes() == b"figures\n"
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records[:2]] == list(outcome.log), \
        "logged again as the cell logged them: a warning elsewhere is a warning here"
    assert any(message.startswith("cell 1/2 (swapcow, base, rep 1, counted, on w1: gate: too few swapins): ")
               for message in caplog.messages), caplog.messages
    again = results.RunDirectory.load(tmp_path / "run")
    assert [(r.variant, r.valid, r.host) for r in again.runs] == [("base", False, "w1")]


def test_a_run_of_an_older_harness_is_not_resumed(tmp_path):
    results.RunDirectory.create(tmp_path / "run", results.RunMetadata())      # no plan: an older harness's
    with pytest.raises(HarnessError, match=rf"^{tmp_path / 'run'} holds no run \(no a format {results.FORMAT} "
                                           r"metadata.json \(it is format \d+, from an older harness\)\)"):
        bench._open(request_for(tmp_path, resume=True))


def test_a_point_the_recorded_sweep_lacks_is_named(tmp_path):
    request = request_for(tmp_path)
    swapcow = workloads.load("swapcow")
    with pytest.raises(HarnessError, match=r"holds no run \(no point 'guest.swap_mb=99' of swapcow in the recorded "
                                           r"sweep \(it has none\)\)"):
        bench.cell_at(request, swapcow, swapcow.params(), 1, "counted", "guest.swap_mb=99")


def test_a_sweep_axis_of_a_workload_that_does_not_run_is_said(tmp_path, caplog):
    spec = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"guest": {"swap_mb": [24, 48]},
                                                                          "redis": {"keys": [1000, 2000]}}},
                                tmp_path / "sweep.toml")
    bench._check_sweep(spec, workloads.choose(("swapcow",), ()), ())
    assert caplog.messages == ["sweep axis redis.keys is not used: redis does not run"], "the guest's axis is used"


def test_a_patch_without_a_readable_subject_is_named_by_its_file(tmp_path):
    assert bench._subject(tmp_path / "0001-gone.patch") == "0001-gone.patch"
    (tmp_path / "0002-no-diff.patch").write_text("Subject: [PATCH] mm: fix the thing\n\n---\n")
    assert bench._subject(tmp_path / "0002-no-diff.patch") == "0002-no-diff.patch", "not a patch: its name"
    (tmp_path / "0003-mm-first.patch").write_text(FORMAT_PATCH)
    assert bench._subject(tmp_path / "0003-mm-first.patch") == "mm: first"


def test_object_code_compares_only_builds_of_the_baselines_source(tmp_path, caplog):
    spec = experiment.from_dict({"mixed_sources": True, "variants": [
        {"name": "base"}, {"name": "control"}, {"name": "fixed"}, {"name": "other", "source": "dir:/elsewhere"}]},
        tmp_path / "mixed.toml")
    code = {"do_wp_page": "a", "wp_page_copy": "b"}
    builds = {name: Built(tmp_path, name, {**code, "do_wp_page": "A"} if name == "fixed" else code)
              for name in ("base", "control", "fixed", "other")}
    with caplog.at_level(logging.INFO, "harness.matrix"):
        differences = bench.object_code(spec, spec.variants, builds, control="control")
    assert list(differences) == ["control", "fixed"], "another kernel's code is not the baseline's to compare"
    assert differences["control"].identical and differences["fixed"].functions == ["do_wp_page"]
    assert [message.split(":")[0] for message in caplog.messages] == ["variant fixed"], "the control is not judged"


def test_timed_boots_derive_no_copy_cause_layout(tmp_path):
    assert bench.cow_layouts(request_for(tmp_path, modes=("timed",)), {"base": None}) == {}, "no build is read"


@pytest.mark.parametrize("accel, timing, kvm, timed", [
    ("auto", "kvm", (False, "the guest printed no kernel output in 5 s"), False),
    ("auto", "kvm", (True, ""), True),
    ("tcg", "kvm", None, False),
    ("kvm", "kvm", None, True),
    ("auto", "always", None, True),
])
def test_timed_boots_are_planned_only_where_the_guests_get_kvm(tmp_path, fake_cells, monkeypatch, accel, timing,
                                                               kvm, timed):
    asked = []

    def kvm_works(kernel):
        asked.append(kernel)
        if kvm is None:
            raise AssertionError("no probe: the accelerator is known, or timings are always taken")
        return kvm

    monkeypatch.setattr(bench.vm, "kvm_works", kvm_works)
    request = request_for(tmp_path, reps=2, modes=bench.MODES, seed=4, accel=accel, timing=timing)
    metadata = bench.run(request, tmp_path / "cache").metadata
    assert {mode for _, _, mode in fake_cells} == ({"counted", "timed"} if timed else {"counted"})
    assert len(fake_cells) == len(metadata.plan) == 2 * 2 * (2 if timed else 1)
    assert metadata.modes == (bench.MODES if timed else ("counted",)) and metadata.timing == timing
    assert asked == ([FakeBuild("base").bzimage] if kvm else [])
    if timed:
        assert metadata.untimed == ""
    else:
        why = "--accel tcg" if accel == "tcg" else kvm[1]
        assert metadata.untimed == (f"the guests run under TCG ({why}), where a guest second is the emulator's, "
                                    "not the hardware's: the counts say what the patch does")


def test_a_run_stopped_before_its_timed_boots_were_decided_decides_them_on_resume(tmp_path, fake_cells, monkeypatch):
    monkeypatch.setattr(bench.vm, "kvm_works", lambda kernel: (False, "no kernel output"))
    monkeypatch.setattr(bench.image, "build", lambda cache: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        bench.run(request_for(tmp_path, reps=2, modes=bench.MODES, seed=4, timing="kvm"), tmp_path / "cache")
    assert results.read_metadata(tmp_path / "run").modes == bench.MODES, "interrupted while building"
    monkeypatch.setattr(bench.image, "build", lambda cache: type("Image", (), {"digest": "d"})())
    resumed = bench.resumed_request(experiment.load(None), tmp_path / "run", "auto")
    assert resumed.timing == "kvm"
    metadata = bench.run(resumed, tmp_path / "cache").metadata
    assert metadata.modes == ("counted",) and {mode for _, _, mode in fake_cells} == {"counted"}


def test_remote_workers_get_timed_boots_only_when_each_can_open_kvm(tmp_path):
    request = request_for(tmp_path, modes=bench.MODES, timing="kvm",
                          placement=bench.dispatch.Placement(cluster="w1,w2"))
    pool = type("Pool", (), {"workers": {"a": {"host": "w1", "kvm": True}, "b": {"host": "w2", "kvm": False}}})()
    assert bench._kvm_works(request, pool, {}) == (False, "/dev/kvm cannot be opened on w2")
    pool.workers["b"]["kvm"] = True
    assert bench._kvm_works(request, pool, {}) == (True, "/dev/kvm cannot be opened on ")


def test_bench_warns_when_its_repetitions_cannot_decide(tmp_path, caplog):
    bench.request(bench.Asked(workload_names=("swapcow",), reps=3, output=tmp_path / "out", seed=1, modes=bench.MODES))
    assert "with 3 repetitions and 1 primary rows no primary row can be decided" in caplog.text
    caplog.clear()
    bench.request(bench.Asked(workload_names=("swapcow",), reps=6, output=tmp_path / "out2", seed=1,
                              modes=bench.MODES))
    assert "cannot be decided" not in caplog.text and "no primary row" not in caplog.text


def test_control_boots_the_baseline_kernel_again(tmp_path):
    request = bench.request(bench.Asked(workload_names=("swapcow",), reps=6, output=tmp_path / "out", seed=1,
                                        modes=bench.MODES, control=True))
    assert [v.name for v in request.variants] == ["base", "patched", "control"]
    assert request.variants[2].patches == request.variants[0].patches == ()
    assert request.control == "control" and request.primary == ("swapcow/write/cow_copies_per_swapin",)
    toml = tmp_path / "with-control.toml"
    toml.write_text('[[variants]]\nname = "base"\n[[variants]]\nname = "control"\n')
    with pytest.raises(BadExperiment, match="a variant is called 'control'"):
        bench.request(bench.Asked(str(toml), ("swapcow",), reps=6, output=tmp_path / "o2", modes=bench.MODES,
                                  control=True))


def test_a_resumed_run_refuses_what_would_change_its_plan_and_a_new_one_a_folder_in_use(tmp_path):
    with pytest.raises(ResumeTakesNoChoices, match="--workload, --seed, --reps/--max-reps/--timing/--no-probes"):
        bench.request(bench.Asked(workload_names=("swapcow",), seed=2, resume=tmp_path, fixed=(
            "--reps/--max-reps/--timing/--no-probes",)))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(OutputNotEmpty):
        bench.request(bench.Asked(workload_names=("swapcow",), output=tmp_path / "used"))
