"""Probe overhead of copy attribution (prints figures; not a test).

Runs the default experiment's swapcow and redis on base and patched twice: counting only (a
copy of the experiment with cow_causes = false: perf and the profiler, no cause records) and
counting with attribution (the experiment as shipped, plus boots without any probe for
reference). Prints the median write-phase duration of each, and the attribution's cost over
counting only. The cost lands where copies happen: on base, whose every write copies.
"""

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import shipped

from harness import project
from harness.experiment import load


def run(experiment: Path, out: Path, reps: int, params: list[str], timing: bool) -> pd.DataFrame:
    samples, _ = shipped.run(experiment, out, reps, params, *(["--timing"] if timing else []))
    return samples[(samples["phase"] == "write") & (samples["metric"] == "duration_s")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("-p", "--param", action="append", default=[], help="Workload parameter NAME=VALUE.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-overhead-") as scratch:
        counting = shipped.with_setting(Path(scratch), "counting-only", "cow_causes = false")
        only = run(counting, Path(scratch) / "counting", args.reps, args.param, timing=False)
        full = run(load(None).path, Path(scratch) / "causes", args.reps, args.param, timing=True)
    medians = {
        "no probes": full[full["mode"] == "timed"].groupby(["workload", "variant"])["value"].median(),
        "counting": only.groupby(["workload", "variant"])["value"].median(),
        "counting + causes": full[full["mode"] == "counted"].groupby(["workload", "variant"])["value"].median(),
    }
    table = pd.DataFrame(medians)
    table["causes cost"] = (table["counting + causes"] / table["counting"] - 1).map(lambda v: f"{100 * v:+.0f}%")
    print(f"Write phase duration, median of {args.reps} boots per cell, seconds ({project.DEFAULT_EXPERIMENT}, "
          f"{', '.join(args.param) or 'default parameters'}):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
