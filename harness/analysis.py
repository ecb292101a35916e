"""After a run: the comparison (JSON and Markdown), the plots and the report, in the run directory."""

import json
import time
from pathlib import Path

from harness import compare, plots, report, results
from harness.experiment import Experiment
from harness.files import write_atomic


def analyse(run_dir: Path, experiment: Experiment, baseline: str = "base") -> Path:
    """Write comparison.json, comparison.md, plots/ and report.md; returns the report's path."""
    started = time.monotonic()
    samples, runs, metadata = results.read(run_dir)
    rows, invalid = compare.compare(samples, runs, baseline)
    write_atomic(run_dir / "comparison.json", json.dumps([r.as_json() for r in rows], indent=1) + "\n")
    write_atomic(run_dir / "comparison.md", compare.render_markdown(rows, show_all=True) + "\n")
    figures = plots.plot_all(samples, runs, metadata, run_dir / "plots")
    headline = experiment.headline or f"{samples['workload'].iloc[0]}/write/cow_copies"
    path = report.write(run_dir, rows, invalid, figures, headline)
    stages = {**metadata.get("stage_seconds", {}), "analysis": round(time.monotonic() - started, 1)}
    metadata["stage_seconds"] = stages
    write_atomic(run_dir / "metadata.json", json.dumps(metadata, indent=2) + "\n")
    return path
