"""Data in: a run's valid samples as arrays per row and variant (Cells), each metric from the boots that measure it;
the baseline a variant is judged against (its own folders' when pooled); each workload's lost boots, with their
reasons; and what each row is missing."""

from dataclasses import replace

import numpy as np
import pandas as pd

from harness import metrics, results
from harness.analysis.records import Cells, Plan, Row


def with_points(frame: pd.DataFrame) -> pd.DataFrame:
    """frame with a `point` column ("" for data from before sweeps)."""
    return frame if "point" in frame else frame.assign(point="")


def valid_samples(samples: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Samples of valid runs only, and how many runs were left out as invalid."""
    samples, runs = with_points(samples), with_points(runs)
    keys = [key for key in ("run_dir", "variant", "workload", "rep", "mode", "point") if key in runs and key in samples]
    good = results.valid_runs(runs)[keys]
    kept = samples.merge(good.astype({"rep": int}), on=keys)
    return kept, len(runs) - len(results.valid_runs(runs))


def source_mode(metric: str, modes: set[str]) -> str:
    """The boots a metric is taken from, given the modes a workload has valid boots in: timings from
    boots without probes (`timed`); the rest from instrumented boots (`counted`), or from timed
    boots for a workload that has no counted ones."""
    if metrics.meaning(metric).timing:
        return "timed"
    return "counted" if "counted" in modes else "timed"


def valid_modes(valid: pd.DataFrame) -> dict[str, set[str]]:
    """The modes each workload has valid boots in (what source_mode chooses from)."""
    return {workload: set(part["mode"]) for workload, part in valid.groupby("workload")}


def gather(samples: pd.DataFrame, runs: pd.DataFrame, modes: dict | None = None) -> Cells:
    """Valid samples as arrays per row and variant, each metric from the boots that measure it (modes: the modes
    each workload has valid boots in, when they are to be those of more runs than these)."""
    if samples.empty:
        return {}
    samples = with_points(samples)
    if modes is None:
        modes = valid_modes(results.valid_runs(runs))
    wanted = {(workload, name): source_mode(name, modes.get(workload, set()))
              for workload, name in samples[["workload", "metric"]].drop_duplicates().itertuples(index=False)}
    keep = [wanted[(workload, name)] == mode for workload, name, mode
            in samples[["workload", "metric", "mode"]].itertuples(index=False)]
    chosen = samples[keep]
    cells: Cells = {}
    for (workload, phase, metric, point, variant), part in chosen.groupby(
            ["workload", "phase", "metric", "point", "variant"], sort=False):
        cells.setdefault((workload, phase, metric, point), {})[variant] = (
            part["rep"].to_numpy(dtype=int), part["value"].to_numpy(dtype=float))
    return cells


def strata(kept: pd.DataFrame, runs: pd.DataFrame, plan: Plan) -> Cells:
    """Pooled folders compare days as well as kernels: for each row and variant, the boots of the baseline kernel
    (the baseline and the controls, the variant itself left out) from the folders the variant's own boots came
    from, keyed (baseline, variant) beside the variants (baseline_of reads them); {} for one folder. Each variant is
    then judged against the baseline kernel of its own days: a day effect between folders shows in the
    calibration (the control of one folder against the baseline of another), not as a change of the variant."""
    if "run_dir" not in kept or kept["run_dir"].nunique() < 2:
        return {}
    kernel = [plan.baseline, *plan.controls]
    modes = valid_modes(results.valid_runs(runs))      # the pooled cells' choice of boots, in every folder
    folders = {folder: gather(kept[kept["run_dir"] == folder], runs[runs["run_dir"] == folder], modes)
               for folder in kept["run_dir"].unique()}
    found: Cells = {}
    for key in dict.fromkeys(key for cells in folders.values() for key in cells):
        here = {folder: cells.get(key, {}) for folder, cells in folders.items()}
        for variant in dict.fromkeys(v for by_variant in here.values() for v in by_variant if v != plan.baseline):
            parts = [by_variant[name] for by_variant in here.values() if variant in by_variant
                     for name in kernel if name != variant and name in by_variant]
            if parts:
                found.setdefault(key, {})[(plan.baseline, variant)] = (
                    np.concatenate([reps for reps, _ in parts]), np.concatenate([values for _, values in parts]))
    return found


def baseline_of(by_variant: dict, baseline: str, variant: str) -> tuple:
    """(reps, values) a variant is judged against: the baseline kernel of its own folders when pooled (strata),
    else the baseline's."""
    return by_variant.get((baseline, variant)) or by_variant[baseline]


BOOTS = ("boots", "valid_share")     # the (phase, metric) of each workload's lost-boots row
NOT_THE_KERNEL = ("failed: worker ",)    # invalid boots that say nothing of the kernel: the Dask worker's


def _lost(runs: pd.DataFrame) -> pd.Series:
    """Which of runs count for the lost-boots rows: every valid boot, and every invalid one but a boot its Dask
    worker lost (the machine's, not the kernel's). A fault of the harness counts, on every side: an exception of
    paramiko's when a variant's guest died is the variant's doing, and Fisher's test weighs such faults against
    the baseline's as it weighs any other lost boot."""
    reasons = runs["reason"].fillna("").astype(str) if "reason" in runs else pd.Series("", index=runs.index)
    return runs["valid"].astype(bool) | ~reasons.str.startswith(NOT_THE_KERNEL)


def boot_cells(runs: pd.DataFrame) -> Cells:
    """Per workload and point, each variant's repetitions as 1.0 where every boot of the repetition (counted and
    timed) was valid and 0.0 where one was lost: failed to boot or run, failed a gate, or the harness failed on it.
    A boot its Dask worker lost is left out (_lost); a repetition with nothing else has no value."""
    if runs.empty:
        return {}
    runs = with_points(runs)
    counted = runs[_lost(runs)]
    cells: Cells = {}
    for (workload, point, variant), part in counted.groupby(["workload", "point", "variant"], sort=False):
        kept = part.groupby("rep")["valid"].all()
        cells.setdefault((workload, *BOOTS, point), {})[variant] = (kept.index.to_numpy(dtype=int),
                                                                    kept.to_numpy(dtype=float))
    return cells


def lost_reasons(runs: pd.DataFrame, workload: str, point: str, variant: str) -> str:
    """'2 x reswap gate: ...; 1 x failed: ...': the invalid boots of one variant that count as lost (_lost)."""
    runs = with_points(runs)
    runs = runs[_lost(runs)]
    mine = runs[(runs["workload"] == workload) & (runs["point"] == point) & (runs["variant"] == variant) &
                ~runs["valid"].astype(bool)]
    reasons = mine["reason"].fillna("").astype(str) if "reason" in mine else pd.Series(dtype=str)
    return "; ".join(f"{count} x {reason or 'invalid'}" for reason, count in reasons.value_counts().items())


def lost_more(rows: list[Row]) -> list[Row]:
    """The lost-boots rows of the variants that lost a larger share of a workload's repetitions than the baseline,
    whatever their verdict: where they are, the verdicts of that workload rest on the boots that passed."""
    kept = {(r.workload, r.point): r.median for r in rows if (r.phase, r.metric) == BOOTS and r.variant == r.baseline}
    return [r for r in rows if (r.phase, r.metric) == BOOTS and r.variant != r.baseline
            and (r.workload, r.point) in kept and r.median < kept[(r.workload, r.point)]]


def with_reasons(row: Row, runs: pd.DataFrame) -> Row:
    """A lost-boots row with a note, with the reasons of its lost boots after it."""
    if (row.phase, row.metric) != BOOTS or not row.note:
        return row
    reasons = lost_reasons(runs, row.workload, row.point, row.variant)
    return replace(row, note=f"{row.note}: {reasons}") if reasons else row


def with_missing(rows: list[Row], runs: pd.DataFrame) -> list[Row]:
    """Each row with the boots that gave it no value and why: the boots run of its variant and workload
    (at its point) in the mode its metric is taken from, less its n. A valid boot without a value
    is a rate whose denominator was 0, or a figure the boot did not record."""
    runs = with_points(runs)
    modes = valid_modes(results.valid_runs(runs))
    boots = {key: (len(part), int(part["valid"].sum()))
             for key, part in runs.groupby(["variant", "workload", "point", "mode"], sort=False)}
    marked = []
    for row in rows:
        if (row.phase, row.metric) == BOOTS:
            marked.append(row)
            continue
        mode = source_mode(row.metric, modes.get(row.workload, set()))
        run, valid = boots.get((row.variant, row.workload, row.point, mode), (row.n, row.n))
        reasons = [f"{run - valid} invalid" if run > valid else "",
                   (f"{valid - row.n} with denominator 0" if metrics.meaning(row.metric).kind == "rate"
                    else f"{valid - row.n} not recorded") if valid > row.n else ""]
        marked.append(replace(row, n_missing=max(0, run - row.n), missing_reason=", ".join(r for r in reasons if r)))
    return marked


def other_sources(runs: pd.DataFrame, baseline: str) -> set[str]:
    """The variants whose valid runs were built from another kernel source than the baseline's."""
    if "source" not in runs:
        return set()
    valid = results.valid_runs(runs)
    base = set(valid[valid["variant"] == baseline]["source"].astype(str))
    return {variant for variant, part in valid.groupby("variant") if set(part["source"].astype(str)) != base}


def variant_order(runs: pd.DataFrame, baseline: str, order=()) -> list[str]:
    """The variants of the runs: the baseline first, then in the experiment's order, then the rest."""
    present = list(dict.fromkeys(runs["variant"]))
    ordered = list(dict.fromkeys([*[v for v in order if v in present], *present]))
    return [baseline] + [v for v in ordered if v != baseline]


def up_to(cell, look: int | None) -> np.ndarray:
    reps, values = cell
    return values if look is None else values[reps <= look]


def highest_rep(by_variant: dict) -> int:
    return max((int(reps.max()) for reps, _ in by_variant.values() if len(reps)), default=0)


def one_value(base: np.ndarray, other: np.ndarray) -> bool:
    """Whether every value of base and other is the same one (a degenerate row: no test can tell them apart)."""
    return bool(len(base) and (base == base[0]).all() and (other == base[0]).all())
