"""Results on disk: a run directory with metadata.json (written before the first boot),
samples.csv (tidy: variant, workload, rep, mode, phase, metric, value), runs.csv (one row
per boot) and raw/ (console logs, harness-collect output, the workload's own figures).
Every file is written whole to a temporary name and renamed, so a killed run never leaves
half a file.

`mode` is `counted` for a boot with kprobes and the function profiler on, `timed` for a
boot without them (timings come from those). Format 1 files have no mode: every boot was
counted."""

import csv
import io
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import project
from harness.errors import NotAResultDirectory, NotComparable
from harness.files import write_atomic

FORMAT = 2
SAMPLE_COLUMNS = ("variant", "workload", "rep", "mode", "phase", "metric", "value")
RUN_COLUMNS = ("variant", "workload", "rep", "mode", "valid", "reason", "accelerator", "source", "kernel_release",
               "config_hash", "patch_hash", "qemu_version", "guest_memory_mb", "swap_mb", "cpus", "boot_ready_s",
               "duration_s", "warnings")


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


@dataclass
class RunDirectory:
    """Accumulates samples and runs and rewrites the CSV files after every boot."""
    path: Path
    samples: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)

    def __post_init__(self):
        (self.path / "raw").mkdir(parents=True, exist_ok=True)

    @classmethod
    def load(cls, path: Path) -> "RunDirectory":
        """An existing run directory, with the samples and runs it already holds (to resume it)."""
        if not (path / "metadata.json").is_file():
            raise NotAResultDirectory(path=path, missing="metadata.json")
        directory = cls(path)
        for name, rows in (("samples.csv", directory.samples), ("runs.csv", directory.runs)):
            if (path / name).is_file():
                with open(path / name, newline="") as stream:
                    rows.extend(csv.DictReader(stream))
        return directory

    def metadata(self) -> dict:
        return json.loads((self.path / "metadata.json").read_text())

    def write_metadata(self, metadata: dict) -> None:
        write_atomic(self.path / "metadata.json", json.dumps({"format": FORMAT, **metadata}, indent=2) + "\n")

    def update_metadata(self, **fields) -> None:
        data = json.loads((self.path / "metadata.json").read_text())
        data.update(fields)
        write_atomic(self.path / "metadata.json", json.dumps(data, indent=2) + "\n")

    def add(self, run: dict, samples: list[dict]) -> None:
        self.runs.append(run)
        self.samples.extend(samples)
        write_atomic(self.path / "samples.csv", _csv(SAMPLE_COLUMNS, self.samples))
        write_atomic(self.path / "runs.csv", _csv(RUN_COLUMNS, self.runs))

    def raw(self, name: str, text: str) -> Path:
        path = self.path / "raw" / name
        write_atomic(path, text)
        return path


def _csv(columns, rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def default_directory(experiment: str) -> Path:
    return project.ROOT / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{experiment}"


def read(path: Path):
    """(samples, runs, metadata) of a run directory, as pandas frames and a dict."""
    import pandas as pd
    for name in ("samples.csv", "runs.csv", "metadata.json"):
        if not (path / name).is_file():
            raise NotAResultDirectory(path=path, missing=name)
    samples = pd.read_csv(path / "samples.csv", dtype={"variant": str, "workload": str, "phase": str, "metric": str,
                                                       "mode": str})
    runs = pd.read_csv(path / "runs.csv", dtype={"variant": str, "workload": str, "mode": str})
    metadata = json.loads((path / "metadata.json").read_text())
    for frame in (samples, runs):
        if "mode" not in frame:      # format 1: every boot had the probes on (or none did, with --no-probes)
            frame["mode"] = "counted" if metadata.get("probes", True) else "timed"
    return samples, runs, metadata


POOLED_METADATA = ("workloads", "primary", "margin_pct", "probes", "guest")


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
        values = {json.dumps(metadata.get(name), sort_keys=True) for _, _, metadata in frames}
        if len(values) > 1:
            raise NotComparable(field=name, values=" vs ".join(
                f"{json.dumps(metadata.get(name), sort_keys=True)} in {path}" for path, (_, _, metadata)
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
