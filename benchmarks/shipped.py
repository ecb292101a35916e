"""What the benchmarks that compare the default experiment with a variation of it share: the
experiment file with one top-level setting added, and a `harness run` of swapcow and redis."""

import subprocess
import sys
from pathlib import Path

import pandas as pd

from harness.experiment import load

WORKLOADS = ("swapcow", "redis")


def with_setting(folder: Path, name: str, setting: str) -> Path:
    """A copy of the default experiment in folder/NAME.toml with SETTING (a TOML line) among its top-level keys."""
    path = folder / f"{name}.toml"
    path.write_text(load(None).path.read_text().replace("\n[[variants]]", f"\n{setting}\n\n[[variants]]", 1))
    return path


def run(experiment: Path, out: Path, reps: int, params: list[str], *options: str) -> tuple[pd.DataFrame,
                                                                                          pd.DataFrame]:
    """(samples of the valid runs, the valid runs) of `harness run` of WORKLOADS with the given options."""
    argv = [sys.executable, "-m", "harness", "run", "-e", str(experiment), "--reps", str(reps), "-o", str(out)]
    for workload in WORKLOADS:
        argv += ["--workload", workload]
    for param in params:
        argv += ["-p", param]
    subprocess.run(argv + list(options), check=True, capture_output=True)
    samples, runs = pd.read_csv(out / "samples.csv"), pd.read_csv(out / "runs.csv")
    valid = runs[runs["valid"]]
    return samples.merge(valid[["variant", "workload", "rep", "mode"]]), valid
