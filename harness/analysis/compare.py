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

This module decides and returns records (Row, Comparison); harness/analysis/tables.py words them.
"""

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np
import pandas as pd

from harness import comparability, metrics, results, workloads
from harness import sweep as sweeps
from harness.analysis import integrity, stats
from harness.errors import UnknownVariant

ALPHA = stats.ALPHA
DEFAULT_MARGIN_PCT = 5.0
FIRST_LOOK_SHARE = 0.5          # of ALPHA, at the first look of a sequential design; the rest split evenly
JSON_KEYS = ("workload", "phase", "metric", "variant", "baseline", "n", "n_missing", "missing_reason", "median",
             "ci_low", "ci_high", "change_pct", "change_ci_low", "change_ci_high", "p_value", "verdict", "role",
             "p_adjusted", "margin_pct", "note", "exercised", "changed_calls")
VERDICTS = (integrity.BROKEN, "better", "worse", "equivalent", "identical", "inconclusive", "not exercised")
BASELINE = "baseline"       # the verdict word of a baseline row: what the others are compared with, not a finding
RESTING = ("equivalent", "identical")      # verdicts a later boot can take back (decide())


def smallest_deciding_reps(rows: int, reps: int, max_reps: int | None = None) -> int | None:
    """The first look (repetitions a side) at which an exact test can decide one of `rows` primary rows
    (its smallest p-value, 2 / C(2n, n), within the look's share of ALPHA / rows); None if no look can."""
    design = Design.sequential(reps, max_reps) if max_reps else Design()
    for look, share in zip(design.looks or (reps,), design.shares or (1.0,)):
        if rows and stats.smallest_p(look, look) <= ALPHA * share / rows:
            return look
    return None


DISCOVERY_REPS_LIMIT = 30     # repetitions a side past which discovery_reps() stops looking


def discovery_reps(rows: int) -> int | None:
    """The repetitions a side at which a discovery of `rows` rows can find a row that moves alone, in every boot:
    its smallest exact p-value, 2 / C(2n, n), within Benjamini-Hochberg's bar for one rejection, ALPHA / rows.
    Below it only rows that move by the dozen together can pass (the bar grows with the rejections)."""
    for reps in range(2, DISCOVERY_REPS_LIMIT + 1):
        if rows and stats.smallest_p(reps, reps) <= ALPHA / rows:
            return reps
    return None


@dataclass(frozen=True)
class Design:
    """When the primary hypotheses are tested: after looks[k] repetitions, at shares[k] x ALPHA.
    No looks: one look at all the data (a fixed number of repetitions, or pooled folders)."""
    looks: tuple[int, ...] = ()
    shares: tuple[float, ...] = ()
    whole: float = 1.0      # without looks: the share of ALPHA of the one look (below 1 for pooled folders)
    why: str = ""           # why `whole` is below 1

    @classmethod
    def sequential(cls, first: int, last: int) -> "Design":
        if last <= first:
            return cls()
        looks = tuple(range(first, last + 1))
        rest = (1 - FIRST_LOOK_SHARE) / (len(looks) - 1)
        return cls(looks, (FIRST_LOOK_SHARE,) + (rest,) * (len(looks) - 1))

    def describe(self) -> str:
        if not self.looks:
            return "one look at all repetitions" + (f", at {self.whole:.3g} of alpha ({self.why})" if self.why else "")
        return (f"looks after {', '.join(map(str, self.looks))} repetitions, spending "
                + ", ".join(f"{share:.3g}" for share in self.shares) + " of alpha")


@dataclass(frozen=True)
class Plan:
    """What a comparison tests, declared before the run (stored in metadata.json)."""
    baseline: str = "base"
    primary: tuple[str, ...] = ()          # WORKLOAD/PHASE/METRIC
    margin_pct: float = DEFAULT_MARGIN_PCT
    control: str | None = None
    design: Design = Design()
    as_control: tuple[str, ...] = ()       # variants whose object code is the baseline's: judged as A/A controls
    mixed_sources: bool = False            # variants may come from different kernel sources
    mixed_hosts: bool = False              # cells of a row may come from different machines
    discovery: bool = False                # no declared rows: every row's verdict from the false-discovery rate

    @classmethod
    def from_metadata(cls, metadata: results.RunMetadata, baseline: str = "base") -> "Plan":
        design = Design()
        if metadata.reps == "auto":
            design = Design.sequential(int(metadata.min_reps), int(metadata.max_reps))
        own_baseline = baseline == metadata.baseline
        return cls(baseline, tuple(metadata.primary), float(metadata.margin_pct), metadata.control, design,
                   tuple(metadata.as_control) if own_baseline else (), metadata.mixed_sources, metadata.mixed_hosts,
                   metadata.discovery and not metadata.primary)

    @property
    def controls(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*([self.control] if self.control else []), *self.as_control]))


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
    ci_low: float | None
    ci_high: float | None
    change_pct: float | None
    change_ci_low: float | None
    change_ci_high: float | None
    p_value: float | None
    verdict: str
    role: str = "exploratory"
    p_adjusted: float | None = None
    margin_pct: float | None = None
    ci_level: float | None = None         # the real coverage of [ci_low, ci_high]
    p_equivalence: float | None = None
    decided_after: int | None = None      # repetitions at the look that decided a primary row
    direction: str = "none"
    unit: str = ""
    other_source: bool = False            # the variant was built from another kernel source than the baseline
    point: str = ""                       # the sweep point (harness/sweep.py); "" without a sweep
    n_missing: int = 0                    # boots of the row's variant, workload and mode without a value
    missing_reason: str = ""              # why: "2 invalid", "1 with denominator 0", "1 not recorded"
    note: str = ""                        # what a primary verdict rests on beyond its p-values (decide())
    exercised: bool | None = None         # whether the row's phase ran a function its variant changed (coverage)
    changed_calls: dict | None = None     # function -> [baseline median, variant median] calls in that phase

    def as_dict(self) -> dict:
        return asdict(self)

    def as_json(self) -> dict:
        """The documented JSON object: exactly JSON_KEYS, in that order, and `point` for a sweep's rows."""
        return {key: getattr(self, key) for key in JSON_KEYS} | ({"point": self.point} if self.point else {})

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.phase}/{self.metric}"


@dataclass(frozen=True)
class Comparison:
    rows: list[Row]
    invalid: int
    plan: Plan
    looks_done: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default=())
    whole_table: tuple[tuple[str, float, int], ...] = ()    # (control, p, rows) of whole_table_tests()
    coverage: object = None             # harness/analysis/coverage.Coverage, when the run knows its changes
    wrong: tuple[integrity.Wrong, ...] = ()     # what the boots read back wrong, judged (integrity.judge)
    checked: str = ""                   # integrity.clean_line: what the boots checked, when none of it was wrong
    drift: tuple[str, ...] = ()         # pooled: the primary rows the baseline kernel moved on between folders
    clusters: tuple[tuple[tuple[str, str], ...], ...] = ()   # a discovery's rows found, ((key, variant), ...) each

    @property
    def broken(self) -> list[integrity.Wrong]:
        """The variants' phases that read back wrong data or failed a test the baseline kernel did not."""
        return integrity.broken(self.wrong)

    @property
    def calibration_failed(self) -> list[Row]:
        return [r for r in self.rows if r.role == "control" and r.verdict in ("better", "worse")]

    @property
    def whole_table_failed(self) -> list[tuple[str, float, int]]:
        """The controls whose whole-table test fails (alpha split between several controls, Bonferroni)."""
        return [test for test in self.whole_table if test[1] <= ALPHA / len(self.whole_table)]

    @property
    def failed(self) -> bool:
        return bool(self.calibration_failed or self.whole_table_failed or self.drift)

    @property
    def controls_present(self) -> list[str]:
        """The plan's controls (the baseline again, or variants whose object code is the baseline's) with rows."""
        return [name for name in self.plan.controls if any(r.variant == name for r in self.rows)]

    def calibration_power(self, controls: list[str]) -> "CalibrationPower | None":
        """The drift of a primary row the calibration would see with 80% probability, at the bar of a row in this
        family at the last look taken (None without primary rows of the controls)."""
        primary = [r for r in self.rows if r.margin_pct is not None and r.variant != r.baseline]
        mine = [r for r in primary if r.variant in controls]
        base = {(r.key, r.point): r.n for r in self.rows if r.margin_pct is not None and r.variant == r.baseline}
        if not mine:
            return None
        n_control = int(np.median([r.n for r in mine]))
        n_base = int(np.median([base.get((r.key, r.point), r.n) for r in mine]))
        bar = ALPHA * self.last_share() / len(primary)
        return CalibrationPower(n_base, n_control, bar, stats.shift_for_power(n_base, n_control, round(bar, 12)))

    def last_share(self) -> float:
        """The share of ALPHA spent at the last look taken (the first look's, when none was recorded)."""
        design = self.plan.design
        if not design.looks:
            return design.whole
        if self.looks_done and self.looks_done[-1] in design.looks:
            return design.shares[design.looks.index(self.looks_done[-1])]
        return design.shares[0]


@dataclass(frozen=True)
class CalibrationPower:
    """What a calibration could see: at n_base + n_control boots, a drift of the baseline by `shift` standard
    deviations of a primary row reaches a row's bar (p <= bar) with 80% probability; shift None: no row can."""
    n_base: int
    n_control: int
    bar: float
    shift: float | None


# --- data in: valid samples, each metric from the boots that measure it ------------------

Cells = dict   # (workload, phase, metric, point) -> variant -> (reps array, values array)


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


def strata(kept: pd.DataFrame, runs: pd.DataFrame, plan: "Plan") -> Cells:
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


def lost_more(rows: list["Row"]) -> list["Row"]:
    """The lost-boots rows of the variants that lost a larger share of a workload's repetitions than the baseline,
    whatever their verdict: where they are, the verdicts of that workload rest on the boots that passed."""
    kept = {(r.workload, r.point): r.median for r in rows if (r.phase, r.metric) == BOOTS and r.variant == r.baseline}
    return [r for r in rows if (r.phase, r.metric) == BOOTS and r.variant != r.baseline
            and (r.workload, r.point) in kept and r.median < kept[(r.workload, r.point)]]


def _with_reasons(row: "Row", runs: pd.DataFrame) -> "Row":
    """A lost-boots row with a note, with the reasons of its lost boots after it."""
    if (row.phase, row.metric) != BOOTS or not row.note:
        return row
    reasons = lost_reasons(runs, row.workload, row.point, row.variant)
    return replace(row, note=f"{row.note}: {reasons}") if reasons else row


def _up_to(cell, look: int | None) -> np.ndarray:
    reps, values = cell
    return values if look is None else values[reps <= look]


# --- the primary family over the looks ---------------------------------------------------

@dataclass(frozen=True)
class Decision:
    verdict: str
    p_adjusted: float
    p_equivalence: float | None
    decided_after: int | None
    note: str = ""


def _went_down(base: np.ndarray, other: np.ndarray) -> bool:
    return float(np.mean(np.sign(other[None, :] - base[:, None]))) < 0


def _direction_verdict(metric: str, base, other) -> str:
    direction = metrics.meaning(metric).direction
    if direction == "none":
        return "inconclusive"
    return "better" if _went_down(base, other) == (direction == "lower") else "worse"


def _highest_rep(by_variant: dict) -> int:
    return max((int(reps.max()) for reps, _ in by_variant.values() if len(reps)), default=0)


def looks_reached(plan: Plan, cells: Cells) -> list[tuple[int | None, float]]:
    """(repetitions, share of alpha) of the looks the data have reached."""
    if not plan.design.looks:
        return [(None, plan.design.whole)]
    highest = max((_highest_rep(by_variant) for by_variant in cells.values()), default=0)
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


def _inside(base: np.ndarray, other: np.ndarray, margin: float) -> bool:
    """Whether the interval of the change lies within the margin."""
    _, interval = stats.ratio_change(base, other)
    return interval is not None and 1 - margin <= interval[0] and interval[1] <= 1 + margin


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


# A row of the primary family: (workload, phase, metric, point, variant)
FamilyRow = tuple


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


def _family_rows(cells: Cells, plan: Plan, variants: list[str]) -> list[FamilyRow]:
    """The primary rows of every variant at every sweep point, then each workload's lost-boots row."""
    points: dict[str, list[str]] = {}
    for workload, phase, metric, point in cells:
        points.setdefault(f"{workload}/{phase}/{metric}", []).append(point)
    rows = [(*key.split("/"), point, variant) for key in plan.primary for point in points.get(key, [""])
            for variant in variants if variant != plan.baseline]
    return rows + [(key[0], *BOOTS, key[3], variant) for key, by_variant in cells.items() if key[1:3] == BOOTS
                   for variant in variants if variant != plan.baseline and variant in by_variant]


def _sample(cells: Cells, baseline: str, row: FamilyRow, look: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The baseline's and the row variant's values up to look (empty where a side has none), and the highest
    repetition of the row's cell."""
    by_variant = cells.get(row[:4], {})
    base = _up_to(baseline_of(by_variant, baseline, row[4]), look) if baseline in by_variant else np.array([])
    other = _up_to(by_variant[row[4]], look) if row[4] in by_variant else np.array([])
    return base, other, _highest_rep(by_variant)


SURVIVORS = "the boots left are those that passed"
ON_SURVIVORS = "this rests on the boots that passed"


def _survivors(cells: Cells, baseline: str, row: FamilyRow, look: int | None, why: str = SURVIVORS) -> str:
    """Why the boots of a row's variant are no fair sample ('' while they are): its workload lost a larger
    share of the variant's repetitions than of the baseline's, so the boots left are those that passed."""
    if row[1:3] == BOOTS or (row[0], *BOOTS, row[3]) not in cells:
        return ""
    base, other, _ = _sample(cells, baseline, (row[0], *BOOTS, row[3], row[4]), look)
    if not len(base) or not len(other) or np.mean(other == 0) <= np.mean(base == 0):
        return ""
    return (f"{np.count_nonzero(other == 0)} of {len(other)} repetitions lost a boot (baseline: "
            f"{np.count_nonzero(base == 0)} of {len(base)}): {why}")


def _reopened(cells: Cells, plan: Plan, row: FamilyRow, look: int | None, verdict: str) -> str | None:
    """Why a resting verdict no longer holds on the boots up to look, None while it does."""
    base, other, _ = _sample(cells, plan.baseline, row, look)
    held = _survivors(cells, plan.baseline, row, look)
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
        if row[1:3] != BOOTS:
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
    small = different and _inside(base, other, plan.margin_pct / 100)
    if different and not small:      # the tails' note withholds equivalence only
        return Decision(_direction_verdict(row[2], base, other), p["difference"], facts.p_equivalence, reps,
                        _survivors(cells, plan.baseline, row, look, ON_SURVIVORS))
    held = _survivors(cells, plan.baseline, row, look)
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
        if _went_down(base[1], other[1]):
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


def all_decided(cells: Cells, plan: Plan, variants: list[str]) -> bool:
    """The stopping rule of `--reps auto`: every primary row of every variant has a verdict; in a discovery, also
    the repetitions at which a row that moves alone could be found (discovery_reps of the rows it tests). A
    workload judged by a rule (workloads.by_rule) gets no more repetitions, so its lost boots hold nothing open."""
    if plan.discovery:
        needed = discovery_reps(tested_rows(cells, plan, variants))
        if needed is not None and max((_highest_rep(by_variant) for by_variant in cells.values()), default=0) < needed:
            return False
    return all(d.verdict != "inconclusive" or (row[1:3] == BOOTS and (not _losing(cells, row, plan.baseline)
                                                                      or workloads.by_rule(row[0])))
               for row, d in decide(cells, plan, variants).items())


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


def _losing(cells: Cells, row: tuple, baseline: str) -> bool:
    """Whether the variant of a lost-boots row has lost a larger share of its repetitions than the baseline:
    then the run goes on, since more repetitions can show it; otherwise the row does not hold it."""
    by_variant = cells[row[:4]]
    lost = {name: float(np.mean(by_variant[name][1] == 0)) for name in (baseline, row[4]) if name in by_variant}
    return len(lost) == 2 and lost[row[4]] > lost[baseline]


# --- every row ---------------------------------------------------------------------------

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


def one_value(base: np.ndarray, other: np.ndarray) -> bool:
    """Whether every value of base and other is the same one (a degenerate row: no test can tell them apart)."""
    return bool(len(base) and (base == base[0]).all() and (other == base[0]).all())


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
    """Whether the variant lost a larger share of the workload's repetitions than the baseline (_losing)."""
    boots = (workload, *BOOTS, point, variant)
    return boots[:4] in cells and _losing(cells, boots, baseline)


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
    gate_open = {row[4] for row, decision in decisions.items()      # the declared rows: not the lost boots
                 if decision.verdict in ("better", "worse") and row[1:3] != BOOTS}
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
    held = _survivors(cells, plan.baseline, (row.workload, row.phase, row.metric, row.point, row.variant), None,
                      ON_SURVIVORS)
    return replace(row, verdict=_direction_verdict(row.metric, baseline_of(by_variant, plan.baseline, row.variant)[1],
                                                   by_variant[row.variant][1]), note=held or row.note)


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
    rows = [_with_reasons(row, runs) for row in rows]
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
