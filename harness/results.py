"""Results on disk: a run directory with metadata.json (written before the first boot),
samples.csv (tidy: variant, workload, rep, mode, phase, metric, value), runs.csv (one row
per boot) and raw/ (console logs, harness-collect output, the workload's own figures).
Every file is written whole to a temporary name and renamed, so a killed run never leaves
half a file.

`mode` is `counted` for a boot with kprobes and the function profiler on, `timed` for a
boot without them (timings come from those). Format 1 files have no mode: every boot was
counted. Format 3 adds `point` (the sweep point, harness/sweep.py; "" without a sweep) to both
files, and the swap backend to runs.csv; older files read as one point on a virtio disk. Format 4 adds
the `host` each cell ran on (cells may run on several machines, harness/measure/dispatch.py); older
files read as run on the host their metadata names."""

import csv
import io
import json
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from harness import project
from harness.errors import NewerFormat, NotAResultDirectory, NotComparable
from harness.files import write_atomic

FORMAT = 4


def host_facts() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:")), 0)
    return {"hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "memory_mb": memory_kb // 1024,
            "kernel": platform.release(), "os": _os_release(), "python": sys.version.split()[0]}


def _os_release() -> str:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"')
    except OSError:
        return ""


# --- records: one row type per file, one to_row/from_row pair each --------------------------

def _text(value) -> str:
    """The one way a field is written: None empty, booleans True/False, whole numbers without '.0'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _parse(kind, text: str):
    if kind is bool:
        if text not in ("True", "False"):
            raise ValueError(f"{text!r} is not True or False")
        return text == "True"
    if kind is int:
        return int(float(text))
    if kind in (float, float | None):
        return float(text)
    return text


@dataclass(frozen=True)
class Run:
    """One boot: a row of runs.csv."""
    variant: str
    workload: str
    rep: int
    mode: str                    # counted (probes on) | timed (no probes)
    valid: bool = False
    reason: str = ""             # why the run is invalid; "failed: ..." when the cell did not finish
    accelerator: str = ""
    source: str = ""
    kernel_release: str = ""     # `uname -r` of the guest; of the build when the guest never answered
    config_hash: str = ""
    patch_hash: str = ""
    qemu_version: str = ""
    guest_memory_mb: int = 0
    swap_mb: int = 0
    cpus: int = 0
    boot_ready_s: float | None = None
    duration_s: float | None = None
    warnings: str = ""
    point: str = ""              # the sweep point's label; "" without a sweep
    swap: str = "virtio-blk"     # the swap backend: virtio-blk | zram
    swap_compressor: str = ""    # zram's compression algorithm, as the guest kernel used it
    host: str = ""               # the machine the cell ran on (its hostname); format 4

    @property
    def cell(self) -> tuple[str, str, int, str, str]:
        return (self.workload, self.variant, self.rep, self.mode, self.point)

    def to_row(self) -> dict[str, str]:
        return {name: _text(value) for name, value in asdict(self).items()}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> "Run":
        return cls(**{f.name: _parse(f.type, row[f.name]) for f in fields(cls)
                      if row.get(f.name) is not None and (row[f.name] != "" or f.type is str)})


@dataclass(frozen=True)
class Sample:
    """One figure of one phase of one boot: a row of samples.csv."""
    variant: str
    workload: str
    rep: int
    mode: str
    phase: str
    metric: str
    value: float
    point: str = ""

    def to_row(self) -> dict[str, str]:
        return {name: _text(value) for name, value in asdict(self).items()}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> "Sample":
        return cls(**{f.name: _parse(f.type, row[f.name]) for f in fields(cls) if f.name != "point" or "point" in row})


RUN_COLUMNS = tuple(f.name for f in fields(Run))
SAMPLE_COLUMNS = tuple(f.name for f in fields(Sample))


def valid_runs(runs):
    """The valid rows of a runs frame (as read() gives it)."""
    return runs[runs["valid"]]


# --- the run directory: the only reader and writer of a results folder ----------------------

class RunDirectory:
    """metadata.json, runs.csv, samples.csv and raw/ of one run. Made with create() (a fresh
    folder) or load() (an existing run, its format checked); the CSV files are rewritten whole
    after every boot."""

    def __init__(self, path: Path, metadata: dict, runs: list[Run], samples: list[Sample]):
        self.path, self._metadata, self.runs, self.samples = path, metadata, runs, samples

    @staticmethod
    def is_fresh(path: Path) -> bool:
        """True for a folder a new run may use: absent, empty, or holding only the empty raw/ of a run
        that stopped before its metadata was written, and what `harness try` writes before its run (one
        experiment file and its patches/ folder)."""
        if not path.exists():
            return True
        entries = list(path.iterdir())
        tried = [entry for entry in entries if entry.suffix == ".toml" and entry.is_file()]
        return len(tried) <= 1 and all(
            entry.name == "raw" and entry.is_dir() and not any(entry.iterdir()) or entry in tried
            or tried and entry.name == "patches" and entry.is_dir() for entry in entries)

    @classmethod
    def create(cls, path: Path, metadata: dict) -> "RunDirectory":
        """A new run in path (which is_fresh); nothing is left behind when it cannot be made."""
        made = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            write_atomic(path / "metadata.json", json.dumps({"format": FORMAT, **metadata}, indent=2) + "\n")
            (path / "raw").mkdir(exist_ok=True)
        except BaseException:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return cls(path, {"format": FORMAT, **metadata}, [], [])

    @classmethod
    def load(cls, path: Path) -> "RunDirectory":
        """An existing run directory with the runs and samples it holds; a newer format is refused."""
        metadata = read_metadata(path)
        default_mode = "counted" if metadata.get("probes", True) else "timed"   # format 1 had no mode
        default_host = metadata.get("host", {}).get("hostname", "")            # before format 4, one host
        lists = []
        for name, kind in (("runs.csv", Run), ("samples.csv", Sample)):
            rows = []
            if (path / name).is_file():
                with open(path / name, newline="") as stream:
                    for row in csv.DictReader(stream):
                        row.setdefault("mode", default_mode)
                        if kind is Run:
                            row.setdefault("host", default_host)
                        try:
                            rows.append(kind.from_row(row))
                        except (KeyError, ValueError, TypeError) as error:
                            raise NotAResultDirectory(path=path, missing=f"a readable {name} ({error})") from None
            lists.append(rows)
        return cls(path, metadata, *lists)

    def metadata(self) -> dict:
        return dict(self._metadata)

    def update_metadata(self, **values) -> None:
        self._metadata.update(values)
        write_atomic(self.path / "metadata.json", json.dumps(self._metadata, indent=2) + "\n")

    def add(self, run: Run, samples: list[Sample]) -> None:
        self.runs.append(run)
        self.samples.extend(samples)
        write_atomic(self.path / "samples.csv", _csv(SAMPLE_COLUMNS, (s.to_row() for s in self.samples)))
        write_atomic(self.path / "runs.csv", _csv(RUN_COLUMNS, (r.to_row() for r in self.runs)))

    def done(self) -> set[tuple[str, str, int, str, str]]:
        """The cells recorded, valid or not."""
        return {run.cell for run in self.runs}

    def raw(self, name: str, text: str) -> Path:
        path = self.path / "raw" / name
        write_atomic(path, text)
        return path


def read_metadata(path: Path) -> dict:
    """metadata.json of a run directory, its format checked."""
    file = path / "metadata.json"
    if not file.is_file():
        raise NotAResultDirectory(path=path, missing="metadata.json")
    try:
        metadata = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotAResultDirectory(path=path, missing=f"a readable metadata.json ({error})") from None
    written = metadata.get("format", 1) if isinstance(metadata, dict) else None
    if not isinstance(written, int):
        raise NotAResultDirectory(path=path, missing="a metadata.json with a format number")
    if written > FORMAT:
        raise NewerFormat(path=path, format=written, known=FORMAT)
    return metadata


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def default_directory(experiment: str) -> Path:
    return project.ROOT / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{experiment}"


def read(path: Path):
    """(samples, runs, metadata) of a run directory, as pandas frames (valid a boolean, rep an
    integer, every format's files alike) and a dict."""
    import pandas as pd
    for name in ("samples.csv", "runs.csv"):
        if not (path / name).is_file():
            raise NotAResultDirectory(path=path, missing=name)
    directory = RunDirectory.load(path)
    samples = pd.DataFrame([asdict(s) for s in directory.samples], columns=SAMPLE_COLUMNS)
    runs = pd.DataFrame([asdict(r) for r in directory.runs], columns=RUN_COLUMNS)
    samples = samples.astype({"rep": int, "value": float})
    runs = runs.astype({"rep": int, "valid": bool})
    return samples, runs, directory.metadata()


POOLED_METADATA = ("workloads", "primary", "margin_pct", "probes", "guest", "sweep", "discovery")


def _pooled_value(metadata: dict, name: str):
    """A field as pooling compares it: a run from before `discovery` was recorded was no discovery."""
    return bool(metadata.get(name)) if name == "discovery" else metadata.get(name)


def read_many(paths: list[Path]):
    """(samples, runs, [metadata]) of several run directories pooled, each row tagged with its
    folder in `run_dir` and its repetition made unique across folders.

    Folders must agree on what was measured (workload parameters, probes, guest, declared
    hypotheses) and a variant name must mean the same patches in each; otherwise refused,
    naming the field and the folders.
    """
    import pandas as pd
    frames = [read(path) for path in paths]
    if len(frames) == 1:
        samples, runs, metadata = frames[0]
        return samples.assign(run_dir=str(paths[0])), runs.assign(run_dir=str(paths[0])), [metadata]
    for name in POOLED_METADATA:
        values = {json.dumps(_pooled_value(metadata, name), sort_keys=True) for _, _, metadata in frames}
        if len(values) > 1:
            raise NotComparable(field=name, values=" vs ".join(
                f"{json.dumps(_pooled_value(metadata, name), sort_keys=True)} in {path}" for path, (_, _, metadata)
                in zip(paths, frames)))
    offset = 0
    pooled_samples, pooled_runs = [], []
    for path, (samples, runs, _) in zip(paths, frames):
        pooled_samples.append(samples.assign(run_dir=str(path), rep=samples["rep"] + offset))
        pooled_runs.append(runs.assign(run_dir=str(path), rep=runs["rep"] + offset))
        offset += int(runs["rep"].max()) if len(runs) else 0
    runs = pd.concat(pooled_runs, ignore_index=True)
    for variant, part in runs.groupby("variant"):
        hashes = sorted(set(part["patch_hash"].astype(str)))
        if len(hashes) > 1:
            raise NotComparable(field=f"patch_hash of variant {variant}", values=" vs ".join(
                f"{h} in {', '.join(sorted(set(part[part['patch_hash'].astype(str) == h]['run_dir'])))}"
                for h in hashes))
    return pd.concat(pooled_samples, ignore_index=True), runs, [metadata for _, _, metadata in frames]
