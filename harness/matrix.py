"""Runs: every variant x repetition x mode, interleaved, one fresh boot and swap disk per
cell; each cell runs the workload phase by phase with the collectors around every phase,
derives the rates, applies the workload's gates and adds its samples to the run directory.

A cell's mode is `counted` (kprobes, perf and the function profiler on) or `timed` (vmstat
snapshots only: the probes slow down most the variant that hits them most, so timings come
from these boots). Cells run in blocks, one per repetition and workload, holding every
(variant, mode) once in a shuffled order. With `max_reps` (`--reps auto`) blocks are added one
repetition at a time until the `stop` callback says every primary hypothesis is decided.
"""

import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness import boot, build, collectors, files, image, metrics, results, source, vm, workloads
from harness.errors import CellFailed, DiskFull, HarnessError, NotAResultDirectory
from harness.experiment import Experiment

log = logging.getLogger("harness.matrix")

MODES = ("counted", "timed")


@dataclass(frozen=True)
class RunRequest:
    experiment: Experiment
    workloads: tuple          # of (Workload, parameters)
    variants: tuple
    reps: int                 # repetitions; with max_reps, the first look
    out_dir: Path
    accel: str = "auto"
    modes: tuple[str, ...] = ("counted",)
    command_line: str = ""
    seed: int | None = None      # order of the cells within each block; None = random, recorded
    resume: bool = False         # out_dir holds an interrupted run: finish it
    max_reps: int | None = None  # --reps auto: add blocks up to this many repetitions
    control: str | None = None   # the variant that boots the baseline's kernel again
    primary: tuple[str, ...] = ()
    margin_pct: float = 5.0


def plan(request: RunRequest, seed: int, reps: int | None = None) -> list[tuple[str, str, int, str]]:
    """(workload, variant, rep, mode) in run order: one block per repetition and workload, holding
    every variant in every mode once, shuffled with seed, so that host drift falls on all alike."""
    rng = random.Random(seed)
    cells = []
    for rep in range(1, (reps or request.reps) + 1):
        for workload, _ in request.workloads:
            order = [(variant.name, mode) for variant in request.variants for mode in request.modes]
            rng.shuffle(order)
            cells += [(workload.name, name, rep, mode) for name, mode in order]
    return cells


def run(request: RunRequest, cache_dir: Path, stop=None) -> results.RunDirectory:
    """Build, boot and measure every cell (the ones not done yet, when resuming).

    stop(directory) -> bool is asked after each block when request.max_reps is set: True ends the run.
    """
    directory, seed, cells = _open(request)
    builds, guest_image, stages = _prepare(request, directory, cache_dir)
    by_name = {workload.name: (workload, params) for workload, params in request.workloads}
    limit = len(plan(request, seed, request.max_reps)) if request.max_reps else None
    while True:
        done = directory.done()
        todo = [cell for cell in cells if cell not in done]
        progress = _Progress(len(cells), len(cells) - len(todo), len(todo), limit)
        for workload_name, variant_name, rep, mode in todo:
            progress.start(workload_name, variant_name, rep, mode)
            cell = Cell(*by_name[workload_name], rep, mode)
            record, samples = run_cell(request, cell, builds[variant_name], guest_image, directory, cache_dir)
            directory.add(record, samples)
            progress.finish()
        reached = max(cell[2] for cell in cells)
        if not request.max_reps or reached >= request.max_reps or stop is None or stop(directory):
            break
        log.info("after %d repetitions some primary hypotheses are undecided: one more block", reached)
        cells = plan(request, seed, reached + 1)
        directory.update_metadata(plan=cells)
    boots = sum(record.boot_ready_s or 0 for record in directory.runs)
    cells_s = sum(record.duration_s or 0 for record in directory.runs)
    stages.update(boots=round(boots, 1), workloads=round(cells_s - boots, 1))
    directory.update_metadata(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), stage_seconds=stages,
                              reps_done=max(cell[2] for cell in cells))
    return directory


def _open(request: RunRequest):
    """(run directory, seed, planned cells): a new one with its metadata, or the interrupted one."""
    if request.resume:
        directory = results.RunDirectory.load(request.out_dir)
        metadata = directory.metadata()
        if metadata.get("format") != results.FORMAT or "plan" not in metadata:
            raise NotAResultDirectory(path=request.out_dir, missing=f"a format {results.FORMAT} metadata.json "
                                      f"(it is format {metadata.get('format')}, from an older harness)")
        return directory, metadata["seed"], [tuple(cell) for cell in metadata["plan"]]
    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
    cells = plan(request, seed)
    directory = results.RunDirectory.create(request.out_dir, {**_metadata(request), "seed": seed, "plan": cells})
    return directory, seed, cells


def _prepare(request: RunRequest, directory: results.RunDirectory, cache_dir: Path):
    """Source, builds and guest image, timed; recorded in the metadata."""
    stages = {}
    started = time.monotonic()
    source.fetch(source.parse_spec(request.experiment.source), cache_dir)
    stages["fetch"], started = round(time.monotonic() - started, 1), time.monotonic()
    builds = {b.variant: b for b in build.build_all(request.experiment, list(request.variants), cache_dir)}
    stages["build"], started = round(time.monotonic() - started, 1), time.monotonic()
    guest_image = image.build(cache_dir)
    stages["image"] = round(time.monotonic() - started, 1)
    directory.update_metadata(builds={name: _build_facts(b) for name, b in builds.items()},
                              image=guest_image.digest, qemu=vm.qemu_version(), stage_seconds=stages)
    return builds, guest_image, stages


class _Progress:
    """'cell 3/20 (redis, patched, rep 2, timed): 1m10s elapsed, about 4m left'."""

    def __init__(self, total: int, done: int, todo: int, limit: int | None = None):
        self.total, self.number, self.todo, self.limit = total, done, todo, limit
        self.started = time.monotonic()
        self.finished = 0

    def start(self, workload, variant, rep, mode) -> None:
        self.number += 1
        elapsed = time.monotonic() - self.started
        left = ""
        if self.finished:
            left = f", about {_minutes(elapsed / self.finished * (self.todo - self.finished))} left"
        most = f" (at most {self.limit})" if self.limit and self.limit > self.total else ""
        log.info("cell %d/%d%s (%s, %s, rep %d, %s): %s elapsed%s", self.number, self.total, most, workload, variant,
                 rep, mode, _minutes(elapsed), left)

    def finish(self) -> None:
        self.finished += 1


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


@dataclass(frozen=True)
class Cell:
    workload: workloads.Workload
    parameters: dict
    rep: int
    mode: str = "counted"


def run_cell(request: RunRequest, cell: Cell, built: build.Build, guest_image, directory, cache_dir: Path):
    """One boot: (Run, [Sample]). A cell that fails, for any reason but a full disk, is recorded as
    invalid with the cause (what QEMU and the guest's console say first), and the matrix goes on."""
    started = time.monotonic()
    guest_config = request.experiment.guest
    record = results.Run(built.variant, cell.workload.name, cell.rep, cell.mode, source=request.experiment.source,
                         kernel_release=built.release.removeprefix("linux-"), config_hash=built.config_hash,
                         patch_hash=built.patch_hash, guest_memory_mb=guest_config.memory_mb,
                         swap_mb=guest_config.swap_mb, cpus=guest_config.cpus)
    phases: dict[str, dict] = {}
    try:
        with boot.booted(built, guest_image, guest_config, request.accel, directory.path / "raw",
                         cache_dir / "boots") as guest:
            record = replace(record, accelerator=guest.accelerator, qemu_version=guest.qemu_version,
                             boot_ready_s=round(guest.ready_s, 2))
            try:
                phases, warnings, problems, gates = _measure(request, cell, guest.session, directory, built.variant)
                release = guest.session.run(["uname", "-r"]).stdout.strip()
            except (HarnessError, OSError) as error:
                if isinstance(error, DiskFull) or getattr(error, "errno", None) in files.FULL:
                    raise
                raise CellFailed(why=guest.explain(error)) from None
        metrics.derive(phases, cell.workload.read_phase)
        problems = gate(gates, phases) + problems
        record = replace(record, valid=not problems, reason="; ".join(problems), warnings="; ".join(warnings),
                         kernel_release=release)
    except DiskFull:
        raise
    except HarnessError as error:
        log.warning("cell %s rep %d failed: %s", built.variant, cell.rep, error)
        record, phases = replace(record, reason=f"failed: {error}"), {}
    except Exception as error:      # a fault of the harness itself: recorded, and the cells after it still run
        log.exception("cell %s rep %d failed inside the harness", built.variant, cell.rep)
        record, phases = replace(record, reason=f"failed: harness fault {type(error).__name__}: {error}"), {}
    record = replace(record, duration_s=round(time.monotonic() - started, 1))
    samples = [results.Sample(built.variant, cell.workload.name, cell.rep, cell.mode, phase, metric, float(value))
               for phase, figures in phases.items() for metric, value in sorted(figures.items())]
    return record, samples


def _measure(request: RunRequest, cell: Cell, session, directory, variant: str):
    """Run every phase of the workload with the collectors around it.

    Returns (phases, warnings, problems, gates): the figures of each phase, warnings to keep,
    reasons the run is invalid that the phases showed, and the workload's gates.
    """
    probes = request.experiment.probes if cell.mode == "counted" else ()
    if probes:
        collectors.setup(session, probes)
    driver = workloads.driver(cell.workload, cell.parameters, session)
    phases: dict[str, dict] = {}
    warnings: list[str] = []
    problems: list[str] = []
    started_driver = False
    try:
        for index, phase in enumerate(driver.phase_plan()):
            if phase != "idle" and not started_driver:
                driver.start()
                started_driver = True
            with collectors.Phase(session, probes, request.experiment.cow_probe,
                                  driver.pid if phase != "idle" else None, driver.cgroup) as counters:
                outcome = driver.idle() if phase == "idle" else driver.run_phase(phase)
            directory.raw(f"{cell.workload.name}-{variant}-rep{cell.rep}-{cell.mode}-{index:02d}-{phase}.txt",
                          counters.raw + "\n" + outcome.raw() + "\n")
            _accumulate(phases.setdefault(phase, {}), counters.metrics, outcome)
            warnings += [f"{phase}: {w}" for w in counters.warnings]
            problems += [f"{phase}: {p}" for p in counters.problems if f"{phase}: {p}" not in problems]
            log.info("  %s rep %d %s %-8s %6.2f s  cow_copies %s", variant, cell.rep, cell.mode, phase,
                     outcome.duration_s, int(counters.metrics["cow_copies"]) if "cow_copies" in counters.metrics
                     else "-")
        problems += driver.problems() if started_driver else []
    finally:
        if started_driver:
            _stop(driver)
    return phases, warnings, problems, driver.gates()


def _stop(driver: workloads.Driver) -> None:
    """Stop the workload; a guest that is gone already cannot be told, and that is no new error."""
    try:
        driver.stop()
    except Exception as error:    # the phase's own error (or none) is what the cell reports
        log.debug("stopping %s: %s", driver.workload.name, error)


def _accumulate(totals: dict, figures: dict, outcome: workloads.PhaseOutcome) -> None:
    """Add a phase's figures to the phase's totals (a phase repeated over cycles adds up; levels do not)."""
    for name, value in {**figures, **outcome.figures()}.items():
        level = metrics.meaning(name).kind == "level"
        totals[name] = value if level or name not in totals else totals[name] + value


def gate(gates: list[workloads.Gate], phases: dict[str, dict]) -> list[str]:
    """Reasons a run is invalid: a workload gate that does not hold, or the OOM killer."""
    problems = [problem for problem in (g.problem(phases) for g in gates) if problem]
    killed = sum(figures.get("vmstat.oom_kill", 0) + figures.get("memcg.oom_kill", 0) for figures in phases.values())
    if killed:
        problems.append(f"the OOM killer ran {killed:.0f} times")
    return problems


def _build_facts(built: build.Build) -> dict:
    return {"key": built.key, "release": built.release, "patches": list(built.patches),
            "patch_hash": built.patch_hash, "config_hash": built.config_hash, "compiler": built.compiler}


def _metadata(request: RunRequest) -> dict:
    variants = [{"name": v.name, "patches": [p.name for p in v.patches]} for v in request.variants]
    design = {"reps": "auto", "min_reps": request.reps, "max_reps": request.max_reps} if request.max_reps \
        else {"reps": request.reps}
    return {"command": request.command_line, "experiment": request.experiment.name,
            "description": request.experiment.description,
            "experiment_file": str(request.experiment.path), "source": request.experiment.source,
            "workloads": {workload.name: params for workload, params in request.workloads},
            "variants": variants, "baseline": request.variants[0].name, "control": request.control,
            "primary": list(request.primary), "margin_pct": request.margin_pct, **design,
            "modes": list(request.modes), "accelerator_requested": request.accel,
            "probes": list(request.experiment.probes) if "counted" in request.modes else [],
            "guest": vars(request.experiment.guest),
            "host": results.host_facts(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
