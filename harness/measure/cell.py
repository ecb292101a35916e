"""One cell: a fresh boot of one variant, the workload run phase by phase with the collectors
around every phase, the figures of each phase added up, rates derived, the workload's gates
applied. A cell that fails, for any reason but a full disk, becomes an invalid Run whose reason
starts with the cause that QEMU and the guest's console give (QEMU exited, the OOM killer).

A cell arrives as a Job: everything it needs (the kernel's facts and layout, the guest, the
experiment), so that it runs the same in this process or on a Dask worker elsewhere
(harness/measure/worker.py).
"""

import contextlib
import logging
import platform
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import files, metrics, results, workloads
from harness import sweep as sweeps
from harness.errors import BadWorkload, CellFailed, DiskFull, HarnessError
from harness.experiment import Experiment, GuestConfig
from harness.guest import boot, vm
from harness.guest import image as guest_image
from harness.kernel import build, kconfig, layout
from harness.kernel.layout import Layout
from harness.kernel.selftests import Built as BuiltSelftests
from harness.measure import collectors, drivers

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
    selftests: BuiltSelftests | None = None         # the tree's own mm selftests, when a workload runs them

    @classmethod
    def of(cls, built: build.Build, cow_layout: Layout | None, tests: BuiltSelftests | None = None) -> "Kernel":
        config = getattr(built, "config", None)
        options = kconfig.parse(config.read_text()) if config is not None and config.is_file() else {}
        return cls(built.variant, built.bzimage, built.release, built.source, built.config_hash, built.patch_hash,
                   options, cow_layout, tests)


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
                       cpus=guest.cpus, point=cell.point.label, swap=guest.swap, host=host,
                       image=job.image.digest if job.image is not None else "",
                       host_kernel=platform.release())


def run_cell(job: Job, raw_dir: Path, cache_dir: Path):
    """One boot: (Run, [Sample]), the raw files and console log written into raw_dir. A cell that fails,
    for any reason but a full disk, is recorded as invalid with the cause (what QEMU and the guest's
    console say first), and the matrix goes on."""
    started = time.monotonic()
    record, phases = _attempted(job, raw_dir, cache_dir)
    record = replace(record, duration_s=round(time.monotonic() - started, 1))
    return record, _samples(job, phases)


def _attempted(job: Job, raw_dir: Path, cache_dir: Path) -> tuple[results.Run, dict[str, dict]]:
    """(Run, phases) of one boot; a cell that failed has an invalid Run that says why, and no phases. What its
    phases found wrong before it failed stays in the Run: a wrong page is a finding whatever happens next."""
    cell = job.cell
    record = record_of(job, socket.gethostname())
    phases: dict[str, dict] = {}
    so_far = _SoFar()
    consoles: list[Path] = []   # this boot's console log (boot.booted names it before QEMU starts)
    try:
        # the repetition on the command line: in the console log, and for a test patch that breaks some boots
        with boot.booted(job.kernel, job.image, guest_of(job), job.accel, raw_dir, cache_dir / "boots",
                         append=f"harness.rep={cell.rep}", consoles=consoles) as guest:
            record = replace(record, accelerator=guest.accelerator, qemu_version=guest.qemu_version,
                             boot_ready_s=round(guest.ready_s, 2))
            with _explained(guest, raw_dir):
                record = replace(record, swap_compressor=compressor(guest.session, job.guest))
                phases, warnings, problems, gates = _measure(job, guest.session, raw_dir, so_far)
                release = guest.session.run(["uname", "-r"]).stdout.strip()
        record = _judged(record, cell.workload, release, phases, warnings, problems, gates)
        _say(job, warnings)
    except DiskFull:
        raise
    except Exception as error:      # a fault of the harness itself too: recorded, and the cells after it still run
        record, phases = _failed(job, record, error), so_far.checks     # what the finished phases checked
    crashed_in = so_far.ran[-1] if so_far.ran and record.reason.startswith("failed") else "boot"
    record = replace(record, findings=merged(so_far.found + kernel_bugs(consoles, crashed_in)))
    _say_found(job, record.findings)
    return record, phases


@dataclass
class _SoFar:
    """What a cell has found as its phases end, kept when a later phase fails: what was read back wrong, the
    phases started (the last one was running when the boot ended), and the figures of every check made (they
    say that the check ran: harness/analysis/integrity.py weighs a variant's wrong page against them)."""
    found: list[results.Finding] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    checks: dict[str, dict] = field(default_factory=dict)

    CHECKS = ("checked_", "wrong_", "tests_")

    def ended(self, phase: str, outcome: drivers.PhaseOutcome) -> None:
        self.found.extend(outcome.found(phase))
        figures = self.checks.setdefault(phase, {})
        for name, value in outcome.figures().items():
            if name.startswith(self.CHECKS):
                figures[name] = figures.get(name, 0) + value


def kernel_bugs(consoles, phase: str) -> list[results.Finding]:
    """What the kernel of this cell's boots said was wrong with itself (a BUG, an oops, a WARN) on their consoles,
    as findings of `phase`: the phase that was running when the cell failed, else "boot" (the console has no
    phases)."""
    found = []
    for console in consoles:
        try:
            text = console.read_text(errors="replace")
        except FileNotFoundError:       # the boot never got as far as QEMU
            continue
        found += [results.Finding(phase, results.KERNEL_BUG, where=name, found=line)
                  for name, line in vm.kernel_faults(text)]
    return found


def merged(found: list[results.Finding]) -> tuple[results.Finding, ...]:
    """One finding per phase and kind of wrong data (a phase run over several cycles adds up the counts of the
    runs that found some, the first wrong one kept), and every failed test once per phase."""
    kept: dict[tuple, results.Finding] = {}
    for finding in found:
        test = finding.kind in results.NAMED_KINDS
        key = (finding.phase, finding.kind) + ((finding.where,) if test else ())
        first = kept.get(key)
        if first is None:
            kept[key] = finding
        elif not test:
            kept[key] = replace(first, count=first.count + finding.count, checked=first.checked + finding.checked)
    return tuple(kept.values())


def _say_found(job: Job, findings: tuple[results.Finding, ...]) -> None:
    """Log what a cell found wrong as it ends: a wrong page is never only a line in runs.csv."""
    for finding in findings:
        log.error("%s rep %d %s %s: %s", job.kernel.variant, job.cell.rep, job.cell.workload.name, finding.phase,
                  finding.said())


@contextlib.contextmanager
def _explained(guest: boot.Booted, raw_dir: Path):
    """Turn an error of the cell in its guest into CellFailed, after the cause that QEMU and the guest's
    console give for it; a full disk (DiskFull, or an OSError that says so) stays DiskFull."""
    try:
        yield
    except DiskFull:
        raise
    except (HarnessError, OSError) as error:
        if getattr(error, "errno", None) in files.FULL:
            raise files.disk_full(raw_dir) from None
        raise CellFailed(why=guest.explain(error)) from None


def _judged(record: results.Run, workload: workloads.Workload, release: str, phases: dict[str, dict],
            warnings: list[str], problems: list[str], gates: list[workloads.Gate]) -> results.Run:
    """The Run of a cell that ran: its rates derived into phases, and valid unless the phases showed a
    problem or a gate of the workload does not hold."""
    metrics.derive(phases, workload.read_phase)
    problems = gate(gates, phases) + problems
    return replace(record, valid=not problems, reason="; ".join(problems), warnings="; ".join(warnings),
                   kernel_release=release)


def _say(job: Job, warnings: list[str]) -> None:
    """Log a cell's warnings now, not only keep them in runs.csv for the report."""
    for warning in warnings:
        log.warning("%s rep %d %s: %s", job.kernel.variant, job.cell.rep, job.cell.mode, warning)


def _failed(job: Job, record: results.Run, error: Exception) -> results.Run:
    """The invalid Run of a cell that failed; an error that is no HarnessError is a fault of the harness
    itself, logged with its traceback: the cell is recorded, and the cells after it still run."""
    if isinstance(error, HarnessError):
        log.warning("cell %s rep %d failed: %s", job.kernel.variant, job.cell.rep, error)
        return replace(record, reason=f"failed: {error}")
    log.exception("cell %s rep %d failed inside the harness", job.kernel.variant, job.cell.rep)
    return replace(record, reason=f"failed: harness fault {type(error).__name__}: {error}")


def _samples(job: Job, phases: dict[str, dict]) -> list[results.Sample]:
    """A Sample of every figure of every phase, the figures of a phase in the order of their names."""
    kernel, cell = job.kernel, job.cell
    return [results.Sample(kernel.variant, cell.workload.name, cell.rep, cell.mode, phase, metric, float(value),
                           cell.point.label)
            for phase, figures in phases.items() for metric, value in sorted(figures.items())]


def guest_of(job: Job) -> GuestConfig:
    """The machine of a cell: the job's guest, with the data disk its workload asks for (data_disk_mb)."""
    asked = job.cell.workload.setting("data_disk_mb")
    if not asked:
        return job.guest
    return replace(job.guest, data_mb=int(str(asked).format(**job.cell.parameters)))


def compressor(session, guest: GuestConfig) -> str:
    """The swap compressor as the guest uses it: zram's algorithm ('lzo [lzo-rle] zstd' -> 'lzo-rle') or
    zswap's; '' for a disk. A zswap boot fails here, with the reason, when its kernel did not turn zswap
    on, or took another compressor than the one asked for (a kernel falls back to its default compressor
    when it lacks the one on its command line)."""
    swap = guest.swap
    if swap == "zswap":
        enabled = session.run("cat /sys/module/zswap/parameters/enabled", check=False).stdout.strip()
        if enabled != "Y":
            raise CellFailed(why="zswap is not on in the guest (a kernel without CONFIG_ZSWAP?): build with "
                                 "kconfigs/zswap.config")
        used = session.run("cat /sys/module/zswap/parameters/compressor").stdout.strip()
        if used != guest.zswap_compressor:
            raise CellFailed(why=f"zswap compresses with {used}, not {guest.zswap_compressor}: the kernel lacks "
                                 f"that compressor; add its CONFIG_CRYPTO_ option to a fragment")
        return used
    if swap != "zram":
        return ""
    said = session.run(["cat", "/sys/block/zram0/comp_algorithm"]).stdout
    chosen = [word.strip("[]") for word in said.split() if word.startswith("[")]
    return chosen[0] if chosen else said.strip()


def _measure(job: Job, session, raw_dir: Path, so_far: _SoFar):
    """Run every phase of the workload with the collectors around it; what the phases find and check goes
    into so_far as they end.

    Returns (phases, warnings, problems, gates): the figures of each phase, warnings to keep,
    reasons the run is invalid that the phases showed, and the workload's gates.
    """
    collector = collectors.Collector(session)
    try:
        counting, warnings = _set_up_counting(job, collector)
        driver = drivers.driver(job.cell.workload, job.cell.parameters, session)
        warnings += driver.prepare(job.kernel)
        plan, skipped = kernel_phases(driver, job.kernel.options,
                                      lambda path: session.run(["test", "-e", path], check=False).status == 0)
        findings = _run_phases(job, raw_dir, driver, plan, counting, so_far)
    finally:
        collector.close()
    return findings.phases, warnings + skipped + findings.warnings, findings.problems, driver.gates()


@dataclass(frozen=True)
class _Counting:
    """What the collectors count around every phase of a cell in its guest (no probes: a timed cell)."""
    collector: collectors.Collector
    probes: tuple[str, ...]
    cow_probe: str
    fault_probe: str
    layout: Layout | None
    calls: tuple[str, ...]

    def around(self, driver: drivers.Driver, phase: str) -> collectors.Phase:
        """The collectors around one phase: the workload process's own counters too, except in the idle phase."""
        return collectors.Phase(self.collector, self.probes, self.cow_probe, driver.pid if phase != "idle" else None,
                                driver.cgroup, self.layout, self.fault_probe, self.calls)


def _set_up_counting(job: Job, collector: collectors.Collector) -> tuple[_Counting, list[str]]:
    """(what to count, warnings): the probes, the cause event and the calls set up in the guest of a
    counted cell, in one round trip; the warnings name the causes and calls that cannot be counted on
    this kernel."""
    spec = job.experiment
    probes = spec.probes if job.cell.mode == "counted" else ()
    cow_layout = job.kernel.layout if probes else None
    warnings: list[str] = []
    if cow_layout is not None and cow_layout.unavailable:
        warnings.append(f"no copy causes on this kernel: {cow_layout.unavailable}")
    unseen = list(job.calls)
    if probes:
        refused, unseen = collectors.start(collector, probes, cow_layout, job.calls)
        if refused:
            warnings.append(refused)
            cow_layout = None
    # a function this kernel lacks (added or removed by a patch) has no calls.FUNCTION in its boots
    calls = tuple(function for function in job.calls if function not in unseen)
    return _Counting(collector, probes, spec.cow_probe, spec.fault_probe, cow_layout, calls), warnings


@dataclass
class _Findings:
    """What the phases of a cell found: each phase's figures added up, warnings to keep, and reasons the
    run is invalid."""
    phases: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, phase: str, counters: collectors.PhaseCounters, outcome: drivers.PhaseOutcome) -> None:
        """Add what one run of phase found (a phase may run more than once)."""
        accumulate(self.phases.setdefault(phase, {}), counters.metrics, outcome)
        self.warnings += [f"{phase}: {w}" for w in counters.warnings]
        self.problems += [f"{phase}: {p}" for p in counters.problems if f"{phase}: {p}" not in self.problems]


def _run_phases(job: Job, raw_dir: Path, driver: drivers.Driver, plan: list[str], counting: _Counting,
                so_far: _SoFar) -> _Findings:
    """Run the phases of plan in order, the workload started for the first that is not idle and stopped
    after the last (or the one that failed); what each phase found and checked goes into so_far as it ends,
    and what the workload's last check finds (driver.problems) after the last."""
    findings = _Findings()
    started_driver = False
    try:
        for index, phase in enumerate(plan):
            so_far.ran.append(phase)
            if phase != "idle" and not started_driver:
                driver.start()
                started_driver = True
            if started_driver:
                driver.before(phase)
            with counting.around(driver, phase) as counters:
                try:
                    outcome = driver.idle() if phase == "idle" else driver.run_phase(phase)
                except BadWorkload as error:    # an error line that says what it read back wrong first
                    so_far.found.extend(getattr(error, "found", []))
                    raise
            write_raw(raw_dir, _raw_name(job, index, phase), counters.raw + "\n" + outcome.raw() + "\n")
            so_far.ended(phase, outcome)
            findings.add(phase, counters, outcome)
            _log_phase(job, phase, counters, outcome)
        if started_driver:
            findings.problems += driver.problems()
            for phase, checked in driver.final_checks.items():     # a check after the phases: its figures only
                findings.phases.setdefault(phase, {}).update(checked.figures())
                so_far.ended(phase, drivers.PhaseOutcome(0, 0.0, checked=checked))
    finally:
        if started_driver:
            _stop(driver)
    return findings


def _raw_name(job: Job, index: int, phase: str) -> str:
    """The name of the raw file of the index-th phase of a cell."""
    cell = job.cell
    point = f"-{cell.point.label.replace('=', '').replace(',', '-')}" if cell.point.label else ""
    return f"{cell.workload.name}-{job.kernel.variant}{point}-rep{cell.rep}-{cell.mode}-{index:02d}-{phase}.txt"


def _log_phase(job: Job, phase: str, counters: collectors.PhaseCounters, outcome: drivers.PhaseOutcome) -> None:
    """Log what a phase took and the copies it made, as it ends."""
    log.debug("  %s rep %d %s %-8s %6.2f s  cow_copies %s", job.kernel.variant, job.cell.rep, job.cell.mode, phase,
              outcome.duration_s, copies_said(counters.metrics))


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


def kernel_phases(driver: drivers.Driver, options: dict, exists=None) -> tuple[list[str], list[str]]:
    """(the driver's phases that this kernel can run, a warning naming the ones it cannot): a workload's
    `requires` maps a phase to the CONFIG_ option it needs, checked in the kernel's .config options (all
    run when they are unknown), or to a path that must exist in the booted guest (exists(path))."""
    plan, needs = driver.phase_plan(), dict(driver.workload.setting("requires", {}))
    if not needs:
        return plan, []
    missing = {phase: need for phase, need in needs.items()
               if (need.startswith("CONFIG_") and options and options.get(need) not in ("y", "m"))
               or (need.startswith("/") and exists is not None and not exists(need))}
    skipped = [phase for phase in dict.fromkeys(plan) if phase in missing]
    if not skipped:
        return plan, []
    said = ", ".join(f"{phase} ({missing[phase]})" for phase in skipped)
    kept = [phase for phase in plan if phase not in missing]
    return kept, [f"phases skipped, the kernel lacks what they need: {said}"]


def _stop(driver: drivers.Driver) -> None:
    """Stop the workload; a guest that is gone already cannot be told, and that is no new error."""
    try:
        driver.stop()
    except Exception as error:    # the phase's own error (or none) is what the cell reports
        log.debug("stopping %s: %s", driver.workload.name, error)


def accumulate(totals: dict, figures: dict, outcome: drivers.PhaseOutcome) -> None:
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
