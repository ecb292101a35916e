"""Statistics and verdicts: each variant against the baseline, per workload, phase and metric.

The hypotheses are declared before the run: the experiment's `primary` rows
(WORKLOAD/PHASE/METRIC) and their equivalence margin (`margin_pct`, default 5%). For every
primary row and every variant but the baseline there are two hypotheses, "no change" (its
rejection is `better` or `worse`, by the metric's direction) and "the change is at least the
margin" (its rejection is `equivalent`); a row that rejects neither is `inconclusive`, and a
row with one value in every boot of both kernels is `identical` (no test can tell them apart,
so none is claimed). Both
are tested with exact rank tests (harness.stats), and the family of all primary rows of all
variants holds its family-wise error at ALPHA by Holm's step-down counting rows (at most one
of a row's two hypotheses can be true). A design with several looks (`--reps auto`) spends a
share of ALPHA at each look (Bonferroni over looks), so stopping early cannot inflate it.

A sweep (harness/sweep.py) makes every row one per point: each primary row is tested at every
point, and the family counts all of them; comparability is checked within each point, since the
point is what the sweep varies.

Every other row is exploratory: change, interval, and a Benjamini-Hochberg adjusted p-value
across all exploratory rows. It gets a verdict only when the adjusted p allows it and its
variant already has a `better` or `worse` primary row (gatekeeping: when no variant differs
from the baseline, no exploratory verdict can appear, so a table's chance of any false
verdict stays within ALPHA); without primary rows there is no verdict at all, unless the experiment
runs as discovery (`discovery = true`, what `harness try` writes): then there is no gate, every row is
exploratory, and Benjamini-Hochberg across all rows of the judged variants decides them (each control
is a family of its own, so that a patch's real effects cannot lower the bar of the calibration). With
every variant the baseline again that holds the chance of any verdict in a family at ALPHA
(benchmarks/verdict_errors.py checks it by simulation); a discovery is a lead to confirm on fresh boots
with the rows declared primary (confirmation_rows()), not a claim. A metric
without a direction in harness.metrics never gets a verdict. The `control` variant (the
baseline kernel booted again) must come out `identical`, `equivalent` or `inconclusive`; `better` or
`worse` there means the measurement itself is not to be trusted: calibration failed.

The rooms: records.py (the records and words), sampling.py (data in), looks.py (what one look may say of a row),
family.py (the primary family and the stopping rule), discovery.py (discoveries and leads); this module builds
every row on top of them and the whole-table test of the controls; harness/analysis/tables.py words the records.
"""

import functools
import math
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from harness import comparability, metrics, results, workloads
from harness import sweep as sweeps
from harness.analysis import integrity, stats
from harness.analysis.discovery import clusters, discoveries
from harness.analysis.family import ON_SURVIVORS, decide, losing, survivors
from harness.analysis.looks import direction_verdict, looks_reached
from harness.analysis.records import ALPHA, BASELINE, Cells, Comparison, Decision, FamilyRow, Plan, Row
from harness.analysis.sampling import (
    BOOTS,
    baseline_of,
    boot_cells,
    gather,
    one_value,
    other_sources,
    source_mode,
    strata,
    valid_modes,
    valid_samples,
    variant_order,
    with_missing,
    with_points,
    with_reasons,
)
from harness.errors import UnknownVariant


def describe(values: np.ndarray) -> dict:
    listed = values.tolist()
    if listed and all(value == listed[0] for value in listed) and \
            (listed[0] != 0 or len({math.copysign(1.0, value) for value in listed}) == 1):    # 0.0 and -0.0 apart
        return dict(_described_constant(listed[0], math.copysign(1.0, listed[0]), len(listed)))
    return _described(values)


def _described(values: np.ndarray) -> dict:
    low, high, coverage = stats.median_interval(values)
    listed = values.tolist()
    mean = math.fsum(listed) / len(listed)
    spread = math.sqrt(math.fsum((v - mean) ** 2 for v in listed) / (len(listed) - 1)) if len(listed) > 1 else 0.0
    return {"n": len(listed), "median": stats.median(values), "mean": mean, "stddev": spread, "ci_low": low,
            "ci_high": high, "ci_level": round(coverage, 4)}


# Most rows of a table hold one value in every boot of both variants (counters that stay 0): their figures
# depend on that value and the counts alone, so they are worked out once (with the sign, so that -0.0 stays
# itself). A simulation of thousands of tables spends most of its time here otherwise.
@functools.lru_cache(maxsize=4096)
def _described_constant(value: float, sign: float, n: int) -> dict:
    return _described(np.full(n, value))


@functools.lru_cache(maxsize=4096)
def _unchanged(value: float, sign: float, n_base: int, n_other: int) -> dict:
    return _change(np.full(n_base, value), np.full(n_other, value), True)


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None or not math.isfinite(ratio) else (ratio - 1) * 100


def change(base: np.ndarray, other: np.ndarray, same: bool | None = None) -> dict:
    """The change of other against base in %, with the interval of the rank test, and its p-value.

    same: one_value(base, other), when the caller knows it already."""
    same = one_value(base, other) if same is None else same
    if same and len(other):
        value = float(base[0])
        return dict(_unchanged(value, math.copysign(1.0, value), len(base), len(other)))
    return _change(base, other, same)


def _change(base: np.ndarray, other: np.ndarray, same: bool) -> dict:
    """change() worked out; same: one_value(base, other)."""
    estimate, interval = stats.ratio_change(base, other)
    interval = interval or (None, None)
    if same:
        # one value everywhere (most rows of a table: counters that stay 0): every pairwise ratio is 1 and every
        # rank tied, so the estimate is 1 and the exact p is 1 (tests/analysis/test_stats.py checks both)
        estimate, p_value = 1.0, 1.0
    else:
        p_value = stats.rank_test(base, other)
    return {"change_pct": _pct(estimate), "change_ci_low": _pct(interval[0]), "change_ci_high": _pct(interval[1]),
            "p_value": p_value}


def compare_cells(cells: Cells, plan: Plan, variants: list[str]) -> list[Row]:
    """Every (workload, phase, metric, variant) against the baseline, with roles and verdicts."""
    decisions = decide(cells, plan, variants)
    order = {variant: index for index, variant in enumerate(variants)}
    built: list[_Built] = []
    for key, by_variant in cells.items():
        if plan.baseline not in by_variant:
            continue
        for variant in sorted((v for v in by_variant if isinstance(v, str)), key=lambda v: order.get(v, len(variants))):
            decision = decisions.get((*key, variant))
            if key[1:3] == BOOTS:
                built.append(_Built(_boots_row(key, variant, by_variant, plan, decision)))
            else:
                built.append(_measured_row(key, variant, by_variant, cells, plan, decision))
    return _exploratory_verdicts(built, decisions, plan, cells)


class _Built(NamedTuple):
    """A row as compare_cells built it, and whether it is a member of the exploratory family (Benjamini-Hochberg):
    a row without a decision that holds more than one value, of a workload judged by statistics. The rest are the
    baseline's, the lost boots', the decided primary rows, those of one value in every boot of both (p_adjusted 1:
    no test can tell) and those of a workload judged by a rule (workloads.by_rule: harness/analysis/integrity.py)."""
    row: Row
    explored: bool = False


NO_CHANGE = {"change_pct": None, "change_ci_low": None, "change_ci_high": None, "p_value": None}


def _decided(decision: Decision) -> dict:
    """A primary row's fields from its decision."""
    return {"verdict": decision.verdict, "p_adjusted": decision.p_adjusted, "note": decision.note,
            "p_equivalence": decision.p_equivalence, "decided_after": decision.decided_after}


def _measured_row(key: tuple, variant: str, by_variant: dict, cells: Cells, plan: Plan,
                  decision: Decision | None) -> _Built:
    """A measured row: the variant's figures and, against the baseline, its change and the decision of a
    primary row; any other row is identical (one value everywhere) or waits for _exploratory_verdicts."""
    workload, phase, metric, point = key
    meaning = metrics.meaning(metric)
    primary = f"{workload}/{phase}/{metric}" in plan.primary
    values, base = by_variant[variant][1], baseline_of(by_variant, plan.baseline, variant)[1]
    fields = {"workload": workload, "phase": phase, "metric": metric, "point": point, "variant": variant,
              "baseline": plan.baseline, **describe(values), "direction": meaning.direction, "unit": meaning.unit,
              "role": "control" if variant in plan.controls else "primary" if primary else "exploratory",
              "margin_pct": plan.margin_pct if primary else None}
    if variant == plan.baseline:
        return _Built(Row(**fields, **NO_CHANGE, verdict=BASELINE))
    same = one_value(base, values)
    if decision is not None:
        return _Built(Row(**fields, **change(base, values, same), **_decided(decision)))
    held = same and _lost_more(cells, workload, point, variant, plan.baseline)
    return _Built(Row(**fields, **change(base, values, same), verdict="identical" if same and not held
                      else "inconclusive", p_adjusted=1.0 if same else None),
                  explored=not same and not workloads.by_rule(workload))


def _lost_more(cells: Cells, workload: str, point: str, variant: str, baseline: str) -> bool:
    """Whether the variant lost a larger share of the workload's repetitions than the baseline (losing)."""
    boots = FamilyRow(workload, *BOOTS, point, variant)
    return boots.cell in cells and losing(cells, boots, baseline)


def _boots_row(key: tuple, variant: str, by_variant: dict, plan: Plan, decision: Decision | None) -> Row:
    """The lost-boots row of a workload: the share of repetitions that lost no boot, and Fisher's test."""
    workload, phase, metric, point = key
    values, base = by_variant[variant][1], by_variant[plan.baseline][1]
    share, base_share = float(values.mean()), float(base.mean())
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    row = Row(workload, phase, metric, variant, plan.baseline, len(values), share, share, spread, None, None,
              **NO_CHANGE, verdict=BASELINE, role="control" if variant in plan.controls else "primary",
              ci_level=None, direction="higher", unit="share", point=point)
    if variant == plan.baseline:
        return row
    lost, lost_base = int(np.count_nonzero(values == 0)), int(np.count_nonzero(base == 0))
    tested = {"change_pct": _pct(share / base_share) if base_share else None,
              "p_value": stats.more_often(lost, len(values), lost_base, len(base))}
    return replace(row, **tested, **(_decided(decision) if decision is not None else {"verdict": "inconclusive"}))


NO_FAIR_SAMPLE = ("no verdict: the variant lost a larger share of its repetitions than the baseline, so the boots "
                  "left are those that passed")


def _exploratory_verdicts(built: list[_Built], decisions: dict, plan: Plan, cells: Cells) -> list[Row]:
    """Benjamini-Hochberg across every exploratory row; verdicts only behind an open gate, or, in discovery,
    wherever the variant kept as large a share of its repetitions as the baseline (else the boots left are those
    that passed the gates, and the row says so)."""
    adjusted = _false_discovery(built, plan)
    gate_open = {row.variant for row, decision in decisions.items()      # the declared rows: not the lost boots
                 if decision.verdict in ("better", "worse") and (row.phase, row.metric) != BOOTS}
    return [_exploratory_verdict(replace(row, p_adjusted=p_adjusted), gate_open, plan, cells) if explored else row
            for (row, explored), p_adjusted in zip(built, adjusted)]


def _false_discovery(built: list[_Built], plan: Plan) -> list[float | None]:
    """The Benjamini-Hochberg p_adj of each member of the exploratory family (None for the others). A discovery
    has no gate: a control (the baseline again) is its own family, so that the judged variants' real effects
    cannot lower its bar and fail the calibration; otherwise the gate keeps controls quiet."""
    family = [index for index, (_, explored) in enumerate(built) if explored]
    controls = set(plan.controls) if plan.discovery else set()
    adjusted: list[float | None] = [None] * len(built)
    for members in [[i for i in family if built[i].row.variant not in controls],
                    *[[i for i in family if built[i].row.variant == name] for name in sorted(controls)]]:
        for index, value in zip(members, stats.false_discovery([built[i].row.p_value for i in members])):
            adjusted[index] = value
    return adjusted


def _exploratory_verdict(row: Row, gate_open: set[str], plan: Plan, cells: Cells) -> Row:
    """An exploratory row's verdict by its direction, where its p_adj allows one behind an open gate (or in a
    discovery); in a discovery, none for a variant that lost more repetitions: the row says why."""
    if (row.variant not in gate_open and not plan.discovery) or row.direction == "none" \
            or not row.p_adjusted <= ALPHA:
        return row
    if plan.discovery and _lost_more(cells, row.workload, row.point, row.variant, plan.baseline):
        return replace(row, note=NO_FAIR_SAMPLE)
    by_variant = cells[(row.workload, row.phase, row.metric, row.point)]
    held = survivors(cells, plan.baseline, FamilyRow(row.workload, row.phase, row.metric, row.point, row.variant), None,
                      ON_SURVIVORS)
    return replace(row, verdict=direction_verdict(row.metric, baseline_of(by_variant, plan.baseline, row.variant)[1],
                                                   by_variant[row.variant][1]), note=held or row.note)


def compare(samples: pd.DataFrame, runs: pd.DataFrame, plan: Plan = Plan(), order: list[str] = (),
            coverage=None) -> Comparison:
    """Every (workload, phase, metric, variant) against the plan's baseline; invalid runs left out and counted.

    order: the experiment's variant order (rows follow it, the baseline first). coverage: what each variant
    changed and which phases ran it (harness/analysis/coverage.py): rows about code that did not run say so."""
    comparability.check_runs(results.valid_runs(runs), plan.mixed_sources, plan.mixed_hosts)
    if plan.baseline not in set(runs["variant"]):
        raise UnknownVariant(name=plan.baseline, experiment="this run", known=", ".join(sorted(set(runs["variant"]))))
    kept, invalid = valid_samples(samples, runs)
    cells = gather(kept, runs) | boot_cells(runs)
    for key, by_variant in strata(kept, runs, plan).items():
        if key in cells:
            cells[key] = {**cells[key], **by_variant}
    rows = compare_cells(cells, plan, variant_order(runs, plan.baseline, order))
    rows = [with_reasons(row, runs) for row in rows]
    rows.sort(key=lambda row: sweeps.order(row.point))     # stable: within a point, the order compare_cells gave
    others = other_sources(runs, plan.baseline)
    rows = [replace(row, other_source=True) if row.variant in others else row for row in rows]
    rows = with_missing(rows, runs)
    if coverage is not None:
        rows = coverage.judged(rows)
    judged = integrity.judge(runs, samples, plan.baseline, plan.controls)
    rows = integrity.on_rows(rows, judged)
    looks = tuple(look for look, _ in looks_reached(plan, cells) if look is not None)
    found = clusters(discoveries(rows), cells, plan.baseline) if plan.discovery else []
    return Comparison(rows, invalid, plan, looks, whole_table=whole_table_tests(kept, plan, runs), coverage=coverage,
                      wrong=judged, checked="" if judged else integrity.clean_line(samples),
                      clusters=tuple(tuple((r.key, r.variant) for r in group) for group in found))


def whole_table_tests(kept: pd.DataFrame, plan: Plan, runs: pd.DataFrame) -> tuple[tuple[str, float, int], ...]:
    """(control, p, rows) for each control with valid boots: the control against the baseline over every row at
    once (stats.whole_boot_test), per workload, mode and point the rows measured in every boot of both, each
    metric from its own boots (source_mode)."""
    found = []
    modes = valid_modes(results.valid_runs(with_points(runs)))
    for control in plan.controls:
        groups, rows = [], 0
        mine = kept[kept["variant"].isin([plan.baseline, control])]
        for (workload, mode, _), part in mine.groupby(["workload", "mode", "point"], sort=False):
            if workloads.by_rule(workload):
                continue        # one boot a side, judged by a rule: nothing for a permutation test
            part = part[[source_mode(metric, modes.get(workload, set())) == mode for metric in part["metric"]]]
            group = _boot_matrix(part, control)
            if group is not None:
                groups.append(group)
                rows += group[0].shape[1]
        if groups:
            found.append((control, stats.whole_boot_test(groups), rows))
    return tuple(found)


def _boot_matrix(part: pd.DataFrame, control: str) -> tuple[np.ndarray, int] | None:
    """(boots x rows, how many of the boots are the control's, first) of one workload, mode and point: the rows
    every boot of both measured; None unless both have boots."""
    if "run_dir" in part:
        part = part.assign(boot=part["variant"] + ":" + part["rep"].astype(str) + ":" + part["run_dir"])
    else:
        part = part.assign(boot=part["variant"] + ":" + part["rep"].astype(str))
    table = part.pivot_table(index="boot", columns=["phase", "metric"], values="value", aggfunc="first")
    table = table.dropna(axis=1)
    first = table.index.str.startswith(f"{control}:")
    if not first.any() or first.all() or table.empty:
        return None
    return np.vstack([table.to_numpy(dtype=float)[first], table.to_numpy(dtype=float)[~first]]), int(first.sum())
