"""Statistics and verdicts: each variant against the baseline, per workload, phase and metric.

For every cell of the comparison: n, median, mean, stddev, a 95% bootstrap confidence
interval of the median, the change of the median against the baseline in % with its own
bootstrap interval, and a two-sided Mann-Whitney U p-value. The verdict is `better` or
`worse` only when the interval of the difference of the medians excludes zero, the median
moved by at least 1%, and a test agrees at p < 0.05: the Mann-Whitney U test where the
samples are large enough for it to reach 0.05 at all (4 or more a side), Welch's t-test on
log(1 + value) below that (2 or 3 a side; the table's p stays the rank test's). Otherwise `no significant
change`. Whether lower or higher is better is declared per metric.
"""

import math
import warnings
from dataclasses import asdict, dataclass
from math import comb

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, ttest_ind

from harness.errors import NotComparable, UnknownVariant

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20220128
CONFIDENCE = 0.95
ALPHA = 0.05
MIN_EFFECT_PCT = 1.0
ZERO_SPREAD_EFFECT = 0.10   # a change of the median smaller than this is not reported as one
HIGHER_IS_BETTER = ("ops_per_s", "vmstat.pgreuse")
COMPARABILITY_FIELDS = ("source", "config_hash", "accelerator", "guest_memory_mb", "swap_mb")
JSON_KEYS = ("workload", "phase", "metric", "variant", "baseline", "n", "median", "ci_low", "ci_high", "change_pct",
             "change_ci_low", "change_ci_high", "p_value", "verdict")
HEADLINE_METRICS = ("cow_copies", "duration_s", "ops_per_s", "vmstat.pswpin", "vmstat.pswpout")


@dataclass(frozen=True)
class Row:
    workload: str
    phase: str
    metric: str
    variant: str
    baseline: str
    n: int
    median: float
    mean: float
    stddev: float
    ci_low: float
    ci_high: float
    change_pct: float | None
    change_ci_low: float | None
    change_ci_high: float | None
    p_value: float | None
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)

    def as_json(self) -> dict:
        """The documented JSON object: exactly JSON_KEYS, in that order."""
        return {key: getattr(self, key) for key in JSON_KEYS}


def lower_is_better(metric: str) -> bool:
    return not metric.startswith(HIGHER_IS_BETTER)


def valid_samples(samples: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Samples of valid runs only, and how many runs were left out as invalid."""
    good = runs[runs["valid"].astype(str) == "True"][["variant", "workload", "rep"]]
    kept = samples.merge(good.astype({"rep": int}), on=["variant", "workload", "rep"])
    return kept, int((runs["valid"].astype(str) != "True").sum())


def check_comparable(runs: pd.DataFrame) -> None:
    """Refuse runs whose comparability fields differ (anything but the patches may not)."""
    valid = runs[runs["valid"].astype(str) == "True"]
    for field in COMPARABILITY_FIELDS:
        if field not in valid:
            continue
        values = sorted(set(valid[field].astype(str)))
        if len(values) > 1:
            raise NotComparable(field=field, values=" vs ".join(values))


def bootstrap_medians(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    return np.median(values[picks], axis=1)


def interval(draws: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def rank_test_can_reach_alpha(n1: int, n2: int) -> bool:
    """The smallest two-sided exact Mann-Whitney p-value for these sizes is 2 / C(n1+n2, n1)."""
    return 2 / comb(n1 + n2, n1) < ALPHA


def welch_p(base: np.ndarray, other: np.ndarray) -> float | None:
    """Welch's t-test on log(1 + value), for samples too small for the rank test.

    On the log scale because the effects compared here are ratios (the change is reported
    in %). Identical values on each side are taken as a certain difference only when they
    differ by ZERO_SPREAD_EFFECT or more: two runs can agree by chance on a small count
    (one copy more in the harness's own commands), not on a halving.
    """
    if len(base) < 2 or len(other) < 2 or min(base.min(), other.min()) < 0:
        return None
    if np.std(base) == 0 and np.std(other) == 0:
        ratio = (other[0] + 1) / (base[0] + 1)
        return 0.0 if abs(ratio - 1) >= ZERO_SPREAD_EFFECT else 1.0
    base, other = np.log1p(base), np.log1p(other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # nearly identical samples: p is still usable
        return float(ttest_ind(other, base, equal_var=False).pvalue)


def compare_cell(base: np.ndarray, other: np.ndarray, metric: str, rng: np.random.Generator) -> dict:
    """Statistics of other against base for one metric."""
    stats = describe(other, rng)
    base_draws, other_draws = bootstrap_medians(base, rng), bootstrap_medians(other, rng)
    base_median = float(np.median(base))
    change = change_low = change_high = None
    if base_median != 0:
        change = (float(np.median(other)) / base_median - 1) * 100
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = (other_draws / base_draws - 1) * 100
        change_low, change_high = interval(ratios[np.isfinite(ratios)]) if np.isfinite(ratios).any() else (None, None)
    differences = other_draws - base_draws
    diff_low, diff_high = interval(differences)
    p_value = None
    if len(base) and len(other) and not (np.all(base == base[0]) and np.all(other == base[0])):
        p_value = float(mannwhitneyu(other, base, alternative="two-sided").pvalue)
    separated = diff_low > 0 or diff_high < 0
    if change is not None and abs(change) < MIN_EFFECT_PCT:
        separated = False
    if separated:
        decisive = p_value if rank_test_can_reach_alpha(len(base), len(other)) else welch_p(base, other)
        separated = decisive is not None and decisive < ALPHA
    verdict = "no significant change"
    if separated:
        went_down = diff_high < 0
        verdict = "better" if went_down == lower_is_better(metric) else "worse"
    return {**stats, "change_pct": change, "change_ci_low": change_low, "change_ci_high": change_high,
            "p_value": p_value, "verdict": verdict}


def describe(values: np.ndarray, rng: np.random.Generator) -> dict:
    low, high = interval(bootstrap_medians(values, rng))
    return {"n": int(len(values)), "median": float(np.median(values)), "mean": float(np.mean(values)),
            "stddev": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "ci_low": low, "ci_high": high}


def compare(samples: pd.DataFrame, runs: pd.DataFrame, baseline: str = "base") -> tuple[list[Row], int]:
    """Every (workload, phase, metric, variant) against baseline; invalid runs left out and counted."""
    check_comparable(runs)
    kept, invalid = valid_samples(samples, runs)
    if baseline not in set(runs["variant"]):
        raise UnknownVariant(name=baseline, experiment="this run", known=", ".join(sorted(set(runs["variant"]))))
    rows = []
    for (workload, phase, metric), group in kept.groupby(["workload", "phase", "metric"], sort=False):
        by_variant = {variant: part["value"].to_numpy(dtype=float) for variant, part in group.groupby("variant")}
        if baseline not in by_variant:
            continue
        for variant, values in by_variant.items():
            rng = np.random.default_rng(BOOTSTRAP_SEED)
            if variant == baseline:
                # the baseline against itself: no change, by definition
                cell = {**describe(values, rng), "change_pct": None, "change_ci_low": None, "change_ci_high": None,
                        "p_value": None, "verdict": "no significant change"}
            else:
                cell = compare_cell(by_variant[baseline], values, metric, rng)
            rows.append(Row(workload, phase, metric, variant, baseline, **cell))
    return rows, invalid


def _number(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def headline_rows(rows: list[Row], show_all: bool = False) -> list[Row]:
    """The rows worth a first look: headline metrics, leaving out those that are zero everywhere."""
    if show_all:
        return rows
    nonzero = {(r.workload, r.phase, r.metric) for r in rows if r.median != 0}
    return [r for r in rows if r.metric in HEADLINE_METRICS and (r.workload, r.phase, r.metric) in nonzero]


def table_lines(rows: list[Row], show_all: bool = False) -> list[list[str]]:
    """Header + rows of the headline comparison (all metrics with show_all)."""
    lines = [["workload", "phase", "metric", "variant", "n", "median", "change", "p", "verdict"]]
    for r in headline_rows(rows, show_all):
        change = "" if r.change_pct is None else f"{r.change_pct:+.1f}%"
        if r.change_ci_low is not None and r.variant != r.baseline:
            change += f" [{r.change_ci_low:+.0f},{r.change_ci_high:+.0f}]"
        lines.append([r.workload, r.phase, r.metric, r.variant, str(r.n), _number(r.median), change,
                      "" if r.p_value is None else f"{r.p_value:.3f}",
                      "(baseline)" if r.variant == r.baseline else
                      {"no significant change": "no sig. change"}.get(r.verdict, r.verdict)])
    return lines


def render_table(rows, show_all=False) -> str:
    """Plain text, one block per workload (the workload is the block's title, not a column)."""
    lines = table_lines(rows, show_all)
    header, body = lines[0][1:], lines[1:]
    widths = [max(len(line[i]) for line in [header] + [b[1:] for b in body]) for i in range(len(header))]
    def join(cells):   # one space between columns keeps the headline table within 80 columns
        return " ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = []
    for workload in dict.fromkeys(line[0] for line in body):
        out += ([""] if out else []) + [f"{workload}:", join(header)]
        out += [join(line[1:]) for line in body if line[0] == workload]
    return "\n".join(out)


def render_markdown(rows, show_all=False) -> str:
    lines = table_lines(rows, show_all)
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    return "\n".join(out)
