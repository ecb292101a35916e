"""Cells at once (prints figures; not a test).

`make bench` (`harness bench --control --reps auto`) with each --jobs given, one after another, on a
warm cache (the builds are made first, untimed). Prints per --jobs: the wall time of the run (from its
metadata: start to finish, plus the analysis), the boots it ran, cells per minute of the cell stage,
the repetitions --reps auto took, the vCPUs per guest, and the primary verdicts (which must not depend
on --jobs). `--reuse JOBS=DIR` takes a finished run's figures instead of running it again (the
reference run is `make bench` with --jobs 1). Whether the counts are the same at every --jobs:
`python benchmarks/cell_cost.py agree RUN-J1 RUN-J2`.

    python benchmarks/parallel_cells.py --jobs 1 --jobs 2 [--out DIR]
    python benchmarks/parallel_cells.py --reuse 1=results/reference-... --jobs 2
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from harness import results


def bench(out: Path, jobs: int) -> float:
    """Run make bench's command with --jobs; its wall time in seconds."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "harness", "bench", "--control", "--reps", "auto", "--jobs", str(jobs),
                    "-o", str(out)], check=True)
    return time.monotonic() - started


def figures(out: Path) -> dict:
    metadata = results.read_metadata(out)
    started = datetime.strptime(metadata.started, "%Y-%m-%dT%H:%M:%S%z")
    finished = datetime.strptime(metadata.finished, "%Y-%m-%dT%H:%M:%S%z")
    stages = metadata.stage_seconds
    wall_s = (finished - started).total_seconds() + stages.get("analysis", 0)
    cells_s = stages.get("cells") or (finished - started).total_seconds() - sum(
        stages.get(stage, 0) for stage in ("fetch", "build", "image", "object code", "cow layout"))
    boots = sum(1 for _ in open(out / "runs.csv")) - 1
    rows = json.loads((out / "comparison.json").read_text())
    verdicts = {f"{r['workload']}/{r['phase']}/{r['metric']}": r["verdict"] for r in rows
                if r["margin_pct"] is not None and r["variant"] == "patched"}
    return {"wall_s": wall_s, "boots": boots, "cells_per_min": boots / (cells_s / 60), "cells_s": cells_s,
            "reps": metadata.reps_done, "guest_cpus": metadata.placement.guest_cpus if metadata.placement else None,
            "verdicts": verdicts}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, action="append", help="repeatable [default: 1 and 2]")
    parser.add_argument("--reuse", action="append", default=[], metavar="JOBS=DIR",
                        help="a finished make bench run with --jobs JOBS (repeatable)")
    parser.add_argument("--out", type=Path, help="where the runs go [default: a temporary folder]")
    args = parser.parse_args()
    found = {int(jobs): figures(Path(folder)) for jobs, folder in (text.split("=", 1) for text in args.reuse)}
    subprocess.run([sys.executable, "-m", "harness", "build"], check=True, stdout=subprocess.DEVNULL)
    scratch = args.out or Path(tempfile.mkdtemp(prefix="harness-parallel-"))
    for jobs in args.jobs or ([] if found else [1, 2]):
        out = scratch / f"bench-j{jobs}"
        took = bench(out, jobs)
        found[jobs] = figures(out)
        print(f"--jobs {jobs}: {out} ({took / 60:.1f} min for the whole command)", flush=True)
    print("\n| --jobs | wall time | boots | reps (auto) | vCPUs per guest | cells per minute | primary verdicts |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for jobs, said in sorted(found.items()):
        verdicts = ", ".join(f"{row.split('/')[0]} {row.split('/')[2]}: {verdict}"
                             for row, verdict in said["verdicts"].items())
        print(f"| {jobs} | {said['wall_s'] / 60:.1f} min | {said['boots']} | {said['reps']} | "
              f"{said['guest_cpus'] or 'as asked (2)'} | {said['cells_per_min']:.2f} | {verdicts} |")


if __name__ == "__main__":
    main()
