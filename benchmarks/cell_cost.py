"""What a cell costs besides its workload, and whether two runs count the same (prints figures; not a test).

`table RUN...`: per workload, medians over the valid counted boots of each run: the cell (runs.csv
`duration_s`), its boot to SSH-ready (`boot_ready_s`), its phases (the phases' own `duration_s`, idle
included), the rest (cell - boot - phases: collectors, set-up, SSH, shutdown) and the rest per phase.

`agree OLD NEW`: every count of every row (variant, workload, phase, metric: no timing, no rate of time) in
both runs, the median of NEW's valid counted boots against the spread of OLD's (the smallest to the largest boot of
its kernel, the baseline's and the control's together, widened by EDGE counts for the few copies the
collectors' windows can differ by). Prints how many rows
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
    """(runs, samples) of the valid counted boots of a run; a sample's `kernel` is its boot's patch hash (the
    baseline and its control are one kernel)."""
    runs = pd.read_csv(run / "runs.csv", keep_default_na=False)
    runs = runs[(runs["valid"].astype(str) == "True") & (runs["mode"] == "counted")]
    samples = pd.read_csv(run / "samples.csv")
    keys = ["variant", "workload", "rep", "mode"]
    return runs, samples.merge(runs[keys + ["patch_hash"]].rename(columns={"patch_hash": "kernel"}), on=keys)


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
    """Per row: the median over the variant's boots, and the smallest and largest over every boot of its kernel
    (the baseline's and the control's together), of the metrics that are counts."""
    kept = samples[[not metrics.meaning(name).timing and metrics.meaning(name).unit not in ("s", "ms", "ops/s")
                    for name in samples["metric"]]]
    row = ["workload", "phase", "metric"]
    medians = kept.groupby(["variant", *row])["value"].agg(["median", "count"])
    spread = kept.groupby(["kernel", *row])["value"].agg(["min", "max"])
    kernels = kept[["variant", "kernel"]].drop_duplicates().set_index("variant")["kernel"]
    medians = medians.reset_index()
    medians["kernel"] = medians["variant"].map(kernels)
    return medians.join(spread, on=["kernel", *row]).drop(columns="kernel").set_index(["variant", *row])


def agree(old: Path, new: Path) -> None:
    before, after = counts(counted(old)[1]), counts(counted(new)[1])
    both = before.join(after, how="inner", rsuffix="_new").rename(
        columns={"median": "median_old", "min": "min_old", "max": "max_old", "count": "count_old"})
    both["agrees"] = (both["median_new"] >= both["min_old"] - EDGE) & (both["median_new"] <= both["max_old"] + EDGE)
    both["scope"] = [metrics.meaning(metric).scope for metric in both.index.get_level_values("metric")]
    single = both[both["count_old"] < 3]        # one boot per variant (integrity): no spread to be within
    apart = (single["median_old"] - single["median_new"]).abs()
    print(f"{len(single)} rows of fewer than 3 boots (no spread): {int((~single['agrees']).sum())} differ by more "
          f"than {EDGE}, by at most {apart.max():g}")
    both = both[both["count_old"] >= 3]
    print(f"{len(both)} rows of 3 boots or more in both runs ({old.name}: {before['count'].max():.0f} boots per "
          f"row at most, {new.name}: {after['count'].max():.0f}); NEW's median within OLD's boots (+-{EDGE}):")
    for scope, group in both.groupby("scope"):
        print(f"  {scope} scope: {int(group['agrees'].sum())} of {len(group)} rows agree")
    for scope, group in both[~both["agrees"]].groupby("scope"):
        group = group.reset_index()
        print(f"\n{scope} scope, rows that do not agree ({len(group)}):")
        shift = (group["median_old"] - group["median_new"])
        by_metric = group.assign(shift=shift).groupby("metric")["shift"].agg(["count", "median", "min", "max"])
        for metric, row in by_metric.sort_values("count", ascending=False).iterrows():
            print(f"  {metric}: {row['count']:.0f} rows, OLD - NEW median {row['median']:g} "
                  f"[{row['min']:g}, {row['max']:g}]")
        if scope == "process":
            for row in group.itertuples():
                print(f"    {row.variant} {row.workload}/{row.phase}/{row.metric}: {row.median_old:g} "
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
