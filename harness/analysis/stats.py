"""Exact two-sample statistics for the handful of boots a kernel comparison can afford.

Nothing here relies on a normal approximation or on n being large:

- `rank_test`: the Wilcoxon-Mann-Whitney rank-sum test with its exact permutation
  distribution, ties included (mid-ranks; the distribution is counted over all
  C(n1 + n2, n2) equally likely labellings, by dynamic programming over the ranks).
- `ratio_estimate` / `ratio_interval`: the change as a ratio r in the scale model
  y ~ r * x (counts and times are positive; effects are proportional). The estimate is the
  median of the pairwise ratios (Hodges-Lehmann); the interval inverts the rank test: it
  holds every r at which `rank_test(r * x, y)` would not reject, the order statistics of the
  pairwise ratios (Bauer 1972). Its coverage is at least the level for continuous data.
- `equivalence_p`: two one-sided rank tests against r = 1 - margin and r = 1 + margin (TOST).
- `median_interval`: the order-statistic interval of a median and its exact coverage.
- `step_down`: Holm's step-down over hypotheses in groups of which at most one can be true
  (a difference and an equivalence claim about the same row), Shaffer's refinement.
- `false_discovery`: Benjamini-Hochberg adjusted p-values.
- `shift_for_power`: the shift (in standard deviations of normal data) that the rank test
  finds with a given probability at a given bar and n: what a calibration can and cannot see.
- `whole_boot_test`: one test of two kernels over every row at once, by permuting whole boots
  (the rows of a boot stay together, so their dependence is kept).
- `more_often`: Fisher's exact test, one-sided: does one sample hold more of something (boots
  outside the margin, boots lost) than another?
"""

import functools
import math

import numpy as np

ALPHA = 0.05
LEVEL = 0.95


TIE_TOLERANCE = 1e-13    # relative: r * x and y that differ only by rounding are tied, distinct counts are not


def _tied_ranks(x: list[float], y: list[float]) -> tuple[tuple[int, ...], int]:
    """(2 x the mid-ranks (1-based) of x and y pooled, ascending; the sum of those of y): integers, so that
    rank sums can be counted exactly. Each value first takes the value of the first of its run of neighbours
    closer than TIE_TOLERANCE, so that r * x equal to y up to rounding ties (6 * 0.95 is 5.699999999999999)
    while counts up to 1e12 stay distinct; then equal values tie. A NaN ranks above every number, each its
    own rank."""
    pooled = [(value, False) for value in x] + [(value, True) for value in y]
    if any(value != value for value, _ in pooled):
        pooled.sort(key=lambda item: (item[0] != item[0], 0.0 if item[0] != item[0] else item[0]))
    else:
        pooled.sort()
    tidied: list[float] = []
    for index, (value, _) in enumerate(pooled):
        before = pooled[index - 1][0] if index else None
        close = index and abs(value - before) <= TIE_TOLERANCE * max(abs(value), abs(before))
        tidied.append(tidied[-1] if close else value)
    ranks: list[int] = []
    observed = 0
    start = 0
    for end in range(1, len(pooled) + 1):
        if end < len(pooled) and tidied[end] == tidied[end - 1]:
            continue
        doubled = start + end + 1                # 2 * the mean of ranks start+1..end
        ranks += [doubled] * (end - start)
        observed += doubled * sum(in_y for _, in_y in pooled[start:end])
        start = end
    return tuple(ranks), observed


@functools.lru_cache(maxsize=20_000)
def _rank_sum_distribution(doubled_ranks: tuple[int, ...], size: int) -> np.ndarray:
    """P(the doubled ranks of a random size-subset sum to s), for s = 0, 1, ..., max."""
    total = sum(sorted(doubled_ranks)[len(doubled_ranks) - size:])
    counts = np.zeros((size + 1, total + 1))
    counts[0, 0] = 1.0
    for rank in doubled_ranks:
        # numpy evaluates the right-hand side before adding (overlap-safe): each rank used once
        counts[1:, rank:] += counts[:-1, :total + 1 - rank]
    return counts[size] / math.comb(len(doubled_ranks), size)


@functools.lru_cache(maxsize=100_000)
def _rank_p(doubled_ranks: tuple[int, ...], size: int, observed: int, alternative: str) -> float:
    """The exact p of a doubled rank sum `observed` of `size` of the pooled ranks (a few dozen sums are
    possible for a handful of boots: a simulation asks for the same ones again and again)."""
    distribution = _rank_sum_distribution(doubled_ranks, size)
    sums = np.arange(len(distribution))
    if alternative == "greater":
        p = distribution[sums >= observed].sum()
    elif alternative == "less":
        p = distribution[sums <= observed].sum()
    else:
        centre = size * (len(doubled_ranks) + 1)          # the mean of the doubled rank sum
        p = distribution[np.abs(sums - centre) >= abs(observed - centre)].sum()
    return float(min(1.0, p))


def smallest_p(n1: int, n2: int) -> float:
    """The smallest two-sided p-value the exact rank test can give with n1 and n2 values (no ties): every y
    above every x, 2 / C(n1 + n2, n2)."""
    return 2 / math.comb(n1 + n2, n2)


def rank_test(x, y, alternative: str = "two-sided") -> float:
    """Exact p-value of the rank-sum test of y against x, ties included.

    alternative: 'two-sided', 'greater' (y tends to be larger) or 'less'.
    """
    x, y = np.asarray(x, dtype=float).tolist(), np.asarray(y, dtype=float).tolist()
    if not len(x) or not len(y):
        return 1.0
    doubled_ranks, observed = _tied_ranks(x, y)
    return _rank_p(doubled_ranks, len(y), observed, alternative)


def pairwise_ratios(x, y) -> np.ndarray:
    """y_j / x_i for every pair: inf where only x is 0, 1 where both are 0 (no evidence either way)."""
    x, y = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = y / x
    return np.where((x == 0) & (y == 0), 1.0, ratios).ravel()


def median(values) -> float:
    """The median of a short array (numpy's median costs more than sorting a dozen numbers)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    middle = len(ordered) // 2
    return float(ordered[middle]) if len(ordered) % 2 else float((ordered[middle - 1] + ordered[middle]) / 2)


def ratio_estimate(x, y) -> float | None:
    """The Hodges-Lehmann ratio: the median of the pairwise ratios (None when not finite)."""
    return ratio_change(x, y)[0]


def ratio_change(x, y, level: float = LEVEL) -> tuple[float | None, tuple[float, float] | None]:
    """(ratio_estimate(x, y), ratio_interval(x, y, level)) from one sort of the pairwise ratios."""
    if not len(x) or not len(y):
        return None, None
    ratios = np.sort(pairwise_ratios(x, y))
    middle = len(ratios) // 2
    with np.errstate(invalid="ignore"):
        estimate = float(ratios[middle]) if len(ratios) % 2 else float((ratios[middle - 1] + ratios[middle]) / 2)
    count = accepted_count(len(x), len(y), round(1 - level, 12))
    interval = (0.0, math.inf) if count == 0 else (float(ratios[count - 1]), float(ratios[len(ratios) - count]))
    return (estimate if math.isfinite(estimate) else None), interval


def _count_cumulative(n1: int, n2: int) -> np.ndarray:
    """P(U <= u), u = 0, 1, ..., of the Mann-Whitney count U without ties."""
    distribution = _rank_sum_distribution(tuple(range(2, 2 * (n1 + n2) + 1, 2)), n2)
    offset = n2 * (n2 + 1)                             # the doubled rank sum when U = 0
    return np.cumsum(distribution[offset::2])


@functools.lru_cache(maxsize=4096)
def accepted_count(n1: int, n2: int, alpha: float = ALPHA) -> int:
    """The smallest Mann-Whitney count U (of n1 * n2) that the two-sided exact test accepts at alpha
    (no ties); 0 when even U = 0 is accepted, i.e. these sizes cannot reach alpha."""
    cumulative = _count_cumulative(n1, n2)
    for count, below in enumerate(cumulative):
        if 2 * below > alpha:
            return count
    return n1 * n2 // 2


def ratio_interval_coverage(n1: int, n2: int, level: float = LEVEL) -> float:
    """The exact coverage of ratio_interval for continuous data (at least level, where reachable)."""
    count = accepted_count(n1, n2, round(1 - level, 12))
    return 1.0 if count == 0 else float(1 - 2 * _count_cumulative(n1, n2)[count - 1])


def ratio_interval(x, y, level: float = LEVEL) -> tuple[float, float] | None:
    """The interval of r (y ~ r * x) that inverts the two-sided rank test at 1 - level.

    (0, inf) when the sizes cannot reach that level; None without data.
    """
    return ratio_change(x, y, level)[1]


def equivalence_p(x, y, margin: float) -> float:
    """p-value of 'the ratio r lies within [1 - margin, 1 + margin]' (two one-sided rank tests)."""
    above_lower = rank_test(np.asarray(x, dtype=float) * (1 - margin), y, "greater")
    below_upper = rank_test(np.asarray(x, dtype=float) * (1 + margin), y, "less")
    return max(above_lower, below_upper)


@functools.lru_cache(maxsize=256)
def _median_interval_rank(n: int, level: float) -> tuple[int, float]:
    """(k, coverage): [x_(k), x_(n+1-k)] is the narrowest order-statistic interval of the median
    with coverage >= level; k = 0 when no interval reaches it (coverage then that of [min, max])."""
    best = (0, 1 - 2 * 0.5 ** n if n else 0.0)
    tail = 0.0
    for k in range(1, n // 2 + 1):
        tail += math.comb(n, k - 1) / 2 ** n               # P(Binomial(n, 1/2) <= k - 1)
        coverage = 1 - 2 * tail
        if coverage >= level:
            best = (k, coverage)
    return best


def median_interval(values, level: float = LEVEL) -> tuple[float | None, float | None, float]:
    """(low, high, coverage) of the median; low and high are None when n cannot reach level."""
    ordered = np.sort(np.asarray(values, dtype=float))
    k, coverage = _median_interval_rank(len(ordered), level)
    if k == 0:
        return None, None, coverage
    return float(ordered[k - 1]), float(ordered[len(ordered) - k]), coverage


def step_down(p_values: list[float], groups: list) -> list[float]:
    """Adjusted p-values of Holm's step-down, counting groups instead of hypotheses.

    At most one hypothesis of a group can be true. At each step the multiplier is the number
    of groups that still hold an unrejected hypothesis: before the first false rejection every
    group with a true hypothesis still holds it, so the multiplier is at least the number of
    true hypotheses, and Bonferroni over those bounds the family-wise error by alpha, under any
    dependence (Shaffer 1986). With one hypothesis per group this is Holm's procedure.
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    remaining: dict = {}
    for group in groups:
        remaining[group] = remaining.get(group, 0) + 1
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for index in order:
        open_groups = sum(1 for left in remaining.values() if left)
        running = max(running, min(1.0, p_values[index] * open_groups))
        adjusted[index] = running
        remaining[groups[index]] -= 1
    return adjusted


def false_discovery(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (the false discovery rate at which each is rejected)."""
    count = len(p_values)
    order = sorted(range(count), key=lambda i: p_values[i], reverse=True)
    adjusted = [1.0] * count
    running = 1.0
    for position, index in enumerate(order):
        rank = count - position
        running = min(running, p_values[index] * count / rank)
        adjusted[index] = min(1.0, running)
    return adjusted


def more_often(hits: int, size: int, other_hits: int, other_size: int) -> float:
    """One-sided p of Fisher's exact test that `hits` of `size` is a larger share than `other_hits` of
    `other_size`: the chance, all size + other_size labellings alike, that `size` of them hold at least `hits`
    of the hits + other_hits (the hypergeometric upper tail)."""
    total, drawn = hits + other_hits, size + other_size
    if not size or not total:
        return 1.0
    tail = sum(math.comb(total, k) * math.comb(drawn - total, size - k) for k in range(hits, min(total, size) + 1))
    return min(1.0, tail / math.comb(drawn, size))


@functools.lru_cache(maxsize=64)
def shift_for_power(n1: int, n2: int, bar: float, power: float = 0.8, draws: int = 2000) -> float | None:
    """The smallest shift d (in standard deviations; y ~ N(d, 1) against x ~ N(0, 1)) at which the two-sided
    exact rank test reaches p <= bar with probability `power`, by simulation (fixed seed, to 0.05 SD);
    None when these sizes cannot reach the bar at all."""
    if not n1 or not n2 or smallest_p(n1, n2) > bar:
        return None
    rng = np.random.default_rng(0)
    base, other = rng.standard_normal((draws, n1)), rng.standard_normal((draws, n2))

    def reached(shift: float) -> float:
        return float(np.mean([rank_test(x, y + shift) <= bar for x, y in zip(base, other)]))

    low, high = 0.0, 1.0
    while reached(high) < power:
        low, high = high, high * 2
    while high - low > 0.05:
        middle = (low + high) / 2
        low, high = (middle, high) if reached(middle) < power else (low, middle)
    return round(high, 1)


def _rank_scores(values: np.ndarray) -> np.ndarray:
    """Per row (column) of boots x rows values: the mid-ranks of the boots, centred and scaled to unit variance
    (a row whose boots all tie gets zeros)."""
    order = np.argsort(values, axis=0, kind="stable")
    ranks = np.empty_like(values, dtype=float)
    for column in range(values.shape[1]):
        ordered = values[order[:, column], column]
        position = np.arange(1, len(ordered) + 1, dtype=float)
        for value in np.unique(ordered):
            tied = ordered == value
            position[tied] = position[tied].mean()
        ranks[order[:, column], column] = position
    centred = ranks - ranks.mean(axis=0)
    spread = np.sqrt((centred ** 2).sum(axis=0))
    return np.divide(centred, spread, out=np.zeros_like(centred), where=spread > 0)


def whole_boot_test(groups: list[tuple[np.ndarray, int]], permutations: int = 2000, seed: int = 0) -> float:
    """p-value of 'the two kernels do not differ in any row', over groups of boots (a workload and mode): each
    (boots x rows values, how many of the boots, the first ones, are of the first kernel). The statistic sums,
    over every row of every group, the squared standardized rank sum of the first kernel's boots; its null
    distribution comes from relabelling whole boots within each group (Monte Carlo, fixed seed), so rows
    measured on the same boot keep their dependence. Valid for any dependence between rows."""
    rng = np.random.default_rng(seed)
    scored = [(_rank_scores(values), first) for values, first in groups if first and len(values) > first]
    if not scored:
        return 1.0

    def statistic(labels: list[np.ndarray]) -> float:
        return float(sum(((scores[chosen].sum(axis=0)) ** 2).sum() for (scores, _), chosen in zip(scored, labels)))

    observed = statistic([np.arange(first) for _, first in scored])
    drawn = (statistic([rng.permutation(len(scores))[:first] for scores, first in scored])
             for _ in range(permutations))
    exceeded = sum(value >= observed * (1 - 1e-12) for value in drawn)
    return (1 + exceeded) / (1 + permutations)
