"""What one look may say of a row: the looks a sequential design has reached, which way a change went, and the
tails and margins that withhold `equivalent`."""

import numpy as np

from harness import metrics
from harness.analysis import stats
from harness.analysis.records import ALPHA, Cells, Design, Plan
from harness.analysis.sampling import highest_rep


def smallest_deciding_reps(rows: int, reps: int, max_reps: int | None = None) -> int | None:
    """The first look (repetitions a side) at which an exact test can decide one of `rows` primary rows
    (its smallest p-value, 2 / C(2n, n), within the look's share of ALPHA / rows); None if no look can."""
    design = Design.sequential(reps, max_reps) if max_reps else Design()
    for look, share in zip(design.looks or (reps,), design.shares or (1.0,)):
        if rows and stats.smallest_p(look, look) <= ALPHA * share / rows:
            return look
    return None


def looks_reached(plan: Plan, cells: Cells) -> list[tuple[int | None, float]]:
    """(repetitions, share of alpha) of the looks the data have reached."""
    if not plan.design.looks:
        return [(None, plan.design.whole)]
    highest = max((highest_rep(by_variant) for by_variant in cells.values()), default=0)
    reached = [(look, share) for look, share in zip(plan.design.looks, plan.design.shares) if look <= highest]
    return reached or [(highest, plan.design.shares[0])]


def outside_margin(values: np.ndarray, centre: float, margin: float) -> int:
    """How many values lie further than margin (a fraction) from centre; any value but 0 when centre is 0."""
    if centre == 0:
        return int(np.count_nonzero(values))
    return int(np.count_nonzero(np.abs(values / centre - 1) > margin * (1 + 1e-9)))


def beyond_baseline(base: np.ndarray, other: np.ndarray, margin: float) -> int:
    """How many boots of the variant lie beyond the baseline's farthest boot on their side by more than the margin
    (a fraction of the baseline's median; of nothing when the median is 0): however noisy the baseline, no boot of
    it came near them."""
    if not len(base) or not len(other):
        return 0
    centre = stats.median(base)
    scale = abs(centre) if centre else 0.0
    low, high = float(np.min(base)) - margin * scale, float(np.max(base)) + margin * scale
    tolerance = 1e-9 * max(abs(low), abs(high)) + 1e-12      # a boot exactly at the bound is not beyond it
    return int(np.count_nonzero((other < low - tolerance) | (other > high + tolerance)))


def tails(base: np.ndarray, other: np.ndarray, margin: float) -> str:
    """Why no `equivalent` may stand, '' if none: boots of the variant beyond the baseline's farthest boot by more
    than the margin (beyond_baseline: one broken boot is enough, however noisy the baseline), or outside the margin
    around the baseline's median while none of the baseline's are, or more often than the baseline's (Fisher's
    exact test, which counts boots outside and not how far). The equivalence test is about the middle of the
    boots; a patch that misbehaves in some boots only (a race) shows in the tails."""
    far = beyond_baseline(base, other, margin)
    if far:
        return (f"{far} of {len(other)} boots beyond the baseline's farthest boot by more than +-{margin * 100:g}% "
                f"of its median")
    centre = stats.median(base)
    out, base_out = outside_margin(other, centre, margin), outside_margin(base, centre, margin)
    if out and (not base_out or stats.more_often(out, len(other), base_out, len(base)) <= ALPHA):
        return f"{out} of {len(other)} boots outside +-{margin * 100:g}% (baseline: {base_out} of {len(base)})"
    return ""


def tail_allowance(boots: int, level: float = 0.95) -> str:
    """What an `equivalent` on boots of which none broke still allows: the highest share of broken boots (beyond
    the baseline's by the margin) that `boots` clean ones do not rule out at level (exact: 1 - (1 - level)^(1/n))."""
    return (f"no boot of {boots} beyond the baseline's by the margin: a failure in up to "
            f"{1 - (1 - level) ** (1 / boots):.0%} of boots is not ruled out ({level:.0%})")


def inside(base: np.ndarray, other: np.ndarray, margin: float) -> bool:
    """Whether the interval of the change lies within the margin."""
    _, interval = stats.ratio_change(base, other)
    return interval is not None and 1 - margin <= interval[0] and interval[1] <= 1 + margin


def went_down(base: np.ndarray, other: np.ndarray) -> bool:
    return float(np.mean(np.sign(other[None, :] - base[:, None]))) < 0


def direction_verdict(metric: str, base, other) -> str:
    direction = metrics.meaning(metric).direction
    if direction == "none":
        return "inconclusive"
    return "better" if went_down(base, other) == (direction == "lower") else "worse"
