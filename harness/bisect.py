"""`harness bisect`: the first commit of a git tree, or the first patch of a series, that moves a counted row.

The candidates are the commits on the first-parent path from GOOD (left out) to BAD (kept), oldest first, each
built from `git:TREE@COMMIT`; or, for a series, the base kernel with the first 1, 2, ... patches. The ends come
first, in one run of the row's workload (ends/): BAD's kernel against GOOD's, counted boots, `--reps auto` with
the row declared primary. Bisecting needs a `better` or `worse` verdict there: which way the row went from GOOD
to BAD. Each step then runs the candidate nearest the middle of those left against GOOD's kernel the same way, in
a run folder of its own (steps/NN-NAME/, a run like any other), and takes the same verdict code's word for it:

- the ends' verdict: the candidate behaves like BAD (`bad`, whether that is an improvement or a regression);
- `equivalent`, `identical`, or `not exercised` (its phase ran none of the functions the candidate changed, and
  the row showed no move a verdict calls better or worse; the boots alone may not have settled it): it behaves
  like GOOD (`good`);
- anything else (`inconclusive` at --max-reps, the other direction), a build that fails, a kernel with no valid
  boot: `skip`, as `git bisect skip`, and the untested candidate nearest the middle is tried instead.

It ends when no untested candidate is left between the last good and the first bad one: that one is the first
bad, or, with skipped candidates before it, one of them. bisect.json holds the bisection and every step done,
rewritten after each; `--resume` goes on from it (an interrupted step's run is finished, not started again).
The end: report.md (the answer, the table of steps, the plot), steps.csv and plots/row.{png,svg}.
"""

import csv
import io
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness import bench, experiment, files, metrics, results, runner, trial, workloads
from harness.analysis import coverage
from harness.errors import (
    BadRow,
    BisectNeedsAMove,
    CommandFailed,
    CommandTimedOut,
    GitRefMissing,
    KconfigOptionDropped,
    MissingSymbol,
    NotABisection,
    NotAGitRepository,
    PatchDoesNotApply,
)
from harness.kernel import patchmail, source
from harness.measure import dispatch, drivers

log = logging.getLogger("harness.bisect")

STATE = "bisect.json"
EXPERIMENT = "bisect.toml"          # each run's experiment file, in its folder
GOOD, BAD, SKIP = "good", "bad", "skip"
LIKE_GOOD = ("equivalent", "identical", "not exercised")
ENDS = "ends"
STEPS = "steps"
# What a kernel that cannot be built raises (its make fails or hangs, its patch does not apply, its configuration
# drops an option the fragments set, a probed function is gone): the candidate is skipped. Any other error (a full
# disk, a QEMU that cannot start) stops the bisection, which --resume takes up again.
UNBUILDABLE = (CommandFailed, CommandTimedOut, PatchDoesNotApply, KconfigOptionDropped, MissingSymbol)


@dataclass(frozen=True)
class Candidate:
    """A kernel the bisection may build: a commit of the tree, or the base with the first patches of a series."""
    name: str                       # its variant name: the commit's first 12 hex digits, or +1..K
    subject: str
    source: str                     # the source SPEC it builds from
    commit: str = ""                # the full commit id (a tree's)
    patches: tuple[str, ...] = ()   # file names in the bisection's patches/ (a series')


@dataclass(frozen=True)
class Measured:
    """What one run said of the row: the candidate against the good end."""
    verdict: str
    n: int                          # the candidate's boots with a value
    n_baseline: int
    median: float | None
    baseline_median: float | None
    change_pct: float | None
    p_value: float | None
    values: tuple[float, ...] = ()
    baseline_values: tuple[float, ...] = ()
    lost: str = ""                  # why boots have no value ("2 invalid")


@dataclass(frozen=True)
class Step:
    """A candidate measured and what it was taken for."""
    candidate: int                  # its index in Bisection.candidates
    decision: str                   # good | bad | skip
    why: str
    folder: str                     # its run, relative to the bisection's folder
    seconds: float
    measured: Measured | None = None


@dataclass(frozen=True)
class Bisection:
    """What is bisected (bisect.json), and the steps done."""
    row: str                        # WORKLOAD/PHASE/METRIC
    candidates: tuple[Candidate, ...]   # [0]: the good end; [-1]: the bad end
    template: str                   # the experiment whose configuration, probes and guest the runs take
    parameters: dict = field(default_factory=dict)  # workload -> {name: value}, where not the default
    guest: dict = field(default_factory=dict)       # --guest settings
    max_reps: int = 10
    command: str = ""
    tree: str = ""                  # the git tree, or "" for a series
    ends: Step | None = None
    steps: tuple[Step, ...] = ()

    @property
    def workload(self) -> str:
        return self.row.split("/")[0]

    def save(self, folder: Path) -> None:
        files.write_atomic(folder / STATE, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Bisection":
        path = folder / STATE
        if not path.is_file():
            raise NotABisection(path=folder)
        data = json.loads(path.read_text())

        def step(entry):
            measured = entry.pop("measured")
            return Step(**entry, measured=Measured(**{**measured, "values": tuple(measured["values"]),
                                                      "baseline_values": tuple(measured["baseline_values"])})
                        if measured else None)
        return cls(**{**data, "candidates": tuple(Candidate(**{**c, "patches": tuple(c["patches"])})
                                                    for c in data["candidates"]),
                      "ends": step(data["ends"]) if data["ends"] else None,
                      "steps": tuple(step(entry) for entry in data["steps"])})


# --- what to test next ---------------------------------------------------------------------------------------

def bounds(count: int, steps) -> tuple[int, int]:
    """(the last candidate known good, the first known bad), as indexes; the ends are 0 and count - 1."""
    good = [step.candidate for step in steps if step.decision == GOOD]
    bad = [step.candidate for step in steps if step.decision == BAD]
    return max([0, *good]), min([count - 1, *bad])


def next_candidate(count: int, steps) -> int | None:
    """The untested candidate nearest the middle of what is left between the last good and the first bad one
    (the older of two as near); None when none is left."""
    low, high = bounds(count, steps)
    tested = {step.candidate for step in steps}
    left = [index for index in range(low + 1, high) if index not in tested]
    middle = (low + high) / 2
    return min(left, key=lambda index: (abs(index - middle), index)) if left else None


def suspects(count: int, steps) -> list[int]:
    """The candidates the first bad one may be, once next_candidate() is None: the first bad, after the
    skipped ones between it and the last good one."""
    low, high = bounds(count, steps)
    return [step.candidate for step in sorted(steps, key=lambda s: s.candidate)
            if step.decision == SKIP and low < step.candidate < high] + [high]


def most_steps(count: int) -> int:
    """The steps a bisection of count candidates (both ends included) takes at most when none is skipped."""
    return math.ceil(math.log2(count - 1)) if count > 2 else 0


def decision(direction: str, measured: Measured) -> tuple[str, str]:
    """(good | bad | skip, why) of a candidate the good end's run judged: like the bad end when its verdict is
    the ends' (direction: `better` or `worse`), like the good end when it is a verdict of no change."""
    said = _said(measured)
    if measured.n == 0:
        return SKIP, f"no boot of it gave a value ({measured.lost or 'none valid'})"
    if measured.verdict == direction:
        return BAD, said
    if measured.verdict in LIKE_GOOD:
        return GOOD, said
    return SKIP, said + (", the other way than the ends" if measured.verdict in ("better", "worse") else
                         ": neither like the good end nor like the bad one")


def _said(measured: Measured) -> str:
    """'worse, 12 -> 2,048 (+17,000%), p = 0.0022, n = 6'."""
    change = f" ({measured.change_pct:+,.1f}%)" if measured.change_pct is not None else ""
    p = f", p = {measured.p_value:.2g}" if measured.p_value is not None else ""
    return (f"{measured.verdict}, {coverage.number(measured.baseline_median)} -> "
            f"{coverage.number(measured.median)}{change}{p}, n = {measured.n}")


# --- the candidates ------------------------------------------------------------------------------------------

def commits(tree: Path, good: str, bad: str) -> tuple[Candidate, ...]:
    """The good end, then every commit on the first-parent path from good (left out) to bad (kept), oldest first."""
    tree = Path(tree).expanduser().resolve()
    if runner.run(["git", "-C", tree, "rev-parse", "--git-dir"], check=False).returncode != 0:
        raise NotAGitRepository(path=tree)
    ids = {}
    for ref in (good, bad):
        found = runner.run(["git", "-C", tree, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], check=False)
        if found.returncode != 0:
            raise GitRefMissing(ref=ref, repo=tree)
        ids[ref] = found.output.strip()
    if ids[good] == ids[bad]:
        raise BisectNeedsAMove(why=f"--good {good} and --bad {bad} are the same commit, {ids[good][:12]}",
                               fix="pass the commit that moved the row as --bad")
    if runner.run(["git", "-C", tree, "merge-base", "--is-ancestor", ids[good], ids[bad]], check=False).returncode:
        raise BisectNeedsAMove(why=f"--good {good} is not an ancestor of --bad {bad} in {tree}",
                               fix="pass an older commit as --good")
    listing = runner.output_of(["git", "-C", tree, "log", "--first-parent", "--ancestry-path", "--reverse",
                                "--format=%H%x00%s", f"{ids[good]}..{ids[bad]}"], echo=False)
    subject = runner.output_of(["git", "-C", tree, "log", "-1", "--format=%s", ids[good]], echo=False).strip()
    found = [line.split("\0", 1) for line in listing.splitlines() if line]
    return tuple(Candidate(commit[:12], text, f"git:{tree}@{commit}", commit)
                 for commit, text in [(ids[good], subject), *found])


def series(names: list[str], subjects: list[str], spec: str) -> tuple[Candidate, ...]:
    """The base kernel, then the base with the first 1, 2, ... patches of a series (variants +1, +1..2, ...)."""
    return (Candidate("base", "the base kernel", spec),) + tuple(
        Candidate(experiment.series_name(n), subjects[n - 1], spec, patches=tuple(names[:n]))
        for n in range(1, len(names) + 1))


def check_row(row: str, template: experiment.Experiment, settings: tuple) -> dict:
    """The row's workload parameters ({workload: {name: value}} where not the default); BadRow when the row is
    not WORKLOAD/PHASE/METRIC of a workload that runs that phase with them, of a metric with a direction."""
    parts = row.split("/")
    if len(parts) != 3 or not all(parts):
        raise BadRow(row=row, why="write it as WORKLOAD/PHASE/METRIC, e.g. swapcow/write/cow_copies")
    name, phase, metric = parts
    if name not in workloads.discover():
        raise BadRow(row=row, why=f"no workload {name}; the workloads are {', '.join(workloads.discover())}")
    given = workloads.choose((name,), settings, {name: template.parameters_of(name)})
    (workload, values), = given
    phases = drivers.driver(workload, values, None).phase_plan()
    if phase not in phases:
        raise BadRow(row=row, why=f"{name} runs the phases {', '.join(phases)} with these parameters")
    if metrics.meaning(metric).direction == "none":
        raise BadRow(row=row, why=f"metric {metric} has no direction in harness/metrics.py, so no verdict on it "
                                  "is better or worse; pick one that has (`harness metrics` lists them)")
    return trial.non_default(given)


def new(row: str, template_name: str | None, settings: tuple, guest: dict, max_reps: int, command: str,
        cache_dir: Path, out: Path, tree: Path | None = None, good: str = "", bad: str = "",
        patch_paths: tuple = (), kernel: str | None = None) -> Bisection:
    """A bisection of a git tree's commits from good to bad, or of a series' patches on a kernel (its patches
    written into out/patches/, as given or as `patch import` rewrites them to apply); checked before any build."""
    template = experiment.load(template_name)
    parameters = check_row(row, template, settings)
    if tree is not None:
        candidates = commits(tree, good, bad)
    else:
        spec = trial.kernel_spec(kernel, None, template, cache_dir)
        texts, _ = trial.patch_texts(list(patch_paths), source.fetch(source.parse_spec(spec), cache_dir))
        candidates = series(list(texts), [patchmail.parse(text, name).subject for name, text in texts.items()], spec)
        (out / trial.PATCH_FOLDER).mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            files.write_atomic(out / trial.PATCH_FOLDER / name, text, errors="surrogateescape")
    return Bisection(row, candidates, str(template.path), parameters, guest, max_reps, command,
                     str(Path(tree).expanduser().resolve()) if tree is not None else "")


# --- the runs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runs:
    """How the runs of a bisection are made: where, with which accelerator and placement."""
    cache_dir: Path
    accel: str = "auto"
    placement: dispatch.Placement = dispatch.Placement()


def experiment_of(bisection: Bisection, baseline: Candidate, other: Candidate, other_name: str) -> str:
    """The experiment file of one run: the template's configuration, the row declared primary, the good end as
    the baseline variant `good` and the other kernel as other_name."""
    template = experiment.load(bisection.template)
    patches = {GOOD: list(baseline.patches), other_name: list(other.patches)}
    return trial.experiment_text(
        "bisect", baseline.source, template, patches, chosen=(bisection.workload,),
        choice=(f"bisecting {bisection.row}: does {other.name} ({other.subject}) move it from what {baseline.name} "
                "shows?",), subject=f"{other.name} against the good end {baseline.name}, on {bisection.row}",
        command=bisection.command, parameters=bisection.parameters, guest=bisection.guest, primary=(bisection.row,),
        sources={GOOD: baseline.source, other_name: other.source})


def measure(bisection: Bisection, top: Path, where: str, other: int, other_name: str, runs: Runs) -> Measured:
    """Run a candidate (or the bad end) against the good end in top/where, or finish the run an interruption
    left there, and read what the comparison said of the row."""
    baseline, candidate = bisection.candidates[0], bisection.candidates[other]
    folder = top / where
    path = folder / EXPERIMENT
    if not (folder / "report.md").is_file():
        if (folder / "metadata.json").is_file():
            request = bench.resumed_request(experiment.load(str(path)), folder, runs.accel, runs.placement)
        else:
            if folder.exists():
                shutil.rmtree(folder)       # an interruption before the run's metadata: nothing measured
            (folder / trial.PATCH_FOLDER).mkdir(parents=True)
            for name in dict.fromkeys((*baseline.patches, *candidate.patches)):
                shutil.copyfile(top / trial.PATCH_FOLDER / name, folder / trial.PATCH_FOLDER / name)
            files.write_atomic(path, experiment_of(bisection, baseline, candidate, other_name))
            request = bench.new_request(experiment.load(str(path)), reps=bench.AUTO_FIRST_LOOK, out_dir=folder,
                                        accel=runs.accel, command_line=bisection.command,
                                        max_reps=bisection.max_reps, force=True, placement=runs.placement)
        bench.run_and_analyse(request, runs.cache_dir)
    return read_row(folder, bisection.row, other_name)


def read_row(folder: Path, row: str, variant: str) -> Measured:
    """The row's verdict for variant in the run in folder, with the boots' values of both kernels."""
    rows = {(r["variant"]): r for r in json.loads((folder / "comparison.json").read_text())
            if f"{r['workload']}/{r['phase']}/{r['metric']}" == row and not r.get("point")}
    samples, runs, _ = results.read(folder)
    workload, phase, metric = row.split("/")
    valid = runs[runs["valid"]][["variant", "rep", "mode"]]
    kept = samples[(samples["workload"] == workload) & (samples["phase"] == phase) & (samples["metric"] == metric)
                   & (samples["mode"] == "counted")].merge(valid, on=["variant", "rep", "mode"])
    values = {name: tuple(float(v) for v in kept[kept["variant"] == name].sort_values("rep")["value"])
              for name in (GOOD, variant)}
    mine, base = rows.get(variant), rows.get(GOOD)
    if mine is None:
        lost = (~runs[runs["variant"] == variant]["valid"]).sum()
        return Measured("", 0, len(values[GOOD]), None, base["median"] if base else None, None, None, (),
                        values[GOOD], f"{lost} invalid" if lost else "no value recorded")
    return Measured(mine["verdict"], int(mine["n"]), len(values[GOOD]), mine["median"],
                    base["median"] if base else None, mine["change_pct"], mine["p_value"], values[variant],
                    values[GOOD], mine.get("missing_reason", ""))


# --- the bisection -------------------------------------------------------------------------------------------

def run(bisection: Bisection, folder: Path, runs: Runs, measure=measure) -> Bisection:
    """Measure the ends (unless done), then step until the first bad candidate is known; bisect.json after every
    run. measure(bisection, folder, where, index, name, runs) -> Measured (the real runs by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    bisection.save(folder)
    count = len(bisection.candidates)
    if bisection.ends is None:
        started = time.monotonic()
        log.info("bisect %s: the ends first, %s (bad) against %s (good)", bisection.row,
                 bisection.candidates[-1].name, bisection.candidates[0].name)
        measured = measure(bisection, folder, ENDS, count - 1, BAD, runs)
        moved = measured.verdict in ("better", "worse")
        ends = Step(count - 1, BAD if moved else SKIP, _said(measured), ENDS, round(time.monotonic() - started, 1),
                    measured)
        bisection = replace(bisection, ends=ends)
        bisection.save(folder)
    if bisection.ends.decision != BAD:
        raise BisectNeedsAMove(why=f"{bisection.row} does not move from {bisection.candidates[0].name} to "
                               f"{bisection.candidates[-1].name} ({bisection.ends.why})",
                               fix=f"pick a row the ends' report ({folder / ENDS / 'report.md'}) finds better or "
                                   "worse, or more --max-reps")
    direction = bisection.ends.measured.verdict
    while (index := next_candidate(count, bisection.steps)) is not None:
        number = len(bisection.steps) + 1
        candidate = bisection.candidates[index]
        where = f"{STEPS}/{number:02d}-{candidate.name.replace('..', '-')}"
        log.info("bisect step %d: %s (%s), %d candidate(s) left", number, candidate.name, candidate.subject,
                 bounds(count, bisection.steps)[1] - bounds(count, bisection.steps)[0] - 1)
        started = time.monotonic()
        try:
            measured = measure(bisection, folder, where, index, candidate.name, runs)
            said, why = decision(direction, measured)
        except UNBUILDABLE as error:     # it does not build: git bisect skip
            measured, said, why = None, SKIP, f"not measured: {error}"
        step = Step(index, said, why, where, round(time.monotonic() - started, 1), measured)
        bisection = replace(bisection, steps=(*bisection.steps, step))
        bisection.save(folder)
        log.info("bisect step %d: %s is %s: %s", number, candidate.name, said, why)
    return bisection


# --- what it found -------------------------------------------------------------------------------------------

def answer(bisection: Bisection) -> list[str]:
    """The answer's sentences: the first bad candidate (or the ones it may be), and how the ends differ."""
    count, found = len(bisection.candidates), suspects(len(bisection.candidates), bisection.steps)
    first = bisection.candidates[found[-1]]
    what, many = ("commit", "commits") if bisection.tree else ("patch", "patches")
    if len(found) == 1:
        lines = [f"The first bad {what} is {first.name} \"{first.subject}\": it moves {bisection.row} as the bad "
                 f"end does ({bisection.ends.measured.verdict} against the good end)."]
    else:
        names = ", ".join(f"{bisection.candidates[i].name} \"{bisection.candidates[i].subject}\"" for i in found)
        lines = [f"Only skipped {many} are left to test: the first bad {what} is one of {names}."]
    lines.append(f"The ends: {bisection.candidates[-1].name} against {bisection.candidates[0].name}: "
                 f"{bisection.ends.why}. {count - 1} {what if count == 2 else many} after the good end, "
                 f"{len(bisection.steps)} step(s) (at most {most_steps(count)} without skips).")
    return lines


STEP_COLUMNS = ("step", "candidate", "subject", "decision", "verdict", "good_median", "median", "change_pct",
                "p_value", "n", "why", "folder", "seconds")


def step_rows(bisection: Bisection) -> list[dict]:
    """One row per run, the ends' first (step 0), as steps.csv holds them."""
    rows = []
    for number, step in enumerate((bisection.ends, *bisection.steps)):
        measured, candidate = step.measured, bisection.candidates[step.candidate]
        rows.append({"step": number, "candidate": candidate.name, "subject": candidate.subject,
                     "decision": step.decision, "verdict": measured.verdict if measured else "",
                     "good_median": measured.baseline_median if measured else None,
                     "median": measured.median if measured else None,
                     "change_pct": measured.change_pct if measured else None,
                     "p_value": measured.p_value if measured else None, "n": measured.n if measured else 0,
                     "why": step.why, "folder": step.folder, "seconds": step.seconds})
    return rows


def write(bisection: Bisection, folder: Path) -> Path:
    """steps.csv, plots/row.{png,svg} and report.md of a finished bisection; the report's path."""
    from harness.analysis import plots

    rows = step_rows(bisection)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STEP_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
    files.write_atomic(folder / "steps.csv", buffer.getvalue())
    points = [(step.candidate, bisection.candidates[step.candidate].name, step.decision,
               step.measured.values if step.measured else ()) for step in (bisection.ends, *bisection.steps)]
    good = bisection.ends.measured.baseline_values
    plot = plots.bisection_plot([(0, bisection.candidates[0].name, GOOD, good), *points], bisection.row,
                                [c.name for c in bisection.candidates], folder / "plots")
    lines = [f"# Bisection of {bisection.row}", "", *[f"{line}\n" for line in answer(bisection)]]
    lines += ["| step | candidate | subject | verdict against the good end | good -> candidate | change | p | n | "
              "taken as |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        change = f"{row['change_pct']:+,.1f}%" if row["change_pct"] is not None else "-"
        p = f"{row['p_value']:.2g}" if row["p_value"] is not None else "-"
        link = f"[{row['candidate']}]({row['folder']}/report.md)"
        lines.append(f"| {row['step'] or 'ends'} | {link} | {row['subject']} | {row['verdict'] or '-'} | "
                     f"{coverage.number(row['good_median'])} -> {coverage.number(row['median'])} | {change} | {p} | "
                     f"{row['n']} | {row['decision']} |")
    skipped = [row for row in rows[1:] if row["decision"] == SKIP]
    lines += [""] + [f"Skipped {row['candidate']}: {row['why']}" for row in skipped] + ([""] if skipped else [])
    lines += [f"![{bisection.row} along the candidates](plots/{plot.name})", "",
              "Each run boots the candidate's kernel and the good end's in one interleaved run (counted boots, "
              "`--reps auto`, the row declared primary) and its report says the verdict. A candidate whose verdict "
              "is the ends' behaves like the bad end; one that is equivalent, identical or not exercised behaves "
              "like the good end; any other verdict, a build that fails or no valid boot skips it, as `git bisect "
              "skip` does. docs/usage.md, \"Bisect\", says more.", "",
              f"Command: `{bisection.command}`" if bisection.command else ""]
    path = folder / "report.md"
    files.write_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path
