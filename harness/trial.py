"""`harness try`: from a reviewer's patch to a report in one command.

The patches (files, mboxes, folders of .patch files, quoted mails) are checked against the kernel
asked for, kept byte for byte when they apply as they are and imported (`patch import`) when they
do not. One patch is variant `patched`; a series gives cumulative variants (+1, +1..2, ...), as
`[series]` does. The kernel is a source SPEC, a short form (`6.1`: Debian's newest linux-source-6.1,
resolved to an exact version and the SHA256 of the signed package index) or a local git tree at
HEAD; by default the template experiment's.

The workloads are chosen by what the patch touches: the builds' object code says which functions
changed (harness/kernel/objdiff.py), and one counted boot per shipped workload (harness/covers.py,
kept with the build) says which phases call them more than the workload's idle phase does. When
none does, `try` stops before any measured boot with that reason. Nobody declared hypotheses for
the patch, so the run is a discovery (harness/analysis/compare.py): every row exploratory, at a 5%
false-discovery rate, and the report writes the confirmatory experiment beside itself.

Everything `try` decided is written as an experiment file into the run folder, with the patches
beside it, so that `harness bench -e` repeats or edits the run.
"""

import json
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import bench, covers, experiment, files, runner, sweep, workloads
from harness.analysis import coverage
from harness.errors import (
    BadGuestSetting,
    BadPatchInput,
    NoChangedCode,
    NotAGitTree,
    SeriesDoesNotApply,
    UnexercisedPatch,
)
from harness.kernel import build, debian, importer, patches, patchmail, source
from harness.measure import drivers

log = logging.getLogger("harness.try")

SHORT_KERNEL = re.compile(r"\d+\.\d+")      # 6.1: Debian's newest linux-source-6.1
PATCH_FOLDER = "patches"
NAME = "try"            # the experiment's name (its file is try.toml in the run folder)
FAR = 10                # a phase tells when it calls a changed function this many times as often per second as idle
TEMPLATE_KEYS = ("kconfigs", "probes", "cow_probe", "fault_probe", "cow_causes", "coverage", "margin_pct")


@dataclass(frozen=True)
class Trial:
    """What `try` decided, before any measured boot."""
    text: str                                   # the experiment file
    name: str                                   # its name
    slug: str                                   # the first patch's subject, as a file name: the run folder's
    source: str                                 # the kernel SPEC, resolved
    patches: dict = field(default_factory=dict)     # file name -> text
    imported: bool = False                      # the patches were rewritten to apply (patch import)
    workloads: tuple = ()
    changed: dict = field(default_factory=dict)     # variant -> functions its object code changed
    choice: tuple = ()                          # lines: why these workloads

    def write(self, folder: Path) -> Path:
        """The experiment file and its patches in folder; returns the file's path."""
        (folder / PATCH_FOLDER).mkdir(parents=True, exist_ok=True)
        for name, text in self.patches.items():
            files.write_atomic(folder / PATCH_FOLDER / name, text, errors="surrogateescape")
        path = folder / f"{self.name}.toml"
        files.write_atomic(path, self.text)      # last: a folder with try.toml has its patches
        return path


def kernel_spec(kernel: str | None, tree: Path | None, template: experiment.Experiment, cache_dir: Path) -> str:
    """The source SPEC `--kernel` or `--tree` names, resolved to an exact version or commit."""
    if kernel and tree:
        raise BadPatchInput(path=tree, why="--kernel and --tree both name the kernel", fix="pass one of them")
    if tree:
        top = runner.run(["git", "-C", tree, "rev-parse", "--show-toplevel"], check=False)
        if top.returncode != 0 or Path(top.output.strip()).resolve() != Path(tree).resolve():
            raise NotAGitTree(path=tree)
        commit = runner.output_of(["git", "-C", tree, "rev-parse", "HEAD"]).strip()
        dirty = runner.output_of(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"]).strip()
        if dirty:
            log.warning("%s has uncommitted changes: the build takes HEAD (%s) without them", tree, commit[:12])
        return f"git:{Path(top.output.strip()).resolve()}@{commit}"
    if kernel and SHORT_KERNEL.fullmatch(kernel):
        package = f"linux-source-{kernel}"
        version, digest = debian.newest(package, cache_dir / "downloads")
        log.info("--kernel %s: Debian's newest %s is %s", kernel, package, version)
        return f"debian:{package}={version}#sha256={digest}"
    if kernel:
        source.parse_spec(kernel)
        return kernel
    return template.source


def patch_texts(paths: list[Path], tree: Path) -> tuple[dict, bool]:
    """(file name -> text, imported) of the series the paths hold, in order: the texts as given when the series
    applies to tree as it is, else as `patch import` rewrites them; SeriesDoesNotApply when neither applies."""
    parts = [part for path in paths for part in patchmail.split_series(path)]
    if not parts:
        raise BadPatchInput(path=paths[0], why="it holds a cover letter and no patch", fix="pass the patches too")
    scratch = Path(tempfile.mkdtemp(prefix="harness-try-"))
    try:
        given = {}
        for number, part in enumerate(parts, 1):
            message = patchmail.parse(part.text, part.origin)
            given[importer.patch_file_name(number, message.subject)] = part.text
        if not _refused(given, tree, scratch / "given"):
            return given, False
        imported = {patch.name: patch.text for patch in importer.import_series(parts, tree)}
        refused = _refused(imported, tree, scratch / "imported")
        if refused:
            hunk = f"{refused.file} hunk {refused.number} {refused.header}".strip() + ": " if refused.number else ""
            raise SeriesDoesNotApply(patch=refused.patch, tree=tree, where=f"{hunk}{refused.detail}".rstrip(": "))
        return imported, True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _refused(texts: dict, tree: Path, folder: Path) -> patches.HunkReport | None:
    """The first hunk of the series that does not apply to tree, in order (None when git apply takes it all)."""
    folder.mkdir(parents=True)
    written = []
    for name, text in texts.items():
        (folder / name).write_text(text, errors="surrogateescape")
        written.append(folder / name)
    if patches.git_check_series(written, tree)[0]:
        return None
    failed = [report for report in patches.check_series(written, tree) if not report.ok]
    return failed[0] if failed else patches.HunkReport(written[-1].name, "", 0, "", False, "a place git apply refuses")


def variants(names: list[str]) -> list[tuple[str, list[str]]]:
    """(variant, its patch files): base and `patched` for one patch; base, +1, +1..2, ... for a series."""
    if len(names) == 1:
        return [("base", []), ("patched", names)]
    return [("base", [])] + [(experiment.series_name(n), names[:n]) for n in range(1, len(names) + 1)]


def experiment_text(name: str, spec: str, template: experiment.Experiment, patch_names: list[str],
                    chosen: tuple = (), choice: tuple = (), subject: str = "", command: str = "",
                    parameters: dict | None = None, guest: dict | None = None, primary: tuple = (),
                    sources: dict | None = None) -> str:
    """The experiment file of a trial: the template's kernel configuration, probes and guest (with --guest's
    settings over it), the kernel, the variants, the workloads chosen and why, their parameters (the template's,
    and -p's: workload -> {name: value} where not the default), and `discovery = true`; or, with primary rows,
    those rows declared (the first the headline) instead. patch_names: a list of file names (the variants of
    variants()), or {variant: its file names}; sources: {variant: its own kernel SPEC} (mixed_sources)."""
    def value(item) -> str:
        return json.dumps(list(item) if isinstance(item, tuple) else item)    # a JSON scalar or list is TOML too

    sources = sources or {}
    lines = [f"# Written by `{command or 'harness try'}` on {time.strftime('%Y-%m-%d %H:%M')}; run it",
             "# again, edited or not, with: harness bench -e THIS_FILE" + ("" if primary else " --control"),
             f"description = {value(subject or 'harness try')}",
             f"source = {value(spec)}"]
    lines += ["mixed_sources = true"] if any(own != spec for own in sources.values()) else []
    lines += [f"{key} = {value(getattr(template, key))}" for key in TEMPLATE_KEYS]
    lines += [f"# {line}" for line in choice]
    lines += [f"workloads = {value(chosen)}" if chosen else "# workloads: every one shipped"]
    if primary:
        lines += [f"primary = {value(primary)}", f"headline = {value(primary[0])}", ""]
    else:
        lines += ["# Nobody declared what the patch should change: every row is tested at a 5% false-discovery "
                  "rate,", "# and the report writes confirm.toml, with the rows found declared primary, to test on "
                  "fresh boots.", "discovery = true", ""]
    named = patch_names.items() if isinstance(patch_names, dict) else variants(patch_names)
    for variant, names in named:
        lines += ["[[variants]]", f"name = {value(variant)}",
                  f"patches = {value([f'{PATCH_FOLDER}/{n}' for n in names])}"]
        lines += [f"source = {value(sources[variant])}"] if sources.get(variant, spec) != spec else []
        lines += [""]
    machine = {**vars(template.guest), **(guest or {})}
    lines += ["[guest]"] + [f"{key} = {value(item)}" for key, item in machine.items()] + [""]
    for workload, values in (parameters if parameters is not None else dict(template.parameters)).items():
        values = dict(values)
        if values:
            lines += [f"[parameters.{workload}]"] + [f"{key} = {value(item)}" for key, item in values.items()] + [""]
    return "\n".join(lines)


def prepare(paths: list[Path], kernel: str | None, tree: Path | None, template_name: str | None,
            workload_names: tuple, settings: tuple, cache_dir: Path, accel: str = "auto", force: bool = False,
            command: str = "", guest: dict | None = None) -> Trial:
    """Everything `try` decides before a measured boot: the kernel, the patches, the builds and what they
    changed, and the workloads (profiled on the builds, in the guest the trial boots, unless named). guest:
    [guest] settings over the template's (guest_settings())."""
    template = experiment.load(template_name)
    names = tuple(workload_names) or tuple(workloads.discover())
    given = workloads.choose(names, settings, {n: template.parameters_of(n) for n in names})   # a typo costs no build
    parameters = non_default(given)
    spec = kernel_spec(kernel, tree, template, cache_dir)
    tree_path = source.fetch(source.parse_spec(spec), cache_dir)
    texts, imported = patch_texts(paths, tree_path)
    subject = patchmail.parse(next(iter(texts.values())), "patch").subject
    slug = re.sub(r"^\d{4}-", "", next(iter(texts))).removesuffix(".patch")[:40].rstrip("-.")
    name = NAME
    log.info("kernel %s (%s); %s %s", spec, source.release(tree_path), len(texts),
             "patch, imported to apply" if imported else "patch(es), applied as given")
    with tempfile.TemporaryDirectory(prefix="harness-try-") as scratch:
        folder = Path(scratch)
        draft = Trial(experiment_text(name, spec, template, list(texts), subject=subject, command=command,
                                      parameters=parameters, guest=guest), name, slug, spec, texts, imported)
        trial_spec = experiment.load(str(draft.write(folder)))
        changed, counted = _changed(trial_spec, cache_dir, force)
        if workload_names:
            chosen = tuple(workload_names)
            choice = (f"workloads named on the command line: {', '.join(chosen)}",)
        else:
            chosen, choice = choose(trial_spec, counted, (), cache_dir, accel, force)
        chosen, choice = with_correctness(chosen, choice)
    kept = {workload: values for workload, values in parameters.items() if workload in (chosen or names)}
    text = experiment_text(name, spec, template, list(texts), chosen, choice, subject, command, kept, guest)
    return Trial(text, name, slug, spec, texts, imported, chosen, changed, choice)


def non_default(given) -> dict:
    """{workload: {name: value}} of workloads.choose()'s (workload, parameters) pairs: the values that differ
    from the workload's defaults (the template's and -p's settings)."""
    return {w.name: {k: v for k, v in params.items() if v != dict(w.parameters)[k]} for w, params in given}


def guest_settings(settings: tuple) -> dict:
    """--guest KEY=VALUE settings as {key: value}, each checked as the [guest] table checks it: swap=zram ->
    {'swap': 'zram'}, memory_mb=2048 -> {'memory_mb': 2048}; BadGuestSetting names the first bad one."""
    known = tuple(experiment.GuestConfig.__dataclass_fields__)
    found = {}
    for setting in settings:
        key, equals, text = setting.partition("=")
        if not equals or key not in known:
            raise BadGuestSetting(setting=setting, why=f"takes KEY=VALUE with KEY one of {', '.join(known)}")
        found[key] = sweep.number(text)

        def fail(why: str, setting=setting) -> None:
            raise BadGuestSetting(setting=setting, why=why.removeprefix(f"--guest {key} "))
        sweep.check_guest_value(key, found[key], fail, f"--guest {key}")
    return found


def with_correctness(chosen: tuple, choice: tuple) -> tuple[tuple, tuple]:
    """(workloads, why) with every shipped workload that checks the kernel is right (`correctness`) added to a
    choice that runs any: whether the patch is right comes before whether it is faster. An empty choice (every
    shipped workload runs) stays empty."""
    if not chosen:
        return chosen, choice
    added = [name for name, workload in workloads.discover().items() if workload.correctness and name not in chosen]
    if not added:
        return chosen, choice
    return (*chosen, *added), (*choice, f"always run, whatever the coverage chose: {', '.join(added)} (is the "
                                        "kernel right: what the pages hold after every kind of copy and reuse)")


def _changed(spec: experiment.Experiment, cache_dir: Path, force: bool) -> tuple[dict, tuple]:
    """(variant -> functions changed, the functions a counted boot can count), from the builds' object code;
    NoChangedCode when no variant changed the baseline's code (unless force)."""
    builds = {b.variant: b for b in build.build_all(spec, list(spec.variants), cache_dir)}
    differences = bench.object_code(spec, spec.variants, builds, force=force)
    if all(difference.identical for difference in differences.values()) and not force:
        raise NoChangedCode(kernel=spec.source, variants=", ".join(differences))
    changed = {name: difference.functions for name, difference in differences.items()}
    return changed, bench.counted_calls(differences)


def choose(spec: experiment.Experiment, functions: tuple, settings: tuple, cache_dir: Path, accel: str,
           force: bool) -> tuple[tuple, tuple]:
    """(workloads, why): the shipped workloads with a phase that calls a changed function far more often per
    second than the workload's idle phase does (FAR times), busiest first, from one counted boot per workload
    of the last variant's kernel (the baseline's for what the last variant removed); why says what each kept
    workload calls, and what was left out and why."""
    names = tuple(workloads.discover())
    shipped = workloads.choose(names, settings, {name: spec.parameters_of(name) for name in names})
    if not functions:
        return (), ("no changed function can be counted (init code, notrace, or a name an unchanged function "
                    "shares): every shipped workload runs",)
    found = covers.profile(spec, spec.variants[-1].name, functions, shipped, cache_dir, accel)
    removed = [function for function in found.uncounted if function not in found.calls]
    if removed and len(spec.variants) > 1:
        earlier = covers.profile(spec, spec.variants[0].name, removed, shipped, cache_dir, accel)
        found = covers.Map({**found.calls, **earlier.calls}, earlier.uncounted, found.source,
                           {**earlier.seconds, **found.seconds})
    ran, busiest = _telling(found)
    kept = sorted(ran, key=lambda workload: -max(rate for rate, _ in ran[workload]))
    choice = [f"chosen by coverage ({found.source}): a phase calls a changed function at least {FAR} times as "
              "often per second as idle does (idle: at least 1 call per idle phase), busiest first"]
    for workload in kept:
        said = [text for _, text in sorted(ran[workload], key=lambda item: -item[0])]
        choice.append(f"  {workload}: " + "; ".join(said[:3]) + (" ..." if len(said) > 3 else ""))
    choice += [f"  left out: {workload}: {text}" for workload, text in busiest.items() if workload not in ran]
    choice += [f"  not counted: {function}: {why}" for function, why in found.uncounted.items()]
    if ran:
        return tuple(kept), tuple(choice)
    if force:
        return (), (*choice, "  no workload phase calls them; --force runs every shipped workload (rows: not "
                             "exercised)")
    raise UnexercisedPatch(functions=", ".join(functions), workloads=", ".join(names), source=found.source)


def _telling(found: covers.Map) -> tuple[dict, dict]:
    """({workload: [(calls per second, what) of each phase and function far above its idle]}, {workload: what its
    busiest phase called, for those left out}). Idle's rate is taken as at least one call per idle phase: the
    least a phase can show. Without the phases' seconds (a run that did not record them), calls are compared
    as they are, and more than idle is enough."""
    ran: dict[str, list[tuple]] = {}
    busiest: dict[str, tuple] = {}
    for function, counts in found.calls.items():
        for (workload, phase), calls in counts.items():
            if phase == coverage.IDLE or not calls:
                continue
            rate, said, far = _against_idle(found, function, workload, phase)
            if far:
                ran.setdefault(workload, []).append((rate, said))
            elif workload not in busiest or rate > busiest[workload][0]:
                busiest[workload] = (rate, said)
    return ran, {workload: text for workload, (_, text) in busiest.items()}


def _against_idle(found: covers.Map, function: str, workload: str, phase: str) -> tuple[float, str, bool]:
    """(calls per second of a phase, what it called, whether that is FAR times idle's rate)."""
    calls, idle = found.calls[function][(workload, phase)], found.calls[function].get((workload, coverage.IDLE), 0.0)
    rate = found.rate(function, workload, phase)
    if rate is None:
        return calls, f"{phase} {function} {calls:,.0f} (idle {idle:,.0f})", calls > idle
    idle_seconds = found.seconds.get((workload, coverage.IDLE)) or drivers.IDLE_S
    idle_rate = max(idle, 1.0) / idle_seconds
    said = (f"{phase} {function} {calls:,.0f} in {found.seconds[(workload, phase)]:.2f} s, {rate:,.0f}/s "
            f"(idle {idle:,.0f} in {idle_seconds:.2f} s)")
    far = rate >= FAR * idle_rate
    return rate, said + ("" if far else f": under {FAR} times idle's {idle_rate:,.0f}/s"), far
