"""The comparison's records and words: what a comparison tests (Plan, with the Design of its looks), what it says
of each row (Row) and of the whole (Comparison), a primary row's Decision, and the verdict words. harness/analysis/
compare.py says how they are decided; tables.py words them."""

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from harness import results
from harness.analysis import integrity, stats

ALPHA = stats.ALPHA
DEFAULT_MARGIN_PCT = 5.0
FIRST_LOOK_SHARE = 0.5          # of ALPHA, at the first look of a sequential design; the rest split evenly
JSON_KEYS = ("workload", "phase", "metric", "variant", "baseline", "n", "n_missing", "missing_reason", "median",
             "ci_low", "ci_high", "change_pct", "change_ci_low", "change_ci_high", "p_value", "verdict", "role",
             "p_adjusted", "margin_pct", "note", "exercised", "changed_calls")
VERDICTS = (integrity.BROKEN, "better", "worse", "equivalent", "identical", "inconclusive", "not exercised")
BASELINE = "baseline"       # the verdict word of a baseline row: what the others are compared with, not a finding
RESTING = ("equivalent", "identical")      # verdicts a later boot can take back (decide())


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


# What a comparison decides on: per row (workload, phase, metric, point), per variant, the repetitions of its boots
# and the values they gave, in the same order. A pooled comparison adds the baseline kernel of each variant's own
# folders under (baseline, variant) (sampling.strata).
Sample = tuple[np.ndarray, np.ndarray]
Cells = dict[tuple[str, str, str, str], dict[str | tuple[str, str], Sample]]


class FamilyRow(NamedTuple):
    """A hypothesis row of the primary family: a primary row, or a workload's lost-boots row, of one variant."""
    workload: str
    phase: str
    metric: str
    point: str
    variant: str

    @property
    def cell(self) -> tuple[str, str, str, str]:
        """The row's key in Cells."""
        return (self.workload, self.phase, self.metric, self.point)


@dataclass(frozen=True)
class Decision:
    verdict: str
    p_adjusted: float
    p_equivalence: float | None
    decided_after: int | None
    note: str = ""
