"""One cell: a fresh boot of one variant, the workload run phase by phase with the collectors
around every phase, the figures of each phase added up, rates derived, the workload's gates
applied. A cell that fails, for any reason but a full disk, becomes an invalid Run whose reason
starts with the cause that QEMU and the guest's console give (QEMU exited, the OOM killer).
"""

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness import files, results
from harness import sweep as sweeps
from harness.errors import CellFailed, DiskFull, HarnessError
from harness.guest import boot
from harness.kernel import build, kconfig, layout
from harness.measure import collectors, metrics, workloads

log = logging.getLogger("harness.matrix")


@dataclass(frozen=True)
class Cell:
    workload: workloads.Workload
    parameters: dict
    rep: int
    mode: str = "counted"
    point: sweeps.Point = sweeps.Point()     # parameters already hold the point's values; its guest settings apply


def run_cell(request, cell: Cell, built: build.Build, guest_image, directory, cache_dir: Path):
    """One boot: (Run, [Sample]). A cell that fails, for any reason but a full disk, is recorded as
    invalid with the cause (what QEMU and the guest's console say first), and the matrix goes on."""
    started = time.monotonic()
    guest_config = cell.point.guest(request.experiment.guest)
    record = results.Run(built.variant, cell.workload.name, cell.rep, cell.mode,
                         source=built.source or request.experiment.source,
                         kernel_release=built.release.removeprefix("linux-"), config_hash=built.config_hash,
                         patch_hash=built.patch_hash, guest_memory_mb=guest_config.memory_mb,
                         swap_mb=guest_config.swap_mb, cpus=guest_config.cpus, point=cell.point.label,
                         swap=guest_config.swap)
    phases: dict[str, dict] = {}
    try:
        with boot.booted(built, guest_image, guest_config, request.accel, directory.path / "raw",
                         cache_dir / "boots") as guest:
            record = replace(record, accelerator=guest.accelerator, qemu_version=guest.qemu_version,
                             boot_ready_s=round(guest.ready_s, 2))
            try:
                record = replace(record, swap_compressor=compressor(guest.session, guest_config.swap))
                phases, warnings, problems, gates = _measure(request, cell, guest.session, directory, built)
                release = guest.session.run(["uname", "-r"]).stdout.strip()
            except DiskFull:
                raise
            except (HarnessError, OSError) as error:
                if getattr(error, "errno", None) in files.FULL:
                    raise files.disk_full(directory.path) from None
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
    samples = [results.Sample(built.variant, cell.workload.name, cell.rep, cell.mode, phase, metric, float(value),
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


def _measure(request, cell: Cell, session, directory, built: build.Build):
    """Run every phase of the workload with the collectors around it.

    Returns (phases, warnings, problems, gates): the figures of each phase, warnings to keep,
    reasons the run is invalid that the phases showed, and the workload's gates.
    """
    variant, spec = built.variant, request.experiment
    point = f"-{cell.point.label.replace('=', '').replace(',', '-')}" if cell.point.label else ""
    probes = spec.probes if cell.mode == "counted" else ()
    cow_layout = layout_of(request, built) if probes else None
    warnings: list[str] = []
    if cow_layout is not None and cow_layout.unavailable:
        warnings.append(f"no copy causes on this kernel: {cow_layout.unavailable}")
    if probes and (refused := collectors.setup(session, probes, cow_layout)):
        warnings.append(refused)
        cow_layout = None
    driver = workloads.driver(cell.workload, cell.parameters, session)
    plan, skipped = kernel_phases(driver, built)
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
                                  driver.cgroup, cow_layout, spec.fault_probe) as counters:
                outcome = driver.idle() if phase == "idle" else driver.run_phase(phase)
            directory.raw(f"{cell.workload.name}-{variant}{point}-rep{cell.rep}-{cell.mode}-{index:02d}-{phase}.txt",
                          counters.raw + "\n" + outcome.raw() + "\n")
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


def copies_said(figures: dict) -> str:
    """'4096 (swapcache 4090, other_ref 6)': the process's copies and their causes, for the log."""
    if "cow_copies" not in figures:
        return "-"
    parts = [f"{name.split('.', 1)[1]} {value:.0f}" for name, value in figures.items()
             if name.startswith("cow_copies.") and value]
    return f"{figures['cow_copies']:.0f}" + (f" ({', '.join(parts)})" if parts else "")


def layout_of(request, built: build.Build) -> layout.Layout | None:
    """The built kernel's layout for the copy causes; None when the experiment does not ask for causes
    or there is no build folder (a fake)."""
    if not request.experiment.cow_causes or not built.directory.is_dir():
        return None
    return layout.of_build(built.tree, built.system_map, request.experiment.cow_probe, built.directory)


def kernel_phases(driver: workloads.Driver, built: build.Build) -> tuple[list[str], list[str]]:
    """(the driver's phases that this kernel can run, a warning naming the ones it cannot): a workload's
    `requires` maps a phase to the CONFIG_ option it needs, checked in the build's .config."""
    plan, needs = driver.phase_plan(), dict(driver.workload.setting("requires", {}))
    config = getattr(built, "config", None)
    if not needs or config is None or not config.is_file():
        return plan, []
    options = kconfig.parse(config.read_text())
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
