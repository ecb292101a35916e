"""The conductor of a run: prepare (fetch, build, make the image, diff the object code), plan the
cells, dispatch them, write the run's metadata, and analyse. The stages below it each do one of
these; harness/measure/ is about one cell and its counters.

Runs: every variant x repetition x mode x sweep point, interleaved, one fresh boot and swap
disk per cell (harness/measure/cell.py runs one); each cell's Run and Samples go to the run directory.
Cells run one at a time here, or several at once on Dask workers (harness/measure/dispatch.py):
then each guest gets at most the cores its host has per cell running at once, recorded.

A cell's mode is `counted` (kprobes, perf and the function profiler on) or `timed` (vmstat
snapshots only: the probes slow down most the variant that hits them most, so timings come
from these boots). `bench` and `try` take timed boots only where the guests run under KVM
(timing "kvm"): under TCG a guest second is the emulator's, so those cells are left out of the
plan once the builds say which accelerator the guests get, and the metadata says why.
Cells run in blocks, one per repetition and workload, holding every
(variant, mode, point) once in a shuffled order. With `max_reps` (`--reps auto`) blocks are added one
repetition at a time until the `stop` callback says every primary hypothesis is decided.
"""

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness import experiment as experiments
from harness import files, results, workloads
from harness import sweep as sweeps
from harness.analysis import analyse as analysis
from harness.analysis import looks, stats
from harness.errors import (
    BadExperiment,
    BadPlacement,
    BadWorkload,
    HarnessError,
    NotAResultDirectory,
    OutputNotEmpty,
    ResumeTakesNoChoices,
)
from harness.experiment import Experiment
from harness.guest import image, vm
from harness.kernel import build, objdiff, patchmail, selftests, source
from harness.measure import dispatch, drivers, worker
from harness.measure.cell import Cell, Job, Kernel, layout_of
from harness.progress import Progress, Stopwatch

log = logging.getLogger("harness.matrix")
QEMU_OVERHEAD_MB = 256       # a guest's QEMU beside its memory (TCG's translation cache, device buffers)

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
    force: bool = False          # judge a variant whose object code is the baseline's as a variant, not a control
    sweep: sweeps.Sweep = sweeps.Sweep()   # the points of every workload's cells
    placement: dispatch.Placement = dispatch.Placement()    # where the cells run
    timing: str = "always"       # "always" as modes say, or "kvm": timed boots only where guests get KVM

    def points(self, workload: str) -> dict[str, sweeps.Point]:
        """label -> point, of the workload's cells."""
        return {point.label: point for point in self.sweep.points(workload)}

    def guests(self) -> list:
        """The guest of every point of every workload."""
        return [point.guest(self.experiment.guest) for workload, _ in self.workloads
                for point in self.points(workload.name).values()]

    @property
    def counted_only(self) -> bool:
        """Every cell counted, none timed: guests may share cores (cells_at_once)."""
        return set(self.modes) == {"counted"}


CONTROL = "control"      # the name of the variant --control adds
DEFAULT_REPS = 6         # bench's fixed repetitions: the smallest n at which an exact test can decide several rows
AUTO_FIRST_LOOK = 6      # --reps auto: the first look


@dataclass(frozen=True)
class Asked:
    """What `run`, `bench` or `try` was asked, in the user's words, before the experiment is read (request())."""
    experiment_name: str | None = None
    workload_names: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    reps: int = 1
    output: Path | None = None
    resume: Path | None = None
    settings: tuple[str, ...] = ()        # -p NAME=VALUE
    accel: str = "auto"
    seed: int | None = None
    modes: tuple[str, ...] = ("counted",)
    max_reps: int | None = None
    control: bool = False
    force: bool = False
    placement: dispatch.Placement = dispatch.Placement()
    timing: str = "always"                # RunRequest.timing
    command_line: str = ""
    fixed: tuple[str, ...] = ()           # options that fix the plan, given on the command line (--reps...)


def request(asked: Asked) -> RunRequest:
    """The run asked for: a new one into a fresh folder, or the interrupted one in asked.resume, which finishes
    as it was planned (ResumeTakesNoChoices for an option that would change the plan)."""
    spec = experiments.load(asked.experiment_name)
    if asked.resume:
        given = [option for option, value in (("--workload", asked.workload_names), ("--variant", asked.variants),
                                              ("-p", asked.settings), ("-o", asked.output),
                                              ("--control", asked.control), ("--seed", asked.seed is not None),
                                              ("--force", asked.force), *((name, True) for name in asked.fixed))
                 if value]
        if given:
            raise ResumeTakesNoChoices(path=asked.resume, options=", ".join(given))
        return resumed_request(spec, asked.resume, asked.accel, asked.placement)
    out_dir = asked.output or results.default_directory(spec.name)
    if not results.RunDirectory.is_fresh(out_dir):
        raise OutputNotEmpty(path=out_dir)
    made = new_request(spec, workload_names=asked.workload_names, settings=asked.settings,
                       variant_names=asked.variants, reps=asked.reps, out_dir=out_dir, accel=asked.accel,
                       modes=asked.modes, command_line=asked.command_line, seed=asked.seed, max_reps=asked.max_reps,
                       control=asked.control, force=asked.force, placement=asked.placement, timing=asked.timing)
    warn_unreachable(made, DEFAULT_REPS)
    return made


def new_request(spec: Experiment, *, workload_names=(), settings=(), variant_names=(), reps: int, out_dir: Path,
                accel: str = "auto", modes=("counted",), command_line: str = "", seed: int | None = None,
                max_reps: int | None = None, control: bool = False, force: bool = False,
                placement: dispatch.Placement = dispatch.Placement(), timing: str = "always") -> RunRequest:
    """The request for a new run: the workloads (the experiment's, or all) with their parameters, the
    variants asked for (the baseline first, and the baseline again as `control` when asked)."""
    names = workload_names or spec.workloads or tuple(workloads.discover())
    chosen = workloads.choose(names, settings, {name: spec.parameters_of(name) for name in names})
    _check_sweep(spec, chosen, settings)
    variants = spec.select(variant_names)
    control_name = None
    if control:
        if any(v.name == CONTROL for v in spec.variants):
            raise BadExperiment(path=spec.path, why=f"a variant is called '{CONTROL}', the name --control uses")
        baseline = spec.variants[0]
        variants = [baseline] + [v for v in variants if v.name != baseline.name] + [replace(baseline, name=CONTROL)]
        control_name = CONTROL
    return RunRequest(spec, chosen, tuple(variants), reps, out_dir, accel, tuple(modes), command_line, seed, False,
                      max_reps, control_name, measured_primary(spec, chosen), spec.margin_pct, force, spec.sweep,
                      placement, timing)


def _check_sweep(spec: Experiment, chosen, settings) -> None:
    """A -p setting may not fix what the sweep varies; an axis of a workload that does not run is said."""
    names = {workload.name for workload, _ in chosen}
    given = {setting.split("=", 1)[0].rpartition(".") for setting in settings}       # (owner or "", ".", key)
    for axis in spec.sweep.axes:
        if axis.owner in (sweeps.GUEST, sweeps.HOST):
            continue
        if axis.owner not in names:
            log.warning("sweep axis %s is not used: %s does not run", axis.name, axis.owner)
        elif any(key == axis.key and owner in ("", axis.owner) for owner, _, key in given):
            raise BadWorkload(name=axis.owner, why=f"-p {axis.key} is the sweep axis {axis.name}: drop it, or run "
                                                   "an experiment without that axis")


def resumed_request(spec: Experiment, path: Path, accel: str,
                    placement: dispatch.Placement = dispatch.Placement()) -> RunRequest:
    """The request an interrupted run in path was made with, from its metadata."""
    recorded = results.read_metadata(path)
    chosen = tuple((workloads.load(name), workloads.load(name).params(values))
                   for name, values in recorded.workloads.items())
    by_name = {v.name: v for v in spec.variants}
    control = recorded.control
    variants = tuple(replace(by_name[recorded.baseline], name=control) if name == control
                     else spec.select([name])[0] for name in recorded.variant_names)
    auto = recorded.reps == "auto"
    return RunRequest(spec, chosen, variants, int(recorded.min_reps if auto else recorded.reps), path, accel,
                      recorded.modes or ("counted",), recorded.command, recorded.seed, True,
                      int(recorded.max_reps) if auto else None, control, recorded.primary, recorded.margin_pct,
                      recorded.force, sweeps.Sweep.from_dict(recorded.sweep), placement, recorded.timing or "always")


def measured_primary(spec: Experiment, chosen) -> tuple[str, ...]:
    """The experiment's primary rows that this run measures (its workloads, in their phases)."""
    phases = {workload.name: drivers.driver(workload, params, None).phase_plan() for workload, params in chosen}
    kept = []
    for row in spec.primary:
        workload, phase, _ = row.split("/")
        if workload in phases and phase in phases[workload]:
            kept.append(row)
        elif workload in phases:
            log.warning("primary row %s is not measured: %s runs %s with these parameters", row, workload,
                        ", ".join(phases[workload]))
    return tuple(kept)


def primary_rows(request: RunRequest) -> int:
    """How many primary rows the run's comparison will judge: each primary row at every point of its
    workload, for every variant but the baseline (the family family.decide tests them in)."""
    points = sum(len(request.points(row.split("/")[0])) for row in request.primary)
    return points * (len(request.variants) - 1)


def warn_unreachable(request: RunRequest, enough: int) -> None:
    """Say before any boot when the repetitions cannot decide a primary row at all, or are too few (below
    `enough`) for a discovery to find anything."""
    last = request.max_reps or request.reps
    smallest = stats.smallest_p(last, last)
    if request.experiment.discovery and last < enough:
        log.warning("with %s repetitions a discovery can hardly find anything: its smallest exact p-value is %.2g, "
                    "and the false-discovery bar divides 5%% among hundreds of rows; use --reps %d or more", last,
                    smallest, enough)
    rows = primary_rows(request)
    if rows and looks.smallest_deciding_reps(rows, request.reps, request.max_reps) is None:
        log.warning("with %s repetitions and %d primary rows no primary row can be decided (the smallest exact "
                    "p-value is %.2g): use more --reps or --reps auto", last, rows, smallest)


def plan(request: RunRequest, seed: int, reps: int | None = None) -> list[results.PlannedCell]:
    """The cells in run order: one block per repetition and workload, holding
    every variant in every mode at every sweep point once, shuffled with seed, so that host drift falls
    on all alike. A workload with `most_reps` gets no block past that repetition."""
    rng = random.Random(seed)
    cells = []
    for rep in range(1, (reps or request.reps) + 1):
        for workload, _ in request.workloads:
            if workload.most_reps is not None and rep > workload.most_reps:
                continue
            order = [(variant.name, mode, point) for variant in request.variants for mode in request.modes
                     for point in request.points(workload.name)]
            rng.shuffle(order)
            cells += [results.PlannedCell(workload.name, name, rep, mode, point) for name, mode, point in order]
    return cells


def run(request: RunRequest, cache_dir: Path, stop=None) -> results.RunDirectory:
    """Build, boot and measure every cell (the ones not done yet, when resuming).

    stop(directory) -> bool is asked after each block when request.max_reps is set: True ends the run.
    """
    dispatch.check(request.placement)
    directory, seed, cells = _open(request)
    with contextlib.ExitStack() as stack:
        # workers elsewhere are met first, so that a cluster that cannot start fails before the builds; the cells
        # at once here are known once the cells are: after the KVM probe
        pool = stack.enter_context(dispatch.pool(request.placement, cache_dir, directory.path / "raw")) \
            if request.placement.remote else None
        builds, guest_image, stages, calls = _prepare(request, directory, cache_dir)
        tests, seconds = selftests_of(request, builds)
        stages = stages if seconds is None else {**stages, "selftests": seconds}
        request, cells = _untimed(request, directory, pool, builds, cells)
        if pool is None:
            request = replace(request, placement=cells_at_once(request, cells))
            pool = stack.enter_context(dispatch.pool(request.placement, cache_dir, directory.path / "raw"))
        cells_started = time.monotonic()
        cpus = _placed(request, pool, directory)
        kernels = {name: _kernel(request, built, tests.get(name)) for name, built in builds.items()}
        image_digest = worker.digest_of(guest_image.path) if request.placement.remote else ""

        def job(cell):
            return replace(job_at(request, kernels, guest_image, image_digest, cpus, cell), calls=calls)

        cells = _blocks(request, directory, pool, seed, cells, job, stop)
        if getattr(pool, "sent", None):
            directory.update_metadata(placement=replace(directory.metadata.placement, artifacts=pool.sent))
    _finish(directory, stages, cells_started, cells)
    return directory


def _untimed(request: RunRequest, directory: results.RunDirectory, pool, builds: dict,
             cells: list[results.PlannedCell]):
    """(request, planned cells), without the timed ones when the request takes timings only under KVM and
    the guests get TCG here; why, in the metadata and the log."""
    if request.timing != "kvm" or not {"counted", "timed"} <= set(request.modes):
        return request, cells
    works, why = _kvm_works(request, pool, builds)
    if works:
        return request, cells
    modes = tuple(mode for mode in request.modes if mode != "timed")
    cells = [cell for cell in cells if cell.mode != "timed"]
    untimed = (f"the guests run under TCG ({why}), where a guest second is the emulator's, not the hardware's: "
               "the counts say what the patch does")
    log.warning("no timed boots: %s; --timing takes them anyway", untimed)
    directory.update_metadata(modes=modes, plan=tuple(cells), untimed=untimed)
    return replace(request, modes=modes), cells


def cores() -> int:
    """This machine's cores, as --jobs auto counts them."""
    return os.cpu_count() or 1


def cells_at_once(request: RunRequest, cells: list[results.PlannedCell]) -> dispatch.Placement:
    """The placement on this machine with --jobs auto decided: when every cell is counted (none timed), as many
    cells at once as there are cores and memory for their guests, each guest with the vCPUs it asks: what a
    guest counts does not depend on sharing cores (`make bench-jobs`: make bench's 57 cells two at a time
    counted what one at a time counts, docs/measurements.md); when a cell is timed, one at a time, since
    guests beside it would move its timings."""
    placement = request.placement
    if placement.jobs is not None:
        return placement
    if request.counted_only:
        jobs = max(1, min(cores(), results.host_facts().memory_mb // _memory_per_cell_mb(request), len(cells)))
        why = "every boot is counted, none timed"
    else:
        jobs, why = 1, "timed boots run alone"
    log.info("--jobs auto: %s (%s)", dispatch.Placement(jobs).describe(), why)
    return replace(placement, jobs=jobs)


def _memory_per_cell_mb(request: RunRequest) -> int:
    """What a cell takes of its host's memory: the largest guest of the run and its QEMU."""
    return max(guest.memory_mb for guest in request.guests()) + QEMU_OVERHEAD_MB


def _kvm_works(request: RunRequest, pool, builds: dict) -> tuple[bool, str]:
    """(whether the guests of this run get KVM, why not): as --accel says; under auto, a boot of the
    baseline's kernel under KVM here, or /dev/kvm on every worker elsewhere."""
    if request.accel != "auto":
        return request.accel == "kvm", f"--accel {request.accel}"
    if request.placement.remote:
        lacking = sorted({facts["host"] for facts in pool.workers.values() if not facts["kvm"]})
        return not lacking, f"/dev/kvm cannot be opened on {', '.join(lacking)}"
    return vm.kvm_works(builds[request.variants[0].name].bzimage)


def _blocks(request: RunRequest, directory: results.RunDirectory, pool, seed: int,
            cells: list[results.PlannedCell], job, stop) -> list[results.PlannedCell]:
    """Run the planned cells not done yet; with --reps auto, one more block of repetitions at a time until
    stop(directory) or max_reps. The cells planned in the end."""
    limit = len(plan(request, seed, request.max_reps)) if request.max_reps else None
    while True:
        done = directory.done()
        todo = [cell for cell in cells if cell not in done]
        progress = Progress("cell", len(cells), len(cells) - len(todo), limit, logger=log)
        started, finished = _recorder(directory, progress, request.placement.parallel)
        pool.run([job(cell) for cell in todo], started, finished)
        reached = max(cell.rep for cell in cells)
        if not request.max_reps or reached >= request.max_reps or stop is None or stop(directory):
            return cells
        log.info("after %d repetitions some primary hypotheses are undecided: one more block", reached)
        cells = plan(request, seed, reached + 1)
        directory.update_metadata(plan=cells)


def _finish(directory: results.RunDirectory, stages: dict, cells_started: float,
            cells: list[results.PlannedCell]) -> None:
    """The run's end in its metadata: when, the stages' seconds, the repetitions done."""
    # cells: the wall time of the cell stage; boots and workloads: the cells' own time, which cells at once overlap
    boots = sum(record.boot_ready_s or 0 for record in directory.runs)
    cells_s = sum(record.duration_s or 0 for record in directory.runs)
    stages = {**stages, "cells": round(time.monotonic() - cells_started, 1), "boots": round(boots, 1),
              "workloads": round(cells_s - boots, 1)}
    directory.update_metadata(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), stage_seconds=stages,
                              reps_done=max(cell.rep for cell in cells))


def run_and_analyse(request: RunRequest, cache_dir: Path) -> Path:
    """run() until every primary hypothesis is decided (or the repetitions run out), then the report:
    what `harness bench` and `harness try` do; the report's path."""
    directory = run(request, cache_dir, stop=analysis.decided)
    return analysis.analyse(directory.path, request.experiment)


def _recorder(directory: results.RunDirectory, progress: Progress, parallel: bool):
    """(started, finished) for pool.run: the progress line (before a cell here, as it ends elsewhere), and
    each outcome into the run directory: its raw files, its Run and Samples, its worker's log lines."""
    def started(job: Job) -> None:
        progress.step(job.label)

    def finished(job: Job, outcome: worker.Outcome) -> None:
        for name, level, message in outcome.log:      # as the cell logged them, console and log file alike
            logging.getLogger(name).log(level, "%s", message)
        for name, data in outcome.raw.items():
            files.write_bytes_atomic(directory.path / "raw" / name, data)
        directory.add(outcome.run, outcome.samples)
        progress.finish()
        if parallel:
            said = "valid" if outcome.run.valid else outcome.run.reason or "invalid"
            progress.step(f"{job.label}, on {outcome.run.host}: {said}")
    return started, finished


def selftests_of(request: RunRequest, builds: dict) -> tuple[dict[str, selftests.Built], float | None]:
    """(variant -> its tree's mm selftests, built (or kept from an earlier run) beside its kernel, when a workload
    of the run runs them; the seconds that took, None when none does)."""
    tests = [selftests.Test.of(name, table, workload.setting("helpers", ())) for workload, _ in request.workloads
             if workload.driver == "selftests" for name, table in dict(workload.setting("tests", {})).items()]
    if not tests:
        return {}, None
    started = time.monotonic()
    found = {}
    for name, built in builds.items():
        if not built.tree.is_dir():
            continue        # a fake build: no tree to build them from
        found[name] = selftests.build(built.tree, built.directory / "selftests", tests)
        if said := found[name].said():
            log.warning("variant %s: %s", name, said)
    return found, round(time.monotonic() - started, 1)


def _kernel(request: RunRequest, built, tests: selftests.Built | None = None) -> tuple[Kernel, str]:
    """A variant's Kernel as cells take it (the copy-cause layout when counted boots need it, its selftests when
    a workload runs them), and the digest a remote worker keeps its bzImage under."""
    wanted = "counted" in request.modes and request.experiment.probes
    kernel = Kernel.of(built, layout_of(request.experiment, built) if wanted else None, tests)
    return kernel, worker.digest_of(built.bzimage) if request.placement.remote else ""


def job_at(request: RunRequest, kernels: dict, guest_image, image_digest: str, cpus: int | None,
           planned: results.PlannedCell) -> Job:
    """The Job of a planned cell: its point's guest, with at most cpus vCPUs (None: as asked)."""
    by_name = {workload.name: (workload, params) for workload, params in request.workloads}
    cell = cell_at(request, *by_name[planned.workload], planned.rep, planned.mode, planned.point)
    guest = cell.point.guest(request.experiment.guest)
    if cpus is not None and guest.cpus > cpus:
        guest = replace(guest, cpus=cpus)
    kernel, kernel_digest = kernels[planned.variant]
    return Job(cell, kernel, guest_image, request.experiment, guest, request.accel, cell.point.host, kernel_digest,
               image_digest)


def _placed(request: RunRequest, pool, directory: results.RunDirectory) -> int | None:
    """The most vCPUs a guest gets (None: what it asks), checked against the workers and recorded: cells
    at once on one host share its memory, and its cores when a cell is timed (counted cells share them:
    cells_at_once); a resumed run keeps the vCPUs it started with."""
    guests = request.guests()
    recorded = directory.metadata.placement if request.resume else None
    cut = None if request.counted_only else pool.cores_per_cell()     # timed cells: no two guests share a core
    cpus = _guest_cpus(request, recorded.guest_cpus if recorded else cut, max(guest.cpus for guest in guests))
    _check_memory(request, pool.memory_per_cell_mb(), _memory_per_cell_mb(request))
    _check_hosts(request, {facts["host"] for facts in pool.workers.values()})
    at_once: dict[str, int] = {}
    for facts in pool.workers.values():
        at_once[facts["host"]] = at_once.get(facts["host"], 0) + facts.get("nthreads", 1)
    workers = {facts["host"]: results.WorkerFacts(facts["cores"], facts["memory_mb"], facts["kvm"], facts["qemu"],
                                                  at_once[facts["host"]]) for facts in pool.workers.values()}
    directory.update_metadata(placement=results.PlacementFacts(
        **request.placement.as_dict(), where=request.placement.describe(), guest_cpus=cpus, workers=workers))
    return cpus


def _guest_cpus(request: RunRequest, cpus: int | None, asked: int) -> int | None:
    """The vCPUs each guest gets when the cells at once would share cores (None: as many as it asks); refused
    when the sweep varies the vCPUs."""
    if cpus is None or cpus >= asked:
        return None         # no guest is cut: they run as asked
    if any(axis.name == f"{sweeps.GUEST}.cpus" for axis in request.sweep.axes):
        raise BadPlacement(option="--jobs", value=request.placement.jobs,
                           why=f"leaves {cpus} vCPU(s) per guest, and the sweep varies guest.cpus up to {asked}",
                           fix="run fewer cells at once (--jobs 1)")
    log.warning("%s: each guest gets %d vCPU(s), not the %d the experiment asks, so that the cells running at "
                "once do not share cores (timed boots)", request.placement.describe(), cpus, asked)
    return cpus


def _check_memory(request: RunRequest, memory: int | None, needed: int) -> None:
    if memory is not None and memory < needed:
        raise BadPlacement(option="--jobs", value=request.placement.jobs,
                           why=f"leaves {memory} MiB per cell on the tightest worker, and a guest needs {needed} MiB "
                               "with its QEMU", fix="run fewer cells at once")


def _check_hosts(request: RunRequest, hosts: set[str]) -> None:
    """Every host a sweep names has a worker."""
    wanted = {point.host for workload, _ in request.workloads
              for point in request.points(workload.name).values()} - {""}
    if wanted - hosts:
        raise BadPlacement(option="[sweep] host.name", value=", ".join(sorted(wanted - hosts)),
                           why=f"has no worker (the workers are on {', '.join(sorted(hosts))})",
                           fix="start workers there, or sweep over the hosts there are")


def cell_at(request: RunRequest, workload: workloads.Workload, params: dict, rep: int, mode: str,
            label: str) -> Cell:
    """The cell of a planned (workload, rep, mode, point label): the point's guest and parameters applied."""
    points = request.points(workload.name)
    if label not in points:
        raise NotAResultDirectory(path=request.out_dir, missing=f"point {label!r} of {workload.name} in the "
                                  f"recorded sweep (it has {', '.join(points) or 'none'})")
    point = points[label]
    return Cell(workload, workload.params({**params, **point.parameters(workload.name)}), rep, mode, point)


def _open(request: RunRequest):
    """(run directory, seed, planned cells): a new one with its metadata, or the interrupted one."""
    if request.resume:
        directory = results.RunDirectory.load(request.out_dir)
        metadata = directory.metadata
        if metadata.format != results.FORMAT or not metadata.plan:
            raise NotAResultDirectory(path=request.out_dir, missing=f"a format {results.FORMAT} metadata.json "
                                      f"(it is format {metadata.format}, from an older harness)")
        return directory, metadata.seed, [results.PlannedCell(*cell) for cell in metadata.plan]
    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
    cells = plan(request, seed)
    directory = results.RunDirectory.create(request.out_dir, replace(_metadata(request), seed=seed, plan=tuple(cells)))
    return directory, seed, cells


def _prepare(request: RunRequest, directory: results.RunDirectory, cache_dir: Path):
    """Source, builds and guest image, timed; recorded in the metadata."""
    stages = Stopwatch()
    with stages("fetch"):
        for spec in dict.fromkeys(request.experiment.source_of(variant) for variant in request.variants):
            source.fetch(source.parse_spec(spec), cache_dir)
    with stages("build"):
        builds = {b.variant: b for b in build.build_all(request.experiment, list(request.variants), cache_dir)}
    with stages("image"):
        guest_image = image.build(cache_dir)
    with stages("object code"):
        differences = object_code(request.experiment, request.variants, builds, request.control, request.force)
    with stages("cow layout"):
        layouts = cow_layouts(request, builds)
    identical = [name for name, difference in differences.items() if difference.identical and name != request.control]
    counting = "counted" in request.modes and request.experiment.probes and request.experiment.coverage
    calls = counted_calls(differences, request.control) if counting else ()
    directory.update_metadata(builds={name: _build_facts(b) for name, b in builds.items()}, cow_layout=layouts,
                              image=guest_image.digest, qemu=vm.qemu_version(), stage_seconds=dict(stages.seconds),
                              object_code=differences, as_control=() if request.force else tuple(identical),
                              calls=tuple(calls))
    return builds, guest_image, dict(stages.seconds), calls


def counted_calls(differences: dict[str, results.ObjectCode], control: str | None = None) -> tuple[str, ...]:
    """The functions whose calls every counted boot counts, of every variant and the baseline alike: those
    the variants changed, added or removed, less the ones in init sections (they ran at boot, before any
    phase), those the function profiler cannot see (no __fentry__ call) and those whose name an unchanged function
    shares (the profiler would count both as one)."""
    found = []
    for name, difference in differences.items():
        if name != control and not difference.identical:
            left_out = {*difference.init, *difference.untraced, *difference.shared}
            found += [function for function in difference.functions if function not in left_out]
    return tuple(sorted(set(found)))


def object_code(spec: Experiment, variants, builds: dict, control: str | None = None,
                force: bool = False) -> dict[str, results.ObjectCode]:
    """Each variant's code against the baseline's (the first of variants; those of the baseline's source that
    have a vmlinux); says, before any cell runs, which variants changed nothing. control: the variant that is
    the baseline again; force: an identical variant is judged as a variant (what the log line says)."""
    baseline = variants[0]
    base_build = builds[baseline.name]
    differences = {}
    for variant in variants[1:]:
        built = builds[variant.name]
        if spec.source_of(variant) != spec.source_of(baseline):
            continue
        if not (base_build.vmlinux.is_file() and built.vmlinux.is_file()):
            log.warning("variant %s: no vmlinux to compare with %s's object code", variant.name, baseline.name)
            continue
        old = objdiff.facts(base_build.vmlinux, base_build.directory)
        new = objdiff.facts(built.vmlinux, built.directory)
        bloat = objdiff.bloat_o_meter(base_build.tree, base_build.vmlinux, built.vmlinux)
        difference = differences[variant.name] = objdiff.compare(variant.name, baseline.name, old, new, bloat)
        if variant.name == control:
            continue
        if difference.identical:
            then = ("it is judged as a variant (--force)" if force else
                    "it runs as an A/A control (--force judges it as a variant)")
            log.warning("variant %s: %s; %s", variant.name, difference.summary(), then)
        else:
            log.info("variant %s: %s", variant.name, difference.summary())
    return differences


def cow_layouts(request: RunRequest, builds: dict) -> dict[str, dict]:
    """Each build's layout for the copy causes (derived once, kept in the build's folder), as recorded in
    the metadata; a kernel without one is named before any cell runs."""
    if "counted" not in request.modes or not request.experiment.probes:
        return {}
    found = {}
    for name, built in builds.items():
        layout = layout_of(request.experiment, built)
        if layout is None:
            continue
        found[name] = layout.as_dict()
        if layout.unavailable:
            log.warning("variant %s: no copy causes on this kernel (%s): the cow_copies.CAUSE metrics are absent",
                        name, layout.unavailable)
    return found


def _build_facts(built: build.Build) -> results.BuildFacts:
    return results.BuildFacts(built.key, built.release, built.source, tuple(built.patches), built.patch_hash,
                              built.config_hash, built.compiler, built.source_state)


def _subject(patch: Path) -> str:
    """A patch's subject, as a figure or a mail names it; its file name when it has none to read."""
    try:
        return patchmail.parse(patch.read_text(errors="surrogateescape"), patch.name).subject or patch.name
    except (OSError, HarnessError):
        return patch.name


def _metadata(request: RunRequest) -> results.RunMetadata:
    """What the run is asked to do, written before its first stage."""
    spec = request.experiment
    variants = tuple(results.VariantRecord(v.name, tuple(p.name for p in v.patches),
                                           tuple(_subject(p) for p in v.patches), spec.source_of(v))
                     for v in request.variants)
    design = {"reps": "auto", "min_reps": request.reps, "max_reps": request.max_reps} if request.max_reps \
        else {"reps": request.reps}
    points = {workload.name: list(request.points(workload.name)) for workload, _ in request.workloads}
    sweep = {"sweep": request.sweep.as_dict(), "points": points} if request.sweep else {}
    return results.RunMetadata(
        command=request.command_line, experiment=spec.name, description=spec.description,
        experiment_file=str(spec.path), source=spec.source, mixed_sources=spec.mixed_sources,
        mixed_hosts=spec.mixed_hosts, workloads={workload.name: params for workload, params in request.workloads},
        variants=variants, baseline=request.variants[0].name, control=request.control, primary=tuple(request.primary),
        margin_pct=request.margin_pct, force=request.force, **design, discovery=spec.discovery,
        modes=tuple(request.modes), timing=request.timing, accelerator_requested=request.accel,
        probes=tuple(spec.probes) if "counted" in request.modes else (), guest=dict(vars(spec.guest)), **sweep,
        host=results.host_facts(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
