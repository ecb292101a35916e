"""Where cells run: the placement options, the vCPUs and memory a cell may have, a worker's artifact
cache and its side of a cell (in this process; the real clusters are in tests/real/test_real_cluster.py
and tests/faults/test_faults.py)."""

import hashlib
import logging

import pandas as pd
import pytest

from harness import experiment, results
from harness.analysis import report
from harness.errors import BadPlacement, ClusterFailed
from harness.guest import image as guest_image
from harness.measure import cell, dispatch, matrix, worker, workloads
from tests.fakes.guest import FakeBuild


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
])
def test_a_placement_that_cannot_work_is_one_line_naming_the_option(placement, message):
    with pytest.raises(BadPlacement, match=message):
        dispatch.check(placement)


def test_the_placement_says_where_cells_run():
    assert dispatch.Placement().describe() == "one cell at a time on this machine"
    assert dispatch.Placement(jobs=2).describe() == "2 cells at once on this machine (a local Dask cluster)"
    assert not dispatch.Placement().parallel and dispatch.Placement(jobs=2).parallel
    assert dispatch.Placement(cluster="ssh://a").remote and not dispatch.Placement(jobs=4).remote


class FakePool:
    """What matrix._placed asks of a pool: its workers, and the cores and memory per cell."""

    def __init__(self, cores, memory_mb, hosts=("vm",)):
        self.workers = {f"tcp://{host}:1": {"host": host, "cores": 2, "memory_mb": 4096, "kvm": False, "qemu": "Q",
                                            "nthreads": 2} for host in hosts}
        self.cores, self.memory = cores, memory_mb

    def cores_per_cell(self):
        return self.cores

    def memory_per_cell_mb(self):
        return self.memory


def request_for(tmp_path, spec=None, jobs=2):
    spec = spec or experiment.load(None)
    swapcow = workloads.load("swapcow")
    return matrix.RunRequest(spec, ((swapcow, swapcow.params()),), tuple(spec.variants), 1, tmp_path / "run",
                             sweep=spec.sweep, placement=dispatch.Placement(jobs=jobs))


def test_cells_at_once_get_the_cores_per_cell_and_it_is_recorded(tmp_path, caplog):
    request = request_for(tmp_path)
    directory = results.RunDirectory.create(tmp_path / "run", {})
    with caplog.at_level(logging.WARNING, "harness.matrix"):
        assert matrix._placed(request, FakePool(1, 4096), directory) == 1
    assert "each guest gets 1 vCPU(s), not the 2 the experiment asks" in caplog.text
    placement = directory.metadata()["placement"]
    assert (placement["jobs"], placement["guest_cpus"]) == (2, 1)
    assert placement["workers"] == {"vm": {"cores": 2, "memory_mb": 4096, "kvm": False, "qemu": "Q",
                                           "cells_at_once": 2}}
    job = matrix.job_at(request, {"base": (cell.Kernel.of(FakeBuild("base"), None), "")}, None, "", 1,
                        "swapcow", "base", 1, "counted", "")
    assert job.guest.cpus == 1 and job.guest.memory_mb == request.experiment.guest.memory_mb


def test_a_resumed_run_keeps_the_vcpus_it_started_with(tmp_path):
    request = request_for(tmp_path)
    directory = results.RunDirectory.create(tmp_path / "run", {"placement": {"guest_cpus": 1}})
    resumed = matrix.RunRequest(**{**vars(request), "resume": True, "placement": dispatch.Placement()})
    assert matrix._placed(resumed, FakePool(None, None), directory) == 1


def test_cells_at_once_that_do_not_fit_are_refused_before_any_boot(tmp_path):
    directory = results.RunDirectory.create(tmp_path / "run", {})
    with pytest.raises(BadPlacement, match=r"--jobs 2: leaves 1000 MiB per cell .* a guest needs 1280 MiB"):
        matrix._placed(request_for(tmp_path), FakePool(1, 1000), directory)
    swept = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"guest": {"cpus": [1, 2]}}},
                                 tmp_path / "cpus.toml")
    with pytest.raises(BadPlacement, match="the sweep varies guest.cpus up to 2: run fewer cells at once"):
        matrix._placed(request_for(tmp_path, swept), FakePool(1, 4096), directory)
    hosts = experiment.from_dict({"variants": [{"name": "base"}], "sweep": {"host": {"name": ["vm", "xeon2"]}}},
                                 tmp_path / "hosts.toml")
    with pytest.raises(BadPlacement, match=r"\[sweep\] host.name xeon2: has no worker \(the workers are on vm\)"):
        matrix._placed(request_for(tmp_path, hosts), FakePool(2, 4096), directory)


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
    assert outcome.log == ["harness.matrix INFO   base rep 1 counted idle"]
    assert list((tmp_path / "worker" / "cells").iterdir()) == [], "the cell's scratch folder is gone"


def test_the_report_says_where_the_cells_ran():
    runs = pd.DataFrame({"host": ["vm", "vm", "w2"]})
    assert report.placement_line(None, runs) == "- Cells: one at a time on this machine"
    line = report.placement_line({"where": "2 cells at once on this machine (a local Dask cluster)", "guest_cpus": 1},
                                 runs.iloc[:2])
    assert line == ("- Cells: 2 cells at once on this machine (a local Dask cluster); at most 1 vCPU(s) per guest, "
                    "so that cells at once do not share cores")
    assert report.placement_line({"where": "x", "cluster": "ssh://vm,w2", "guest_cpus": 2}, runs).endswith(
        "cells per host: vm 2, w2 1")


def test_a_cluster_that_cannot_start_is_one_line_with_the_fix(tmp_path):
    placement = dispatch.Placement(cluster="ssh://127.0.0.1:1")      # nothing listens on port 1
    with pytest.raises(ClusterFailed, match=r"did not start \(.*127.0.0.1.*\): check that 'ssh HOST' logs in"):
        with dispatch.pool(placement, tmp_path, tmp_path / "raw"):
            pass
