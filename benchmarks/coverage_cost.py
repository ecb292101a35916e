"""What counting the changed functions adds to the counted boots (prints figures; not a test).

Runs the default experiment's swapcow and redis on base and patched, counted boots only, twice: as
shipped (the function profiler counts the functions the patch changed, calls.FUNCTION, in every
phase) and with `coverage = false` (the profiler counts only the experiment's probes). Prints the
median write-phase duration and boot length of each, the difference, and how many calls of the
changed functions the profiler counted per phase: what the coverage adds is the profiler's cost
on those calls, beside the probes that it counts anyway.
"""

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import shipped

from harness import project
from harness.experiment import load


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("-p", "--param", action="append", default=[], help="Workload parameter NAME=VALUE.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-coverage-") as scratch:
        without = shipped.with_setting(Path(scratch), "without-coverage", "coverage = false")
        plain, plain_runs = shipped.run(without, Path(scratch) / "without", args.reps, args.param, "--seed", "1")
        counted, counted_runs = shipped.run(load(None).path, Path(scratch) / "with", args.reps, args.param,
                                            "--seed", "1")
    write = {name: frame[(frame["phase"] == "write") & (frame["metric"] == "duration_s")]
             .groupby(["workload", "variant"])["value"].median() for name, frame in
             (("without coverage", plain), ("with coverage", counted))}
    table = pd.DataFrame(write)
    table["write: cost"] = (table["with coverage"] / table["without coverage"] - 1).map(lambda v: f"{100 * v:+.0f}%")
    boots = pd.DataFrame({"boot without": plain_runs.groupby(["workload", "variant"])["duration_s"].median(),
                          "boot with": counted_runs.groupby(["workload", "variant"])["duration_s"].median()})
    calls = counted[counted["metric"].str.startswith("calls.")]
    per_phase = calls.groupby(["workload", "phase", "metric"], sort=False)["value"].median().unstack("metric")
    print(f"Counted boots, median of {args.reps} per cell ({project.DEFAULT_EXPERIMENT}, "
          f"{', '.join(args.param) or 'default parameters'}); write phase seconds, whole boot seconds:")
    print(table.join(boots).to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nCalls the coverage counted per phase (median over both kernels' boots):")
    print(per_phase.to_string(float_format=lambda v: f"{v:,.0f}"))


if __name__ == "__main__":
    main()
