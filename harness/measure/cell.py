"""One cell: a fresh boot of one variant, the workload run phase by phase with the collectors
around every phase, the figures of each phase added up, rates derived, the workload's gates
applied. A cell that fails, for any reason but a full disk, becomes an invalid Run whose reason
starts with the cause that QEMU and the guest's console give (QEMU exited, the OOM killer).

A cell arrives as a Job: everything it needs (the kernel's facts and layout, the guest, the
experiment), so that it runs the same in this process or on a Dask worker elsewhere
(harness/measure/worker.py).
"""

import logging
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import files, results
from harness import sweep as sweeps
from harness.errors import CellFailed, DiskFull, HarnessError
from harness.experiment import Experiment, GuestConfig
from harness.guest import boot
from harness.guest import image as guest_image
from harness.kernel import build, kconfig, layout
from harness.kernel.layout import Layout
from harness.measure import collectors, metrics, workloads

log = logging.getLogger("harness.matrix")


@dataclass(frozen=True)
class Cell:
    workload: workloads.Workload
    parameters: dict
    rep: int
    mode: str = "counted"
    point: sweeps.Point = sweeps.Point()     # parameters already hold the point's values; its guest settings apply


@dataclass(frozen=True)
class Kernel:
    """What a cell needs of a build, on any machine: the bzImage, the facts runs.csv records, the
    .config options that decide which phases run, and the layout the copy causes need (derived where
    the build is: a worker has no kernel tree)."""
    variant: str
    bzimage: Path
    release: str = ""
    source: str = ""
    config_hash: str = ""
    patch_hash: str = ""
    options: dict = field(default_factory=dict)     # CONFIG_ name -> value; {} when unknown (every phase runs)
    layout: Layout | None = None

    @classmethod
    def of(cls, built: build.Build, cow_layout: Layout | None) -> "Kernel":
        config = getattr(built, "config", None)
        options = kconfig.parse(config.read_text()) if config is not None and config.is_file() else {}
        return cls(built.variant, built.bzimage, built.release, built.source, built.config_hash, built.patch_hash,
                   options, cow_layout)


@dataclass(frozen=True)
class Job:
    """One cell as a worker gets it: everything to boot and measure it, and nothing it must look up."""
    cell: Cell
    kernel: Kernel
    image: guest_image.Image
    experiment: Experiment
    guest: GuestConfig          # the point's guest, with the vCPUs the placement allows
    accel: str = "auto"
    host: str = ""              # the host the cell must run on ("" = any): the point of a host sweep axis
    kernel_digest: str = ""     # sha256 of the bzImage and of the initramfs: what a remote worker keeps them as
    image_digest: str = ""
    calls: tuple[str, ...] = () # functions the variants changed: counted in every phase of a counted boot

    @property
    def label(self) -> str:
        cell = self.cell
        return f"{cell.workload.name}, {self.kernel.variant}, rep {cell.rep}, {cell.mode}" + \
            (f", {cell.point.label}" if cell.point.label else "")


def record_of(job: Job, host: str) -> results.Run:
    """The Run of a job before it has run (an invalid one, until the cell says otherwise)."""
    kernel, guest, cell = job.kernel, job.guest, job.cell
    return results.Run(kernel.variant, cell.workload.name, cell.rep, cell.mode,
                       source=kernel.source or job.experiment.source,
                       kernel_release=kernel.release.removeprefix("linux-"), config_hash=kernel.config_hash,
                       patch_hash=kernel.patch_hash, guest_memory_mb=guest.memory_mb, swap_mb=guest.swap_mb,
                       cpus=guest.cpus, point=cell.point.label, swap=guest.swap, host=host)


def run_cell(job: Job, raw_dir: Path, cache_dir: Path):
    """One boot: (Run, [Sample]), the raw files and console log written into raw_dir. A cell that fails,
    for any reason but a full disk, is recorded as invalid with the cause (what QEMU and the guest's
    console say first), and the matrix goes on."""
    started = time.monotonic()
    cell, kernel = job.cell, job.kernel
    record = record_of(job, socket.gethostname())
    phases: dict[str, dict] = {}
    try:
        # the repetition on the command line: in the console log, and for a test patch that breaks some boots
        with boot.booted(kernel, job.image, job.guest, job.accel, raw_dir, cache_dir / "boots",
                         append=f"harness.rep={cell.rep}") as guest:
            record = replace(record, accelerator=guest.accelerator, qemu_version=guest.qemu_version,
                             boot_ready_s=round(guest.ready_s, 2))
            try:
                record = replace(record, swap_compressor=compressor(guest.session, job.guest.swap))
                phases, warnings, problems, gates = _measure(job, guest.session, raw_dir)
                release = guest.session.run(["uname", "-r"]).stdout.strip()
            except DiskFull:
                raise
            except (HarnessError, OSError) as error:
                if getattr(error, "errno", None) in files.FULL:
                    raise files.disk_full(raw_dir) from None
                raise CellFailed(why=guest.explain(error)) from None
        metrics.derive(phases, cell.workload.read_phase)
        problems = gate(gates, phases) + problems
        record = replace(record, valid=not problems, reason="; ".join(problems), warnings="; ".join(warnings),
                         kernel_release=release)
        for warning in warnings:        # said now, not only kept in runs.csv for the report
            log.warning("%s rep %d %s: %s", kernel.variant, cell.rep, cell.mode, warning)
    except DiskFull:
        raise
    except HarnessError as error:
        log.warning("cell %s rep %d failed: %s", kernel.variant, cell.rep, error)
        record, phases = replace(record, reason=f"failed: {error}"), {}
    except Exception as error:      # a fault of the harness itself: recorded, and the cells after it still run
        log.exception("cell %s rep %d failed inside the harness", kernel.variant, cell.rep)
        record, phases = replace(record, reason=f"failed: harness fault {type(error).__name__}: {error}"), {}
    record = replace(record, duration_s=round(time.monotonic() - started, 1))
    samples = [results.Sample(kernel.variant, cell.workload.name, cell.rep, cell.mode, phase, metric, float(value),
                              cell.point.label)
               for phase, figures in phases.items() for metric, value in sorted(figures.items())]
    return record, samples


def compressor(session, swap: str) -> str:
    """zram's compression algorithm as the guest uses it ('lzo [lzo-rle] zstd' -> 'lzo-rle'); '' for a disk."""
    if swap != "zram":
        return ""
    said = session.run(["cat", "/sys/block/zram0/comp_algorithm"]).stdout
    chosen = [word.strip("[]") for word in said.split() if word.startswith("[")]
    return chosen[0] if chosen else said.strip()


def _measure(job: Job, session, raw_dir: Path):
    """Run every phase of the workload with the collectors around it.

    Returns (phases, warnings, problems, gates): the figures of each phase, warnings to keep,
    reasons the run is invalid that the phases showed, and the workload's gates.
    """
    cell, spec, variant = job.cell, job.experiment, job.kernel.variant
    point = f"-{cell.point.label.replace('=', '').replace(',', '-')}" if cell.point.label else ""
    probes = spec.probes if cell.mode == "counted" else ()
    cow_layout = job.kernel.layout if probes else None
    warnings: list[str] = []
    if cow_layout is not None and cow_layout.unavailable:
        warnings.append(f"no copy causes on this kernel: {cow_layout.unavailable}")
    if probes and (refused := collectors.setup(session, probes, cow_layout)):
        warnings.append(refused)
        cow_layout = None
    # a function this kernel lacks (added or removed by a patch) has no calls.FUNCTION in its boots
    unseen = collectors.count_calls(session, job.calls) if probes else job.calls
    calls = tuple(function for function in job.calls if function not in unseen)
    driver = workloads.driver(cell.workload, cell.parameters, session)
    plan, skipped = kernel_phases(driver, job.kernel.options)
    warnings += skipped
    phases: dict[str, dict] = {}
    problems: list[str] = []
    started_driver = False
    try:
        for index, phase in enumerate(plan):
            if phase != "idle" and not started_driver:
                driver.start()
                started_driver = True
            with collectors.Phase(session, probes, spec.cow_probe, driver.pid if phase != "idle" else None,
                                  driver.cgroup, cow_layout, spec.fault_probe, calls) as counters:
                outcome = driver.idle() if phase == "idle" else driver.run_phase(phase)
            name = f"{cell.workload.name}-{variant}{point}-rep{cell.rep}-{cell.mode}-{index:02d}-{phase}.txt"
            write_raw(raw_dir, name, counters.raw + "\n" + outcome.raw() + "\n")
            accumulate(phases.setdefault(phase, {}), counters.metrics, outcome)
            warnings += [f"{phase}: {w}" for w in counters.warnings]
            problems += [f"{phase}: {p}" for p in counters.problems if f"{phase}: {p}" not in problems]
            log.info("  %s rep %d %s %-8s %6.2f s  cow_copies %s", variant, cell.rep, cell.mode, phase,
                     outcome.duration_s, copies_said(counters.metrics))
        problems += driver.problems() if started_driver else []
    finally:
        if started_driver:
            _stop(driver)
    return phases, warnings, problems, driver.gates()


def write_raw(raw_dir: Path, name: str, text: str) -> Path:
    """A raw file of the cell (a phase's collector output and the workload's own figures), written whole."""
    path = raw_dir / name
    files.write_atomic(path, text)
    return path


def copies_said(figures: dict) -> str:
    """'4096 (swapcache 4090, other_ref 6)': the process's copies and their causes, for the log."""
    if "cow_copies" not in figures:
        return "-"
    parts = [f"{name.split('.', 1)[1]} {value:.0f}" for name, value in figures.items()
             if name.startswith("cow_copies.") and value]
    return f"{figures['cow_copies']:.0f}" + (f" ({', '.join(parts)})" if parts else "")


def layout_of(experiment: Experiment, built: build.Build) -> Layout | None:
    """The built kernel's layout for the copy causes; None when the experiment does not ask for causes
    or there is no build folder (a fake)."""
    if not experiment.cow_causes or not built.directory.is_dir():
        return None
    return layout.of_build(built.tree, built.system_map, experiment.cow_probe, built.directory)


def kernel_phases(driver: workloads.Driver, options: dict) -> tuple[list[str], list[str]]:
    """(the driver's phases that this kernel can run, a warning naming the ones it cannot): a workload's
    `requires` maps a phase to the CONFIG_ option it needs, checked in the kernel's .config options."""
    plan, needs = driver.phase_plan(), dict(driver.workload.setting("requires", {}))
    if not needs or not options:
        return plan, []
    missing = {phase: option for phase, option in needs.items() if options.get(option) not in ("y", "m")}
    skipped = [phase for phase in dict.fromkeys(plan) if phase in missing]
    if not skipped:
        return plan, []
    said = ", ".join(f"{phase} ({missing[phase]})" for phase in skipped)
    return [phase for phase in plan if phase not in missing], [f"phases skipped, the kernel lacks their option: {said}"]


def _stop(driver: workloads.Driver) -> None:
    """Stop the workload; a guest that is gone already cannot be told, and that is no new error."""
    try:
        driver.stop()
    except Exception as error:    # the phase's own error (or none) is what the cell reports
        log.debug("stopping %s: %s", driver.workload.name, error)


def accumulate(totals: dict, figures: dict, outcome: workloads.PhaseOutcome) -> None:
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
