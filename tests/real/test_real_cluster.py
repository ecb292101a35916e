"""Cells on a Dask cluster over SSH, for real: an OpenSSH server that the test starts on loopback with
its own keys and config (tests/real/loopback_ssh.py), Dask's SSHCluster started through it, the
kernels built here sent to the worker's own cache by content hash, the cells booted there, and their
figures and raw files returned. A second run finds the kernels in the worker's cache."""

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness.measure import worker
from tests.real import loopback_ssh

pytestmark = pytest.mark.real

CACHE = Path("~/.cache/harness").expanduser()     # where the builds are (the submitting machine's cache)
SMALL = ("--workload", "swapcow", "-p", "size_mb=16", "--reps", "1", "--seed", "2")


@pytest.fixture
def sshd(tmp_path):
    server, process = loopback_ssh.start(tmp_path / "sshd")
    yield server
    process.terminate()
    process.wait(timeout=10)


def run_on_cluster(sshd, out, worker_cache):
    result = subprocess.run([sys.executable, "-m", "harness", "run", *SMALL, "--cluster", sshd.url, "--ssh-config",
                             str(sshd.client_config), "--worker-cache", str(worker_cache), "-o", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:] + "\nsshd: " + sshd.log.read_text()[-2000:]
    return result


def write_copies(out) -> dict:
    with open(out / "samples.csv") as stream:
        return {row["variant"]: float(row["value"]) for row in csv.DictReader(stream)
                if row["phase"] == "write" and row["metric"] == "cow_copies"}


def test_a_cluster_over_ssh_receives_the_kernels_once_and_returns_the_cells(tmp_path, sshd):
    cache = tmp_path / "worker-cache"
    first = run_on_cluster(sshd, tmp_path / "first", cache)
    runs = list(csv.DictReader(open(tmp_path / "first" / "runs.csv")))
    assert sorted(run["variant"] for run in runs) == ["base", "patched"]
    assert all(run["valid"] == "True" and run["host"] == socket.gethostname() for run in runs), runs
    assert all(run["accelerator"] in ("kvm", "tcg") and run["cpus"] == "2" for run in runs)
    copies = write_copies(tmp_path / "first")
    assert copies["base"] == 4096 and copies["patched"] < 0.01 * copies["base"], copies
    metadata = json.loads((tmp_path / "first" / "metadata.json").read_text())
    builds = {name: facts["key"] for name, facts in metadata["builds"].items()}
    kept = sorted(path.name for path in (cache / "artifacts").iterdir())
    assert len(kept) == 3, "two bzImages and one initramfs"
    for name, key in builds.items():
        bzimage = worker.digest_of(CACHE / "builds" / key / "bzImage")
        assert bzimage in kept, f"{name}'s bzImage is kept under its content hash"
    assert metadata["placement"]["artifacts"] == {socket.gethostname(): {"sent": 3, "kept": 0}}
    raw = sorted(path.name for path in (tmp_path / "first" / "raw").iterdir())
    assert sum(name.startswith("console-") for name in raw) == 2
    assert sum(name.endswith("-write.txt") for name in raw) == 2
    assert "sent bzImage" in first.stderr
    sent = sum(path.stat().st_size for path in (cache / "artifacts").iterdir()) / 2**20
    print(f"\n[figure] over ssh://127.0.0.1: copies in the write phase base {copies['base']:.0f}, patched "
          f"{copies['patched']:.0f}; sent {len(kept)} files, {sent:.1f} MiB")
    second = run_on_cluster(sshd, tmp_path / "second", cache)
    metadata = json.loads((tmp_path / "second" / "metadata.json").read_text())
    assert metadata["placement"]["artifacts"] == {socket.gethostname(): {"sent": 0, "kept": 3}}
    assert "sent bzImage" not in second.stderr and write_copies(tmp_path / "second")["base"] == 4096




@pytest.fixture
def scheduler(tmp_path):
    """A running Dask cluster of one worker, as `dask scheduler` and `dask worker` start one."""
    port = loopback_ssh.free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    started = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-dashboard"], stdout=logs, stderr=logs)]
    started.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                     "--no-dashboard"], stdout=logs, stderr=logs))
    yield address
    for process in reversed(started):
        process.terminate()
        process.wait(timeout=30)


def test_a_running_cluster_takes_the_cells_by_its_scheduler_address(tmp_path, scheduler):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "harness", "run", *SMALL, "--scheduler", scheduler,
                             "--worker-cache", str(tmp_path / "worker-cache"), "-o", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert write_copies(out)["base"] == 4096
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["placement"]["where"] == f"the Dask cluster at {scheduler}"
    assert metadata["placement"]["artifacts"][socket.gethostname()]["sent"] == 3
    reported = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], capture_output=True, text=True,
                              timeout=600)
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert f"- Cells: the Dask cluster at {scheduler}; cells per host: {socket.gethostname()} 2" in \
        (out / "report.md").read_text()
