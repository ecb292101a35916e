"""What a cell costs besides its workload, and whether two runs count the same (prints figures; not a test).

`table RUN...`: per workload, medians over the valid counted boots of each run: the cell (runs.csv
`duration_s`), its boot to SSH-ready (`boot_ready_s`), its phases (the phases' own `duration_s`, idle
included), the rest (cell - boot - phases: collectors, set-up, SSH, shutdown) and the rest per phase.

`agree OLD NEW`: every count of every row (variant, workload, phase, metric: no timing, no rate of time) in
both runs, the median of NEW's valid counted boots against the spread of OLD's (its smallest to its largest
boot, widened by EDGE counts for the few copies the collectors' windows can differ by). Prints how many rows
agree, and every row that does not, with both medians and OLD's spread.

    python benchmarks/cell_cost.py table results/reference-A results/reference-B
    python benchmarks/cell_cost.py agree results/reference-A results/reference-B
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness import metrics

EDGE = 8        # collectors.EDGE_COPIES["system."]: what two counts of the same copies may differ by at the edges


def counted(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, samples) of the valid counted boots of a run."""
    runs = pd.read_csv(run / "runs.csv")
    runs = runs[(runs["valid"]) & (runs["mode"] == "counted")]
    samples = pd.read_csv(run / "samples.csv")
    keys = ["variant", "workload", "rep", "mode"]
    return runs, samples.merge(runs[keys], on=keys)


def table(runs_given: list[Path]) -> None:
    print("| run | workload | cell | boot | phases (idle incl.) | rest | phases | rest per phase |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs_given:
        runs, samples = counted(run)
        phases = samples[samples["metric"] == "duration_s"].groupby(["variant", "workload", "rep"])["value"]
        cells = runs.set_index(["variant", "workload", "rep"])
        cells = cells.assign(phases_s=phases.sum(), phase_count=phases.count())
        cells["rest_s"] = cells["duration_s"] - cells["boot_ready_s"] - cells["phases_s"]
        for workload, group in cells.groupby("workload"):
            median = group[["duration_s", "boot_ready_s", "phases_s", "rest_s", "phase_count"]].median()
            print(f"| {run.name} | {workload} | {median.duration_s:.1f} s | {median.boot_ready_s:.1f} s | "
                  f"{median.phases_s:.1f} s | {median.rest_s:.1f} s | {median.phase_count:.0f} | "
                  f"{median.rest_s / median.phase_count:.2f} s |")


def counts(samples: pd.DataFrame) -> pd.DataFrame:
    """Per row: the median, smallest and largest over the boots, of the metrics that are counts."""
    kept = samples[[not metrics.meaning(name).timing and metrics.meaning(name).unit not in ("s", "ms", "ops/s")
                    for name in samples["metric"]]]
    return kept.groupby(["variant", "workload", "phase", "metric"])["value"].agg(["median", "min", "max", "count"])


def agree(old: Path, new: Path) -> None:
    before, after = counts(counted(old)[1]), counts(counted(new)[1])
    both = before.join(after, lsuffix="_old", rsuffix="_new", how="inner")
    inside = (both["median_new"] >= both["min_old"] - EDGE) & (both["median_new"] <= both["max_old"] + EDGE)
    both["agrees"] = inside
    print(f"{len(both)} rows counted in both runs ({old.name}: {before['count'].max():.0f} boots per row at most, "
          f"{new.name}: {after['count'].max():.0f}); {int(inside.sum())} agree (NEW's median within OLD's boots, "
          f"+-{EDGE}), {int((~inside).sum())} do not:")
    apart = both[~inside].reset_index()
    for phase_is_idle, group in apart.groupby(apart["phase"] == "idle"):
        print(f"\n{'idle phases' if phase_is_idle else 'workload phases'}: {len(group)} rows")
        for row in group.itertuples():
            print(f"  {row.variant} {row.workload}/{row.phase}/{row.metric}: {row.median_old:g} "
                  f"[{row.min_old:g}, {row.max_old:g}] -> {row.median_new:g}")
    only = sorted(set(before.index) ^ set(after.index))
    if only:
        print(f"\n{len(only)} rows in one run only, e.g. {only[:5]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["table", "agree"])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    if args.what == "agree" and len(args.runs) != 2:
        sys.exit("agree takes two runs: OLD NEW")
    table(args.runs) if args.what == "table" else agree(*args.runs)


if __name__ == "__main__":
    main()
