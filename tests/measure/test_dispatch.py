"""Where cells run: the placement options, the vCPUs and memory a cell may have, a worker's artifact
cache and its side of a cell (in this process; the real clusters are in tests/real/test_real_cluster.py
and tests/faults/test_faults.py)."""

import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager

import pandas as pd
import pytest

from harness import bench, doctor, experiment, results, workloads
from harness.analysis import report
from harness.errors import BadPlacement, ClusterFailed, WorkerUnfit
from harness.guest import image as guest_image
from harness.guest import vm
from harness.measure import cell, dispatch, drivers, worker
from harness.project import ROOT
from tests.conftest import FAKES
from tests.fakes.guest import FakeBooted, FakeBuild, ReplayedSession, recordings


@pytest.mark.parametrize("text, hosts", [
    ("ssh://127.0.0.1", [{"host": "127.0.0.1"}]),
    ("ssh://build1,me@build2:2222", [{"host": "build1"}, {"host": "build2", "username": "me", "port": 2222}]),
])
def test_cluster_hosts_are_read_from_an_ssh_url(text, hosts):
    assert dispatch.ssh_hosts(text) == hosts


@pytest.mark.parametrize("placement, message", [
    (dispatch.Placement(cluster="build1,build2"), r"--cluster build1,build2: is not ssh://HOST\[,HOST...\]"),
    (dispatch.Placement(cluster="ssh://a,,b"), r"'' is not \[USER@\]HOST\[:PORT\]"),
    (dispatch.Placement(cluster="ssh://a:notaport"), "'a:notaport' is not USER@HOST:PORT"),
    (dispatch.Placement(cluster="ssh://a", scheduler="tcp://b:8786"), "and --scheduler both name workers"),
    (dispatch.Placement(scheduler="b:8786"), "is not a Dask scheduler address: give tcp://HOST:PORT"),
    (dispatch.Placement(cluster="ssh://a", ssh_config="/nonexistent/config"), "--ssh-config /nonexistent/config"),
    (dispatch.Placement(jobs=0), "^--jobs 0: is not at least 1: give --jobs 1 or more$"),
])
def test_a_placement_that_cannot_work_is_one_line_naming_the_option(placement, message):
    with pytest.raises(BadPlacement, match=message):
        dispatch.check(placement)


def test_the_placement_says_where_cells_run():
    assert dispatch.Placement().describe() == "one cell at a time on this machine"
    assert dispatch.Placement(jobs=2).describe() == "2 cells at once on this machine (a local Dask cluster)"
    assert dispatch.Placement(jobs=None).describe() == "as many cells at once on this machine as --jobs auto decides"
    assert not dispatch.Placement().parallel and dispatch.Placement(jobs=2).parallel
    assert dispatch.Placement(cluster="ssh://a").remote and not dispatch.Placement(jobs=4).remote


class FakePool:
    """What bench._placed asks of a pool: its workers, and the cores and memory per cell."""

    def __init__(self, cores, memory_mb, hosts=("vm",)):
        self.workers = {f"tcp://{host}:1": {"host": host, "cores": 2, "memory_mb": 4096, "kvm": False, "qemu": "Q",
                                            "nthreads": 2} for host in hosts}
        self.cores, self.memory = cores, memory_mb

    def cores_per_cell(self):
        return self.cores

    def memory_per_cell_mb(self):
        return self.memory


def request_for(tmp_path, spec=None, jobs=2, modes=("counted", "timed")):
    spec = spec or experiment.load(None)
    swapcow = workloads.load("swapcow")
    return bench.RunRequest(spec, ((swapcow, swapcow.params()),), tuple(spec.variants), 1, tmp_path / "run",
                             modes=modes, sweep=spec.sweep, placement=dispatch.Placement(jobs=jobs))


def test_cells_at_once_with_timed_boots_get_the_cores_per_cell_and_it_is_recorded(tmp_path, caplog):
    request = request_for(tmp_path)
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata())
    with caplog.at_level(logging.WARNING, "harness.matrix"):
        assert bench._placed(request, FakePool(1, 4096), directory) == 1
    assert "each guest gets 1 vCPU(s), not the 2 the experiment asks" in caplog.text
    placement = directory.metadata.placement
    assert (placement.jobs, placement.guest_cpus) == (2, 1)
    assert placement.workers == {"vm": results.WorkerFacts(cores=2, memory_mb=4096, kvm=False, qemu="Q",
                                                           cells_at_once=2)}
    job = bench.job_at(request, {"base": (cell.Kernel.of(FakeBuild("base"), None), "")}, None, "", 1,
                        results.PlannedCell("swapcow", "base", 1, "counted", ""))
    assert job.guest.cpus == 1 and job.guest.memory_mb == request.experiment.guest.memory_mb


def test_counted_cells_at_once_share_cores_and_keep_the_vcpus_asked(tmp_path, caplog):
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata())
    with caplog.at_level(logging.WARNING, "harness.matrix"):
        assert bench._placed(request_for(tmp_path, modes=("counted",)), FakePool(1, 4096), directory) is None
    assert "vCPU" not in caplog.text
    assert (directory.metadata.placement.jobs, directory.metadata.placement.guest_cpus) == (2, None)


@pytest.mark.parametrize("modes, cores, memory_mb, cells, jobs", [
    (("counted",), 2, 24000, 57, 2),          # this machine: both cores
    (("counted",), 16, 19200, 57, 15),         # memory for 15 guests of 1,280 MiB (1,024 and QEMU's 256)
    (("counted",), 16, 65536, 3, 3),           # no more than the cells
    (("counted",), 1, 24000, 57, 1),
    (("counted", "timed"), 16, 65536, 57, 1),  # a timed boot runs alone
])
def test_jobs_auto_runs_counted_cells_at_once_up_to_the_cores_and_timed_ones_alone(tmp_path, monkeypatch, caplog,
                                                                                  modes, cores, memory_mb, cells,
                                                                                  jobs):
    monkeypatch.setattr(bench, "cores", lambda: cores)
    monkeypatch.setattr(results, "host_facts", lambda: results.HostFacts(memory_mb=memory_mb))
    request = request_for(tmp_path, jobs=None, modes=modes)
    with caplog.at_level(logging.INFO, "harness"):
        placement = bench.cells_at_once(request, [("swapcow", "base", 1, "counted", "")] * cells)
    assert placement == dispatch.Placement(jobs=jobs)
    assert caplog.messages == [f"--jobs auto: {placement.describe()} (" + (
        "every boot is counted, none timed)" if modes == ("counted",) else "timed boots run alone)")]
    assert bench.cells_at_once(request_for(tmp_path, jobs=3), []) == dispatch.Placement(jobs=3), "as asked"


def test_a_resumed_run_keeps_the_vcpus_it_started_with(tmp_path):
    request = request_for(tmp_path)
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata(
        placement=results.PlacementFacts(guest_cpus=1)))
    resumed = bench.RunRequest(**{**vars(request), "resume": True, "placement": dispatch.Placement()})
    assert bench._placed(resumed, FakePool(None, None), directory) == 1


def test_cells_at_once_that_do_not_fit_are_refused_before_any_boot(tmp_path):
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata())
    with pytest.raises(BadPlacement, match=r"--jobs 2: leaves 1000 MiB per cell .* a guest needs 1280 MiB"):
        bench._placed(request_for(tmp_path), FakePool(1, 1000), directory)
    swept = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"guest": {"cpus": [1, 2]}}},
                                 tmp_path / "cpus.toml")
    with pytest.raises(BadPlacement, match="the sweep varies guest.cpus up to 2: run fewer cells at once"):
        bench._placed(request_for(tmp_path, swept), FakePool(1, 4096), directory)
    hosts = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"host": {"name": ["vm", "xeon2"]}}},
                                 tmp_path / "hosts.toml")
    with pytest.raises(BadPlacement, match=r"\[sweep\] host.name xeon2: has no worker \(the workers are on vm\)"):
        bench._placed(request_for(tmp_path, hosts), FakePool(2, 4096), directory)


def test_the_cores_per_cell_count_every_cell_on_a_host():
    pool = dispatch.DaskPool(dispatch.Placement(jobs=2), None, None)
    local = {"host": "vm", "cores": 2, "memory_mb": 24000, "nthreads": 1}
    pool.workers = {"tcp://127.0.0.1:1": local, "tcp://127.0.0.1:2": local}
    assert (pool.cores_per_cell(), pool.memory_per_cell_mb()) == (1, 12000), "two local workers share one host"
    pool.workers["tcp://big:1"] = {"host": "big", "cores": 16, "memory_mb": 64000, "nthreads": 2}
    assert pool.cores_per_cell() == 1, "the tightest host decides"


def test_a_worker_keeps_an_artifact_under_its_content_hash_and_refuses_a_damaged_one(tmp_path):
    data = b"bzImage bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert worker.missing([digest], str(tmp_path)) == [digest]
    with pytest.raises(ValueError, match="arrived damaged"):
        worker.store(digest, data + b"!", str(tmp_path))
    path = worker.store(digest, data, str(tmp_path))
    assert open(path, "rb").read() == data and worker.missing([digest], str(tmp_path)) == []


def test_a_remote_worker_boots_its_own_copies_and_returns_the_raw_files(tmp_path, monkeypatch):
    kernel_file, image_file = tmp_path / "bzImage", tmp_path / "base.cpio"
    kernel_file.write_bytes(b"kernel")
    image_file.write_bytes(b"image")
    spec = experiment.load(None)
    swapcow = workloads.load("swapcow")
    image = guest_image.Image(image_file, "d", ())
    job = cell.Job(cell.Cell(swapcow, swapcow.params(), 1), cell.Kernel("base", kernel_file), image, spec,
                   spec.guest, kernel_digest=worker.digest_of(kernel_file), image_digest=worker.digest_of(image_file))
    place = worker.Place(str(tmp_path / "worker"), "", capture_log=True)
    with pytest.raises(worker.ArtifactsMissing):
        worker.execute(job, place)
    for digest, path in worker.artifacts_of(job).items():
        worker.store(digest, path.read_bytes(), place.cache_dir)
    booted = []

    def fake_cell(local_job, raw_dir, cache_dir):
        booted.append((local_job.kernel.bzimage, local_job.image.path))
        cell.write_raw(raw_dir, "swapcow-base-rep1-counted-00-idle.txt", "figures\n")
        logging.getLogger("harness.matrix").info("  base rep 1 counted idle")
        return cell.record_of(local_job, "w1"), []
    monkeypatch.setattr(cell, "run_cell", fake_cell)
    outcome = worker.execute(job, place)
    assert booted == [(worker.artifact_path(tmp_path / "worker", job.kernel_digest),
                       worker.artifact_path(tmp_path / "worker", job.image_digest))]
    assert outcome.raw == {"swapcow-base-rep1-counted-00-idle.txt": b"figures\n"}
    assert outcome.log == [("harness.matrix", logging.INFO, "  base rep 1 counted idle")]
    assert list((tmp_path / "worker" / "cells").iterdir()) == [], "the cell's scratch folder is gone"


def test_the_report_says_where_the_cells_ran():
    runs = pd.DataFrame({"host": ["vm", "vm", "w2"]})
    assert report.placement_line(None, runs) == "- Cells: one at a time on this machine"
    line = report.placement_line(results.PlacementFacts(
        where="2 cells at once on this machine (a local Dask cluster)", guest_cpus=1), runs.iloc[:2])
    assert line == ("- Cells: 2 cells at once on this machine (a local Dask cluster); at most 1 vCPU(s) per guest, "
                    "so that cells at once do not share cores")
    assert report.placement_line(results.PlacementFacts(where="x", cluster="ssh://vm,w2", guest_cpus=2), runs).endswith(
        "cells per host: vm 2, w2 1")


def test_a_cluster_that_cannot_start_is_one_line_with_the_fix(tmp_path):
    placement = dispatch.Placement(cluster="ssh://127.0.0.1:1")      # nothing listens on port 1
    with pytest.raises(ClusterFailed, match=r"did not start \(.*127.0.0.1.*\): check that 'ssh HOST' logs in"):
        with dispatch.pool(placement, tmp_path, tmp_path / "raw"):
            pass


# --- a Dask cluster in this process: the workers are threads, so the guest is replayed there too -------------

@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """This machine's QEMU and cpio, as a worker finds them: the fake QEMU (its version says so), a cpio stub;
    the guest of every cell replayed from the recorded run, the idle phase not waited for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(FAKES / "fake-qemu", bin_dir / "qemu-system-x86_64")
    (bin_dir / "cpio").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "cpio").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(doctor, "SEARCH_PATH", str(bin_dir))
    monkeypatch.setattr(drivers, "IDLE_S", 0.0)

    @contextmanager
    def replayed(kernel, image, config, accel, log_dir, work_dir, timeout=None, append="", consoles=None):
        yield FakeBooted(ReplayedSession(recordings("swapcow", kernel.variant)))
    monkeypatch.setattr(cell.boot, "booted", replayed)
    return bin_dir


@pytest.fixture
def scheduler():
    """A running Dask scheduler with one worker, in this process (what `--scheduler tcp://HOST:PORT` names)."""
    import distributed
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        yield cluster


def jobs_for(tmp_path, variants=("base", "patched"), host=""):
    """One counted swapcow cell per variant, each with a bzImage of its own and the one initramfs, as files."""
    spec = experiment.load(None)
    swapcow = workloads.load("swapcow")
    image_file = tmp_path / "base.cpio"
    image_file.write_bytes(b"image")
    image = guest_image.Image(image_file, "d", ())
    jobs = []
    for variant in variants:
        kernel_file = tmp_path / f"bzImage-{variant}"
        kernel_file.write_bytes(f"kernel {variant}".encode())
        jobs.append(cell.Job(cell.Cell(swapcow, swapcow.params(), 1), cell.Kernel(variant, kernel_file), image, spec,
                             spec.guest, host=host, kernel_digest=worker.digest_of(kernel_file),
                             image_digest=worker.digest_of(image_file)))
    return jobs


def remote(cluster, tmp_path) -> dispatch.Placement:
    return dispatch.Placement(scheduler=cluster.scheduler_address, worker_cache=str(tmp_path / "worker"))


def run_all(pool, jobs):
    """pool.run's outcomes by variant, and the labels in the order started() was told."""
    outcomes, started = {}, []
    pool.run(jobs, lambda job: started.append(job.label),
             lambda job, outcome: outcomes.setdefault(job.kernel.variant, outcome))
    return outcomes, started


def test_a_running_cluster_runs_the_cells_and_sends_each_artifact_once(tmp_path, fake_host, scheduler, caplog):
    jobs = jobs_for(tmp_path)
    with caplog.at_level(logging.INFO, "harness.dispatch"):
        with dispatch.pool(remote(scheduler, tmp_path), tmp_path / "cache", tmp_path / "raw") as pool:
            [(address, facts)] = pool.workers.items()
            assert address.startswith("tcp://127.0.0.1:") and facts["nthreads"] == 1 and facts["lacking"] == []
            assert facts["qemu"] == "QEMU emulator version 0.0.0 (fake)", "the worker's own QEMU, from its PATH"
            outcomes, _ = run_all(pool, jobs)
            host = socket.gethostname()
            assert pool.sent == {host: {"sent": 3, "kept": 0}}, "two bzImages and the one initramfs"
            assert sorted(p.name for p in (tmp_path / "worker" / "artifacts").iterdir()) == sorted(
                {job.kernel_digest for job in jobs} | {jobs[0].image_digest})
    assert f"worker {address} on {host}: " in caplog.text and "1 cell(s) at once" in caplog.text
    for variant in ("base", "patched"):
        outcome = outcomes[variant]
        assert outcome.run.valid and (outcome.run.variant, outcome.run.host) == (variant, host), outcome.run
        assert sorted(outcome.raw) == [f"swapcow-{variant}-rep1-counted-0{n}-{phase}.txt" for n, phase in
                                       enumerate(("idle", "fill", "swapout", "read", "write"))]
        assert {sample.phase for sample in outcome.samples} == {"idle", "fill", "swapout", "read", "write"}
        assert any(name.startswith("harness.") for name, _, _ in outcome.log), "the cell's log lines came back"
    assert not (tmp_path / "raw").exists(), "a remote worker's raw files travel back; nothing is written here"
    assert {p.name for p in (tmp_path / "worker" / "cells").iterdir()} == set(), "the scratch folders are gone"


def test_a_worker_that_lost_its_artifacts_is_sent_them_again(tmp_path, fake_host, scheduler, caplog):
    [job] = jobs_for(tmp_path, ("base",))
    host = socket.gethostname()
    with dispatch.pool(remote(scheduler, tmp_path), tmp_path / "cache", tmp_path / "raw") as pool:
        assert run_all(pool, [job])[0]["base"].run.valid
        shutil.rmtree(tmp_path / "worker" / "artifacts")     # the pool believes the worker holds them
        again, started = run_all(pool, [job])
        assert again["base"].run.valid and started == [], "started() is for cells run here, one at a time"
        assert pool.sent == {host: {"sent": 4, "kept": 0}}
    with caplog.at_level(logging.INFO, "harness.dispatch"):
        with dispatch.pool(remote(scheduler, tmp_path), tmp_path / "cache", tmp_path / "raw") as later:
            assert run_all(later, [job])[0]["base"].run.valid
            assert later.sent == {host: {"sent": 0, "kept": 2}}, "a later run finds them in the worker's cache"
    assert f"{host} has all 2 kernel and image file(s) already" in caplog.text


def test_a_cell_for_a_host_without_a_worker_is_refused_with_the_fix(tmp_path, fake_host, scheduler):
    [job] = jobs_for(tmp_path, ("base",), host="xeon2")
    with dispatch.pool(remote(scheduler, tmp_path), tmp_path / "cache", tmp_path / "raw") as pool:
        with pytest.raises(ClusterFailed, match=rf"The Dask cluster \(the Dask cluster at {scheduler.scheduler_address}"
                           r"\) has no worker to run swapcow, base, rep 1, counted on \(host xeon2\): add workers, "
                           "or run with --resume once they are back"):
            run_all(pool, [job])


def test_an_error_here_stops_every_guest_on_the_workers(tmp_path, fake_host, scheduler, caplog):
    qemu = vm.Qemu(vm.VmSpec(tmp_path / "bzImage", tmp_path / "initrd", tmp_path / "swap", tmp_path / "console.log",
                             10022), tmp_path / "qemu.log")
    finished = []

    def failing(job, outcome):
        finished.append(job.kernel.variant)
        raise RuntimeError("the run directory is gone")
    try:
        with caplog.at_level(logging.INFO, "harness.dispatch"):
            with pytest.raises(RuntimeError, match="the run directory is gone"):
                with dispatch.pool(remote(scheduler, tmp_path), tmp_path / "cache", tmp_path / "raw") as pool:
                    qemu.start()        # a guest this worker (a thread of this process) runs
                    assert qemu.running()
                    # one cell: a cell still running on the worker thread would capture this thread's log lines
                    pool.run(jobs_for(tmp_path, ("base",)), lambda job: None, failing)
        assert finished == ["base"]
        assert qemu.process.wait(timeout=5) == -signal.SIGTERM, "the worker's vm.stop_all() ended it"
        assert "stopped 1 guest(s) on 1 worker(s)" in caplog.messages
    finally:
        qemu.stop()


def test_a_scheduler_without_workers_is_one_line_with_the_fix(tmp_path, monkeypatch):
    import distributed
    monkeypatch.setattr(dispatch, "START_TIMEOUT_S", 0.5)
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None,
                                  silence_logs=logging.ERROR) as empty:
        placement = dispatch.Placement(scheduler=empty.scheduler_address)
        with pytest.raises(ClusterFailed, match=rf"^The Dask cluster \(the Dask cluster at {empty.scheduler_address}\) "
                           r"has fewer than 1 worker\(s\) after 0.5 s: check the address, and that the scheduler is "
                           "running$"):
            with dispatch.pool(placement, tmp_path, tmp_path / "raw"):
                pass


def test_a_worker_without_qemu_is_refused_with_the_install_line(tmp_path, scheduler, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(doctor, "SEARCH_PATH", str(tmp_path / "empty"))
    with pytest.raises(WorkerUnfit, match=rf"^Worker {socket.gethostname()} \(tcp://127.0.0.1:\d+\) lacks "
                       "qemu-system-x86_64: command qemu-system-x86_64 not found; cpio: command cpio not found: run "
                       r"'apt-get install -y --no-install-recommends cpio qemu-system-x86' there \(as root\)$"):
        with dispatch.pool(remote(scheduler, tmp_path), tmp_path, tmp_path / "raw"):
            pass


def test_jobs_start_local_worker_processes_that_share_this_hosts_cores(tmp_path, fake_host):
    # the workers are processes of their own: they find the fake QEMU on the PATH they inherit
    with dispatch.pool(dispatch.Placement(jobs=2), tmp_path / "cache", tmp_path / "raw") as pool:
        assert len(pool.workers) == 2 and {facts["nthreads"] for facts in pool.workers.values()} == {1}
        assert {facts["qemu"] for facts in pool.workers.values()} == {"QEMU emulator version 0.0.0 (fake)"}
        assert pool.cores_per_cell() == max(1, os.cpu_count() // 2)
        assert pool.memory_per_cell_mb() == results.host_facts().memory_mb // 2
        assert pool._place() == worker.Place(str(tmp_path / "cache"), str(tmp_path / "raw"), capture_log=True), \
            "local workers write the raw files into the run's folder themselves"
        assert (tmp_path / "cache" / "dask").is_dir()
    assert pool.client is None and pool.cluster is None


def test_an_ssh_cluster_is_reached_with_the_users_and_ports_and_config_given(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  IdentitiesOnly yes\n")
    placement = dispatch.Placement(cluster="ssh://a,me@b:2222", ssh_config=str(config))
    dispatch.check(placement)
    pool = dispatch.DaskPool(placement, tmp_path, tmp_path / "raw")
    hosts = dispatch.ssh_hosts(placement.cluster)
    assert [pool._connect_options(host) for host in hosts] == [
        {"config": [str(config)]}, {"username": "me", "port": 2222, "config": [str(config)]}]
    assert placement.describe() == "Dask workers over SSH (ssh://a,me@b:2222), 1 cell(s) at once on each"
    assert dispatch.Placement(scheduler="tcp://b:8786").describe() == "the Dask cluster at tcp://b:8786"


def test_a_closed_pool_leaves_dasks_own_settings_as_they_were(tmp_path):
    # in a fresh process, where the pool is the first to import distributed: leaving the pool's settings
    # once dropped distributed's whole configuration, and every later cluster of the process failed
    script = ("import dask\n"
              "from harness.errors import ClusterFailed\n"
              "from harness.measure import dispatch\n"
              "dispatch.START_TIMEOUT_S = 0.5\n"
              "try:\n"
              "    with dispatch.pool(dispatch.Placement(scheduler='tcp://127.0.0.1:1'), None, None):\n"
              "        pass\n"
              "except ClusterFailed as error:\n"
              "    print(str(error).split(' (')[0])\n"
              "print(dask.config.get('distributed.scheduler.allowed-failures'),"
              " dask.config.get('distributed.comm.require-encryption'))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.stdout.splitlines() == ["The Dask cluster", "3 None"], done.stderr
