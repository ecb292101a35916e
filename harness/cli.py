"""Command line: parse, call one function, print. A HarnessError that reaches a command becomes one line and the
log path (harness/errors.py says where else one is caught, and why)."""

import functools
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path

import click
import pandas as pd

from harness import bench, cache, checks, covers, doctor, experiment, history, project, results, trial, workloads
from harness import bisect as bisects
from harness.analysis import analyse as analysis
from harness.analysis import plots, tables
from harness.errors import (
    BisectOutputNotEmpty,
    CacheUnusable,
    HarnessError,
    MissingPackages,
    NoCommand,
    NoSuchTree,
    NothingToCompare,
    ResumeTakesNoChoices,
    TryOutputNotEmpty,
    UnknownExperiment,
)
from harness.files import FULL, disk_full
from harness.guest import boot, vm
from harness.guest import image as guest_image
from harness.kernel import build, checkpatch, importer, patches, source
from harness.measure import dispatch, drivers, worker

log = logging.getLogger("harness")

JOBS_HELP = ("Cells at once: on this machine (a local Dask cluster) or on each --cluster host. 'auto': as many as the "
             "cores when every boot is counted (the guests share cores, which moves no count), one at a time when "
             "boots are timed. A number N with timed boots gives each guest at most the cores per cell.")


class _ConsoleFilter(logging.Filter):
    """Without -v the console shows progress, not command lines and their output."""

    def __init__(self, verbose):
        super().__init__()
        self.verbose = verbose

    def filter(self, record):
        return self.verbose or record.name not in ("harness.run", "harness.output")


class _LogFile(logging.FileHandler):
    """The log file; when it cannot be written (a full disk), one warning and the console goes on alone."""

    def handleError(self, record):
        logging.getLogger("harness").removeHandler(self)
        error = sys.exc_info()[1]
        click.echo(f"warning: the log {self.baseFilename} cannot be written ({error}); the console goes on "
                   "without it", err=True)


def _setup_logging(cache_dir: Path, verbose: bool, command: str) -> Path:
    logs = cache_dir / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise (disk_full(logs) if error.errno in FULL else CacheUnusable(path=cache_dir, why=error.strerror)) from None
    log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}.log"
    root = logging.getLogger("harness")
    root.setLevel(logging.DEBUG)
    root.handlers.clear()
    file_handler = _LogFile(log_path, delay=True)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.addFilter(_ConsoleFilter(verbose))
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(file_handler)
    root.addHandler(console)
    return log_path


def _command_name(context) -> str:
    """'patch-import' for `harness patch import`, however the program was started."""
    names = []
    while context.parent is not None:
        names.insert(0, context.info_name)
        context = context.parent
    return "-".join(names)


def _guarded(function):
    """Run a command; a HarnessError becomes one line on stderr plus the log path, exit 1.
    A full disk anywhere is one such error; Ctrl-C and SIGTERM print one line too."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        context = click.get_current_context()
        try:
            log_path = _setup_logging(context.obj["cache_dir"], context.obj["verbose"], _command_name(context))
        except HarnessError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        log.debug("harness %s", " ".join(sys.argv[1:]))
        try:
            done = function(*args, **kwargs)
        except BaseException as error:
            if _stop.asked is not None or isinstance(error, KeyboardInterrupt):
                _stopped(error, log_path)
            if isinstance(error, OSError) and error.errno in FULL:
                error = disk_full(Path(error.filename or context.obj["cache_dir"]))
            if not isinstance(error, HarnessError):
                raise
            log.debug("error: %s", error)
            click.echo(f"error: {error}", err=True)
            click.echo(f"(log: {log_path})", err=True)
            sys.exit(1)
        if _stop.asked is not None:      # a stop a finalizer swallowed before the command ended: still a stop
            _stopped(None, log_path)
        return done
    return wrapper


def _stopped(error: BaseException | None, log_path: Path) -> None:
    """Ctrl-C or SIGTERM: one line and the exit status of the signal, whatever the stop broke on its way out (a
    lock it interrupted in the standard library, a guest command it cut short), which goes to the log only."""
    _stop.reported = True
    if error is not None and not isinstance(error, (KeyboardInterrupt, Terminated)):
        log.debug("stopping: %s: %s", type(error).__name__, error, exc_info=error)
    if _stop.asked == signal.SIGTERM:
        click.echo(f"terminated by SIGTERM (log: {log_path})", err=True)
        sys.exit(128 + signal.SIGTERM)
    click.echo(f"interrupted (log: {log_path})", err=True)
    sys.exit(130)


def _version() -> str:
    try:
        return package_metadata.version("harness")
    except package_metadata.PackageNotFoundError:
        return "unknown (not installed: run make setup)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="harness", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True,
              help="Show host and guest commands with their output, and each phase as it ends.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("~/.cache/harness").expanduser(),
              show_default=True, help="Kernel sources, builds, ccache and logs.")
@click.pass_context
def main(context, verbose, cache_dir):
    """Build a kernel with and without an mm patch, boot both, measure what changed."""
    context.obj = {"verbose": verbose, "cache_dir": cache_dir.expanduser().resolve()}
    _stop_on_signals()


class Terminated(SystemExit):
    """SIGTERM, raised where the harness is: it unwinds like Ctrl-C."""


@dataclass
class _StopState:
    """What this process was asked to stop by, and how far the stop got."""
    asked: int | None = None        # the signal, once one came
    raised: int = 0                 # stops the handlers raised
    swallowed: int = 0              # of them, those a finalizer dropped (sys.unraisablehook saw them)
    reported: bool = False          # _stopped() has said it: the harness is on its way out
    hook: object = None             # the unraisablehook before ours


_stop = _StopState()
STOP_AGAIN_S = 0.05     # after the finalizer: a signal made again at once would land in it (or in the hook)


def _terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so that child process groups and staging folders are cleaned up."""
    _stop.asked, _stop.raised = signum, _stop.raised + 1
    raise Terminated(128 + signum)


def _interrupt(signum, frame):
    """Ctrl-C, as Python's own handler, remembered."""
    _stop.asked, _stop.raised = signum, _stop.raised + 1
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGTERM unwinds like Ctrl-C, and either is remembered (_guarded reports the stop whatever it broke on its way
    out, or when the command ends); a stop that lands in a finalizer is made again. Python runs a signal's handler
    wherever the main thread is, and when that is a __del__ (Dask's futures, paramiko's channels and Popen objects
    have them, run whenever the last reference goes) it prints the exception as "ignored" and goes on: the run
    would finish as if never asked to stop."""
    global _stop
    _stop = _StopState(hook=_stop.hook if sys.unraisablehook is _stop_again else sys.unraisablehook)
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:    # not where SIGINT is ignored
        signal.signal(signal.SIGINT, _interrupt)
    sys.unraisablehook = _stop_again


def _stop_again(unraisable) -> None:
    """sys.unraisablehook: a stop a finalizer dropped is made again from another thread a moment later, once the
    main thread has left the finalizer; not while another stop is on its way out (the harness is cleaning up, which
    a stop made again would cut short). Anything else goes to the hook before ours."""
    stops = {Terminated: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}
    again = next((number for kind, number in stops.items() if isinstance(unraisable.exc_value, kind)), None)
    if again is None:
        (_stop.hook or sys.__unraisablehook__)(unraisable)
        return
    _stop.swallowed += 1
    if _stop.raised > _stop.swallowed or _stop.reported:
        return
    timer = threading.Timer(STOP_AGAIN_S, _interrupt_unless_reported, args=(again,))
    timer.daemon = True
    timer.start()


def _interrupt_unless_reported(signum: int) -> None:
    """The signal again, to the main thread: a real one, which also ends a wait it is blocked in."""
    if not _stop.reported:
        signal.pthread_kill(threading.main_thread().ident, signum)


@main.command(name="doctor")
@click.option("--install", is_flag=True, help="Install what is missing with apt-get (as root).")
@click.option("--worker", "as_worker", is_flag=True,
              help="Check this machine as a worker of a cluster (--cluster, --scheduler): it only boots the kernels "
              "it is sent.")
@click.option("--tests", is_flag=True, help="Also what only the tests need.")
@click.pass_obj
@_guarded
def doctor_command(obj, install, as_worker, tests):
    """Check every host prerequisite; exit 1 if one is missing."""
    items = doctor.WORKER if as_worker else doctor.TESTS if tests else doctor.HOST
    packages = doctor.missing_packages(items)
    if install and packages:
        if os.geteuid() != 0:
            raise MissingPackages(packages=" ".join(packages), command=" ".join(doctor.install_command(packages)))
        doctor.install_missing(items)
    for line in doctor.report(items):
        click.echo(line)
    if as_worker:
        for line in doctor.worker_lines(worker.facts()):
            click.echo(line)
        if doctor.problems(items):
            sys.exit(1)
        return
    kernels = sorted((obj["cache_dir"] / "builds").glob("*/bzImage"), key=lambda path: path.stat().st_mtime)
    with tempfile.TemporaryDirectory(prefix="harness-kvm-") as scratch:
        click.echo(doctor.kvm_line(*vm.kvm_boots(kernels[-1] if kernels else None, Path(scratch))))
    usage = cache.usage(obj["cache_dir"])
    parts = ", ".join(f"{part} {cache.human(count)}" for part, count in usage.items() if count)
    click.echo(f"cache      {obj['cache_dir']}: {cache.human(sum(usage.values()))}" + (f" ({parts}); "
               "'harness clean' frees it" if parts else ""))
    if doctor.problems(items):
        sys.exit(1)


@main.command(name="clean")
@click.option("--builds", is_flag=True, help="Kernel builds (each rebuilds in minutes).")
@click.option("--images", is_flag=True, help="Guest images and compiled guest programs.")
@click.option("--logs", is_flag=True, help="Harness logs and serial console logs.")
@click.option("--all", "everything", is_flag=True, help="All of these, and sources, downloads and ccache.")
@click.option("--keep", type=click.IntRange(0), default=0, show_default=True,
              help="Keep the N most recently used entries of each part.")
@click.pass_obj
@_guarded
def clean_command(obj, builds, images, logs, everything, keep):
    """Free space in the cache: remove builds, images or logs, and say how much was freed.

    Without an option, show what each part of the cache holds and remove nothing.
    """
    cache_dir = obj["cache_dir"]
    parts = cache.PARTS if everything else [part for part, wanted in
                                            (("builds", builds), ("images", images), ("logs", logs)) if wanted]
    if not parts:
        for part, count in cache.usage(cache_dir).items():
            click.echo(f"{part:10} {cache.human(count):>10}  {len(cache.entries(cache_dir, part))} entries")
        click.echo("nothing removed: pick --builds, --images, --logs or --all (with --keep N)")
        return
    for done in cache.clean(cache_dir, parts, keep):
        busy = f", {done.busy} in use by another harness" if done.busy else ""
        click.echo(f"{done.part}: removed {done.removed}, kept {done.kept}{busy}; freed {cache.human(done.freed)}")


@main.group(name="source")
def source_group():
    """Kernel source trees."""


@source_group.command(name="fetch")
@click.argument("spec", default=source.DEFAULT_SPEC)
@click.pass_obj
@_guarded
def source_fetch(obj, spec):
    """Print the path of the unpacked tree for SPEC, fetching it once."""
    click.echo(source.fetch(source.parse_spec(spec), obj["cache_dir"]))


def _tree(text: str | None, cache_dir: Path, experiment_name: str | None = None) -> tuple[Path, str]:
    """(tree, what it is) for --tree: a directory, or a source SPEC; by default the source of the experiment
    (-e, or the default experiment)."""
    if text and Path(text).expanduser().is_dir():
        return Path(text).expanduser().resolve(), "the folder given"
    if text and ":" not in text:
        raise NoSuchTree(path=text)
    if text:
        return source.fetch(source.parse_spec(text), cache_dir), text
    spec = experiment.load(experiment_name)
    return source.fetch(source.parse_spec(spec.source), cache_dir), f"{spec.source}, experiment {spec.name}'s kernel"


class _NumberOrAuto(click.ParamType):
    """--reps and --jobs: a number of at least 1, or 'auto'."""
    name = "N|auto"

    def convert(self, value, param, ctx):
        if str(value) == "auto":
            return "auto"
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not at least 1", param, ctx)
        return number


# options several commands take, declared once
_EXPERIMENT = click.option("-e", "--experiment", "experiment_name", help="Experiment name in experiments/ or a .toml "
                           "path.")
_ACCEL = click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
                      help="auto uses KVM when a guest makes progress under it, else TCG.")
_JOBS = click.option("--jobs", type=_NumberOrAuto(), default="auto", show_default=True, help=JOBS_HELP)
_MAX_REPS = click.option("--max-reps", type=click.IntRange(2), default=10, show_default=True,
                         help="The limit of --reps auto.")
_TIMING_EVEN_UNDER_TCG = click.option("--timing", is_flag=True, help="Boot each cell without probes as well, for "
                                      "timings, even where the guests run under TCG [default: only where they run "
                                      "under KVM].")


_EXPERIMENT_TREE = click.option("-e", "--experiment", "experiment_name",
                                help="Take the kernel tree from this experiment's source [default: the default "
                                     "experiment's].")


@main.group(name="patch")
def patch_group():
    """Import and check patches."""


@patch_group.command(name="import")
@click.argument("message", type=click.Path(exists=True, path_type=Path))
@click.option("--tree", help="Kernel tree (folder or source SPEC) to anchor on [default: the experiment's source].")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The patch file; with --series, the folder the patches go to.")
@click.option("--series", is_flag=True, help="MESSAGE is a series (an mbox or a folder of .patch files): write "
              "every patch into the -o folder and print an experiment [series] stanza.")
@click.option("--author", default="", help="Override the author, 'Name <email>'.")
@click.option("--upstream", default="", help="Upstream commit id to record in the message.")
@_EXPERIMENT_TREE
@click.pass_obj
@_guarded
def patch_import(obj, message, tree, output, series, author, upstream, experiment_name):
    """Turn MESSAGE (format-patch, mbox, or a quoted, mangled mail) into a clean patch for TREE.

    Every patch written is checked with git apply --check (in series order) and with the tree's
    own scripts/checkpatch.pl, whose findings are printed.
    """
    tree_path, which = _tree(tree, obj["cache_dir"], experiment_name)
    click.echo(f"tree: {tree_path} ({which})")
    done = importer.import_patches(message, tree_path, output, series, author, upstream)
    for written in done.written:
        click.echo(f"{written.path}: {checkpatch.summary(written.findings, tree_path)}")
        for finding in written.findings or []:
            click.echo(f"  {finding}")
    click.echo(f"git apply --check accepts {'the series' if series else 'it'} on {tree_path}" if done.applies
               else done.detail)
    if series:
        click.echo("\n" + done.stanza())
    if not done.applies:
        sys.exit(1)


@patch_group.command(name="check")
@click.argument("patch_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tree", help="Kernel tree (folder or source SPEC) [default: the experiment's source].")
@_EXPERIMENT_TREE
@click.pass_obj
@_guarded
def patch_check(obj, patch_files, tree, experiment_name):
    """Say whether the series PATCH... applies to TREE, in order, hunk by hunk."""
    tree_path, which = _tree(tree, obj["cache_dir"], experiment_name)
    click.echo(f"tree: {tree_path} ({which})")
    checked = patches.check(patch_files, tree_path)
    for report in checked.reports:
        mark = "ok  " if report.ok else "FAIL"
        click.echo(f"{mark} {report.patch} {report.file} hunk {report.number} {report.header}: {report.detail}")
    click.echo("series applies (git apply --check)" if checked.applies else
               f"series does not apply: {checked.detail}")
    if not checked.ok:
        sys.exit(1)


@main.command(name="build")
@_EXPERIMENT
@click.option("--variant", "variants", multiple=True, help="Variant to build (repeatable) [default: all].")
@click.option("--rebuild", is_flag=True, help="Build again even when a cached build exists.")
@click.pass_obj
@_guarded
def build_command(obj, experiment_name, variants, rebuild):
    """Build bzImage and System.map for each variant and print where they are."""
    spec = experiment.load(experiment_name)
    for result in build.build_all(spec, spec.select(variants), obj["cache_dir"], rebuild):
        click.echo(f"{result.variant}: {result.bzimage} ({result.release}, patches: "
                   f"{', '.join(result.patches) or 'none'}, config {result.config_hash}, {result.duration_s:.0f} s)")


@main.command(name="boot", context_settings={"ignore_unknown_options": True})
@_EXPERIMENT
@click.option("--variant", required=True, help="Variant whose kernel to boot.")
@_ACCEL
@click.option("--dry-run", is_flag=True, help="Print the QEMU command line and exit.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds the guest command may take.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
@_guarded
def boot_command(obj, experiment_name, variant, accel, dry_run, timeout, command):
    """Boot VARIANT's kernel, run COMMAND in the guest over SSH, print its output, shut down.

    Exits with COMMAND's exit status. Without COMMAND, opens a shell (when stdin is a terminal).
    """
    spec = experiment.load(experiment_name)
    [built] = build.build_all(spec, spec.select([variant]), obj["cache_dir"])
    image = guest_image.build(obj["cache_dir"])
    if dry_run:
        for line in boot.dry_run(built, spec.guest, accel, obj["cache_dir"]):
            click.echo(line)
        return
    if not command and not sys.stdin.isatty():
        raise NoCommand()
    with boot.booted(built, image, spec.guest, accel, obj["cache_dir"] / "logs" / "boots",
                     obj["cache_dir"] / "boots") as guest:
        if not command:
            guest.session.interactive_shell()
            return
        result = guest.session.run(list(command), timeout=timeout, check=False)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
    sys.exit(result.status)


def _run_options(function):
    """The options `run` and `bench` share."""
    options = [
        _EXPERIMENT,
        click.option("--workload", "workload_names", multiple=True,
                     help="Workload (repeatable) [default: the experiment's]."),
        click.option("--variant", "variants", multiple=True, help="Variant (repeatable) [default: all]."),
        click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory [default: results/<timestamp>-<experiment>]."),
        click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path),
                     help="Finish the interrupted run in this directory."),
        click.option("-p", "--param", "settings", multiple=True, help="Workload parameter NAME=VALUE (repeatable)."),
        _ACCEL,
        click.option("--seed", type=int, help="Seed of the cell order [default: random, recorded]."),
        click.option("--force", is_flag=True, help="Judge a variant whose object code is the baseline's as a "
                     "variant [default: it runs as an A/A control]."),
        _JOBS,
        click.option("--cluster", default="", metavar="ssh://HOST1,HOST2",
                     help="Run the cells on Dask workers started over SSH (the scheduler on HOST1); builds stay here."),
        click.option("--scheduler", default="", metavar="tcp://HOST:PORT",
                     help="Run the cells on the workers of a running Dask scheduler."),
        click.option("--worker-cache", default=worker.WORKER_CACHE, show_default=True,
                     help="Where a remote worker keeps the kernels and images it is sent."),
        click.option("--ssh-config", type=click.Path(dir_okay=False, path_type=Path),
                     help="OpenSSH client config for --cluster [default: ~/.ssh/config]."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _placement(jobs: int | str, cluster: str, scheduler: str, worker_cache: str, ssh_config: Path | None):
    """The placement asked for; --jobs auto on a cluster is one cell at a time on each host."""
    if jobs == "auto":
        jobs = 1 if cluster or scheduler else None      # None: bench.cells_at_once decides
    placement = dispatch.Placement(jobs, cluster, scheduler, worker_cache, str(ssh_config or ""))
    dispatch.check(placement)
    return placement


def _fixed_on_the_command_line() -> tuple[str, ...]:
    """The options that fix a run's plan and were given on this command line (what --resume refuses)."""
    context = click.get_current_context(silent=True)
    given = context and any(context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
                            for name in ("reps", "max_reps", "no_probes", "timing") if name in context.params)
    return ("--reps/--max-reps/--timing/--no-probes",) if given else ()


def _command_line() -> str:
    return shlex.join(["harness", *sys.argv[1:]])


@main.group(name="experiment")
def experiment_group():
    """Experiment files."""


@experiment_group.command(name="check")
@click.argument("name_or_file")
@click.option("--no-fetch", is_flag=True, help="Do not fetch the kernel source to try the patches on it.")
@click.pass_obj
@_guarded
def experiment_check(obj, name_or_file, no_fetch):
    """Check everything about an experiment that needs no build: the file, its kernel spec and checksum form,
    fragments, workloads and parameters, that each variant's patches apply, the primary rows' phases and
    metrics, the sweep. Exits 1 when a check fails."""
    found = checks.check_experiment(name_or_file, obj["cache_dir"], not no_fetch)
    for check in found:
        click.echo(check.line())
    if any(check.problem for check in found):
        sys.exit(1)


@main.command(name="metrics")
@click.option("--workload", help="Only the metrics this workload produced.")
@click.option("--run", "run_dirs", multiple=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Whose samples say which phases produce each metric [default: the committed reference run].")
@click.pass_obj
@_guarded
def metrics_command(obj, workload, run_dirs):
    """Every metric: its name (or pattern), kind, direction, unit and scope, and the workload phases that
    produced it in the runs."""
    if workload:
        workloads.load(workload)
    references = sorted((project.ROOT / "results").glob("reference-*"))
    if not run_dirs and not references:
        raise click.UsageError("no reference run in results/ to read the phases from: pass --run DIR")
    dirs = list(run_dirs) or references[-1:]
    click.echo(f"(phases as produced in {', '.join(map(str, dirs))})")
    lines = checks.metric_lines(dirs, workload)
    for line in lines:
        click.echo(line)
    if workload and not lines:
        click.echo(f"no run given measured {workload}: pass --run DIR of one that did")


@main.command(name="workloads")
@_EXPERIMENT
@click.option("--covers", "asked", is_flag=True, help="Say which workload phases call each FUNCTION.")
@click.option("--variant", help="Whose kernel (and, with --run, whose boots) answers --covers [default: the "
              "baseline].")
@click.option("--workload", "workload_names", multiple=True, help="Workload (repeatable) [default: every one shipped].")
@click.option("-p", "--param", "settings", multiple=True, help="Workload parameter NAME=VALUE (repeatable).")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Take the counts from this run's counted boots instead of profiling boots.")
@_ACCEL
@click.argument("functions", nargs=-1)
@click.pass_obj
@_guarded
def workloads_command(obj, experiment_name, asked, variant, workload_names, settings, run_dir, accel, functions):
    """List the shipped workloads and their phases; with --covers FUNCTION..., which phases call each function
    on a built kernel of the experiment (one short counted boot per workload, kept with the build)."""
    spec = experiment.load(experiment_name)
    names = workload_names or tuple(workloads.discover())
    chosen = workloads.choose(names, settings, {name: spec.parameters_of(name) for name in names})
    if not asked:
        if functions:
            raise click.UsageError("FUNCTION... goes with --covers")
        for workload, params in chosen:
            phases = drivers.driver(workload, params, None).phase_plan()
            defaults = dict(workload.parameters)
            click.echo(f"{workload.name}: {workload.description}\n  phases: {', '.join(phases)}\n  parameters: "
                       + ", ".join(f"{key}={value}" + (f" (default {defaults[key]})" if value != defaults[key] else "")
                                   for key, value in params.items()))
        return
    if not functions:
        raise click.UsageError("--covers needs at least one FUNCTION")
    if run_dir:
        found = covers.from_run(run_dir, functions, variant)
    else:
        found = covers.profile(spec, variant or spec.variants[0].name, functions, chosen, obj["cache_dir"], accel)
    for line in found.lines():
        click.echo(line)


@main.command(name="run")
@_run_options
@click.option("--reps", type=click.IntRange(1), default=1, show_default=True, help="Boots per variant.")
@click.option("--no-probes", is_flag=True, help="No perf and no profiler: vmstat and timings only (timed boots).")
@click.option("--timing", is_flag=True, help="Also boot each cell without probes, for timings (timed boots).")
@click.pass_obj
@_guarded
def run_command(obj, experiment_name, workload_names, variants, output, resume, settings, accel, seed, force, jobs,
                cluster, scheduler, worker_cache, ssh_config, reps, no_probes, timing):
    """Boot each variant (fresh boot and swap disk per repetition) and measure the workloads."""
    modes = ("timed",) if no_probes else bench.MODES if timing else ("counted",)
    placement = _placement(jobs, cluster, scheduler, worker_cache, ssh_config)
    request = bench.request(bench.Asked(
        experiment_name, workload_names, variants, reps, output, resume, settings, accel, seed, modes, force=force,
        placement=placement, command_line=_command_line(), fixed=_fixed_on_the_command_line()))
    directory = bench.run(request, obj["cache_dir"])
    valid = sum(record.valid for record in directory.runs)
    wrong = sum(bool(record.findings) for record in directory.runs)
    found = (f"; {wrong} found something wrong (runs.csv `findings`; `harness compare` judges them against "
             "the baseline)" if wrong else "")
    click.echo(f"{directory.path}: {valid} of {len(directory.runs)} runs valid{found}")


@main.command(name="bench")
@_run_options
@click.option("--reps", type=_NumberOrAuto(), default=str(bench.DEFAULT_REPS), show_default=True,
              help=f"Boots per variant, workload and mode; 'auto': {bench.AUTO_FIRST_LOOK} first, then one more "
                   "block at a time until every primary row is decided or --max-reps.")
@_MAX_REPS
@click.option("--control", is_flag=True, help="Interleave the baseline kernel once more as variant 'control'.")
@_TIMING_EVEN_UNDER_TCG
@click.pass_obj
@_guarded
def bench_command(obj, experiment_name, workload_names, variants, output, resume, settings, accel, seed, force,
                  jobs, cluster, scheduler, worker_cache, ssh_config, reps, max_reps, control, timing):
    """Build every variant, run every workload of the experiment, compare, plot and report.

    Every cell boots with probes (counts) in each repetition, and, where the guests run under KVM (or
    with --timing), once more without them (timings): under TCG a guest second is the emulator's.
    """
    asked = bench.Asked(experiment_name, workload_names, variants, output=output, resume=resume, settings=settings,
                        accel=accel, seed=seed, modes=bench.MODES, control=control, force=force,
                        placement=_placement(jobs, cluster, scheduler, worker_cache, ssh_config),
                        timing="always" if timing else "kvm", command_line=_command_line(),
                        fixed=_fixed_on_the_command_line(), **_repetitions(reps, max_reps))
    _end_with_the_answer(bench.run_and_analyse(bench.request(asked), obj["cache_dir"]))


@main.command(name="try")
@click.argument("patch_paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path),
                metavar="PATCH...")
@click.option("--kernel", help="A source SPEC, or 5.10, 6.1, 6.12...: Debian's newest package of that series "
              "[default: the template experiment's kernel].")
@click.option("--tree", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A local kernel git tree, built at its HEAD commit.")
@click.option("-e", "--experiment", "template", help="The experiment whose kernel configuration, probes and guest "
              "the trial takes [default: the default experiment].")
@click.option("--workload", "workload_names", multiple=True,
              help="Run this workload (repeatable) [default: those whose phases call the changed functions].")
@click.option("-p", "--param", "settings", multiple=True, help="Workload parameter [WORKLOAD.]NAME=VALUE (repeatable).")
@click.option("--guest", "guest_settings", multiple=True, metavar="KEY=VALUE",
              help="The machine the variants boot in, over the template's [guest] (repeatable): swap=zram, "
                   "memory_mb=2048, thp=always...")
@click.option("--reps", type=_NumberOrAuto(), default=str(bench.DEFAULT_REPS), show_default=True,
              help="Boots per variant, workload and mode; 'auto' adds boots only while a variant loses more of them "
                   "than the baseline (a discovery declares no rows to decide).")
@_MAX_REPS
@click.option("--dry-run", is_flag=True, help="Print the experiment, the changed functions and the workloads "
              "chosen; build only what choosing them needs, and measure nothing.")
@click.option("--force", is_flag=True, help="Run even when the patch changes no object code (as an A/A control) "
              "or no workload runs it (every shipped workload).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory [default: results/<timestamp>-try-<patch subject>].")
@_ACCEL
@_JOBS
@_TIMING_EVEN_UNDER_TCG
@click.pass_obj
@_guarded
def try_command(obj, patch_paths, kernel, tree, template, workload_names, settings, guest_settings, reps, max_reps,
                dry_run, force, output, accel, jobs, timing):
    """Build the kernel without and with PATCH... (files, mboxes, folders of patches or quoted mails; a
    series gives cumulative variants), pick the workloads that run the code it changes, run them with a
    control, and report what changed, as a discovery: every row at a 5% false-discovery rate.

    The experiment it writes into the run folder reruns the trial with `harness bench -e`; the report's
    confirm.toml declares what was found, for a confirmatory run on fresh boots.
    """
    command = shlex.join(["harness", *sys.argv[1:]])
    if kernel and tree:
        raise click.UsageError("--kernel and --tree both name the kernel: pass one of them")
    out_dir = output or None
    if out_dir and not results.RunDirectory.is_fresh(out_dir):
        raise TryOutputNotEmpty(path=out_dir)
    guest = trial.guest_settings(guest_settings)     # a typo costs no download
    found = trial.prepare(list(patch_paths), kernel, tree, template, workload_names, settings, obj["cache_dir"],
                          accel, force, command, guest)
    _say_chosen(found)
    if dry_run:
        click.echo("\n" + found.text)
        return
    out_dir = out_dir or results.default_directory(f"{found.name}-{found.slug}")
    if not results.RunDirectory.is_fresh(out_dir):
        raise TryOutputNotEmpty(path=out_dir)
    path = found.write(out_dir)
    click.echo(f"experiment: {path}")
    asked = bench.Asked(str(path), output=out_dir, settings=settings, accel=accel, modes=bench.MODES, control=True,
                        placement=_placement(jobs, "", "", worker.WORKER_CACHE, None),
                        timing="always" if timing else "kvm", command_line=command, **_repetitions(reps, max_reps))
    _end_with_the_answer(bench.run_and_analyse(bench.request(asked), obj["cache_dir"]))


@main.command(name="bisect")
@click.option("--tree", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A kernel git repository whose commits from --good to --bad are bisected.")
@click.option("--good", help="A commit that behaves as before (left out: the candidates come after it).")
@click.option("--bad", help="A later commit that moves the row (its first-parent history is bisected).")
@click.option("--series", "patch_paths", multiple=True, type=click.Path(exists=True, path_type=Path),
              metavar="PATCH", help="Bisect a series instead (repeatable; files, mboxes, folders): the first patch "
              "whose prefix moves the row, on --kernel.")
@click.option("--kernel", help="The kernel a --series applies to: a source SPEC, or 5.10, 6.1... [default: the "
              "template experiment's kernel].")
@click.option("--row", help="WORKLOAD/PHASE/METRIC: the row whose verdict decides each step.")
@click.option("-e", "--experiment", "template", help="The experiment whose kernel configuration, probes and guest "
              "the runs take [default: the default experiment].")
@click.option("-p", "--param", "settings", multiple=True, help="Workload parameter [WORKLOAD.]NAME=VALUE (repeatable).")
@click.option("--guest", "guest_settings", multiple=True, metavar="KEY=VALUE",
              help="The machine the kernels boot in, over the template's [guest] (repeatable).")
@_MAX_REPS
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="The bisection's folder [default: results/<timestamp>-bisect-<row>].")
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Go on with the interrupted bisection in this folder, from the steps done.")
@_ACCEL
@_JOBS
@click.pass_obj
@_guarded
def bisect_command(obj, tree, good, bad, patch_paths, kernel, row, template, settings, guest_settings, max_reps,
                   output, resume, accel, jobs):
    """Find the first commit from --good to --bad (or the first patch of a --series) that moves a counted row.

    The ends are measured first (the bad end against the good one, counted boots, --reps auto): the row must be
    better or worse there. Each step boots the candidate in the middle against the good end in a run of its own
    and takes the verdict's word: the ends' verdict is bad, no change is good, anything else (or a build that
    fails, or no valid boot) skips it, as git bisect skip does. The folder gets report.md, steps.csv and a plot.
    """
    runs = bisects.Runs(obj["cache_dir"], accel, _placement(jobs, "", "", worker.WORKER_CACHE, None))
    if resume:
        given = [name for name, value in (("--tree", tree), ("--good", good), ("--bad", bad), ("--series", patch_paths),
                                          ("--kernel", kernel), ("--row", row), ("-e", template), ("-p", settings),
                                          ("--guest", guest_settings), ("-o", output)) if value]
        if given:
            raise ResumeTakesNoChoices(path=resume, options=", ".join(given))
        found, out = bisects.Bisection.load(resume), resume
    else:
        if not row:
            raise click.UsageError("--row WORKLOAD/PHASE/METRIC is required")
        if bool(tree) == bool(patch_paths) or (tree and not (good and bad)) or (patch_paths and (good or bad)):
            raise click.UsageError("pass --tree with --good and --bad, or --series PATCH... (with --kernel)")
        out = output or results.default_directory("bisect-" + row.replace("/", "-"))
        if out.exists() and any(out.iterdir()):
            raise BisectOutputNotEmpty(path=out)
        guest = trial.guest_settings(guest_settings)
        found = bisects.new(row, template, settings, guest, max_reps, _command_line(), obj["cache_dir"], out, tree,
                            good or "", bad or "", patch_paths, kernel)
        click.echo(f"bisecting {row}: {len(found.candidates) - 1} candidate(s) after {found.candidates[0].name}, "
                   f"at most {bisects.most_steps(len(found.candidates))} step(s) without skips; folder {out}")
    found = bisects.run(found, out, runs)
    report = bisects.write(found, out)
    for line in bisects.answer(found):
        click.echo(line)
    click.echo(f"report: {report}")


@main.command(name="history")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Where history.csv and index.html go [default: history/ in the first FOLDER].")
@click.pass_obj
@_guarded
def history_command(obj, folders, output):
    """Index every run folder in or below FOLDER... [default: results/]: history.csv (one row per run and
    variant: kernel, patches, experiment, date, verdicts) and index.html, a static page with a plot per primary
    row across the runs and kernels, links to the reports, and the runs that disagree flagged."""
    folders = list(folders) or [project.ROOT / "results"]
    table, page, count = history.write(folders, output or folders[0] / "history")
    click.echo(f"{count} run(s)")
    click.echo(f"index: {table}")
    click.echo(f"page: {page}")


def _repetitions(reps: int | str, max_reps: int) -> dict:
    """Asked's reps and max_reps for --reps N or --reps auto (its first look, up to --max-reps)."""
    if reps == "auto":
        return {"reps": bench.AUTO_FIRST_LOOK, "max_reps": max(max_reps, bench.AUTO_FIRST_LOOK)}
    return {"reps": reps, "max_reps": None}


BROKEN_EXIT = 3     # the exit status of a command whose comparison found a variant broken


def _exit_if_broken(lines: list[str]) -> None:
    """Exit with BROKEN_EXIT when the comparison found a variant broken (its lines printed already): a script or a
    CI job that runs the harness must not take a broken patch for a good one."""
    if lines:
        sys.exit(BROKEN_EXIT)


def _say_chosen(found: trial.Trial) -> None:
    """What try resolved before any boot: the kernel, the patches, the functions they change, the workloads."""
    click.echo(f"kernel: {found.source}")
    click.echo(f"patches: {', '.join(found.patches)}" + (" (imported: they did not apply as given)"
                                                        if found.imported else ""))
    for variant, functions in found.changed.items():
        click.echo(f"{variant} changes: " + (", ".join(functions[:12]) + (" ..." if len(functions) > 12 else "")
                                             if functions else "no function's code"))
    click.echo("\n".join(found.choice))


def _end_with_the_answer(report_path: Path) -> None:
    """What bench and try print last: the report's answer, its path, and BROKEN_EXIT when a variant is broken."""
    for line in _answer(report_path.read_text().splitlines()):
        click.echo(line)
    click.echo(f"report: {report_path}")
    _exit_if_broken(analysis.broken_lines(report_path))


def _answer(report: list[str]) -> list[str]:
    """The report's opening paragraphs (what was read back wrong, calibration, headline, discovery, lost boots),
    as plain text, without its title; then, after a blank line, its primary section's line that says what was read
    back and its table of the primary rows (none in a discovery), when it has either."""
    heads = [k for k, line in enumerate(report) if line.startswith("## ")] + [len(report)]
    opening = [line.replace("**", "") for line in report[:heads[0]] if line and not line.startswith("# ")]
    start = report.index("## Primary hypotheses") if "## Primary hypotheses" in report else None
    section = report[start + 1:next(k for k in heads if k > start)] if start is not None else []
    checked = [line for line in section if line.startswith("Data checked in ")]
    table = [line.replace("**", "") for line in section if line.startswith("|")]
    return opening + ([""] + checked + table if checked or table else [])


@main.command(name="compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--baseline", help="Variant the others are compared with [default: the run's baseline].")
@click.option("--format", "output_format", type=click.Choice(["table", "markdown", "csv", "json", "email"]),
              default="table", show_default=True,
              help="email: plain text of at most 72 columns, the summary to mail to a list (report.txt).")
@click.option("--all", "show_all", is_flag=True, help="Every metric, not only the primary and headline ones.")
@click.pass_obj
@_guarded
def compare_command(obj, run_dirs, baseline, output_format, show_all):
    """Statistics of every variant against the baseline, with a verdict per row.

    Several RUN_DIRS are pooled (a baseline measured yesterday against today's patched runs)
    when they measured the same thing the same way; otherwise refused, naming the field.
    """
    comparison = analysis.comparison(list(run_dirs), baseline)
    rows = comparison.rows
    compared = list(dict.fromkeys(row.variant for row in rows))
    if len(compared) < 2:
        raise NothingToCompare(runs=", ".join(map(str, run_dirs)), variant=compared[0] if compared else "none")
    if output_format == "email":
        confirm = run_dirs[0] / analysis.CONFIRMATION
        headline = analysis.headline_key(analysis.recorded_experiment(run_dirs[0]), comparison)
        _, runs, metadata = results.read(run_dirs[0])
        click.echo(analysis.mail_text(run_dirs[0], comparison, headline, runs, metadata,
                                      confirm if confirm.is_file() else None),
                   nl=False)
    elif output_format == "json":
        click.echo(json.dumps([row.as_json() for row in rows], indent=1))
    elif output_format == "csv":
        click.echo(pd.DataFrame([row.as_dict() for row in rows]).to_csv(index=False), nl=False)
    elif output_format == "markdown":
        click.echo("\n".join(tables.summary_lines(comparison)) + "\n")
        click.echo(tables.render_markdown(rows, show_all))
    else:
        for line in tables.summary_lines(comparison):      # a terminal's width, not one line per paragraph
            click.echo(textwrap.fill(line, 100, subsequent_indent="  ", break_on_hyphens=False))
        click.echo()
        click.echo(tables.render_table(rows, show_all))
        click.echo(f"\n{comparison.invalid} invalid run(s) left out" if comparison.invalid else "")
    _exit_if_broken(comparison.broken)


@main.command(name="plot")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.pass_obj
@_guarded
def plot_command(obj, run_dir):
    """Write the figures of RUN_DIR into RUN_DIR/plots/ (PNG and SVG)."""
    samples, runs, metadata = results.read(run_dir)
    comparison = analysis.comparison([run_dir])
    for path in plots.plot_all(samples, runs, metadata, run_dir / "plots", comparison.rows):
        click.echo(path)


@main.command(name="report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-e", "--experiment", "experiment_name",
              help="Experiment for the headline [default: the one the run recorded].")
@click.pass_obj
@_guarded
def report_command(obj, run_dir, experiment_name):
    """Write comparison.json, comparison.md, plots/ and report.md of RUN_DIR (what bench writes after its cells)."""
    recorded = results.read_metadata(run_dir)
    spec = experiment.load(experiment_name) if experiment_name else analysis.recorded_experiment(run_dir)
    if spec is None:
        raise UnknownExperiment(name=recorded.experiment or "?", folder=project.EXPERIMENTS,
                                known=", ".join(project.names(project.EXPERIMENTS, ".toml")))
    report_path = analysis.analyse(run_dir, spec, timed=False)
    broken = analysis.broken_lines(report_path)
    for line in broken:
        click.echo(line)
    click.echo(f"report: {report_path}")
    _exit_if_broken(broken)


def _verbose_too(command: click.Command) -> None:
    """-v after the subcommand means what it means before it (`harness bench -v`); not for `boot`, whose
    COMMAND may take its own -v."""
    def verbose(context, _, value):
        if value:
            context.obj["verbose"] = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _verbose_too(sub)
    elif command.name != "boot":
        command.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, is_eager=True,
                                           callback=verbose,
                                           help="Show host and guest commands with their output, and each phase as "
                                                "it ends."))


for _command in main.commands.values():
    _verbose_too(_command)
