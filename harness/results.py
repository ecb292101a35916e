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
files read as run on the host their metadata names. Format 5 adds `findings` to runs.csv: what the
boot read back wrong, or which test of the kernel's own failed (Finding, as JSON; empty when nothing
was); older files read as boots that found nothing, since their workloads checked nothing."""

import csv
import functools
import io
import json
import os
import platform
import shutil
import socket
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from harness import comparability, project
from harness.errors import NewerFormat, NotAResultDirectory
from harness.files import write_atomic

FORMAT = 6


def host_facts() -> "HostFacts":
    """The machine this process runs on, as a run's metadata records it."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:")), 0)
    return HostFacts(socket.gethostname(), cpu, os.cpu_count() or 0, memory_kb // 1024, platform.release(),
                     _os_release(), sys.version.split()[0])


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
class Finding:
    """Something a phase of a boot found wrong: data read back that is not what was written (kind
    `wrong_pages` or `wrong_values`: how many of how many checked, and the first wrong one with what was
    expected and what was found), or a test of the kernel's own that failed (`failed_test`: its name in
    `where`). A finding is about the kernel, never noise: harness/analysis/integrity.py judges it."""
    phase: str
    kind: str               # wrong_pages | wrong_values | failed_test
    count: int = 1          # pages or values wrong; 1 for a test
    checked: int = 0        # pages or values the phase checked; 0 for a test
    where: str = ""         # the first wrong one ('child:17', 'key:42'), or the test's name
    expected: str = ""
    found: str = ""

    def said(self) -> str:
        """'4,096 of 4,096 pages wrong, first child:0: expected 0x.., found 0x..' or "test 'NAME' failed"."""
        if self.kind == FAILED_TEST:
            return f"test '{self.where}' failed"
        if self.kind == KERNEL_BUG:
            return f"the kernel said: {self.where}"
        unit = self.kind.removeprefix("wrong_")
        first = f", first {self.where}" if self.where else ""
        values = f": expected {self.expected}, found {self.found}" if self.expected or self.found else ""
        return f"{self.count:,} of {self.checked:,} {unit} wrong{first}{values}"


FAILED_TEST = "failed_test"
KERNEL_BUG = "kernel_bug"
FINDING_KINDS = ("wrong_pages", "wrong_values", FAILED_TEST, KERNEL_BUG)
NAMED_KINDS = (FAILED_TEST, KERNEL_BUG)     # findings told apart by their name, not only their phase


def findings_text(findings: tuple[Finding, ...]) -> str:
    """runs.csv's findings cell: a JSON list ('' for none)."""
    return json.dumps([asdict(finding) for finding in findings]) if findings else ""


def findings_of(text: str) -> tuple[Finding, ...]:
    """The findings of a runs.csv cell (findings_text's inverse)."""
    return tuple(Finding(**item) for item in json.loads(text)) if text.strip() else ()


class PlannedCell(typing.NamedTuple):
    """One boot of the plan, in the order the run takes them (RunMetadata.plan): what a Run records as its cell."""
    workload: str
    variant: str
    rep: int
    mode: str
    point: str


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
    swap: str = "virtio-blk"     # the swap backend: virtio-blk | zram | zswap
    swap_compressor: str = ""    # zram's or zswap's compressor, as the guest kernel used it
    host: str = ""               # the machine the cell ran on (its hostname); format 4
    findings: tuple[Finding, ...] = ()     # what the boot found wrong, valid or not; format 5
    image: str = ""              # the guest image's digest; format 6
    host_kernel: str = ""        # `uname -r` of the machine the cell ran on; format 6

    @property
    def cell(self) -> PlannedCell:
        return PlannedCell(self.workload, self.variant, self.rep, self.mode, self.point)

    def to_row(self) -> dict[str, str]:
        row = {f.name: _text(getattr(self, f.name)) for f in fields(self) if f.name != "findings"}
        return {**row, "findings": findings_text(self.findings)}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> "Run":
        found = findings_of(row.get("findings") or "")
        return cls(**{f.name: _parse(f.type, row[f.name]) for f in fields(cls) if f.name != "findings"
                      and row.get(f.name) is not None and (row[f.name] != "" or f.type is str)}, findings=found)


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


# --- the run's metadata: one record, its nested records, and the older formats read into it ---

@dataclass(frozen=True)
class VariantRecord:
    """A variant as the run knew it: its patches' file names and subjects, and its kernel source."""
    name: str
    patches: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()      # one per patch; none before the run recorded them
    source: str = ""


@dataclass(frozen=True)
class BuildFacts:
    """What a variant's kernel was built from (harness/kernel/build.py)."""
    key: str = ""
    release: str = ""
    source: str = ""
    patches: tuple[str, ...] = ()
    patch_hash: str = ""
    config_hash: str = ""
    compiler: str = ""
    source_state: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectCode:
    """How the code of `variant` differs from `baseline`'s (harness/kernel/objdiff.py compares them)."""
    variant: str
    baseline: str
    identical: bool                      # every executable section has the same bytes
    changed: list[str] = field(default_factory=list)   # functions whose code differs
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    sections: dict = field(default_factory=dict)       # name -> [old size, new size] of differing sections
    bloat: str = ""                      # scripts/bloat-o-meter's table
    init: list[str] = field(default_factory=list)       # of the functions touched: those in init sections
    untraced: list[str] = field(default_factory=list)   # of the functions touched: those without __fentry__
    shared: list[str] = field(default_factory=list)     # of the functions touched: names an unchanged copy shares

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def functions(self) -> list[str]:
        """Every function the variant changed, added or removed, by its name in vmlinux."""
        return list(dict.fromkeys([name.split(" (", 1)[0] for name in self.changed] + self.added + self.removed))

    def summary(self) -> str:
        if self.identical:
            return f"object code identical to {self.baseline}: any difference would be noise"
        touched = self.changed + self.added + self.removed
        if not touched:
            return f"text differs from {self.baseline} in addresses only (data layout); no function's code changed"
        counts = f"{len(self.changed)} function(s) changed, {len(self.added)} added, {len(self.removed)} removed"
        return (f"object code differs from {self.baseline}: {counts}: {', '.join(touched[:8])}"
                + (" ..." if len(touched) > 8 else ""))


@dataclass(frozen=True)
class HostFacts:
    """The machine that ran the harness."""
    hostname: str = ""
    cpu: str = ""
    cores: int = 0
    memory_mb: int = 0
    kernel: str = ""
    os: str = ""
    python: str = ""


@dataclass(frozen=True)
class WorkerFacts:
    """One worker host of a run's placement, as the run found it."""
    cores: int = 0
    memory_mb: int = 0
    kvm: bool = False
    qemu: str = ""
    cells_at_once: int = 0


@dataclass(frozen=True)
class PlacementFacts:
    """Where the cells ran (harness/measure/dispatch.py's Placement), and what that gave each guest."""
    jobs: int = 1
    cluster: str = ""
    scheduler: str = ""
    worker_cache: str = ""
    ssh_config: str = ""
    where: str = ""                      # the placement in words
    guest_cpus: int | None = None        # the vCPUs a guest got, when fewer than it asked
    workers: dict[str, WorkerFacts] = field(default_factory=dict)    # host -> its facts
    artifacts: dict | None = None        # host -> {"sent": n, "kept": n} kernels and images sent to it


@dataclass(frozen=True)
class RunMetadata:
    """metadata.json: what a run was asked to do (written before the first boot) and what it found on the
    way (builds, object code, placement, stage times, coverage). Every format is read into this record."""
    format: int = FORMAT
    command: str = ""                    # a command line that reproduces the run
    experiment: str = ""
    description: str = ""
    experiment_file: str = ""
    source: str = ""                     # the experiment's kernel source SPEC
    mixed_sources: bool = False
    mixed_hosts: bool = False
    workloads: dict = field(default_factory=dict)       # workload -> its parameters
    variants: tuple[VariantRecord, ...] = ()
    baseline: str = "base"
    control: str | None = None           # the variant that is the baseline again (--control)
    primary: tuple[str, ...] = ()
    margin_pct: float = 5.0
    force: bool = False
    reps: int | str | None = None        # a number, or "auto"
    min_reps: int | None = None
    max_reps: int | None = None
    discovery: bool = False
    modes: tuple[str, ...] = ()
    timing: str = ""                     # "kvm": timed boots only where the guests run under KVM
    untimed: str = ""                    # why the timed boots the run was asked for were left out
    accelerator_requested: str = ""
    probes: tuple[str, ...] | None = None    # None: format 1, whose boots were all counted
    guest: dict = field(default_factory=dict)
    sweep: dict | None = None
    points: dict | None = None           # workload -> its sweep points' labels
    host: HostFacts = HostFacts()
    started: str = ""
    seed: int | None = None
    plan: tuple[tuple, ...] = ()         # PlannedCell's fields (no point before format 3), in the order they run
    builds: dict[str, BuildFacts] = field(default_factory=dict)
    cow_layout: dict = field(default_factory=dict)
    image: str = ""
    qemu: str = ""
    stage_seconds: dict = field(default_factory=dict)
    object_code: dict[str, ObjectCode] = field(default_factory=dict)
    as_control: tuple[str, ...] = ()     # identical variants run as A/A controls
    calls: tuple[str, ...] = ()          # the functions every counted boot counted
    placement: PlacementFacts | None = None
    finished: str = ""
    reps_done: int | None = None
    coverage: dict = field(default_factory=dict)
    left_out: str = ""
    extra: dict = field(default_factory=dict)    # keys this harness does not know, kept as they were

    @classmethod
    def from_dict(cls, data: dict) -> "RunMetadata":
        """The record of a stored metadata.json (any format up to FORMAT)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        data = _migrated(data)
        return _record(cls, {key: value for key, value in data.items() if key in known},
                       extra={key: value for key, value in data.items() if key not in known})

    def to_dict(self) -> dict:
        """metadata.json's content: every field, then the keys kept from elsewhere."""
        stored = asdict(self)
        return {**{key: value for key, value in stored.items() if key != "extra"}, **self.extra}

    @property
    def variant_names(self) -> list[str]:
        return [variant.name for variant in self.variants]

    def changed(self, **values) -> "RunMetadata":
        """This record with some fields replaced (records, or their stored dicts)."""
        return replace(self, **{name: _typed(_field_types(type(self))[name], value) for name, value in values.items()})


def _migrated(data: dict) -> dict:
    """A stored metadata.json as the current format writes it. Format 1 had no modes (every boot counted),
    formats before 4 no hosts per cell; those are filled in where the rows are read (RunDirectory.load).
    A variant without its own source was built from the experiment's."""
    data = dict(data)
    data.setdefault("format", 1)
    data["variants"] = [{"source": data.get("source", ""), **variant} for variant in data.get("variants") or []]
    return data


@functools.cache
def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _typed(kind, value):
    """value (as JSON holds it) as the field type `kind` says: records from dicts, tuples from lists."""
    if value is None:
        return None
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return _typed(next(a for a in arguments if a is not type(None)), value)
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        return value if isinstance(value, kind) else _record(kind, value)
    if origin is tuple:
        inner = arguments[0] if arguments else None
        return tuple(_typed(inner, item) if inner not in (None, Ellipsis) else
                     (tuple(item) if isinstance(item, list) else item) for item in value)
    if origin is dict and len(arguments) == 2:
        return {key: _typed(arguments[1], item) for key, item in value.items()}
    return tuple(value) if kind is tuple else value


def _record(cls, data: dict, **more):
    """cls from its stored dict: the fields it knows, each typed; a field it lacks keeps its default."""
    kinds = _field_types(cls)
    return cls(**{name: _typed(kinds[name], value) for name, value in data.items() if name in kinds}, **more)


# --- the run directory: the only reader and writer of a results folder ----------------------

class RunDirectory:
    """metadata.json, runs.csv, samples.csv and raw/ of one run. Made with create() (a fresh
    folder) or load() (an existing run, its format checked); the CSV files are rewritten whole
    after every boot."""

    def __init__(self, path: Path, metadata: "RunMetadata", runs: list[Run], samples: list[Sample]):
        self.path, self.metadata, self.runs, self.samples = path, metadata, runs, samples

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
    def create(cls, path: Path, metadata: "RunMetadata") -> "RunDirectory":
        """A new run in path (which is_fresh); nothing is left behind when it cannot be made."""
        made = not path.exists()
        metadata = replace(metadata, format=FORMAT)
        try:
            path.mkdir(parents=True, exist_ok=True)
            _write_metadata(path, metadata)
            (path / "raw").mkdir(exist_ok=True)
        except BaseException:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return cls(path, metadata, [], [])

    @classmethod
    def load(cls, path: Path) -> "RunDirectory":
        """An existing run directory with the runs and samples it holds; a newer format is refused."""
        metadata = read_metadata(path)
        default_mode = "counted" if metadata.probes is None or metadata.probes else "timed"   # format 1: no mode
        default_host = metadata.host.hostname                                               # before format 4
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

    def update_metadata(self, **values) -> None:
        """Fields of the metadata replaced (records, or the dicts they are stored as), and the file rewritten."""
        self.metadata = self.metadata.changed(**values)
        _write_metadata(self.path, self.metadata)

    def add(self, run: Run, samples: list[Sample]) -> None:
        self.runs.append(run)
        self.samples.extend(samples)
        write_atomic(self.path / "samples.csv", _csv(SAMPLE_COLUMNS, (s.to_row() for s in self.samples)))
        write_atomic(self.path / "runs.csv", _csv(RUN_COLUMNS, (r.to_row() for r in self.runs)))

    def done(self) -> set[PlannedCell]:
        """The cells recorded, valid or not."""
        return {run.cell for run in self.runs}

    def raw(self, name: str, text: str) -> Path:
        path = self.path / "raw" / name
        write_atomic(path, text)
        return path


def read_metadata(path: Path) -> RunMetadata:
    """metadata.json of a run directory, its format checked."""
    file = path / "metadata.json"
    if not file.is_file():
        raise NotAResultDirectory(path=path, missing="metadata.json")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise NotAResultDirectory(path=path, missing=f"a readable metadata.json ({error})") from None
    written = data.get("format", 1) if isinstance(data, dict) else None
    if not isinstance(written, int):
        raise NotAResultDirectory(path=path, missing="a metadata.json with a format number")
    if written > FORMAT:
        raise NewerFormat(path=path, format=written, known=FORMAT)
    try:
        return RunMetadata.from_dict(data)
    except (TypeError, ValueError, AttributeError, StopIteration) as error:
        raise NotAResultDirectory(path=path, missing=f"a readable metadata.json ({error})") from None


def _write_metadata(path: Path, metadata: RunMetadata) -> None:
    write_atomic(path / "metadata.json", json.dumps(metadata.to_dict(), indent=2) + "\n")


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
    integer, findings a tuple of Finding, every format's files alike) and its RunMetadata."""
    import pandas as pd
    for name in ("samples.csv", "runs.csv"):
        if not (path / name).is_file():
            raise NotAResultDirectory(path=path, missing=name)
    directory = RunDirectory.load(path)
    samples = pd.DataFrame([asdict(s) for s in directory.samples], columns=SAMPLE_COLUMNS)
    runs = pd.DataFrame([{name: getattr(r, name) for name in RUN_COLUMNS} for r in directory.runs], columns=RUN_COLUMNS)
    samples = samples.astype({"rep": int, "value": float})
    runs = runs.astype({"rep": int, "valid": bool})
    return samples, runs, directory.metadata


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
    comparability.check_folders(paths, [metadata for _, _, metadata in frames])
    offset = 0
    pooled_samples, pooled_runs = [], []
    for path, (samples, runs, _) in zip(paths, frames):
        pooled_samples.append(samples.assign(run_dir=str(path), rep=samples["rep"] + offset))
        pooled_runs.append(runs.assign(run_dir=str(path), rep=runs["rep"] + offset))
        offset += int(runs["rep"].max()) if len(runs) else 0
    runs = pd.concat(pooled_runs, ignore_index=True)
    comparability.check_patches(runs)
    return pd.concat(pooled_samples, ignore_index=True), runs, [metadata for _, _, metadata in frames]
