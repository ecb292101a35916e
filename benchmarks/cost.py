"""Cost benchmark (prints figures; not a test): what an answer and a CI run take, stage by stage.

`bench`: `harness bench --control --reps auto` (what `make bench` runs) into a scratch folder, timed,
with the stages its metadata.json records (fetch, build, image, object code, cow layout, the cells
with their boots and workloads, the analysis) and the boots it took.
`ci`: `.ci/run` in a fresh clone of this repository, timed, with pytest's total and its slowest tests.

With --empty-cache each runs as on a new machine: HOME is an empty scratch folder, so
~/.cache/harness (sources, builds, ccache, packages) and pip's cache start empty; the host's Debian
packages stay installed. Each figure is printed beside its target (issue 36: make bench at most
6 min warm and 14 empty; .ci/run at most 25 warm and 45 empty, on a 2-core machine). The cost of a
cell beside its workload, per workload, is benchmarks/cell_cost.py's.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS_MIN = {("bench", False): 6, ("bench", True): 14, ("ci", False): 25, ("ci", True): 45}
STAGES = ("fetch", "build", "image", "object code", "cow layout", "cells", "boots", "workloads", "analysis")
SLOWEST = 15
DURATION = re.compile(r"^(\d+\.\d+)s (call|setup|teardown)\s+(\S+)$")
SUMMARY = re.compile(r"=+ (.*\bpassed\b.*) in ([\d.]+)s")


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def environment(scratch: Path, empty: bool) -> dict:
    if not empty:
        return dict(os.environ)
    home = scratch / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


def bench(scratch: Path, empty: bool) -> tuple[float, list[str]]:
    out = scratch / "bench"
    started = time.monotonic()
    subprocess.run([str(ROOT / ".venv" / "bin" / "harness"), "bench", "--control", "--reps", "auto", "-o", str(out)],
                   env=environment(scratch, empty), check=True, cwd=ROOT)
    wall = time.monotonic() - started
    metadata = json.loads((out / "metadata.json").read_text())
    stages = metadata.get("stage_seconds", {})
    lines = ["| stage | seconds |", "| --- | --- |"]
    lines += [f"| {stage} | {stages[stage]:.0f} |" for stage in STAGES if stage in stages]
    boots = len(metadata.get("plan", []))
    modes = "+".join(metadata.get("modes", []))
    lines += [f"| whole command (wall) | {wall:.0f} |", "",
              f"{boots} boots ({modes}, {metadata.get('reps_done')} repetitions); untimed: "
              f"{metadata.get('untimed') or 'no'}"]
    return wall, lines


def ci(scratch: Path, empty: bool) -> tuple[float, list[str]]:
    clone = scratch / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    log = scratch / "ci.log"            # written as it runs: tail it to follow the run
    print(f"ci: .ci/run in {clone}, output in {log}", flush=True)
    started = time.monotonic()
    with open(log, "w") as sink:
        result = subprocess.run([str(clone / ".ci" / "run")], env=environment(scratch, empty), cwd=clone,
                                stdout=sink, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    output = log.read_text(errors="replace").splitlines()
    summary = [match for line in output if (match := SUMMARY.search(line))]
    slow = [match.groups() for line in output if (match := DURATION.match(line.strip()))]
    lines = [f"exit {result.returncode}; pytest: "
             + (f"{summary[-1].group(1)} in {minutes(float(summary[-1].group(2)))}" if summary else "no summary"),
             "", "| seconds | stage | test |", "| --- | --- | --- |"]
    lines += [f"| {float(seconds):.0f} | {stage} | `{test}` |" for seconds, stage, test in slow[:SLOWEST]]
    return wall, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", choices=["bench", "ci"], default=["bench", "ci"])
    parser.add_argument("--empty-cache", action="store_true", help="run as on a new machine (an empty HOME)")
    args = parser.parse_args()
    for what in args.what:
        scratch = Path(tempfile.mkdtemp(prefix=f"harness-cost-{what}-"))
        wall, lines = {"bench": bench, "ci": ci}[what](scratch, args.empty_cache)
        target = TARGETS_MIN[(what, args.empty_cache)]
        cache = "empty cache" if args.empty_cache else "warm cache"
        print(f"\n## {what}, {cache}: {minutes(wall)} (target {target} min: "
              f"{'met' if wall <= target * 60 else 'NOT met'}); scratch {scratch}\n")
        print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
