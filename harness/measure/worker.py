"""A worker's side of the cells, wherever it runs: this process, a local Dask worker, or a Dask worker
on another machine (harness/measure/dispatch.py sends the jobs).

A worker that shares this machine's file system boots the kernels where they were built and writes
raw files straight into the run's raw/. A remote worker keeps the bzImages and initramfs it is sent
in its own cache, named by content hash (`artifacts/`), and reuses them for every later cell and
run; its raw files and log lines travel back with the cell's Run and Samples.
"""

import hashlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from harness import doctor, files, project, results
from harness.guest import vm
from harness.measure import cell as cells

log = logging.getLogger("harness.worker")

WORKER_CACHE = "~/.cache/harness/worker"


@dataclass(frozen=True)
class Place:
    """Where a worker keeps things: its cache, and the run's raw/ when it shares this file system
    ("": the raw files go back with the outcome)."""
    cache_dir: str
    raw_dir: str = ""
    capture_log: bool = False      # a Dask worker: the harness's log lines go back with the outcome


@dataclass(frozen=True)
class Outcome:
    run: results.Run
    samples: list
    raw: dict                      # file name -> bytes, when the worker does not share the run's folder
    log: list                      # the harness's log records of the cell, when captured: (name, level, message)


class ArtifactsMissing(Exception):
    """A remote worker lacks a job's bzImage or initramfs (it joined after they were sent)."""


def digest_of(path: Path) -> str:
    """sha256 of a file's content: the name an artifact travels and is kept under."""
    return files.sha256_of(path)


def artifact_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / "artifacts" / digest


def missing(digests: list[str], cache_dir: str) -> list[str]:
    """The artifacts (by digest) this worker does not have yet."""
    cache = Path(cache_dir).expanduser()
    return [digest for digest in digests if not artifact_path(cache, digest).is_file()]


def store(digest: str, data: bytes, cache_dir: str) -> str:
    """Keep an artifact sent to this worker (its content checked against its name); its path here."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"artifact {digest[:12]} arrived damaged ({len(data)} bytes)")
    path = artifact_path(Path(cache_dir).expanduser(), digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.locked(path.parent.parent, f"artifacts/{digest}", f"the artifact {digest[:12]}"):
        if not path.is_file():
            files.write_bytes_atomic(path, data)
    return str(path)


def artifacts_of(job: cells.Job) -> dict[str, Path]:
    """digest -> path on the submitting machine, of what a job boots: its bzImage and initramfs."""
    return {job.kernel_digest: job.kernel.bzimage, job.image_digest: job.image.path}


def execute(job: cells.Job, place: Place) -> Outcome:
    """Run one cell here: the job's artifacts from this worker's cache unless it shares the run's folder."""
    cache = Path(place.cache_dir).expanduser()
    shared = bool(place.raw_dir)
    if not shared:
        job = localised(job, cache)
    raw_dir = Path(place.raw_dir) if shared else Path(tempfile.mkdtemp(prefix="cell-", dir=_scratch(cache)))
    try:
        with _captured(place.capture_log) as lines:
            record, samples = cells.run_cell(job, raw_dir, cache)
        raw = {} if shared else {path.name: path.read_bytes() for path in sorted(raw_dir.iterdir())}
    finally:
        if not shared:
            shutil.rmtree(raw_dir, ignore_errors=True)
    return Outcome(record, samples, raw, lines)


def localised(job: cells.Job, cache: Path) -> cells.Job:
    """The job with its bzImage and initramfs at their places in this worker's artifact cache."""
    lacking = missing([job.kernel_digest, job.image_digest], str(cache))
    if lacking:
        raise ArtifactsMissing(socket.gethostname(), lacking)
    kernel = replace(job.kernel, bzimage=artifact_path(cache, job.kernel_digest))
    image = replace(job.image, path=artifact_path(cache, job.image_digest))
    return replace(job, kernel=kernel, image=image)


def _scratch(cache: Path) -> Path:
    scratch = cache / "cells"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


class _Lines(logging.Handler):
    """The records as (logger name, level, message): the submitting machine logs them again as they were."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record):
        self.lines.append((record.name, record.levelno, record.getMessage()))


@contextmanager
def _captured(capture: bool):
    """The harness's log lines while the block runs, in a list (when capture; else they go where they go)."""
    if not capture:
        yield []
        return
    logger, handler = logging.getLogger("harness"), _Lines()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def stop_guests() -> int:
    """Kill every QEMU this worker process started (Ctrl-C on the submitting machine); how many."""
    return vm.stop_all()


def facts(cache_dir: str = WORKER_CACHE) -> dict:
    """What the submitting machine needs to know of a worker: its host, cores and memory, KVM, the
    versions that must match, and what it lacks (with the line that installs it)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        distributed = version("distributed")
    except PackageNotFoundError:
        distributed = ""
    lacking = doctor.problems(doctor.WORKER)
    return {"host": socket.gethostname(), "cores": os.cpu_count() or 1, "memory_mb": results.host_facts().memory_mb,
            "kvm": vm.kvm_openable(), "qemu": "" if lacking else vm.qemu_version(), "code": project.code_digest(),
            "python": sys.version.split()[0], "distributed": distributed, "executable": sys.executable,
            "cache": str(Path(cache_dir).expanduser()),
            "lacking": [f"{item.name}: {problem}" for item, problem in lacking],
            "install": " ".join(doctor.install_command(sorted({item.package for item, _ in lacking})))
            if lacking else ""}
