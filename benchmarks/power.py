"""Verdict power per guest-second (prints figures; not a test): for each primary row, how often a run of a
given workload size and number of repetitions reaches the reference run's verdict, and what the boots of
such an answer cost in guest seconds.

Each run given (default: the committed reference run) is resampled as in benchmarks/verdict_errors.py:
synthetic runs of `reps` whole boots per variant, drawn with replacement from the run's valid boots of each
kernel (a control from the baseline's), judged by the real comparison code with the run's own plan (its
primary rows, margin and control) at one look. A row's power at `reps` is the share of synthetic runs whose
verdict for it is the reference run's; `control claims` is the share in which the control (the baseline
kernel again) got a better/worse verdict on any row, which must stay near 0. Give runs of the same
experiment at other workload sizes (for example a reduced `harness bench -p size_mb=16 -p keys=4000`) to
see power against size; a workload a run lacks is left out of its lines.

The cost of an answer: a boot's guest seconds (the median `duration_s` of the workload's valid counted
boots in runs.csv: boot, set-up, phases, collectors and shutdown) and of the phases alone (the median sum
of the phases' `duration_s`), times the repetitions and the kernels a bench boots (with a control: three).
Resampling more repetitions than the run holds draws boots again, so power beyond the run's own
repetitions is an estimate that leans on those boots.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness import results
from harness.analysis import records, resample
from harness.project import ROOT

REFERENCE = max(ROOT.glob("results/reference-*"))
SIZE_PARAMETERS = ("size_mb", "keys", "value_bytes")    # the parameters a workload's size is made of


def reference_verdicts(run: Path) -> dict[tuple, str]:
    """(workload, phase, metric, variant) -> verdict of the run's primary rows, off the baseline and control."""
    metadata = results.read_metadata(run)
    return {(r["workload"], r["phase"], r["metric"], r["variant"]): r["verdict"]
            for r in json.loads((run / "comparison.json").read_text())
            if f"{r['workload']}/{r['phase']}/{r['metric']}" in metadata.primary and not r.get("point")
            and r["variant"] not in (metadata.baseline, metadata.control)}


def sources(pools: dict, metadata: results.RunMetadata) -> dict:
    """The variants of a synthetic run: each kernel's pool, a control drawn from the baseline's."""
    found = dict(pools)
    if metadata.control:
        found[metadata.control] = pools[metadata.baseline]
    return found


def cost(samples, runs) -> dict[str, tuple[float, float]]:
    """workload -> (median guest seconds of a valid counted boot, median seconds of its phases)."""
    counted = runs[runs["valid"] & (runs["mode"] == "counted")]
    phases = samples[(samples["metric"] == "duration_s") & (samples["mode"] == "counted")]
    per_boot = phases.groupby(["workload", "variant", "rep"])["value"].sum()
    return {workload: (float(part["duration_s"].median()), float(per_boot[workload].median()))
            for workload, part in counted.groupby("workload")}


def power(run: Path, expected: dict, reps_list: list[int], tables: int, seed: int) -> tuple[list[str], dict]:
    samples, runs, metadata = results.read(run)
    pool = sources(resample.pools(samples, runs, metadata.baseline), metadata)
    plan = replace(records.Plan.from_metadata(metadata, metadata.baseline), design=records.Design())  # one look
    kept = {key: verdict for key, verdict in expected.items() if key[0] in metadata.workloads}
    hits = {(key, reps): 0 for key in kept for reps in reps_list}
    control_claims = dict.fromkeys(reps_list, 0)
    rng = np.random.default_rng(seed)
    for reps in reps_list:
        for _ in range(tables):
            rows, _ = resample.table(pool, plan, reps, rng)
            verdicts = {(r.workload, r.phase, r.metric, r.variant): r for r in rows if not r.point}
            for key, verdict in kept.items():
                hits[(key, reps)] += verdicts[key].verdict == verdict if key in verdicts else 0
            control_claims[reps] += any(r.role == "control" and r.verdict in ("better", "worse") for r in rows)
    seconds = cost(samples, runs)
    kernels = len(pool)
    lines = []
    for key, verdict in kept.items():
        workload = key[0]
        params = metadata.workloads.get(workload, {})
        size = ", ".join(f"{name}={params[name]}" for name in SIZE_PARAMETERS if name in params)
        boot_s, phases_s = seconds[workload]
        shares = " | ".join(f"{hits[(key, reps)] / tables:.2f}" for reps in reps_list)
        answer = " | ".join(f"{reps * kernels * boot_s / 60:.1f}" for reps in reps_list)
        lines.append(f"| {run.name[:40]} | {size} | {'/'.join(key[:3])} | {verdict} | {shares} | {boot_s:.1f} | "
                     f"{phases_s:.1f} | {answer} |")
    return lines, {reps: control_claims[reps] / tables for reps in reps_list}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, default=[REFERENCE])
    parser.add_argument("--expect", type=Path, default=REFERENCE, help="the run whose verdicts are the answers")
    parser.add_argument("--reps", default="4,5,6,7,8", help="repetitions per variant, comma-separated")
    parser.add_argument("--tables", type=int, default=300, help="synthetic runs per run and repetitions")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reps_list = [int(r) for r in args.reps.split(",")]
    expected = reference_verdicts(args.expect)
    print(f"{args.tables} synthetic runs per line and repetitions; verdicts expected: those of {args.expect.name}\n")
    columns = " | ".join(f"power at {reps}" for reps in reps_list)
    minutes = " | ".join(f"min at {reps}" for reps in reps_list)
    print(f"| run | size | row | verdict | {columns} | boot s | phases s | {minutes} |")
    print("|" + "---|" * (8 + 2 * len(reps_list) - 2))
    claims = {}
    for run in args.runs:
        lines, claims[run.name] = power(run, expected, reps_list, args.tables, args.seed)
        print("\n".join(lines), flush=True)
    print("\nControl claims (share of synthetic runs where the control got a better/worse row):")
    for name, by_reps in claims.items():
        print(f"- {name}: " + ", ".join(f"{share:.3f} at {reps}" for reps, share in by_reps.items()))


if __name__ == "__main__":
    main()
