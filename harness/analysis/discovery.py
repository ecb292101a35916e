"""Discoveries and leads: the rows a discovery found, in clusters of rows that moved in the same boots; what a closed
gate keeps quiet (unjudged); the rows a confirmation declares primary; and the repetitions at which a discovery can
find a row that moves alone."""

import numpy as np

from harness import metrics, workloads
from harness.analysis import stats
from harness.analysis.looks import went_down
from harness.analysis.records import ALPHA, Cells, Plan, Row
from harness.analysis.sampling import BOOTS, baseline_of, one_value

DISCOVERY_REPS_LIMIT = 30     # repetitions a side past which discovery_reps() stops looking


def discovery_reps(rows: int) -> int | None:
    """The repetitions a side at which a discovery of `rows` rows can find a row that moves alone, in every boot:
    its smallest exact p-value, 2 / C(2n, n), within Benjamini-Hochberg's bar for one rejection, ALPHA / rows.
    Below it only rows that move by the dozen together can pass (the bar grows with the rejections)."""
    for reps in range(2, DISCOVERY_REPS_LIMIT + 1):
        if rows and stats.smallest_p(reps, reps) <= ALPHA / rows:
            return reps
    return None


CONFIRM_LIMIT = 8       # rows a confirmation declares primary: more would need more boots to decide any
IDLE = "idle"           # the phase every workload runs first: the guest's background, before the workload


def discoveries(rows: list[Row]) -> list[Row]:
    """The better/worse rows of the judged variants in a discovery, the strongest first (smallest p_adj, then
    the largest change)."""
    found = [r for r in rows if r.role == "exploratory" and r.verdict in ("better", "worse")]
    return sorted(found, key=lambda r: (r.p_adjusted, -abs(r.change_pct or 0.0)))


def clusters(found: list[Row], cells: Cells, baseline: str) -> list[list[Row]]:
    """The rows found, in clusters of rows that moved together in the same boots: of one workload, point and
    variant, with the same boots of the two kernels on the high side of the pair's joint median. A cluster is one
    finding: its rows are the same boots seen through several counters, not independent evidence; one odd boot
    makes a cluster of false hits, one real effect a cluster of true ones."""
    grouped: dict[tuple, list[Row]] = {}
    for r in found:
        by_variant = cells.get((r.workload, r.phase, r.metric, r.point), {})
        if r.variant not in by_variant or baseline not in by_variant:
            grouped.setdefault((r.workload, r.point, r.variant, r.key), []).append(r)
            continue
        base, other = baseline_of(by_variant, baseline, r.variant), by_variant[r.variant]
        values = np.concatenate([base[1], other[1]])
        high = values > np.median(values)
        if went_down(base[1], other[1]):
            high = ~high        # the side the variant moved to, whichever way the counter goes
        boots = tuple(sorted([("b", int(n)) for n in base[0][high[:len(base[0])]]] +
                             [("v", int(n)) for n in other[0][high[len(base[0]):]]]))
        grouped.setdefault((r.workload, r.point, r.variant, boots), []).append(r)
    return list(grouped.values())


def unjudged(rows: list[Row], plan: Plan) -> list[Row]:
    """Outside a discovery, what a closed gate keeps quiet: the exploratory rows with a direction of each judged
    variant none of whose primary rows is better or worse, that moved at the exploratory level (Benjamini-Hochberg
    p_adj within ALPHA), the strongest first. They have no verdict (the chance of a false verdict in a table that
    shows no effect stays within 5% only so); they are leads to judge on fresh boots."""
    if plan.discovery:
        return []
    gate_open = {r.variant for r in rows if r.margin_pct is not None and r.verdict in ("better", "worse")}
    found = [r for r in rows if r.role == "exploratory" and r.variant not in gate_open and r.direction != "none"
             and r.p_adjusted is not None and r.p_adjusted <= ALPHA and r.verdict not in ("better", "worse")]
    return sorted(found, key=lambda r: (r.p_adjusted, -abs(r.change_pct or 0.0)))


def leads(rows: list[Row], plan: Plan) -> list[Row]:
    """The rows a confirmatory run would judge: a discovery's, or what a closed gate kept quiet (unjudged)."""
    return discoveries(rows) if plan.discovery else unjudged(rows, plan)


def confirmation_rows(found: list[Row], limit: int = CONFIRM_LIMIT) -> list[str]:
    """The WORKLOAD/PHASE/METRIC rows a confirmatory run declares primary, from leads (strongest first): per phase
    the strongest discovery, preferring a count to a timing (counts are exact; timings under TCG are emulated),
    a headline metric (the short table's) and a rate (it moves less with what the boot happened to swap) to a
    raw count; each workload's strongest first, then each one's second, ...; a metric not chosen yet before one
    that is; never the idle phase; at most limit of them, since every primary row costs the family alpha."""
    best: dict[tuple, Row] = {}
    for r in found:
        if r.phase == IDLE:
            continue        # the background before the workload starts: no claim about the workload
        meaning = metrics.meaning(r.metric)
        rank = (r.p_adjusted, meaning.timing, not meaning.headline, meaning.kind != "rate", -abs(r.change_pct or 0.0))
        mine = best.get((r.workload, r.phase))
        if mine is None or rank < mine[0]:
            best[(r.workload, r.phase)] = (rank, r)
    by_workload: dict[str, list] = {}
    for rank, r in sorted(best.values(), key=lambda item: item[0]):
        by_workload.setdefault(r.workload, []).append((rank, r))
    rounds = [sorted((rows[k] for rows in by_workload.values() if k < len(rows)), key=lambda item: item[0])
              for k in range(max(map(len, by_workload.values()), default=0))]
    ordered = [r for each in rounds for _, r in each]
    seen: set[str] = set()
    new = [r for r in ordered if r.metric not in seen and not seen.add(r.metric)]   # one of each metric first
    return list(dict.fromkeys(r.key for r in new + ordered))[:limit]


def tested_rows(cells: Cells, plan: Plan, variants: list[str]) -> int:
    """How many rows of the judged variants (not the baseline, not a control) the exploratory family tests: those
    of a workload judged by statistics holding more than one value over both kernels' boots."""
    judged = [variant for variant in variants if variant != plan.baseline and variant not in plan.controls]
    count = 0
    for key, by_variant in cells.items():
        if key[1:3] == BOOTS or workloads.by_rule(key[0]) or plan.baseline not in by_variant:
            continue
        base = by_variant[plan.baseline][1]
        count += sum(1 for variant in judged if variant in by_variant
                     and not one_value(base, by_variant[variant][1]))
    return count
