"""Synthetic runs resampled from a real run's boots, judged by the real comparison code.

How often does a table show a `better` or `worse` that is not there (A/A: every variant
drawn from boots of the baseline kernel), and how often does it find an effect that is there
(variants drawn from their own boots)? With a fixed number of repetitions, or with the
sequential design of `--reps auto` (blocks drawn one at a time; the run stops when its
stopping rule says so, exactly as `harness bench` would).

Two ways to draw: whole boots (every metric of a synthetic boot comes from one real boot, so
metrics keep their correlation), or per metric (each value drawn on its own: the metrics of a
table are then independent, the case that multiplicity corrections find hardest).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import workloads
from harness.analysis import compare, family, records, sampling


@dataclass(frozen=True)
class Pool:
    """The valid boots of one kernel in one workload, mode and sweep point: boots x (phase, metric), NaN where
    missing."""
    columns: tuple[tuple[str, str], ...]
    values: np.ndarray


Pools = dict   # variant -> (workload, mode, point) -> Pool


def pools(samples: pd.DataFrame, runs: pd.DataFrame, baseline: str = "base") -> Pools:
    """Each variant's valid boots; variants with the baseline's patches (a control) join the baseline's pool. The
    workloads judged by a rule (workloads.by_rule: a run gives them one boot, which a synthetic run of n boots could
    only copy n times) are left out."""
    kept, _ = sampling.valid_samples(samples, runs)
    kept = kept[~kept["workload"].isin([name for name in kept["workload"].unique() if workloads.by_rule(name)])]
    hashes = runs.groupby("variant")["patch_hash"].first().astype(str).to_dict()
    kernel = {variant: baseline if hashes.get(variant) == hashes.get(baseline) else variant for variant in hashes}
    kept = kept.assign(kernel=kept["variant"].map(kernel), boot=kept["variant"] + ":" + kept["rep"].astype(str))
    found: Pools = {}
    kept = sampling.with_points(kept)
    for (name, workload, mode, point), part in kept.groupby(["kernel", "workload", "mode", "point"]):
        table = part.pivot_table(index="boot", columns=["phase", "metric"], values="value", aggfunc="first")
        found.setdefault(name, {})[(workload, mode, point)] = Pool(tuple(table.columns), table.to_numpy(dtype=float))
    return found


def draw(sources: dict[str, dict], reps: int, rng: np.random.Generator, per_metric: bool = False) -> records.Cells:
    """Cells of a synthetic run: for each variant, `reps` boots drawn with replacement from its source pools."""
    cells: records.Cells = {}
    modes = {}
    for by_key in sources.values():
        for workload, mode, _ in by_key:
            modes.setdefault(workload, set()).add(mode)
    for variant, by_key in sources.items():
        for (workload, mode, point), pool in by_key.items():
            if per_metric:
                picks = rng.integers(0, len(pool.values), size=(reps, len(pool.columns)))
                drawn = pool.values[picks, np.arange(len(pool.columns))[None, :]]
            else:
                drawn = pool.values[rng.integers(0, len(pool.values), size=reps)]
            rep_numbers = np.arange(1, reps + 1)
            for column, (phase, metric) in enumerate(pool.columns):
                if sampling.source_mode(metric, modes[workload]) != mode:
                    continue
                values = drawn[:, column]
                present = ~np.isnan(values)
                if present.any():     # a metric only some boots have (a share of no faults) may miss every draw
                    cells.setdefault((workload, phase, metric, point), {})[variant] = (rep_numbers[present],
                                                                                      values[present])
    return cells


def up_to(cells: records.Cells, reps: int) -> records.Cells:
    """The cells as they stood after `reps` repetitions (a variant without a value by then is left out)."""
    kept: records.Cells = {}
    for key, by_variant in cells.items():
        trimmed = {}
        for variant, (numbers, values) in by_variant.items():
            within = int(numbers.searchsorted(reps, "right"))      # draw's repetition numbers ascend
            if within:
                trimmed[variant] = (numbers[:within], values[:within])
        if trimmed:
            kept[key] = trimmed
    return kept


def run(sources: dict, plan: records.Plan, reps: int, rng: np.random.Generator, per_metric: bool = False,
        max_reps: int | None = None) -> tuple[records.Cells, int]:
    """(cells, repetitions used) of one synthetic run: fixed reps, or sequential from reps to max_reps, stopped
    by the stopping rule of `harness bench --reps auto`."""
    if max_reps is None:
        return draw(sources, reps, rng, per_metric), reps
    full = draw(sources, max_reps, rng, per_metric)
    used = reps
    while used < max_reps and not family.all_decided(up_to(full, used), plan, list(sources)):
        used += 1
    return up_to(full, used), used


def table(sources: dict, plan: records.Plan, reps: int, rng: np.random.Generator, per_metric: bool = False,
          max_reps: int | None = None) -> tuple[list[records.Row], int]:
    """(rows, repetitions used) of one synthetic run: fixed reps, or sequential from reps to max_reps."""
    cells, used = run(sources, plan, reps, rng, per_metric, max_reps)
    return compare.compare_cells(cells, plan, list(sources)), used


@dataclass(frozen=True)
class Tally:
    tables: int
    any_claim: int             # tables with at least one better/worse (A/A: at least one false verdict)
    claims: int                # better/worse rows over all tables
    reps_used: float           # mean repetitions per table
    found: int = 0             # tables where every expected row had its expected verdict
    calibration_failed: int = 0     # tables where a control (the baseline again) got a better/worse row

    def line(self) -> str:
        return (f"{self.tables} tables: P(any better/worse) = {self.any_claim / self.tables:.3f}, "
                f"{self.claims / self.tables:.3f} per table; expected verdicts in {self.found / self.tables:.3f}; "
                f"calibration failed in {self.calibration_failed / self.tables:.3f}; "
                f"mean repetitions {self.reps_used:.2f}")


def tally(sources: dict, plan: records.Plan, reps: int, tables: int, seed: int, per_metric: bool = False,
          max_reps: int | None = None, expected: dict | None = None) -> Tally:
    """Count verdicts over `tables` synthetic runs. expected: {(workload, phase, metric, variant): verdict}
    ((workload, phase, metric, point, variant) for a sweep's rows)."""
    rng = np.random.default_rng(seed)
    any_claim = claims = found = failed = 0
    used_total = 0
    for _ in range(tables):
        rows, used = table(sources, plan, reps, rng, per_metric, max_reps)
        made = [r for r in rows if r.verdict in ("better", "worse")]
        any_claim += bool(made)
        claims += len(made)
        failed += any(r.role == "control" for r in made)
        used_total += used
        if expected:
            verdicts = {(r.workload, r.phase, r.metric, r.variant): r.verdict for r in rows if not r.point}
            verdicts |= {(r.workload, r.phase, r.metric, r.point, r.variant): r.verdict for r in rows if r.point}
            found += all(verdicts.get(key) == verdict for key, verdict in expected.items())
    return Tally(tables, any_claim, claims, used_total / tables, found, failed)
