"""After a run: the comparison (JSON and Markdown), the plots and the report, in the run directory;
and the stopping rule of `--reps auto`, which is the same comparison on the data so far."""

import json
import re
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness import comparability, results
from harness import experiment as experiments
from harness.analysis import compare, coverage, discovery, family, mail, plots, records, report, sampling, stats, tables
from harness.errors import HarnessError, PoolWithoutControl
from harness.experiment import Experiment
from harness.files import write_atomic


def comparison(run_dirs: list[Path], baseline: str | None = None) -> records.Comparison:
    """The comparison of one run directory, or of several pooled (then one look at all the data)."""
    samples, runs, metadata = results.read_many(run_dirs)
    if len(run_dirs) > 1:
        _require_controls(run_dirs, runs, metadata)
    chosen = baseline or metadata[0].baseline
    plan = records.Plan.from_metadata(metadata[0], chosen)
    # a control is its run's baseline booted again: it calibrates a comparison against that baseline only
    control = next((m.control for m in metadata if m.control and m.baseline == chosen), None)
    design = plan.design if len(run_dirs) == 1 else pooled_design(metadata)
    mixed, hosts = comparability.allowances(metadata)
    plan = replace(plan, control=control, design=design, mixed_sources=mixed, mixed_hosts=hosts)
    order = [name for metadata_of_run in metadata for name in metadata_of_run.variant_names]
    result = compare.compare(samples, runs, plan, order, coverage.of(samples, runs, metadata, chosen))
    if len(run_dirs) > 1:
        moved, said = drift(samples, runs, plan, run_dirs)
        result = replace(result, drift=moved, notes=(
            f"Pooled: {len(run_dirs)} run folders, one look at all their boots at {design.whole:.3g} of alpha; each "
            "variant against the baseline kernel's boots of its own folders (the baseline and the controls)",
            *([said] if said else [])))
    return result


def pooled_design(metadata: list[results.RunMetadata]) -> records.Design:
    """One look at the pooled boots, at the alpha the folders' designs allow: a folder of `--reps auto` could
    have stopped after any of its looks, so its number of boots depends on its data; the pooled test rejects
    only if the test at one of the combinations of boots the folders could have stopped at would, so it takes
    ALPHA divided by their number (Bonferroni over them). Folders of a fixed design leave the whole ALPHA."""
    stops = 1
    for of_run in metadata:
        stops *= max(1, len(records.Plan.from_metadata(of_run).design.looks))
    if stops == 1:
        return records.Design()
    return records.Design(whole=1 / stops, why=f"the folders' --reps auto designs could have stopped at {stops} "
                                               "combinations of repetitions")


def drift(samples, runs, plan: records.Plan, run_dirs: list[Path]) -> tuple[tuple[str, ...], str]:
    """Whether the baseline kernel (the baseline and its control) moved between the folders, row by primary row:
    each later folder's boots of it against the first folder's, exact rank tests, Holm across the rows and
    folders. (the rows that moved, each "ROW in FOLDER (p_adj P)": a failed calibration, since the pooled verdicts
    would compare days as well as kernels; the line to print when none did)."""
    kernel = [plan.baseline, *([plan.control] if plan.control else [])]
    kept, _ = sampling.valid_samples(samples, runs)
    kept = kept[kept["variant"].isin(kernel)]
    by_folder = {}
    for folder in run_dirs:      # each metric from its own boots (the mode) and at its own sweep point, as compared
        cells = sampling.gather(kept[kept["run_dir"] == str(folder)], runs[runs["run_dir"] == str(folder)])
        by_folder[folder] = {key: np.concatenate([by_variant[v][1] for v in kernel if v in by_variant])
                             for key, by_variant in cells.items() if "/".join(key[:3]) in plan.primary}
    tests = []
    for key, first in by_folder[run_dirs[0]].items():
        for folder in run_dirs[1:]:
            later = by_folder[folder].get(key, np.array([]))
            if len(first) and len(later):
                name = "/".join(key[:3]) + (f" at {key[3]}" if key[3] else "")
                tests.append((name, folder, stats.rank_test(first, later), len(first), len(later)))
    if not tests:
        return (), "Drift between folders: not checked (no primary row measured in two folders)"
    adjusted = stats.step_down([t[2] for t in tests], list(range(len(tests))))
    moved = tuple(f"{key} in {folder} (p_adj {p:.2g})" for (key, folder, *_), p in zip(tests, adjusted)
                  if p <= records.ALPHA)
    if moved:
        return moved, ""
    return (), (f"Drift between folders: the baseline kernel's boots of each folder against {run_dirs[0]}, "
                f"{len(tests)} primary rows: none moved (smallest p_adj {min(adjusted):.2g})")


def _require_controls(run_dirs: list[Path], runs, metadata: list[results.RunMetadata]) -> None:
    """PoolWithoutControl unless every folder has valid boots of its control (the baseline again)."""
    valid = results.valid_runs(runs)
    lacking = [str(path) for path, of_run in zip(run_dirs, metadata)
               if not of_run.control or not ((valid["run_dir"] == str(path))
                                             & (valid["variant"] == of_run.control)).any()]
    if lacking:
        raise PoolWithoutControl(count=len(run_dirs), folders=", ".join(lacking),
                                 have="has" if len(lacking) == 1 else "have")


def decided(directory: results.RunDirectory) -> bool:
    """True when every primary row of every variant has a verdict (the stopping rule of --reps auto; in a
    discovery, which declares none, when no variant loses more repetitions than the baseline), or when
    no workload phase ran the changes of any variant judged: more boots of code that does not run tell nothing."""
    samples, runs, metadata = results.read(directory.path)
    plan = records.Plan.from_metadata(metadata, metadata.baseline)
    if not plan.primary and not plan.discovery:
        return False        # nothing declared, nothing to stop on: every look is taken
    order = sampling.variant_order(runs, plan.baseline)
    judged = [variant for variant in order[1:] if variant not in plan.controls]
    cover = coverage.of(samples, runs, metadata, plan.baseline)
    if judged and all(cover.silent(variant) for variant in judged):
        return True
    kept, _ = sampling.valid_samples(samples, runs)
    return family.all_decided(sampling.gather(kept, runs) | sampling.boot_cells(runs), plan, order)


def broken_lines(report: Path) -> list[str]:
    """The lines that open a report when a variant is broken (harness/analysis/integrity.py), as plain text; []
    when none is: what `bench`, `try` and `report` print first."""
    said = []
    for line in report.read_text().splitlines():
        if line.startswith("# "):
            break
        if line.startswith("**BROKEN"):
            said.append(line.replace("**", "").replace("`", ""))
    return said


CONFIRMATION = "confirm.toml"
MAIL = "report.txt"


def headline_key(experiment: Experiment | None, result: records.Comparison) -> str:
    """WORKLOAD/PHASE/METRIC of the report's first sentence: the experiment's headline, or else its first primary
    row, of a workload that ran (`--workload swapcow` of an experiment whose headline is redis's); the
    strongest discovery (as the confirmation ranks them); or the copies of a write phase (of any phase, when no
    workload has one). A declared row is the sentence's row when some variant measured it, or when its workload
    measured nothing at all (every boot lost: the sentence says so), never when its workload measured other rows
    without it (stressng has no write phase); a row that nothing measured only when no other is."""
    found = discovery.confirmation_rows(discovery.discoveries(result.rows)) if result.plan.discovery else []
    declared = [key for key in ([experiment.headline, *experiment.primary] if experiment else []) if key]
    ran = {row.workload for row in result.rows}       # with its boots/valid_share row, though every boot was lost
    keys = {row.key for row in result.rows}
    silent = ran - {row.workload for row in result.rows if (row.phase, row.metric) != sampling.BOOTS}
    measured = [key for key in declared if key in keys or key.split("/", 1)[0] in silent]
    if measured:
        return measured[0]
    if found:
        return found[0]
    if declared and not ran:
        return declared[0]
    copies = [r.key for r in result.rows if r.metric == "cow_copies"]
    written = [key for key in copies if key.split("/")[1] == "write"]
    return (written or copies or [r.key for r in result.rows] or [""])[0]


def recorded_experiment(run_dir: Path) -> Experiment | None:
    """The experiment a run recorded: its file when it is still there, else the file of that name in the run folder
    (where `harness try` writes it), else by name from experiments/; None when none is."""
    recorded = results.read_metadata(run_dir)
    kept = experiment_file(run_dir, recorded)
    try:
        return experiments.load(str(kept) if kept else recorded.experiment)
    except HarnessError:
        return None


def experiment_file(run_dir: Path, metadata: results.RunMetadata) -> Path | None:
    """The file a run's experiment was read from, when it is still there; else the file of that name in the run
    folder (a `try` run moved with its try.toml); None when neither is."""
    kept = metadata.experiment_file
    beside = run_dir / f"{metadata.experiment}.toml"
    return Path(kept) if kept and Path(kept).is_file() else beside if beside.is_file() else None


def mail_text(run_dir: Path, result: records.Comparison, headline: str, runs, metadata: results.RunMetadata,
              confirm: Path | None = None) -> str:
    """What `harness compare --format email` prints and report.txt holds (harness/analysis/mail.py); runs and
    metadata: the run folder's, as results.read gives them."""
    opening = report.findings(runs, metadata, result, headline, confirm)
    order = [result.plan.baseline] + metadata.variant_names
    return mail.render(result, report.title(metadata, run_dir), opening, metadata, list(dict.fromkeys(order)),
                       reproduce_command(run_dir, metadata))


def reproduce_command(run_dir: Path, metadata: results.RunMetadata) -> str:
    """The command that runs the experiment again: the one recorded, except for `harness try`, whose patch files
    and short --kernel may be gone or mean another version later: bench of the try.toml it wrote."""
    command = metadata.command
    kept = experiment_file(run_dir, metadata)
    if not command.startswith("harness try") or kept is None:
        return command
    design = " --reps auto" if metadata.reps == "auto" else f" --reps {metadata.reps or 6}"
    return f"harness bench -e {kept} --control{design}"
DISCOVERY_LINE = re.compile(r"^discovery[ \t]*=[ \t]*true[ \t]*(#.*)?$", re.MULTILINE)
# an array of strings, over lines, with comments (a "]" in a comment or a string does not end it)
PRIMARY_LINES = re.compile(r'^primary[ \t]*=[ \t]*\[(?:[^\]"#]|"[^"\n]*"|#[^\n]*)*\][ \t]*(#.*)?$', re.MULTILINE)
HEADLINE_LINE = re.compile(r"^headline\s*=.*\n", re.MULTILINE)


def write_confirmation(run_dir: Path, result: records.Comparison, metadata: results.RunMetadata) -> Path | None:
    """RUN_DIR/confirm.toml: the run's experiment file with its leads (discovery.leads: a discovery's, or the rows a
    closed gate kept quiet) declared primary (discovery.confirmation_rows) in place of `discovery = true` or of the
    primary rows, so that one command judges them on fresh boots. None when there are none, the experiment file is
    gone, or it has no top-level line of either kind to replace."""
    kept = experiment_file(run_dir, metadata)
    text = kept.read_text() if kept else ""
    first_table = re.search(r"^\[", text, re.MULTILINE)
    top, tables = (text[:first_table.start()], text[first_table.start():]) if first_table else (text, "")
    rows = discovery.confirmation_rows(discovery.leads(result.rows, result.plan))
    replaced = DISCOVERY_LINE if result.plan.discovery else PRIMARY_LINES
    if not replaced.search(top) or not rows:
        return None
    what = "discoveries" if result.plan.discovery else "unjudged moves"
    declared = (f"# The strongest {what} of {run_dir.name}, declared: a confirmatory run on fresh boots\n"
                "primary = [\n" + "".join(f'    "{row}",\n' for row in rows) + f']\nheadline = "{rows[0]}"')
    top = replaced.sub(lambda _: declared, HEADLINE_LINE.sub("", top), count=1)
    body = top + tables
    path = run_dir / CONFIRMATION
    experiments.from_dict(tomllib.loads(body), path)        # a file that would not load is a bug here, not later
    write_atomic(path, body)
    return path


def analyse(run_dir: Path, experiment: Experiment, baseline: str | None = None, timed: bool = True) -> Path:
    """Write comparison.json, comparison.md, report.txt, plots/ and report.md; returns the report's path. timed:
    record the analysis's seconds in metadata.json (as bench does; `harness report` does not)."""
    started = time.monotonic()
    result = comparison([run_dir], baseline)
    samples, runs, metadata = results.read(run_dir)
    write_atomic(run_dir / "comparison.json", json.dumps([r.as_json() for r in result.rows], indent=1) + "\n")
    write_atomic(run_dir / "comparison.md", "\n".join(tables.summary_lines(result)) + "\n\n"
                 + tables.render_markdown(result.rows, show_all=True) + "\n")
    figures = plots.plot_all(samples, runs, metadata, run_dir / "plots", result.rows)
    headline = headline_key(experiment, result)
    confirm = write_confirmation(run_dir, result, metadata) if discovery.leads(result.rows, result.plan) else None
    path = report.write(run_dir, result, figures, headline, confirm)
    write_atomic(run_dir / MAIL, mail_text(run_dir, result, headline, runs, metadata, confirm))
    cover = json.loads(json.dumps(result.coverage.as_dict() if result.coverage is not None else {}))
    changes = {"coverage": cover} if metadata.coverage != cover else {}
    if timed:
        seconds = round(time.monotonic() - started, 1)
        changes["stage_seconds"] = {**metadata.stage_seconds, "analysis": seconds}
    if changes:       # `harness report` of a committed run leaves metadata.json as it was
        results.RunDirectory.load(run_dir).update_metadata(**changes)
    return path
