"""After a run: the comparison (JSON and Markdown), the plots and the report, in the run directory;
and the stopping rule of `--reps auto`, which is the same comparison on the data so far."""

import json
import time
from dataclasses import replace
from pathlib import Path

from harness import results
from harness.analysis import compare, plots, report
from harness.errors import PoolWithoutControl
from harness.experiment import Experiment
from harness.files import write_atomic


def comparison(run_dirs: list[Path], baseline: str | None = None) -> compare.Comparison:
    """The comparison of one run directory, or of several pooled (then one look at all the data)."""
    samples, runs, metadata = results.read_many(run_dirs)
    if len(run_dirs) > 1:
        _require_controls(run_dirs, runs, metadata)
    chosen = baseline or metadata[0].get("baseline", "base")
    plan = compare.Plan.from_metadata(metadata[0], chosen)
    # a control is its run's baseline booted again: it calibrates a comparison against that baseline only
    control = next((m["control"] for m in metadata if m.get("control") and m.get("baseline", "base") == chosen), None)
    design = plan.design if len(run_dirs) == 1 else compare.Design()    # pooled: one look at all the data
    mixed = any(m.get("mixed_sources") for m in metadata)
    hosts = all(m.get("mixed_hosts") for m in metadata)
    plan = replace(plan, control=control, design=design, mixed_sources=mixed, mixed_hosts=hosts)
    order = [variant["name"] for metadata_of_run in metadata for variant in metadata_of_run.get("variants", [])]
    result = compare.compare(samples, runs, plan, order)
    if len(run_dirs) > 1:
        result = replace(result, notes=(f"Pooled: {len(run_dirs)} run folders, one look at all their boots; boots of "
                                        "different folders were not interleaved: a drift of the baseline between "
                                        "them shows, diluted, only in the control rows (they pool every folder's "
                                        "control)",))
    return result


def _require_controls(run_dirs: list[Path], runs, metadata: list[dict]) -> None:
    """PoolWithoutControl unless every folder has valid boots of its control (the baseline again)."""
    valid = results.valid_runs(runs)
    lacking = [str(path) for path, of_run in zip(run_dirs, metadata)
               if not of_run.get("control") or not ((valid["run_dir"] == str(path))
                                                    & (valid["variant"] == of_run["control"])).any()]
    if lacking:
        raise PoolWithoutControl(count=len(run_dirs), folders=", ".join(lacking),
                                 have="has" if len(lacking) == 1 else "have")


def decided(directory: results.RunDirectory) -> bool:
    """True when every primary row of every variant has a verdict (the stopping rule of --reps auto)."""
    samples, runs, metadata = results.read(directory.path)
    plan = compare.Plan.from_metadata(metadata, metadata.get("baseline", "base"))
    if not plan.primary:
        return False
    kept, _ = compare.valid_samples(samples, runs)
    return compare.all_decided(compare.gather(kept, runs) | compare.boot_cells(runs), plan,
                               compare.variant_order(runs, plan.baseline))


def analyse(run_dir: Path, experiment: Experiment, baseline: str | None = None) -> Path:
    """Write comparison.json, comparison.md, plots/ and report.md; returns the report's path."""
    started = time.monotonic()
    result = comparison([run_dir], baseline)
    samples, runs, metadata = results.read(run_dir)
    write_atomic(run_dir / "comparison.json", json.dumps([r.as_json() for r in result.rows], indent=1) + "\n")
    write_atomic(run_dir / "comparison.md", "\n".join(compare.summary_lines(result)) + "\n\n"
                 + compare.render_markdown(result.rows, show_all=True) + "\n")
    figures = plots.plot_all(samples, runs, metadata, run_dir / "plots", result.rows)
    headline = experiment.headline or (experiment.primary[0] if experiment.primary else
                                       f"{samples['workload'].iloc[0]}/write/cow_copies")
    path = report.write(run_dir, result, figures, headline)
    directory = results.RunDirectory.load(run_dir)
    stages = {**metadata.get("stage_seconds", {}), "analysis": round(time.monotonic() - started, 1)}
    directory.update_metadata(stage_seconds=stages)
    return path
