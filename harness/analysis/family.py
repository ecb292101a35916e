"""The primary family over the looks: every primary row of every variant through Holm's step-down at each look's
share of alpha, each workload's lost-boots row beside them by Tarone's refinement, and the stopping rule of
`--reps auto` (all_decided)."""

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from harness import workloads
from harness.analysis import stats
from harness.analysis.discovery import discovery_reps, tested_rows
from harness.analysis.looks import direction_verdict, inside, looks_reached, tail_allowance, tails
from harness.analysis.records import ALPHA, RESTING, Cells, Decision, FamilyRow, Plan
from harness.analysis.sampling import BOOTS, baseline_of, highest_rep, one_value, up_to


class _Facts(NamedTuple):
    """What a row's hypotheses rest on at one look: its values (None for a lost-boots row), the repetitions of
    the look, why no `equivalent` may stand (tails()) or what was lost, and the unadjusted equivalence p."""
    base: np.ndarray | None
    other: np.ndarray | None
    reps: int | None
    note: str
    p_equivalence: float | None = None


class _Hypothesis(NamedTuple):
    row: FamilyRow
    kind: str           # "difference", "equivalence" or "lost"
    p: float
    facts: _Facts


@dataclass
class _Verdicts:
    """decide()'s state over the looks: the verdicts that stand, and each open row's latest word."""
    decided: dict = field(default_factory=dict)     # FamilyRow -> Decision the stopping rule counts on
    latest: dict = field(default_factory=dict)      # FamilyRow -> Decision of a row still open

    def record(self, row: FamilyRow, decision: Decision) -> None:
        """An inconclusive row stays open with its latest word; any other verdict stands."""
        if decision.verdict == "inconclusive":
            self.latest[row] = decision
        else:
            self.decided[row] = decision

    def reopen(self, row: FamilyRow, note: str) -> None:
        del self.decided[row]
        self.latest[row] = Decision("inconclusive", 1.0, None, None, note)

    def final(self, row: FamilyRow) -> Decision:
        return self.decided.get(row) or self.latest.get(row) or Decision("inconclusive", 1.0, None, None)


def decide(cells: Cells, plan: Plan, variants: list[str]) -> dict[tuple, Decision]:
    """Verdicts of the primary rows (workload, phase, metric, point, variant), look by look.

    At each look the undecided rows' difference and equivalence hypotheses go through Holm's step-down at that
    look's share of alpha. A rejected difference is `better`/`worse` unless the interval of the change lies
    within the margin: that is a difference smaller than the margin, `equivalent` if the equivalence hypothesis
    is rejected too, else left open. No `equivalent` while tails() objects, at any later look either: a row
    decided equivalent is opened again when a later boot of the variant falls outside the margin. A row with
    one value in every boot of both is `identical` (its hypotheses still count in the family), until a later
    boot holds another value. Neither stands on a workload whose variant lost a larger share of its
    repetitions than the baseline (survivors): the boots left are those that passed its gates.

    Each workload's lost-boots row (BOOTS, from boot_cells) has one hypothesis: the variant loses repetitions
    more often than the baseline (Fisher's exact test, one-sided): `worse` when rejected, `identical` while
    neither lost any. It joins the family only when the repetitions lost could reach the look's bar at all
    (Tarone's refinement for discrete tests: a test whose smallest possible p-value is above the bar cannot
    reject, so it need not be counted); with no boot lost the family is the primary rows alone. Such a row
    holds the stopping rule (all_decided) only while its variant has lost the larger share."""
    rows = _family_rows(cells, plan, variants)
    state = _Verdicts()
    for look, share in [*looks_reached(plan, cells), (None, 0.0)]:
        _reopen(state, cells, plan, look)
        if not share:
            break           # the whole sample, after the last look: equivalence re-checked, nothing tested
        _test_look(rows, state, cells, plan, look, share)
    return {row: state.final(row) for row in rows}


def _family_rows(cells: Cells, plan: Plan, variants: list[str]) -> list[FamilyRow]:
    """The primary rows of every variant at every sweep point, then each workload's lost-boots row."""
    points: dict[str, list[str]] = {}
    for workload, phase, metric, point in cells:
        points.setdefault(f"{workload}/{phase}/{metric}", []).append(point)
    rows = [FamilyRow(*key.split("/"), point, variant) for key in plan.primary for point in points.get(key, [""])
            for variant in variants if variant != plan.baseline]
    return rows + [FamilyRow(key[0], *BOOTS, key[3], variant) for key, by_variant in cells.items() if key[1:3] == BOOTS
                   for variant in variants if variant != plan.baseline and variant in by_variant]


def _sample(cells: Cells, baseline: str, row: FamilyRow, look: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The baseline's and the row variant's values up to look (empty where a side has none), and the highest
    repetition of the row's cell."""
    by_variant = cells.get(row.cell, {})
    base = up_to(baseline_of(by_variant, baseline, row.variant), look) if baseline in by_variant else np.array([])
    other = up_to(by_variant[row.variant], look) if row.variant in by_variant else np.array([])
    return base, other, highest_rep(by_variant)


SURVIVORS = "the boots left are those that passed"
ON_SURVIVORS = "this rests on the boots that passed"


def survivors(cells: Cells, baseline: str, row: FamilyRow, look: int | None, why: str = SURVIVORS) -> str:
    """Why the boots of a row's variant are no fair sample ('' while they are): its workload lost a larger
    share of the variant's repetitions than of the baseline's, so the boots left are those that passed."""
    lost = FamilyRow(row.workload, *BOOTS, row.point, row.variant)
    if (row.phase, row.metric) == BOOTS or lost.cell not in cells:
        return ""
    base, other, _ = _sample(cells, baseline, lost, look)
    if not len(base) or not len(other) or np.mean(other == 0) <= np.mean(base == 0):
        return ""
    return (f"{np.count_nonzero(other == 0)} of {len(other)} repetitions lost a boot (baseline: "
            f"{np.count_nonzero(base == 0)} of {len(base)}): {why}")


def _reopened(cells: Cells, plan: Plan, row: FamilyRow, look: int | None, verdict: str) -> str | None:
    """Why a resting verdict no longer holds on the boots up to look, None while it does."""
    base, other, _ = _sample(cells, plan.baseline, row, look)
    held = survivors(cells, plan.baseline, row, look)
    if held:
        return held
    if verdict == "identical":
        return None if one_value(base, other) else ""
    return tails(base, other, plan.margin_pct / 100) or None


def _reopen(state: _Verdicts, cells: Cells, plan: Plan, look: int | None) -> None:
    """The rows decided equivalent or identical that the boots up to look no longer bear out: open again."""
    for row in [row for row, decision in state.decided.items() if decision.verdict in RESTING]:
        note = _reopened(cells, plan, row, look, state.decided[row].verdict)
        if note is not None:
            state.reopen(row, note)


def _test_look(rows: list[FamilyRow], state: _Verdicts, cells: Cells, plan: Plan, look: int | None,
               share: float) -> None:
    """One look: the open rows' hypotheses through Holm's step-down at the look's share of alpha, and what
    each row's adjusted p-values make of it."""
    hypotheses, lost = _hypotheses(rows, state, cells, plan, look)
    hypotheses += _lost_hypotheses(lost, len({h.row for h in hypotheses}), share, state)
    for row, (facts, p) in _adjusted(hypotheses, share).items():
        if "lost" in p:
            verdict = "worse" if p["lost"] <= ALPHA else "inconclusive"
            state.record(row, Decision(verdict, p["lost"], None, facts.reps if verdict == "worse" else None,
                                       facts.note))
        else:
            state.record(row, _settled(row, facts, p, cells, plan, look))


def _hypotheses(rows: list[FamilyRow], state: _Verdicts, cells: Cells, plan: Plan,
                look: int | None) -> tuple[list[_Hypothesis], list[tuple]]:
    """The two hypotheses of every open primary row at this look, and the open lost-boots rows with values on
    both sides as (row, base, other, reps) for _lost_hypotheses."""
    hypotheses, lost = [], []
    for row in rows:
        if row in state.decided:
            continue     # decided: its verdict stands (the stopping rule counted on it)
        base, other, highest = _sample(cells, plan.baseline, row, look)
        reps = look if look is not None else highest
        if (row.phase, row.metric) != BOOTS:
            hypotheses += _row_hypotheses(row, base, other, reps, plan.margin_pct / 100)
        elif len(base) and len(other):
            lost.append((row, base, other, reps))
    return hypotheses, lost


def _row_hypotheses(row: FamilyRow, base: np.ndarray, other: np.ndarray, reps: int | None,
                    margin: float) -> list[_Hypothesis]:
    """A primary row's two hypotheses: no change (rank test), and a change of at least the margin (equivalence
    test; p 1 while tails() objects). Both p 1 without values on both sides."""
    usable = len(base) and len(other)
    note = tails(base, other, margin) if usable else ""
    p_difference = stats.rank_test(base, other) if usable else 1.0
    p_equivalence = stats.equivalence_p(base, other, margin) if usable else 1.0
    facts = _Facts(base, other, reps, note, p_equivalence)
    return [_Hypothesis(row, "difference", p_difference, facts),
            _Hypothesis(row, "equivalence", 1.0 if note else p_equivalence, facts)]


def _adjusted(hypotheses: list[_Hypothesis], share: float) -> dict[FamilyRow, tuple[_Facts, dict[str, float]]]:
    """Each row's facts and its hypotheses' p-values after Holm's step-down (counting rows), at the look's
    share of alpha."""
    adjusted = stats.step_down([h.p for h in hypotheses], [h.row for h in hypotheses])
    found: dict[FamilyRow, tuple[_Facts, dict[str, float]]] = {}
    for h, value in zip(hypotheses, adjusted):
        found.setdefault(h.row, (h.facts, {}))[1][h.kind] = min(1.0, value / share)
    return found


def _settled(row: FamilyRow, facts: _Facts, p: dict[str, float], cells: Cells, plan: Plan,
             look: int | None) -> Decision:
    """What a primary row's adjusted p-values make of it at this look (decide() says how)."""
    base, other, reps = facts.base, facts.other, facts.reps
    different, equivalent = p["difference"] <= ALPHA, p["equivalence"] <= ALPHA
    small = different and inside(base, other, plan.margin_pct / 100)
    if different and not small:      # the tails' note withholds equivalence only
        return Decision(direction_verdict(row.metric, base, other), p["difference"], facts.p_equivalence, reps,
                        survivors(cells, plan.baseline, row, look, ON_SURVIVORS))
    held = survivors(cells, plan.baseline, row, look)
    if held:
        return Decision("inconclusive", p["difference"], facts.p_equivalence, None, held)
    if len(base) and len(other) and one_value(base, other):
        return Decision("identical", p["difference"], facts.p_equivalence, reps)
    if equivalent:
        said = "; ".join(["a difference smaller than the margin"] * small + [tail_allowance(len(other))])
        return Decision("equivalent", p["equivalence"], facts.p_equivalence, reps, said)
    note = facts.note or ("a difference smaller than the margin; equivalence not shown yet" if small else "")
    return Decision("inconclusive", p["difference"], facts.p_equivalence, None, note)


def _lost_hypotheses(lost: list, groups: int, share: float, state: _Verdicts) -> list[_Hypothesis]:
    """The lost-boots hypotheses that join a look's family beside `groups` row groups; rows that lost nothing
    are decided `identical`, rows that cannot reach the bar left inconclusive with the p they would have had."""
    candidates = []
    for row, base, other, reps in lost:
        lost_base, lost_other = int(np.count_nonzero(base == 0)), int(np.count_nonzero(other == 0))
        if not lost_base and not lost_other:
            state.record(row, Decision("identical", 1.0, None, reps))
            continue
        note = f"{lost_other} of {len(other)} repetitions lost a boot (baseline: {lost_base} of {len(base)})"
        total = lost_base + lost_other
        most = min(total, len(other))
        floor = stats.more_often(most, len(other), total - most, len(base))     # the smallest p possible
        p_value = stats.more_often(lost_other, len(other), lost_base, len(base))
        candidates.append((row, p_value, floor, reps, note))
    joined = _tarone(candidates, groups, share)
    for row, p_value, _, _, note in candidates:      # left out: the p it would have had in the family
        state.record(row, Decision("inconclusive", min(1.0, p_value * (groups + len(joined) + 1) / share), None,
                                   None, note))
    return [_Hypothesis(row, "lost", p_value, _Facts(None, None, reps, note)) for row, p_value, _, reps, note in joined]


def _tarone(candidates: list[tuple], groups: int, share: float) -> list[tuple]:
    """Tarone: the candidates (row, p, smallest p possible, ...) that join the family: at the smallest family
    size j at which no more than j of them could pass its bar."""
    for size in range(len(candidates) + 1):
        joined = [c for c in candidates if c[2] * (groups + size) / share <= ALPHA]
        if len(joined) <= size:
            break
    return joined


def all_decided(cells: Cells, plan: Plan, variants: list[str]) -> bool:
    """The stopping rule of `--reps auto`: every primary row of every variant has a verdict; in a discovery, also
    the repetitions at which a row that moves alone could be found (discovery_reps of the rows it tests). A
    workload judged by a rule (workloads.by_rule) gets no more repetitions, so its lost boots hold nothing open."""
    if plan.discovery:
        needed = discovery_reps(tested_rows(cells, plan, variants))
        if needed is not None and max((highest_rep(by_variant) for by_variant in cells.values()), default=0) < needed:
            return False
    for row, decision in decide(cells, plan, variants).items():
        held = (row.phase, row.metric) != BOOTS or (losing(cells, row, plan.baseline)
                                                    and not workloads.by_rule(row.workload))
        if decision.verdict == "inconclusive" and held:
            return False
    return True


def losing(cells: Cells, row: FamilyRow, baseline: str) -> bool:
    """Whether the variant of a lost-boots row has lost a larger share of its repetitions than the baseline:
    then the run goes on, since more repetitions can show it; otherwise the row does not hold it."""
    by_variant = cells[row.cell]
    lost = {name: float(np.mean(by_variant[name][1] == 0)) for name in (baseline, row.variant) if name in by_variant}
    return len(lost) == 2 and lost[row.variant] > lost[baseline]
