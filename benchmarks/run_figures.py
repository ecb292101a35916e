"""Workload benchmark (prints figures; not a test).

`harness run --workload W --reps N` for base and patched, for swapcow and redis, then the
same with --no-probes. Prints, per workload and variant, the write phase's cow_copies
(median over valid runs), copies per page written, the write-phase duration, and how much
the probes (perf + kprobes + function profiler) slow the write phase.
"""

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def run(out: Path, workload: str, reps: int, extra=()) -> dict:
    subprocess.run([sys.executable, "-m", "harness", "run", "--workload", workload, "--reps", str(reps),
                    "-o", str(out), *extra], check=True)
    valid = {(r["variant"], r["rep"]) for r in csv.DictReader(open(out / "runs.csv")) if r["valid"] == "True"}
    values = defaultdict(list)
    for row in csv.DictReader(open(out / "samples.csv")):
        if (row["variant"], row["rep"]) in valid and row["phase"] == "write":
            values[(row["variant"], row["metric"])].append(float(row["value"]))
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workload", action="append", default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="harness-run-figures-"))
    lines = []
    for workload in args.workload or ["swapcow", "redis"]:
        probed = run(scratch / f"{workload}-probed", workload, args.reps)
        bare = run(scratch / f"{workload}-bare", workload, args.reps, ["--no-probes"])
        for variant in ("base", "patched"):
            copies = probed.get((variant, "cow_copies"), [])
            pages = probed.get((variant, "pages"), [])
            with_probes = probed.get((variant, "duration_s"), [])
            without = bare.get((variant, "duration_s"), [])
            if not copies or not pages or not without:
                lines.append(f"{workload:8} {variant:8} no valid runs")
                continue
            median = statistics.median
            lines.append(f"{workload:8} {variant:8} n={len(copies)}  cow_copies {median(copies):8.0f}  "
                         f"per page written {median(copies) / median(pages):.3f}  write {median(with_probes):.3f} s "
                         f"(no probes {median(without):.3f} s, "
                         f"probes cost {median(with_probes) / median(without) - 1:+.0%})")
    print(f"\nresults in {scratch}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
