"""Runs: every variant x repetition x mode x sweep point, interleaved, one fresh boot and swap
disk per cell (harness/cell.py runs one); each cell's Run and Samples go to the run directory.
Cells run one at a time here, or several at once on Dask workers (harness/measure/dispatch.py):
then each guest gets at most the cores its host has per cell running at once, recorded.

A cell's mode is `counted` (kprobes, perf and the function profiler on) or `timed` (vmstat
snapshots only: the probes slow down most the variant that hits them most, so timings come
from these boots). Cells run in blocks, one per repetition and workload, holding every
(variant, mode, point) once in a shuffled order. With `max_reps` (`--reps auto`) blocks are added one
repetition at a time until the `stop` callback says every primary hypothesis is decided.
"""

import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness import files, results
from harness import sweep as sweeps
from harness.errors import BadExperiment, BadPlacement, BadWorkload, HarnessError, NotAResultDirectory
from harness.experiment import Experiment
from harness.guest import image, vm
from harness.kernel import build, objdiff, patchmail, source
from harness.measure import dispatch, worker, workloads
from harness.measure.cell import Cell, Job, Kernel, layout_of
from harness.progress import Progress, Stopwatch

log = logging.getLogger("harness.matrix")
worker_log = logging.getLogger("harness.worker")
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

    def points(self, workload: str) -> dict[str, sweeps.Point]:
        """label -> point, of the workload's cells."""
        return {point.label: point for point in self.sweep.points(workload)}


CONTROL = "control"      # the name of the variant --control adds


def new_request(spec: Experiment, workload_names, settings, variant_names, reps: int, out_dir: Path, accel: str,
                modes, command_line: str, seed: int | None, max_reps: int | None, control: bool,
                force: bool = False, placement: dispatch.Placement = dispatch.Placement()) -> RunRequest:
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
                      placement)


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
                   for name, values in recorded.get("workloads", {}).items())
    by_name = {v.name: v for v in spec.variants}
    control = recorded.get("control")
    variants = tuple(replace(by_name[recorded["baseline"]], name=control) if v["name"] == control
                     else spec.select([v["name"]])[0] for v in recorded.get("variants", []))
    auto = recorded.get("reps") == "auto"
    return RunRequest(spec, chosen, variants, int(recorded["min_reps"] if auto else recorded["reps"]), path, accel,
                      tuple(recorded.get("modes", ("counted",))), recorded.get("command", ""), recorded.get("seed"),
                      True, int(recorded["max_reps"]) if auto else None, control,
                      tuple(recorded.get("primary", ())), float(recorded.get("margin_pct", 5.0)),
                      bool(recorded.get("force", False)), sweeps.Sweep.from_dict(recorded.get("sweep")), placement)


def measured_primary(spec: Experiment, chosen) -> tuple[str, ...]:
    """The experiment's primary rows that this run measures (its workloads, in their phases)."""
    phases = {workload.name: workloads.driver(workload, params, None).phase_plan() for workload, params in chosen}
    kept = []
    for row in spec.primary:
        workload, phase, _ = row.split("/")
        if workload in phases and phase in phases[workload]:
            kept.append(row)
        elif workload in phases:
            log.warning("primary row %s is not measured: %s runs %s with these parameters", row, workload,
                        ", ".join(phases[workload]))
    return tuple(kept)


def plan(request: RunRequest, seed: int, reps: int | None = None) -> list[tuple[str, str, int, str, str]]:
    """(workload, variant, rep, mode, point) in run order: one block per repetition and workload, holding
    every variant in every mode at every sweep point once, shuffled with seed, so that host drift falls
    on all alike."""
    rng = random.Random(seed)
    cells = []
    for rep in range(1, (reps or request.reps) + 1):
        for workload, _ in request.workloads:
            order = [(variant.name, mode, point) for variant in request.variants for mode in request.modes
                     for point in request.points(workload.name)]
            rng.shuffle(order)
            cells += [(workload.name, name, rep, mode, point) for name, mode, point in order]
    return cells


def run(request: RunRequest, cache_dir: Path, stop=None) -> results.RunDirectory:
    """Build, boot and measure every cell (the ones not done yet, when resuming).

    stop(directory) -> bool is asked after each block when request.max_reps is set: True ends the run.
    """
    dispatch.check(request.placement)
    directory, seed, cells = _open(request)
    limit = len(plan(request, seed, request.max_reps)) if request.max_reps else None
    with dispatch.pool(request.placement, cache_dir, directory.path / "raw") as pool:     # fails before the builds
        builds, guest_image, stages, calls = _prepare(request, directory, cache_dir)
        cells_started = time.monotonic()
        cpus = _placed(request, pool, directory)
        kernels = {name: _kernel(request, built) for name, built in builds.items()}
        image_digest = worker.digest_of(guest_image.path) if request.placement.remote else ""
        while True:
            done = directory.done()
            todo = [cell for cell in cells if cell not in done]
            progress = Progress("cell", len(cells), len(cells) - len(todo), limit, logger=log)
            jobs = [replace(job_at(request, kernels, guest_image, image_digest, cpus, *cell), calls=calls)
                    for cell in todo]
            started, finished = _recorder(directory, progress, request.placement.parallel)
            pool.run(jobs, started, finished)
            reached = max(cell[2] for cell in cells)
            if not request.max_reps or reached >= request.max_reps or stop is None or stop(directory):
                break
            log.info("after %d repetitions some primary hypotheses are undecided: one more block", reached)
            cells = plan(request, seed, reached + 1)
            directory.update_metadata(plan=cells)
        if getattr(pool, "sent", None):
            directory.update_metadata(placement={**directory.metadata()["placement"], "artifacts": pool.sent})
    # cells: the wall time of the cell stage; boots and workloads: the cells' own time, which cells at once overlap
    boots = sum(record.boot_ready_s or 0 for record in directory.runs)
    cells_s = sum(record.duration_s or 0 for record in directory.runs)
    stages.update(cells=round(time.monotonic() - cells_started, 1), boots=round(boots, 1),
                  workloads=round(cells_s - boots, 1))
    directory.update_metadata(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), stage_seconds=stages,
                              reps_done=max(cell[2] for cell in cells))
    return directory


def _recorder(directory: results.RunDirectory, progress: Progress, parallel: bool):
    """(started, finished) for pool.run: the progress line (before a cell here, as it ends elsewhere), and
    each outcome into the run directory: its raw files, its Run and Samples, its worker's log lines."""
    def started(job: Job) -> None:
        progress.step(job.label)

    def finished(job: Job, outcome: worker.Outcome) -> None:
        for line in outcome.log:
            worker_log.debug("[%s] %s", outcome.run.host, line)
        for name, data in outcome.raw.items():
            files.write_bytes_atomic(directory.path / "raw" / name, data)
        directory.add(outcome.run, outcome.samples)
        progress.finish()
        if parallel:
            said = "valid" if outcome.run.valid else outcome.run.reason or "invalid"
            progress.step(f"{job.label}, on {outcome.run.host}: {said}")
    return started, finished


def _kernel(request: RunRequest, built) -> tuple[Kernel, str]:
    """A variant's Kernel as cells take it (the copy-cause layout when counted boots need it), and the
    digest a remote worker keeps its bzImage under."""
    wanted = "counted" in request.modes and request.experiment.probes
    kernel = Kernel.of(built, layout_of(request.experiment, built) if wanted else None)
    return kernel, worker.digest_of(built.bzimage) if request.placement.remote else ""


def job_at(request: RunRequest, kernels: dict, guest_image, image_digest: str, cpus: int | None,
           workload_name: str, variant_name: str, rep: int, mode: str, label: str) -> Job:
    """The Job of a planned cell: its point's guest, with at most cpus vCPUs (None: as asked)."""
    by_name = {workload.name: (workload, params) for workload, params in request.workloads}
    cell = cell_at(request, *by_name[workload_name], rep, mode, label)
    guest = cell.point.guest(request.experiment.guest)
    if cpus is not None and guest.cpus > cpus:
        guest = replace(guest, cpus=cpus)
    kernel, kernel_digest = kernels[variant_name]
    return Job(cell, kernel, guest_image, request.experiment, guest, request.accel, cell.point.host, kernel_digest,
               image_digest)


def _placed(request: RunRequest, pool, directory: results.RunDirectory) -> int | None:
    """The most vCPUs a guest gets (None: what it asks), checked against the workers and recorded: cells
    at once on one host share its cores and memory; a resumed run keeps the vCPUs it started with."""
    recorded = directory.metadata().get("placement") if request.resume else None
    cpus = recorded.get("guest_cpus") if recorded else pool.cores_per_cell()
    guests = [point.guest(request.experiment.guest) for workload, _ in request.workloads
              for point in request.points(workload.name).values()]
    asked = max(guest.cpus for guest in guests)
    if cpus is not None and cpus >= asked:
        cpus = None         # no guest is cut: they run as asked
    if cpus is not None:
        if any(axis.name == f"{sweeps.GUEST}.cpus" for axis in request.sweep.axes):
            raise BadPlacement(option="--jobs", value=request.placement.jobs,
                               why=f"leaves {cpus} vCPU(s) per guest, and the sweep varies guest.cpus up to {asked}",
                               fix="run fewer cells at once (--jobs 1)")
        log.warning("%s: each guest gets %d vCPU(s), not the %d the experiment asks, so that the cells running at "
                    "once do not share cores", request.placement.describe(), cpus, asked)
    memory = pool.memory_per_cell_mb()
    needed = max(guest.memory_mb for guest in guests) + QEMU_OVERHEAD_MB
    if memory is not None and memory < needed:
        raise BadPlacement(option="--jobs", value=request.placement.jobs,
                           why=f"leaves {memory} MiB per cell on the tightest worker, and a guest needs {needed} MiB "
                               "with its QEMU", fix="run fewer cells at once")
    hosts = {facts["host"] for facts in pool.workers.values()}
    wanted = {point.host for workload, _ in request.workloads
              for point in request.points(workload.name).values()} - {""}
    if wanted - hosts:
        raise BadPlacement(option="[sweep] host.name", value=", ".join(sorted(wanted - hosts)),
                           why=f"has no worker (the workers are on {', '.join(sorted(hosts))})",
                           fix="start workers there, or sweep over the hosts there are")
    workers: dict[str, dict] = {}
    for facts in pool.workers.values():
        host = workers.setdefault(facts["host"], {key: facts[key] for key in ("cores", "memory_mb", "kvm", "qemu")})
        host["cells_at_once"] = host.get("cells_at_once", 0) + facts.get("nthreads", 1)
    directory.update_metadata(placement={**request.placement.as_dict(), "where": request.placement.describe(),
                                         "guest_cpus": cpus, "workers": workers})
    return cpus


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
    stages = Stopwatch()
    with stages("fetch"):
        for spec in dict.fromkeys(request.experiment.source_of(variant) for variant in request.variants):
            source.fetch(source.parse_spec(spec), cache_dir)
    with stages("build"):
        builds = {b.variant: b for b in build.build_all(request.experiment, list(request.variants), cache_dir)}
    with stages("image"):
        guest_image = image.build(cache_dir)
    with stages("object code"):
        differences = object_code(request, builds)
    with stages("cow layout"):
        layouts = cow_layouts(request, builds)
    identical = [name for name, difference in differences.items() if difference.identical and name != request.control]
    counting = "counted" in request.modes and request.experiment.probes and request.experiment.coverage
    calls = counted_calls(differences, request) if counting else ()
    directory.update_metadata(builds={name: _build_facts(b) for name, b in builds.items()}, cow_layout=layouts,
                              image=guest_image.digest, qemu=vm.qemu_version(), stage_seconds=stages.seconds,
                              object_code={name: d.as_dict() for name, d in differences.items()},
                              as_control=[] if request.force else identical, calls=list(calls))
    return builds, guest_image, dict(stages.seconds), calls


def counted_calls(differences: dict[str, objdiff.ObjectDiff], request: RunRequest) -> tuple[str, ...]:
    """The functions whose calls every counted boot counts, of every variant and the baseline alike: those
    the variants changed, added or removed, less the ones in init sections (they ran at boot, before any
    phase), those the function profiler cannot see (no __fentry__ call) and those whose name an unchanged function
    shares (the profiler would count both as one)."""
    found = []
    for name, difference in differences.items():
        if name != request.control and not difference.identical:
            left_out = {*difference.init, *difference.untraced, *difference.shared}
            found += [function for function in difference.functions if function not in left_out]
    return tuple(sorted(set(found)))


def object_code(request: RunRequest, builds: dict) -> dict[str, objdiff.ObjectDiff]:
    """Each variant's code against the baseline's (variants of the baseline's source that have a vmlinux);
    says, before any cell runs, which variants changed nothing."""
    baseline = request.variants[0]
    base_build = builds[baseline.name]
    differences = {}
    for variant in request.variants[1:]:
        built = builds[variant.name]
        if request.experiment.source_of(variant) != request.experiment.source_of(baseline):
            continue
        if not (base_build.vmlinux.is_file() and built.vmlinux.is_file()):
            log.warning("variant %s: no vmlinux to compare with %s's object code", variant.name, baseline.name)
            continue
        old = objdiff.facts(base_build.vmlinux, base_build.directory)
        new = objdiff.facts(built.vmlinux, built.directory)
        bloat = objdiff.bloat_o_meter(base_build.tree, base_build.vmlinux, built.vmlinux)
        difference = differences[variant.name] = objdiff.compare(variant.name, baseline.name, old, new, bloat)
        if variant.name == request.control:
            continue
        if difference.identical:
            then = ("it is judged as a variant (--force)" if request.force else
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


def _build_facts(built: build.Build) -> dict:
    return {"key": built.key, "release": built.release, "source": built.source, "patches": list(built.patches),
            "patch_hash": built.patch_hash, "config_hash": built.config_hash, "compiler": built.compiler,
            "source_state": built.source_state}


def _subject(patch: Path) -> str:
    """A patch's subject, as a figure or a mail names it; its file name when it has none to read."""
    try:
        return patchmail.parse(patch.read_text(errors="surrogateescape"), patch.name).subject or patch.name
    except (OSError, HarnessError):
        return patch.name


def _metadata(request: RunRequest) -> dict:
    variants = [{"name": v.name, "patches": [p.name for p in v.patches], "subjects": [_subject(p) for p in v.patches],
                 "source": request.experiment.source_of(v)} for v in request.variants]
    design = {"reps": "auto", "min_reps": request.reps, "max_reps": request.max_reps} if request.max_reps \
        else {"reps": request.reps}
    return {"command": request.command_line, "experiment": request.experiment.name,
            "description": request.experiment.description,
            "experiment_file": str(request.experiment.path), "source": request.experiment.source,
            "mixed_sources": request.experiment.mixed_sources, "mixed_hosts": request.experiment.mixed_hosts,
            "workloads": {workload.name: params for workload, params in request.workloads},
            "variants": variants, "baseline": request.variants[0].name, "control": request.control,
            "primary": list(request.primary), "margin_pct": request.margin_pct, "force": request.force, **design,
            "discovery": request.experiment.discovery,
            "modes": list(request.modes), "accelerator_requested": request.accel,
            "probes": list(request.experiment.probes) if "counted" in request.modes else [],
            "guest": vars(request.experiment.guest), "sweep": request.sweep.as_dict() if request.sweep else None,
            "points": {workload.name: list(request.points(workload.name)) for workload, _ in request.workloads}
            if request.sweep else None,
            "host": results.host_facts(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
