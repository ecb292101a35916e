"""A cell through the real cell, workload, collector and metric code, the guest replayed from a
recorded real run (tests/fakes/guest.py): the same figures as the reference run, and every
failure path recorded with its cause."""


import pytest

from harness import bench, experiment, results, workloads
from harness.errors import DiskFull
from harness.guest import vm
from harness.measure import cell, drivers
from tests.analysis.test_verdict_errors import REFERENCE
from tests.conftest import DATA
from tests.fakes.guest import FakeBooted, FakeBuild, ReplayedSession, booting, raw_phases, recordings

# raw/ keeps only the first cause records of a phase, so a replay (without the kernel's layout) has no causes
BY_CAUSE = ("cow_copies.", "system.cow_copies.")
TIMED_HERE = {("idle", "duration_s"), ("swapout", "duration_s"), ("reswap", "duration_s")}   # host clock, not replayed


@pytest.fixture(autouse=True)
def no_idle_wait(monkeypatch):
    monkeypatch.setattr(drivers, "IDLE_S", 0.0)


def request_for(tmp_path, name):
    spec = experiment.load(None)
    workload = workloads.load(name)
    return bench.RunRequest(spec, ((workload, workload.params()),), spec.variants, 1, tmp_path / "run")


def job_for(request, planned: cell.Cell, variant: str) -> cell.Job:
    """The job as the reference run gave it: with the functions its patch changed, counted in every phase."""
    return cell.Job(planned, cell.Kernel.of(FakeBuild(variant), None), None, request.experiment,
                    request.experiment.guest, calls=results.read_metadata(REFERENCE).calls)


def run(tmp_path, monkeypatch, name, variant="base", die_in="", causes=(), console=None):
    session = ReplayedSession(recordings(name, variant), die_in=die_in)
    monkeypatch.setattr(cell.boot, "booted", booting(FakeBooted(session, list(causes), console=console)))
    request = request_for(tmp_path, name)
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata(probes=request.experiment.probes))
    workload, params = request.workloads[0]
    record, samples = cell.run_cell(job_for(request, cell.Cell(workload, params, 1, "counted"), variant),
                                    directory.path / "raw", tmp_path / "cache")
    return record, samples, session, directory


def reference(workload, variant):
    samples, _, _ = results.read(REFERENCE)
    chosen = samples[(samples["workload"] == workload) & (samples["variant"] == variant) & (samples["rep"] == 1)
                     & (samples["mode"] == "counted")]
    return {(phase, metric): value for phase, metric, value in chosen[["phase", "metric", "value"]].itertuples(
        index=False)}


@pytest.mark.parametrize("workload, variant", [("swapcow", "base"), ("swapcow", "patched"), ("redis", "base")])
def test_a_replayed_cell_gives_the_reference_runs_figures(tmp_path, monkeypatch, workload, variant):
    record, samples, session, directory = run(tmp_path, monkeypatch, workload, variant)
    assert record.valid and record.reason == "" and record.kernel_release == "5.10.223", record
    assert (record.accelerator, record.boot_ready_s) == ("tcg", 1.5)
    assert session.booted_with == "harness.rep=1", "the repetition is on the kernel command line"
    replayed = {(s.phase, s.metric): s.value for s in samples}
    expected = {key: value for key, value in reference(workload, variant).items() if not key[1].startswith(BY_CAUSE)}
    assert set(replayed) == set(expected)
    assert {metric for _, metric in replayed} >= {"vmstat.pgsteal_anon", "checked_pages" if workload == "swapcow"
                                                  else "checked_values"}
    differ = {key: (replayed[key], expected[key]) for key in expected
              if key not in TIMED_HERE and replayed[key] != pytest.approx(expected[key], rel=1e-12)}
    assert differ == {}
    assert raw_phases(directory.path / "raw") == [phase for phase, _ in recordings(workload, variant)]
    asked = session.requests("harness-collect")
    assert [line.split("\t")[0] for line in asked[:4]] == ["setup", "calls", "count", "warm"], "once (no layout)"
    assert asked[1] == "calls\tdo_wp_page\tunmap_page_range", "what the reference run counted"
    assert [line.split("\t")[0] for line in asked[4:]] == ["begin", "end"] * len(recordings(workload, variant)) + \
        ["quit"], "a request as each phase begins and one as it ends, nothing else"
    assert ("write", "calls.unmap_page_range") in replayed and ("write", "ftrace.unmap_page_range") not in replayed, \
        "a changed function is counted in every phase, 0 when nothing called it"
    assert replayed[("write", "calls.do_wp_page")] >= replayed[("write", "cow_copies")], "every copy is a write fault"


def test_copies_per_swapin_tell_base_from_patched(tmp_path, monkeypatch):
    rates = {}
    for variant in ("base", "patched"):
        _, samples, _, _ = run(tmp_path / variant, monkeypatch, "swapcow", variant)
        rates[variant] = next(s.value for s in samples if (s.phase, s.metric) == ("write", "cow_copies_per_swapin"))
    assert rates["base"] > 0.95 and rates["patched"] < 0.05


def test_qemu_gone_in_a_phase_fails_the_cell_with_the_cause_not_the_cleanup(tmp_path, monkeypatch):
    record, samples, session, _ = run(tmp_path, monkeypatch, "swapcow", die_in="write",
                                      causes=["QEMU exited (status -9)"])
    assert not record.valid and {s.phase for s in samples} == {"fill", "swapout", "read"}, "the phases that ended"
    assert {s.metric for s in samples} == {"checked_pages", "wrong_pages"}, "only what they checked, to judge by"
    assert record.reason.startswith("failed: QEMU exited (status -9); then: The SSH connection to the guest was lost "
                                    "during swapcow 64 (it went before the program exited)"), record.reason
    assert "Socket is closed" not in record.reason, "stopping the program on a dead guest is no new error"
    assert record.duration_s is not None


def test_a_kernel_bug_on_the_console_of_a_cell_that_died_is_a_finding_of_the_phase_it_died_in(tmp_path, monkeypatch):
    """A real console: Linux 6.1 with a do_wp_page() that marks a swap-cache folio exclusive BUGs in the other
    process's do_swap_page(). The boot is lost, and what the kernel said of itself stays with it."""
    console = tmp_path / "console-base-20261206-092612-bjy936mc.log"

    def dies(self, phase):
        console.write_text((DATA / "console-6.1-bug-in-do_swap_page.log").read_text())
        raise OSError("Socket is closed")
    monkeypatch.setattr(drivers.PhasedProgram, "run_phase", dies)
    other = tmp_path / "run" / "raw" / "console-base-fix-20261206-092613-aaaaaaaa.log"
    other.parent.mkdir(parents=True)
    other.write_text("kernel BUG at mm/rmap.c:12!\n")      # another boot's, at the same time: not this cell's
    record, samples, _, _ = run(tmp_path, monkeypatch, "swapcow", causes=["QEMU exited (status 0)"], console=console)
    assert not record.valid and record.reason.startswith("failed: QEMU exited (status 0)")
    [finding] = record.findings
    assert (finding.phase, finding.kind, finding.where) == ("fill", "kernel_bug",
                                                            "kernel BUG at mm/memory.c in do_swap_page")
    assert finding.found == "kernel BUG at mm/memory.c:3983!"


def test_a_cell_that_dies_keeps_what_its_finished_phases_checked_and_an_error_line_what_it_found(tmp_path,
                                                                                                 monkeypatch):
    real = drivers.PhasedProgram.run_phase

    def errs_in_read(self, phase):
        if phase == "read":
            drivers.parse_done("error read the child died checked=16384 wrong=3 first=child:5 expected=0x1 "
                               "found=0x2", phase)
        return real(self, phase)
    monkeypatch.setattr(drivers.PhasedProgram, "run_phase", errs_in_read)
    record, samples, _, _ = run(tmp_path, monkeypatch, "swapcow")
    assert not record.valid and "unexpected answer 'error read the child died" in record.reason
    assert {(s.phase, s.metric): s.value for s in samples if s.metric == "checked_pages"} \
        == {("fill", "checked_pages"): 16384, ("swapout", "checked_pages"): 0}, "the boot failed, its checks stay"
    [finding] = record.findings
    assert (finding.phase, finding.count, finding.where, finding.found) == ("read", 3, "child:5", "0x2")


def test_the_kernels_own_complaints_are_named_without_the_line_numbers_a_patch_moves():
    crash = (DATA / "console-6.1-bug-in-do_swap_page.log").read_text()
    assert vm.kernel_faults(crash) == [("kernel BUG at mm/memory.c in do_swap_page",
                                        "kernel BUG at mm/memory.c:3983!")]
    said = ("[    3.1] WARNING: CPU: 1 PID: 184 at mm/rmap.c:1234 page_remove_rmap+0x1/0x2\n"
            "RIP: 0010:page_remove_rmap+0x1/0x2\n"
            "[    4.0] BUG: Bad page state in process integrity  pfn:3b3d5\n"
            "[    5.0] BUG: Bad rss-counter state mm:000000006a6b3b29 type:MM_ANONPAGES val:1\n"
            "HARNESS-GUEST-ERROR no swap device\n"
            "[    6.0] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [integrity:184]\n"
            "RIP: 0010:native_safe_halt+0xe/0x10\n")
    assert [name for name, _ in vm.kernel_faults(said)] == [
        "WARNING at mm/rmap.c in page_remove_rmap", "BUG: Bad page state", "BUG: Bad rss-counter state"]
    assert vm.kernel_faults("random: crng init done\nHARNESS-GUEST-READY\n") == []


def test_redis_losing_its_guest_names_the_phase_command_not_the_shutdown(tmp_path, monkeypatch):
    record, _, session, _ = run(tmp_path, monkeypatch, "redis", die_in="read",
                                causes=["the guest's OOM killer killed redis-server"])
    assert record.reason.startswith("failed: the guest's OOM killer killed redis-server; then: The SSH connection "
                                    "to the guest was lost during redisdrive read"), record.reason
    assert "shutdown nosave" not in record.reason


def test_the_console_names_the_oom_killer(tmp_path):
    console = tmp_path / "console.log"
    console.write_text("[   12.3] Out of memory: Killed process 4242 (swapcow) total-vm:409600kB\n"
                       "[   12.4] Memory cgroup out of memory: Killed process 99 (redis-server)\n")
    spec = vm.VmSpec(tmp_path / "k", tmp_path / "i", tmp_path / "s", console, 10022)
    assert vm.Qemu(spec, tmp_path / "qemu.log").causes() == [
        "the guest's OOM killer killed swapcow, redis-server"]


def test_a_fault_of_the_harness_is_recorded_and_the_matrix_can_go_on(tmp_path, monkeypatch):
    def broken(self, phase):
        raise TypeError("a bug")
    monkeypatch.setattr(drivers.PhasedProgram, "run_phase", broken)
    record, samples, _, _ = run(tmp_path, monkeypatch, "swapcow")
    assert record.reason == "failed: harness fault TypeError: a bug" and samples == []


def test_a_full_disk_is_not_a_failed_cell_but_stops_the_run(tmp_path, monkeypatch):
    def full(raw_dir, name, text):
        raise DiskFull(path=raw_dir / name, mount="/", free="0 MiB")
    monkeypatch.setattr(cell, "write_raw", full)
    with pytest.raises(DiskFull):
        run(tmp_path, monkeypatch, "swapcow")


def test_a_gate_that_fails_makes_the_cell_invalid_with_its_reason(tmp_path, monkeypatch):
    phases = recordings("swapcow")
    read = dict(phases)["read"]
    read.after = read.before          # the read phase brought nothing back
    session = ReplayedSession(phases)
    monkeypatch.setattr(cell.boot, "booted", booting(FakeBooted(session)))
    request = request_for(tmp_path, "swapcow")
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata())
    workload, params = request.workloads[0]
    record, samples = cell.run_cell(job_for(request, cell.Cell(workload, params, 1, "counted"), "base"),
                                    directory.path / "raw", tmp_path / "cache")
    assert not record.valid and "read: process.swapped_in_pages is 0, below 0.9 x swapout.pages" in record.reason
    assert samples, "an invalid run keeps its figures"


def test_a_cells_warning_is_said_on_the_console_when_it_happens(tmp_path, monkeypatch, caplog):
    measured = cell._measure
    said = "read: vm_swap_full: swap was 80% used when this phase began swapping in"

    def with_a_warning(*args):
        phases, warnings, problems, gates = measured(*args)
        return phases, [*warnings, said], problems, gates

    monkeypatch.setattr(cell, "_measure", with_a_warning)
    caplog.set_level("WARNING", "harness.matrix")
    record, _, _, _ = run(tmp_path, monkeypatch, "swapcow")
    assert record.valid and record.warnings == said
    assert f"base rep 1 counted: {said}" in caplog.text
