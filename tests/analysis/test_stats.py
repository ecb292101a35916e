"""The exact statistics: p-values against enumerated permutations (ties included), intervals
whose coverage is checked by simulation, and the multiplicity adjustments by hand."""

import itertools

import numpy as np
import pytest
from scipy.stats import binomtest, rankdata

from harness.analysis import stats


def enumerated_p(x, y, alternative):
    """The permutation p-value of the mid-rank sum, by listing every labelling."""
    pooled = np.concatenate([x, y])
    ranks = rankdata(pooled)
    observed, centre = ranks[len(x):].sum(), len(y) * (len(pooled) + 1) / 2
    sums = [ranks[list(chosen)].sum() for chosen in itertools.combinations(range(len(pooled)), len(y))]
    if alternative == "greater":
        hits = [s >= observed - 1e-9 for s in sums]
    elif alternative == "less":
        hits = [s <= observed + 1e-9 for s in sums]
    else:
        hits = [abs(s - centre) >= abs(observed - centre) - 1e-9 for s in sums]
    return sum(hits) / len(sums)


@pytest.mark.parametrize("seed", range(40))
def test_exact_p_matches_enumerated_permutations_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, rng.integers(1, 8)).astype(float)
    y = rng.integers(0, 5, rng.integers(1, 8)).astype(float)
    for alternative in ("two-sided", "greater", "less"):
        assert stats.rank_test(x, y, alternative) == pytest.approx(enumerated_p(x, y, alternative), abs=1e-12)


def test_known_exact_values():
    assert stats.rank_test([16384] * 5, [0] * 5) == pytest.approx(2 / 252)
    assert stats.rank_test([10, 11, 12, 13], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert stats.rank_test([100, 100], [110, 110]) == pytest.approx(1 / 3), "no shortcut for identical values"
    assert stats.rank_test([7, 7, 7], [7, 7, 7]) == 1.0


def test_the_change_interval_inverts_the_test():
    x, y = [10.0, 11, 12, 13], [5.0, 6, 7, 8]
    assert stats.ratio_interval(x, y) == (5 / 13, 8 / 10), "n = 4 + 4: the extreme pairwise ratios"
    assert stats.ratio_estimate(x, y) == pytest.approx(np.median([b / a for a in x for b in y]))
    assert stats.ratio_interval([16384] * 5, [0] * 5) == (0.0, 0.0)
    assert stats.ratio_interval([1, 2], [3, 4]) == (0.0, float("inf")), "2 + 2 cannot reach 95%"
    low, high = stats.ratio_interval([100, 101, 102, 103, 104, 105], [110, 111, 112, 113, 114, 115])
    assert stats.rank_test(np.array([100, 101, 102, 103, 104, 105]) * high * 1.001,
                           [110, 111, 112, 113, 114, 115]) <= 0.05 < stats.rank_test(
        np.array([100, 101, 102, 103, 104, 105]) * high * 0.999, [110, 111, 112, 113, 114, 115])


@pytest.mark.parametrize("n1, n2", [(5, 5), (6, 6), (8, 8), (10, 10), (6, 9)])
def test_change_interval_coverage_by_simulation(n1, n2):
    rng = np.random.default_rng(n1 * 100 + n2)
    claimed = stats.ratio_interval_coverage(n1, n2)
    assert claimed >= 0.95
    ratio, trials, covered = 0.8, 3000, 0
    for _ in range(trials):
        x = rng.lognormal(8, 0.1, n1)
        y = ratio * rng.lognormal(8, 0.1, n2)
        low, high = stats.ratio_interval(x, y)
        covered += low <= ratio <= high
    print(f"n = {n1} + {n2}: interval of the ratio covers {covered / trials:.3f}, exact {claimed:.3f}")
    assert abs(covered / trials - claimed) < 0.02


@pytest.mark.parametrize("n", [6, 8, 10, 15])
def test_median_interval_coverage_by_simulation(n):
    rng = np.random.default_rng(n)
    trials, covered = 4000, 0
    for _ in range(trials):
        low, high, claimed = stats.median_interval(rng.exponential(1.0, n))
        covered += low <= np.log(2) <= high
    print(f"n = {n}: interval of the median covers {covered / trials:.3f}, exact {claimed:.3f}")
    assert claimed >= 0.95 and abs(covered / trials - claimed) < 0.02


def test_a_median_interval_is_not_claimed_below_its_level():
    assert stats.median_interval([1, 2, 3, 4, 5]) == (None, None, 0.9375)
    assert stats.median_interval([1, 2, 3, 4, 5, 6])[:2] == (1, 6)


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    x = [0.990, 0.992, 0.985, 0.994, 0.988, 0.991]
    assert stats.equivalence_p(x, [v * 1.002 for v in x], 0.05) == pytest.approx(1 / 924)
    assert stats.equivalence_p(x, [v * 1.06 for v in x], 0.05) > 0.5
    assert stats.equivalence_p(x[:2], x[:2], 0.05) > 0.05, "2 + 2 cannot show equivalence either"


def test_step_down_counts_groups_of_which_one_can_be_true():
    assert stats.step_down([0.01, 0.04, 0.03], ["a", "b", "c"]) == pytest.approx([0.03, 0.06, 0.06]), "Holm"
    adjusted = stats.step_down([0.01, 0.02, 0.001, 0.5], ["a", "a", "b", "b"])
    assert adjusted == pytest.approx([0.02, 0.04, 0.002, 0.5])


def test_false_discovery_rate_adjustment():
    assert stats.false_discovery([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])


def test_one_value_everywhere_has_ratio_1_and_p_1_at_every_size():
    """compare.change skips the rank test for such rows (most rows of a table); this is what it relies on."""
    for n in range(1, 13):
        for m in range(1, 13):
            for value in (0.0, 3.0, -2.5):
                x, y = np.full(n, value), np.full(m, value)
                assert stats.rank_test(x, y) == 1.0 and stats.ratio_estimate(x, y) == 1.0, (n, m, value)


def test_values_apart_only_by_rounding_tie_and_distinct_counts_do_not():
    x, y = np.full(4, 6.0), np.full(4, 5.7)
    assert 0.95 * 6 != 5.7 and stats.rank_test(x * 0.95, y) == 1.0, "5.699999999999999 ties with 5.7"
    big = np.array([1e12, 1e12 + 2, 1e12 + 4, 1e12 + 6])
    assert stats.rank_test(big, big + 1) < 1.0 and stats.rank_test(big, big + 1, "greater") < 0.5


def test_equal_infinities_tie_and_a_nan_ranks_above_every_number():
    inf, nan = float("inf"), float("nan")
    assert stats.rank_test([inf, inf], [inf, inf]) == 1.0 and stats.rank_test([inf, inf], [inf, inf], "greater") == 1.0
    assert stats.rank_test([nan, 1.0], [2.0]) == 1.0 and stats.rank_test([1.0, nan, 3.0], [2.0, nan]) == 0.8


def test_the_shift_a_calibration_sees_matches_the_exact_chance_of_complete_separation():
    """At 6 + 6 and a bar of 0.0031 only complete separation rejects (p = 2/924): its chance under a shift d of
    normal data is the integral of P(every y above t) over the density of max(x) = t."""
    from scipy import integrate
    from scipy import stats as scipy_stats

    def separated(shift: float) -> float:
        density = lambda t: 6 * scipy_stats.norm.pdf(t) * scipy_stats.norm.cdf(t) ** 5 * \
            scipy_stats.norm.sf(t - shift) ** 6   # noqa: E731
        return integrate.quad(density, -10, 15)[0]

    shift = stats.shift_for_power(6, 6, 0.0031)
    assert separated(shift) >= 0.78 and separated(shift - 0.15) < 0.8, (shift, separated(shift))
    assert stats.shift_for_power(6, 6, 0.05) < shift, "a wider bar sees smaller drifts"
    assert stats.shift_for_power(3, 3, 0.05) is None, "3 + 3 boots cannot reach p = 0.05"


def table_of_boots(rng, shift: float, rows: int = 20, boots: int = 6) -> np.ndarray:
    """2 x boots boots x rows values: rows correlated through a per-boot effect (as the metrics of one boot
    are); the first `boots` boots shifted by `shift` standard deviations in every row."""
    per_boot = rng.standard_normal((2 * boots, 1))
    values = 0.7 * per_boot + 0.7 * rng.standard_normal((2 * boots, rows))
    values[:boots] += shift
    return values


NULL_TABLES = 2000      # enough that the interval of a 5% rate excludes 6.5%: 300 left 0.073 within 1.8 SE


@pytest.mark.simulation
def test_the_whole_boot_test_holds_its_level_and_sees_a_drift_no_single_row_shows():
    rng = np.random.default_rng(5)
    null = [stats.whole_boot_test([(table_of_boots(rng, 0.0), 6), (table_of_boots(rng, 0.0), 6)], 199, seed)
            for seed in range(NULL_TABLES)]
    hits = int(np.sum(np.array(null) <= 0.05))
    interval = binomtest(hits, NULL_TABLES).proportion_ci(0.95)
    print(f"\n[figure] whole-boot test, {NULL_TABLES} A/A tables of 2 x 20 correlated rows at 6 + 6: p <= 0.05 in "
          f"{hits / NULL_TABLES:.3f} (95% CI {interval.low:.3f} to {interval.high:.3f})")
    assert interval.low <= 0.05 <= interval.high and interval.high < 0.065, "the level held: 5%, no more"
    found, single = [], []
    for seed in range(100):
        tables = [table_of_boots(rng, 0.8), table_of_boots(rng, 0.8)]
        found.append(stats.whole_boot_test([(values, 6) for values in tables], 199, seed) <= 0.05)
        single.append(min(stats.rank_test(values[6:, row], values[:6, row]) for values in tables
                          for row in range(20)) * 40 <= 0.05)
    print(f"[figure] a 0.8 SD drift of every row: whole-boot test {np.mean(found):.2f}, "
          f"the best single row after Bonferroni {np.mean(single):.2f}")
    assert np.mean(found) > 2 * np.mean(single) and np.mean(found) >= 0.3
