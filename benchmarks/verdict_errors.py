"""How often the verdicts are wrong, by simulation (prints figures; the assertions live in
tests/analysis/test_verdict_errors.py).

Synthetic runs are resampled from a run's boots (default: the committed reference run) and
judged by the real comparison code, with the default experiment's primary rows, a `control`
and the baseline: A/A tables (every variant drawn from the baseline kernel's boots), whole
boots or each metric on its own, and base/patched tables (the patched boots drawn from the
patched variant). Fixed repetitions (bench's default) and --reps auto; and as a discovery (what
`harness try` runs: no row declared, every row judged by the false-discovery rate).
"""

import argparse
import time
from pathlib import Path

from harness import bench, experiment, results
from harness.analysis import records, resample
from harness.project import ROOT


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=max(ROOT.glob("results/reference-*")))
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--max-reps", type=int, default=10)
    args = parser.parse_args()
    spec = experiment.load(None)
    samples, runs, _ = results.read(args.run_dir)
    pools = resample.pools(samples, runs)
    effects = {(w, "write", "cow_copies_per_swapin", "patched"): "better" for w in ("swapcow", "redis")}
    print(f"{args.tables} synthetic tables per line, resampled from {args.run_dir.name} "
          f"({len(runs)} boots); primary rows: {', '.join(spec.primary)}; variants base, patched, control")
    print("| draws | repetitions | P(any better/worse) | better/worse per table | seed effects found | mean reps | s |")
    print("|---|---|---|---|---|---|---|")
    for aa, per_metric, auto, discovery in (
            (True, False, False, False), (True, True, False, False), (True, False, True, False),
            (True, True, True, False), (False, False, False, False), (False, False, True, False),
            (True, False, False, True), (True, True, False, True), (False, False, False, True)):
        sources = {"base": pools["base"], "patched": pools["base" if aa else "patched"], "control": pools["base"]}
        design = records.Design.sequential(bench.AUTO_FIRST_LOOK, args.max_reps) if auto else records.Design()
        plan = records.Plan("base", () if discovery else spec.primary, spec.margin_pct, "control", design,
                            discovery=discovery)
        started = time.monotonic()
        tally = resample.tally(sources, plan, bench.AUTO_FIRST_LOOK if auto else bench.DEFAULT_REPS, args.tables, 1,
                               per_metric, args.max_reps if auto else None, None if aa else effects)
        draws = ("discovery, " if discovery else "") + ("A/A, " if aa else "base/patched, ") + \
            ("per metric" if per_metric else "whole boots")
        reps = f"auto ({bench.AUTO_FIRST_LOOK}..{args.max_reps})" if auto else str(bench.DEFAULT_REPS)
        found = "-" if aa else f"{tally.found / tally.tables:.3f}"
        print(f"| {draws} | {reps} | {tally.any_claim / tally.tables:.3f} | {tally.claims / tally.tables:.3f} | "
              f"{found} | {tally.reps_used:.2f} | {time.monotonic() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
