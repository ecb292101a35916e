"""Command line: parse, call one function, print. The only place that catches HarnessError."""

import functools
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import click
import pandas as pd

from harness import (
    analysis,
    boot,
    build,
    compare,
    doctor,
    experiment,
    matrix,
    patches,
    plots,
    results,
    source,
    vm,
    workloads,
)
from harness import image as guest_image
from harness.errors import (
    BadWorkload,
    HarnessError,
    MissingPackages,
    NoCommand,
    NoSuchTree,
)
from harness.files import write_atomic

log = logging.getLogger("harness")


class _ConsoleFilter(logging.Filter):
    """Without -v the console shows progress, not command lines and their output."""

    def __init__(self, verbose):
        super().__init__()
        self.verbose = verbose

    def filter(self, record):
        return self.verbose or record.name not in ("harness.run", "harness.output")


def _setup_logging(cache_dir: Path, verbose: bool, command: str) -> Path:
    logs = cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}.log"
    root = logging.getLogger("harness")
    root.setLevel(logging.DEBUG)
    root.handlers.clear()
    file_handler = logging.FileHandler(log_path)
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
    """Run a command; a HarnessError becomes one line on stderr plus the log path, exit 1."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        context = click.get_current_context()
        log_path = _setup_logging(context.obj["cache_dir"], context.obj["verbose"], _command_name(context))
        log.debug("harness %s", " ".join(sys.argv[1:]))
        try:
            return function(*args, **kwargs)
        except HarnessError as error:
            log.debug("error: %s", error)
            click.echo(f"error: {error}", err=True)
            click.echo(f"(log: {log_path})", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(f"interrupted (log: {log_path})", err=True)
            sys.exit(130)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show host commands and their output.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path("~/.cache/harness").expanduser(),
              show_default=True, help="Kernel sources, builds, ccache and logs.")
@click.pass_context
def main(context, verbose, cache_dir):
    """Build a kernel with and without an mm patch, boot both, measure what changed."""
    context.obj = {"verbose": verbose, "cache_dir": cache_dir.expanduser().resolve()}
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum, frame):
    """SIGTERM unwinds like Ctrl-C, so that child process groups and staging folders are cleaned up."""
    raise SystemExit(128 + signum)


@main.command(name="doctor")
@click.option("--install", is_flag=True, help="Install what is missing with apt-get (as root).")
@_guarded
def doctor_command(install):
    """Check every host prerequisite; exit 1 if one is missing."""
    packages = doctor.missing_packages()
    if install and packages:
        if os.geteuid() != 0:
            raise MissingPackages(packages=" ".join(packages), command=" ".join(doctor.install_command(packages)))
        doctor.install_missing()
    for line in doctor.report():
        click.echo(line)
    if doctor.problems():
        sys.exit(1)


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


def _tree(text: str | None, cache_dir: Path) -> Path:
    """--tree: a directory, or a source SPEC (default: the default experiment's source)."""
    if text and Path(text).expanduser().is_dir():
        return Path(text).expanduser().resolve()
    if text and ":" not in text:
        raise NoSuchTree(path=text)
    spec = text or experiment.load(None).source
    return source.fetch(source.parse_spec(spec), cache_dir)


@main.group(name="patch")
def patch_group():
    """Import and check patches."""


@patch_group.command(name="import")
@click.argument("message", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tree", help="Kernel tree (folder or source SPEC) to anchor on [default: the experiment's source].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--author", default="", help="Override the author, 'Name <email>'.")
@click.option("--upstream", default="", help="Upstream commit id to record in the message.")
@click.pass_obj
@_guarded
def patch_import(obj, message, tree, output, author, upstream):
    """Turn MESSAGE (format-patch, mbox, or a quoted, mangled mail) into a clean patch for TREE."""
    tree_path = _tree(tree, obj["cache_dir"])
    text = patches.import_message(message.read_text(errors="surrogateescape"), tree_path, message.name,
                                  author, upstream)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, text, errors="surrogateescape")
    ok, detail = patches.git_check_series([output], tree_path)
    click.echo(f"{output}: {'git apply --check accepts it on ' + str(tree_path) if ok else detail}")
    if not ok:
        sys.exit(1)


@patch_group.command(name="check")
@click.argument("patch_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tree", help="Kernel tree (folder or source SPEC) [default: the experiment's source].")
@click.pass_obj
@_guarded
def patch_check(obj, patch_files, tree):
    """Say whether the series PATCH... applies to TREE, in order, hunk by hunk."""
    tree_path = _tree(tree, obj["cache_dir"])
    reports = patches.check_series(patch_files, tree_path)
    for report in reports:
        mark = "ok  " if report.ok else "FAIL"
        click.echo(f"{mark} {report.patch} {report.file} hunk {report.number} {report.header}: {report.detail}")
    ok, detail = patches.git_check_series(patch_files, tree_path)
    click.echo("series applies (git apply --check)" if ok else f"series does not apply: {detail}")
    if not ok or not all(report.ok for report in reports):
        sys.exit(1)


@main.command(name="build")
@click.option("-e", "--experiment", "experiment_name", help="Experiment name in experiments/ or a .toml path.")
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
@click.option("-e", "--experiment", "experiment_name", help="Experiment name in experiments/ or a .toml path.")
@click.option("--variant", required=True, help="Variant whose kernel to boot.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True,
              help="auto uses KVM when a guest makes progress under it, else TCG.")
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
        boot_dir = obj["cache_dir"] / "boots" / "boot-XXXXXX"
        planned = boot.plan(built, spec.guest, boot_dir, obj["cache_dir"] / "logs" / "console.log", accel, 10022)
        click.echo(" ".join(shlex.quote(part) for part in vm.qemu_argv(planned)))
        if accel == "auto" and planned.accel == "kvm":
            click.echo(f"# auto: rerun with -accel tcg -cpu max if the guest prints nothing in {vm.KVM_PROGRESS_S:g} s")
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


def _workload_parameters(names, settings) -> tuple:
    """(Workload, parameters) for each name; NAME=VALUE settings go to the workloads that have NAME."""
    chosen = [workloads.load(name) for name in names]
    overrides = dict(setting.split("=", 1) for setting in settings if "=" in setting)
    bad = [setting for setting in settings if "=" not in setting]
    if bad:
        raise BadWorkload(name=", ".join(names), why=f"--param takes NAME=VALUE, not '{bad[0]}'")
    for name in overrides:
        if not any(name in dict(workload.parameters) for workload in chosen):
            raise BadWorkload(name=", ".join(names), why=f"no parameter '{name}'")
    return tuple((w, w.params({k: v for k, v in overrides.items() if k in dict(w.parameters)})) for w in chosen)


def _run_options(function):
    """The options `run` and `bench` share."""
    options = [
        click.option("-e", "--experiment", "experiment_name", help="Experiment name in experiments/ or a .toml path."),
        click.option("--workload", "workload_names", multiple=True,
                     help="Workload (repeatable) [default: the experiment's]."),
        click.option("--variant", "variants", multiple=True, help="Variant (repeatable) [default: all]."),
        click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
                     help="Run directory [default: results/<timestamp>-<experiment>]."),
        click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=Path),
                     help="Finish the interrupted run in this directory."),
        click.option("-p", "--param", "settings", multiple=True, help="Workload parameter NAME=VALUE (repeatable)."),
        click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True),
        click.option("--seed", type=int, help="Seed of the cell order [default: random, recorded]."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _request(experiment_name, workload_names, variants, reps, output, resume, settings, accel, seed,
             probes_on=True) -> matrix.RunRequest:
    spec = experiment.load(experiment_name)
    if resume:
        recorded = json.loads((resume / "metadata.json").read_text()) if (resume / "metadata.json").is_file() else {}
        workload_names = workload_names or tuple(recorded.get("workloads", {}))
        settings = settings or tuple(f"{k}={v}" for params in recorded.get("workloads", {}).values()
                                     for k, v in params.items())
        variants = variants or tuple(v["name"] for v in recorded.get("variants", []))
        reps = recorded.get("reps", reps)
    names = workload_names or spec.workloads or tuple(workloads.discover())
    out_dir = resume or output or results.default_directory(spec.name)
    if not resume and out_dir.exists() and any(out_dir.iterdir()):
        raise BadWorkload(name=", ".join(names), why=f"{out_dir} is not empty: pick another -o, or --resume it")
    return matrix.RunRequest(spec, _workload_parameters(names, settings), tuple(spec.select(variants)), reps,
                             out_dir, accel, probes_on, shlex.join(["harness", *sys.argv[1:]]), seed, bool(resume))


@main.command(name="run")
@_run_options
@click.option("--reps", type=click.IntRange(1), default=1, show_default=True, help="Boots per variant.")
@click.option("--no-probes", is_flag=True, help="No perf and no profiler: vmstat and timings only.")
@click.pass_obj
@_guarded
def run_command(obj, experiment_name, workload_names, variants, output, resume, settings, accel, seed, reps,
                no_probes):
    """Boot each variant (fresh boot and swap disk per repetition) and measure the workloads."""
    request = _request(experiment_name, workload_names, variants, reps, output, resume, settings, accel, seed,
                       not no_probes)
    directory = matrix.run(request, obj["cache_dir"])
    valid = sum(str(row["valid"]) == "True" for row in directory.runs)
    click.echo(f"{directory.path}: {valid} of {len(directory.runs)} runs valid")


@main.command(name="bench")
@_run_options
@click.option("--reps", type=click.IntRange(1), default=5, show_default=True, help="Boots per variant and workload.")
@click.pass_obj
@_guarded
def bench_command(obj, experiment_name, workload_names, variants, output, resume, settings, accel, seed, reps):
    """Build every variant, run every workload of the experiment, compare, plot and report."""
    request = _request(experiment_name, workload_names, variants, reps, output, resume, settings, accel, seed)
    directory = matrix.run(request, obj["cache_dir"])
    report_path = analysis.analyse(directory.path, request.experiment)
    click.echo(f"report: {report_path}")


@main.command(name="compare")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--baseline", default="base", show_default=True)
@click.option("--format", "output_format", type=click.Choice(["table", "markdown", "csv", "json"]), default="table",
              show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Every metric, not only the headline ones.")
@click.pass_obj
@_guarded
def compare_command(obj, run_dir, baseline, output_format, show_all):
    """Statistics of every variant against the baseline, with a verdict per metric."""
    samples, runs, _ = results.read(run_dir)
    rows, invalid = compare.compare(samples, runs, baseline)
    if output_format == "json":
        click.echo(json.dumps([row.as_json() for row in rows], indent=1))
    elif output_format == "csv":
        click.echo(pd.DataFrame([row.as_dict() for row in rows]).to_csv(index=False), nl=False)
    elif output_format == "markdown":
        click.echo(compare.render_markdown(rows, show_all))
    else:
        click.echo(compare.render_table(rows, show_all))
        click.echo(f"\n{invalid} invalid run(s) left out" if invalid else "")


@main.command(name="plot")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.pass_obj
@_guarded
def plot_command(obj, run_dir):
    """Write the figures of RUN_DIR into RUN_DIR/plots/ (PNG and SVG)."""
    samples, runs, metadata = results.read(run_dir)
    for path in plots.plot_all(samples, runs, metadata, run_dir / "plots"):
        click.echo(path)
