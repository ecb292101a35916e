"""Runs: every variant x repetition, interleaved (A B A B ...), one fresh boot and swap disk
per cell; each cell runs the workload phase by phase with the collectors around every phase,
applies the validity gates and adds its samples to the run directory."""

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from harness import boot, build, collectors, image, results, source, vm, workloads
from harness.errors import HarnessError
from harness.experiment import Experiment

log = logging.getLogger("harness.matrix")

SWAPOUT_FRACTION = 0.9


@dataclass(frozen=True)
class RunRequest:
    experiment: Experiment
    workloads: tuple          # of (Workload, parameters)
    variants: tuple
    reps: int
    out_dir: Path
    accel: str = "auto"
    probes_on: bool = True
    command_line: str = ""
    seed: int | None = None      # order of the variants within each block; None = random, recorded
    resume: bool = False         # out_dir holds an interrupted run: finish it


def plan(request: RunRequest, seed: int) -> list[tuple[str, str, int]]:
    """(workload, variant, rep) in run order: one block per repetition and workload, holding
    every variant once, shuffled with seed, so that host drift falls on all variants alike."""
    rng = random.Random(seed)
    cells = []
    for rep in range(1, request.reps + 1):
        for workload, _ in request.workloads:
            order = [variant.name for variant in request.variants]
            rng.shuffle(order)
            cells += [(workload.name, name, rep) for name in order]
    return cells


def run(request: RunRequest, cache_dir: Path) -> results.RunDirectory:
    """Build, boot and measure every cell (the ones not done yet, when resuming)."""
    if request.resume:
        directory = results.RunDirectory.load(request.out_dir)
        cells = [tuple(cell) for cell in directory.metadata()["plan"]]
    else:
        directory = results.RunDirectory(request.out_dir)
        seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
        cells = plan(request, seed)
        directory.write_metadata({**_metadata(request), "seed": seed, "plan": cells})
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
    done = {(row["workload"], row["variant"], int(row["rep"])) for row in directory.runs}
    todo = [cell for cell in cells if cell not in done]
    by_name = {workload.name: (workload, params) for workload, params in request.workloads}
    progress = _Progress(len(cells), len(done), len(todo))
    for workload_name, variant_name, rep in todo:
        progress.start(workload_name, variant_name, rep)
        cell = Cell(*by_name[workload_name], rep)
        run_row, samples = run_cell(request, cell, builds[variant_name], guest_image, directory, cache_dir)
        directory.add(run_row, samples)
        progress.finish()
    boots = sum(float(row.get("boot_ready_s") or 0) for row in directory.runs)
    cells_s = sum(float(row.get("duration_s") or 0) for row in directory.runs)
    stages.update(boots=round(boots, 1), workloads=round(cells_s - boots, 1))
    directory.update_metadata(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), stage_seconds=stages)
    return directory


class _Progress:
    """'cell 3/20 (redis, patched, rep 2): 1m10s elapsed, about 4m left'."""

    def __init__(self, total: int, done: int, todo: int):
        self.total, self.number, self.todo = total, done, todo
        self.started = time.monotonic()
        self.finished = 0

    def start(self, workload, variant, rep) -> None:
        self.number += 1
        elapsed = time.monotonic() - self.started
        left = f", about {_minutes(elapsed / self.finished * (self.todo - self.finished))} left" if self.finished else ""
        log.info("cell %d/%d (%s, %s, rep %d): %s elapsed%s", self.number, self.total, workload, variant, rep,
                 _minutes(elapsed), left)

    def finish(self) -> None:
        self.finished += 1


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


@dataclass(frozen=True)
class Cell:
    workload: workloads.Workload
    parameters: dict
    rep: int


def run_cell(request: RunRequest, cell: Cell, built: build.Build, guest_image, directory, cache_dir: Path):
    """One boot: (runs.csv row, samples rows). A cell that fails is recorded as invalid."""
    started = time.monotonic()
    rep = cell.rep
    row = {"variant": built.variant, "workload": cell.workload.name, "rep": rep, "valid": False, "reason": "",
           "source": request.experiment.source,
           "kernel_release": built.release, "config_hash": built.config_hash, "patch_hash": built.patch_hash,
           "guest_memory_mb": request.experiment.guest.memory_mb, "swap_mb": request.experiment.guest.swap_mb,
           "cpus": request.experiment.guest.cpus, "warnings": ""}
    phases: dict[str, dict] = {}
    try:
        with boot.booted(built, guest_image, request.experiment.guest, request.accel, directory.path / "raw",
                         cache_dir / "boots") as guest:
            row.update(accelerator=guest.accelerator, qemu_version=guest.qemu_version,
                       boot_ready_s=round(guest.ready_s, 2))
            phases, warnings, problems = _measure(request, cell, guest.session, directory, built.variant)
            row["kernel_release"] = guest.session.run(["uname", "-r"]).stdout.strip()
        problems = gate(cell.workload, phases) + problems
        row.update(valid=not problems, reason="; ".join(problems), warnings="; ".join(warnings))
    except HarnessError as error:
        log.warning("cell %s rep %d failed: %s", built.variant, rep, error)
        row["reason"] = f"failed: {error}"
    row["duration_s"] = round(time.monotonic() - started, 1)
    samples = [{"variant": built.variant, "workload": cell.workload.name, "rep": rep, "phase": phase,
                "metric": metric, "value": value} for phase, metrics in phases.items()
               for metric, value in sorted(metrics.items())]
    return row, samples


def _measure(request: RunRequest, cell: Cell, session, directory, variant: str):
    """Run every phase of the workload with the collectors around it."""
    probes = request.experiment.probes if request.probes_on else ()
    if probes:
        collectors.setup(session, probes)
    driver = workloads.driver(cell.workload, cell.parameters, session)
    rep = cell.rep
    phases: dict[str, dict] = {}
    warnings: list[str] = []
    started_driver = False
    try:
        for index, phase in enumerate(driver.phase_plan()):
            if phase != "idle" and not started_driver:
                driver.start()
                started_driver = True
            with collectors.Phase(session, probes, request.experiment.cow_probe,
                                  driver.pid if phase != "idle" else None, driver.cgroup) as counters:
                outcome = driver.idle() if phase == "idle" else driver.run_phase(phase)
            directory.raw(f"{cell.workload.name}-{variant}-rep{rep}-{index:02d}-{phase}.txt", counters.raw)
            _accumulate(phases.setdefault(phase, {}), counters.metrics, outcome)
            warnings += [f"{phase}: {w}" for w in counters.warnings]
            log.info("  %s rep %d %-8s %6.2f s  cow_copies %s", variant, rep, phase, outcome.duration_s,
                     int(counters.metrics["cow_copies"]) if "cow_copies" in counters.metrics else "-")
        problems = driver.problems() if started_driver else []
    finally:
        if started_driver:
            driver.stop()
    return phases, warnings, problems


def _accumulate(totals: dict, metrics: dict, outcome: workloads.PhaseOutcome) -> None:
    """Add a phase's figures to the phase's totals (a phase repeated over cycles adds up)."""
    figures = {**metrics, "pages": outcome.pages, "duration_s": outcome.duration_s, **dict(outcome.client)}
    for name, value in figures.items():
        levels = name.endswith("_kb") or name.startswith(("ops_per_s", "latency_"))   # not summed
        totals[name] = value if levels or name not in totals else totals[name] + value


def gate(workload: workloads.Workload, phases: dict[str, dict]) -> list[str]:
    """Reasons a run is invalid: too little swapped out, nothing swapped in, the OOM killer.

    Pages moved are read from the workload process's VmSwap where there is a process (a
    swap-in from the swap cache does no I/O, so pswpin alone would miss it), else vmstat.
    """
    problems = []
    swapout = phases.get(workload.swapout_phase, {})
    moved = swapout.get("process.swapped_out_pages", swapout.get("vmstat.pswpout"))
    if workload.swapout_phase in phases and moved is None:
        problems.append(f"{workload.swapout_phase} has no swap-out count (no vmstat.pswpout: "
                        "a kernel without CONFIG_VM_EVENT_COUNTERS?)")
    elif swapout.get("pages") and moved < SWAPOUT_FRACTION * swapout["pages"]:
        problems.append(f"{workload.swapout_phase} moved {moved:.0f} of {swapout['pages']:.0f} pages to swap (< 90%)")
    read = phases.get(workload.read_phase)
    if read is not None and not read.get("process.swapped_in_pages") and not read.get("vmstat.pswpin"):
        problems.append(f"{workload.read_phase} swapped in nothing")
    killed = sum(metrics.get("vmstat.oom_kill", 0) + metrics.get("memcg.oom_kill", 0) for metrics in phases.values())
    if killed:
        problems.append(f"the OOM killer ran {killed:.0f} times")
    return problems


def _build_facts(built: build.Build) -> dict:
    return {"key": built.key, "release": built.release, "patches": list(built.patches),
            "patch_hash": built.patch_hash, "config_hash": built.config_hash, "compiler": built.compiler}


def _metadata(request: RunRequest) -> dict:
    return {"command": request.command_line, "experiment": request.experiment.name,
            "description": request.experiment.description,
            "experiment_file": str(request.experiment.path), "source": request.experiment.source,
            "workloads": {workload.name: params for workload, params in request.workloads},
            "variants": [{"name": v.name, "patches": [p.name for p in v.patches]} for v in request.variants],
            "reps": request.reps, "accelerator_requested": request.accel, "probes": list(request.experiment.probes)
            if request.probes_on else [], "guest": vars(request.experiment.guest),
            "host": results.host_facts(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
