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
"""

import functools
import math
import textwrap
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from harness import results
from harness import sweep as sweeps
from harness.analysis import stats
from harness.errors import NotComparable, UnknownVariant
from harness.measure import metrics

ALPHA = stats.ALPHA
DEFAULT_MARGIN_PCT = 5.0
FIRST_LOOK_SHARE = 0.5          # of ALPHA, at the first look of a sequential design; the rest split evenly
COMPARABILITY_FIELDS = ("source", "config_hash", "accelerator", "guest_memory_mb", "swap_mb", "swap",
                        "swap_compressor", "cpus", "host")
PER_KERNEL_FIELDS = ("source", "config_hash")     # what mixed_sources lets differ between variants
JSON_KEYS = ("workload", "phase", "metric", "variant", "baseline", "n", "n_missing", "missing_reason", "median",
             "ci_low", "ci_high", "change_pct", "change_ci_low", "change_ci_high", "p_value", "verdict", "role",
             "p_adjusted", "margin_pct", "note", "exercised", "changed_calls")
VERDICTS = ("better", "worse", "equivalent", "identical", "inconclusive", "not exercised")
BASELINE = "baseline"       # the verdict word of a baseline row: what the others are compared with, not a finding
RESTING = ("equivalent", "identical")      # verdicts a later boot can take back (decide())
CONTROL_KINDS = {True: "the baseline kernel again", False: "object code identical to the baseline"}


def smallest_deciding_reps(rows: int, reps: int, max_reps: int | None = None) -> int | None:
    """The first look (repetitions a side) at which an exact test can decide one of `rows` primary rows
    (its smallest p-value, 2 / C(2n, n), within the look's share of ALPHA / rows); None if no look can."""
    design = Design.sequential(reps, max_reps) if max_reps else Design()
    for look, share in zip(design.looks or (reps,), design.shares or (1.0,)):
        if rows and 2 / math.comb(2 * look, look) <= ALPHA * share / rows:
            return look
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
    def from_metadata(cls, metadata: dict, baseline: str = "base") -> "Plan":
        design = Design()
        if metadata.get("reps") == "auto":
            design = Design.sequential(int(metadata["min_reps"]), int(metadata["max_reps"]))
        own_baseline = baseline == metadata.get("baseline", "base")
        return cls(baseline, tuple(metadata.get("primary", ())), float(metadata.get("margin_pct", DEFAULT_MARGIN_PCT)),
                   metadata.get("control"), design, tuple(metadata.get("as_control", ())) if own_baseline else (),
                   bool(metadata.get("mixed_sources", False)), bool(metadata.get("mixed_hosts", False)),
                   bool(metadata.get("discovery", False)) and not metadata.get("primary"))

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

    @property
    def calibration_failed(self) -> list[Row]:
        return [r for r in self.rows if r.role == "control" and r.verdict in ("better", "worse")]

    @property
    def whole_table_failed(self) -> list[tuple[str, float, int]]:
        """The controls whose whole-table test fails (alpha split between several controls, Bonferroni)."""
        return [test for test in self.whole_table if test[1] <= ALPHA / len(self.whole_table)]

    @property
    def failed(self) -> bool:
        return bool(self.calibration_failed or self.whole_table_failed)

    def calibration_line(self) -> str:
        """'' without a control; else whether the controls (the baseline again, or a variant whose object
        code is the baseline's) came out clean."""
        present = [name for name in self.plan.controls if any(r.variant == name for r in self.rows)]
        if not present:
            return ""
        what = ", ".join(f"`{name}` ({CONTROL_KINDS[name == self.plan.control]})" for name in present)
        failed = self.calibration_failed
        whole = "".join(f"; over all {rows} rows at once (whole boots permuted) `{name}` against "
                        f"`{self.plan.baseline}`: p = {p:.2g}" for name, p, rows in self.whole_table)
        if self.failed:
            rows = ", ".join(f"{r.variant} {r.key} {r.verdict}" for r in failed[:4])
            rows += " ..." if len(failed) > 4 else ""
            rows = rows or "the whole table (" + ", ".join(f"`{name}` p = {p:.2g}" for name, p, _
                                                           in self.whole_table_failed) + ")"
            return (f"CALIBRATION FAILED: {what} differs from `{self.plan.baseline}` in {rows}: no verdict of this "
                    "run can be trusted" + whole)
        return f"Calibration passed: {what} has no better/worse verdict against `{self.plan.baseline}`" + whole + \
            self.calibration_power(present)

    def calibration_power(self, controls: list[str]) -> str:
        """'; at 6 + 6 boots ...': the drift of a primary row the calibration would see with 80% probability,
        at the bar of a row in this family at the last look taken ('' without primary rows)."""
        primary = [r for r in self.rows if r.margin_pct is not None and r.variant != r.baseline]
        mine = [r for r in primary if r.variant in controls]
        base = {(r.key, r.point): r.n for r in self.rows if r.margin_pct is not None and r.variant == r.baseline}
        if not mine:
            return ""
        n_control = int(np.median([r.n for r in mine]))
        n_base = int(np.median([base.get((r.key, r.point), r.n) for r in mine]))
        design = self.plan.design
        share = design.whole if not design.looks else \
            design.shares[design.looks.index(self.looks_done[-1])] if self.looks_done and \
            self.looks_done[-1] in design.looks else design.shares[0]
        bar = ALPHA * share / len(primary)
        shift = stats.shift_for_power(n_base, n_control, round(bar, 12))
        if shift is None:
            return f"; at {n_base} + {n_control} boots it could not see any drift (no row can reach p <= {bar:.2g})"
        return (f"; at {n_base} + {n_control} boots it sees a drift of the baseline by {shift:g} standard deviations "
                f"of a primary row with 80% probability (a row's bar: p <= {bar:.2g}), smaller drifts pass unseen")


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


def check_comparable(runs: pd.DataFrame, mixed_sources: bool = False, mixed_hosts: bool = False) -> None:
    """Refuse runs whose comparability fields differ (anything but the patches may not), within each sweep
    point. With mixed_sources the kernel source and config may differ between variants, not within one;
    with mixed_hosts the cells may come from several machines (a host sweep axis is a point of its own)."""
    if mixed_hosts and "host" in runs:
        runs = runs.drop(columns="host")
    if "point" in runs and runs["point"].nunique() > 1:
        for _, part in runs.groupby("point"):
            check_comparable(part.drop(columns="point"), mixed_sources)
        return
    valid = results.valid_runs(runs)
    pooled = "run_dir" in valid and valid["run_dir"].nunique() > 1
    for name in COMPARABILITY_FIELDS:
        if name not in valid:
            continue
        if mixed_sources and name in PER_KERNEL_FIELDS:
            for _, part in valid.groupby("variant"):
                check_comparable(part.drop(columns=[f for f in COMPARABILITY_FIELDS if f != name], errors="ignore"))
            continue
        values = sorted(set(valid[name].astype(str)))
        if len(values) > 1:
            if pooled:
                values = [f"{value} in {', '.join(sorted(set(valid[valid[name].astype(str) == value]['run_dir'])))}"
                          for value in values]
            hint = " (or, for a cluster's hosts, sweep host.name or set mixed_hosts = true)" if name == "host" else ""
            raise NotComparable(field=name, values=" vs ".join(values), hint=hint)


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


def gather(samples: pd.DataFrame, runs: pd.DataFrame) -> Cells:
    """Valid samples as arrays per row and variant, each metric from the boots that measure it."""
    if samples.empty:
        return {}
    samples = with_points(samples)
    valid = results.valid_runs(runs)
    modes = valid_modes(valid)
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


BOOTS = ("boots", "valid_share")     # the (phase, metric) of each workload's lost-boots row
NOT_THE_KERNEL = ("failed: harness fault", "failed: worker ")    # invalid boots that say nothing of the kernel


def boot_cells(runs: pd.DataFrame) -> Cells:
    """Per workload and point, each variant's repetitions as 1.0 where every boot of the repetition (counted and
    timed) was valid and 0.0 where one was lost: failed to boot or run, or failed a gate. A boot lost to the
    harness itself or to its worker is left out; a repetition with nothing else has no value."""
    if runs.empty:
        return {}
    runs = with_points(runs)
    reasons = runs["reason"].fillna("").astype(str) if "reason" in runs else pd.Series("", index=runs.index)
    counted = runs[runs["valid"].astype(bool) | ~reasons.str.startswith(NOT_THE_KERNEL)]
    cells: Cells = {}
    for (workload, point, variant), part in counted.groupby(["workload", "point", "variant"], sort=False):
        kept = part.groupby("rep")["valid"].all()
        cells.setdefault((workload, *BOOTS, point), {})[variant] = (kept.index.to_numpy(dtype=int),
                                                                    kept.to_numpy(dtype=float))
    return cells


def lost_reasons(runs: pd.DataFrame, workload: str, point: str, variant: str) -> str:
    """'2 x reswap gate: ...; 1 x failed: ...': the invalid boots of one variant that count as lost."""
    runs = with_points(runs)
    mine = runs[(runs["workload"] == workload) & (runs["point"] == point) & (runs["variant"] == variant) &
                ~runs["valid"].astype(bool)]
    reasons = mine["reason"].fillna("").astype(str) if "reason" in mine else pd.Series(dtype=str)
    reasons = reasons[~reasons.str.startswith(NOT_THE_KERNEL)]
    return "; ".join(f"{count} x {reason or 'invalid'}" for reason, count in reasons.value_counts().items())


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


def tails(base: np.ndarray, other: np.ndarray, margin: float) -> str:
    """Why no `equivalent` may stand, '' if none: boots of the variant outside the margin around the baseline's
    median while none of the baseline's are, or more often than the baseline's (Fisher's exact test). The
    equivalence test is about the middle of the boots; a patch that misbehaves in some boots only (a race)
    shows in the tails."""
    centre = stats.median(base)
    out, base_out = outside_margin(other, centre, margin), outside_margin(base, centre, margin)
    if out and (not base_out or stats.more_often(out, len(other), base_out, len(base)) <= ALPHA):
        return f"{out} of {len(other)} boots outside +-{margin * 100:g}% (baseline: {base_out} of {len(base)})"
    return ""


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
    points: dict[str, list[str]] = {}
    for workload, phase, metric, point in cells:
        points.setdefault(f"{workload}/{phase}/{metric}", []).append(point)
    rows = [(*key.split("/"), point, variant) for key in plan.primary for point in points.get(key, [""])
            for variant in variants if variant != plan.baseline]
    rows += [(key[0], *BOOTS, key[3], variant) for key, by_variant in cells.items() if key[1:3] == BOOTS
             for variant in variants if variant != plan.baseline and variant in by_variant]
    decided: dict[tuple, Decision] = {}
    latest: dict[tuple, Decision] = {}
    margin = plan.margin_pct / 100

    def sample(row, look):
        by_variant = cells.get(row[:4], {})
        base = _up_to(by_variant[plan.baseline], look) if plan.baseline in by_variant else np.array([])
        other = _up_to(by_variant[row[4]], look) if row[4] in by_variant else np.array([])
        return base, other, _highest_rep(by_variant)

    def survivors(row, look) -> str:
        """Why the boots of a row's variant are no fair sample ('' while they are): its workload lost a larger
        share of the variant's repetitions than of the baseline's, so the boots left are those that passed."""
        if row[1:3] == BOOTS or (row[0], *BOOTS, row[3]) not in cells:
            return ""
        base, other, _ = sample((row[0], *BOOTS, row[3], row[4]), look)
        if not len(base) or not len(other) or np.mean(other == 0) <= np.mean(base == 0):
            return ""
        return (f"{np.count_nonzero(other == 0)} of {len(other)} repetitions lost a boot (baseline: "
                f"{np.count_nonzero(base == 0)} of {len(base)}): the boots left are those that passed")

    def reopened(row, look, verdict) -> str | None:
        """Why a resting verdict no longer holds on the boots up to look, None while it does."""
        base, other, _ = sample(row, look)
        held = survivors(row, look)
        if held:
            return held
        if verdict == "identical":
            return None if one_value(base, other) else ""
        return tails(base, other, margin) or None

    for look, share in [*looks_reached(plan, cells), (None, 0.0)]:
        for row in [row for row, decision in decided.items() if decision.verdict in RESTING]:
            note = reopened(row, look, decided[row].verdict)
            if note is not None:
                del decided[row]
                latest[row] = Decision("inconclusive", 1.0, None, None, note)
        if not share:
            break           # the whole sample, after the last look: equivalence re-checked, nothing tested
        hypotheses, lost = [], []
        for row in rows:
            if row in decided:
                continue     # decided: its verdict stands (the stopping rule counted on it)
            base, other, highest = sample(row, look)
            usable = len(base) and len(other)
            reps = look if look is not None else highest
            if row[1:3] == BOOTS:
                if usable:
                    lost.append((row, base, other, reps))
                continue
            note = tails(base, other, margin) if usable else ""
            p_difference = stats.rank_test(base, other) if usable else 1.0
            p_equivalence = stats.equivalence_p(base, other, margin) if usable else 1.0
            facts = (base, other, reps, note, p_equivalence)
            hypotheses += [(row, "difference", p_difference, facts),
                           (row, "equivalence", 1.0 if note else p_equivalence, facts)]
        hypotheses += _lost_hypotheses(lost, len({h[0] for h in hypotheses}), share, decided, latest)
        adjusted = stats.step_down([h[2] for h in hypotheses], [h[0] for h in hypotheses])
        found: dict[tuple, dict] = {}
        for (row, kind, _, facts), value in zip(hypotheses, adjusted):
            found.setdefault(row, {"facts": facts})[kind] = min(1.0, value / share)
        for row, p in found.items():
            if "lost" in p:
                reps, note = p["facts"]
                if p["lost"] <= ALPHA:
                    decided[row] = Decision("worse", p["lost"], None, reps, note)
                else:
                    latest[row] = Decision("inconclusive", p["lost"], None, None, note)
                continue
            base, other, reps, note, p_equivalence = p["facts"]
            different, equivalent = p["difference"] <= ALPHA, p["equivalence"] <= ALPHA
            small = different and _inside(base, other, margin)
            held = survivors(row, look) if not (different and not small) else ""
            if held:
                latest[row] = Decision("inconclusive", p["difference"], p_equivalence, None, held)
            elif len(base) and len(other) and one_value(base, other):
                decided[row] = Decision("identical", p["difference"], p_equivalence, reps)
            elif different and not small:
                verdict = _direction_verdict(row[2], base, other)      # the tails' note withholds equivalence only
                decided[row] = Decision(verdict, p["difference"], p_equivalence, reps)
            elif equivalent:
                decided[row] = Decision("equivalent", p["equivalence"], p_equivalence, reps,
                                        "a difference smaller than the margin" if small else "")
            else:
                note = note or ("a difference smaller than the margin; equivalence not shown yet" if small else "")
                latest[row] = Decision("inconclusive", p["difference"], p_equivalence, None, note)
    return {row: decided.get(row) or latest.get(row) or Decision("inconclusive", 1.0, None, None) for row in rows}


def _lost_hypotheses(lost: list, groups: int, share: float, decided: dict, latest: dict) -> list[tuple]:
    """The lost-boots hypotheses (row, "lost", p, (reps, note)) that join a look's family beside `groups` row
    groups; rows that lost nothing are decided `identical`, rows that cannot reach the bar left inconclusive."""
    candidates = []
    for row, base, other, reps in lost:
        lost_base, lost_other = int(np.count_nonzero(base == 0)), int(np.count_nonzero(other == 0))
        if not lost_base and not lost_other:
            decided[row] = Decision("identical", 1.0, None, reps)
            continue
        note = f"{lost_other} of {len(other)} repetitions lost a boot (baseline: {lost_base} of {len(base)})"
        total = lost_base + lost_other
        most = min(total, len(other))
        floor = stats.more_often(most, len(other), total - most, len(base))     # the smallest p possible
        p_value = stats.more_often(lost_other, len(other), lost_base, len(base))
        candidates.append((row, p_value, floor, reps, note))
    # Tarone: the smallest family size j at which no more than j of these tests could pass its bar; those join
    for size in range(len(candidates) + 1):
        joined = [c for c in candidates if c[2] * (groups + size) / share <= ALPHA]
        if len(joined) <= size:
            break
    for row, p_value, _, _, note in candidates:      # left out: the p it would have had in the family
        latest[row] = Decision("inconclusive", min(1.0, p_value * (groups + len(joined) + 1) / share), None, None,
                               note)
    return [(row, "lost", p_value, (reps, note)) for row, p_value, _, reps, note in joined]


CONFIRM_LIMIT = 8       # rows a confirmation declares primary: more would need more boots to decide any
IDLE = "idle"           # the phase every workload runs first: the guest's background, before the workload


def discoveries(rows: list[Row]) -> list[Row]:
    """The better/worse rows of the judged variants in a discovery, the strongest first (smallest p_adj, then
    the largest change)."""
    found = [r for r in rows if r.role == "exploratory" and r.verdict in ("better", "worse")]
    return sorted(found, key=lambda r: (r.p_adjusted, -abs(r.change_pct or 0.0)))


def confirmation_rows(rows: list[Row], limit: int = CONFIRM_LIMIT) -> list[str]:
    """The WORKLOAD/PHASE/METRIC rows a confirmatory run declares primary, from a discovery: per workload phase
    the strongest discovery, preferring a count to a timing (counts are exact; timings under TCG are emulated),
    a headline metric (the short table's) and a rate (it moves less with what the boot happened to swap) to a
    raw count; each workload's strongest first, then each one's second, ...; a metric not chosen yet before one
    that is; never the idle phase; at most limit of them, since every primary row costs the family alpha."""
    best: dict[tuple, Row] = {}
    for r in discoveries(rows):
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
    """The stopping rule of `--reps auto`: every primary row of every variant has a verdict."""
    return all(d.verdict != "inconclusive" or (row[1:3] == BOOTS and not _losing(cells, row, plan.baseline))
               for row, d in decide(cells, plan, variants).items())


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
    primary = set(plan.primary)
    controls = set(plan.controls)
    order = {variant: index for index, variant in enumerate(variants)}
    rows: list[dict] = []
    for (workload, phase, metric, point), by_variant in cells.items():
        if plan.baseline not in by_variant:
            continue
        meaning = metrics.meaning(metric)
        base = by_variant[plan.baseline][1]
        base_one = bool(len(base)) and bool((base == base[0]).all())
        key = f"{workload}/{phase}/{metric}"
        for variant in sorted(by_variant, key=lambda v: order.get(v, len(variants))):
            values = by_variant[variant][1]
            if (phase, metric) == BOOTS:
                rows.append(_boots_row(workload, point, variant, base, values, plan, controls,
                                       decisions.get((workload, phase, metric, point, variant))))
                continue
            role = "control" if variant in controls else "primary" if key in primary else "exploratory"
            row = {"workload": workload, "phase": phase, "metric": metric, "point": point, "variant": variant,
                   "baseline": plan.baseline, **describe(values), "role": role, "direction": meaning.direction,
                   "unit": meaning.unit, "margin_pct": plan.margin_pct if key in primary else None}
            if variant == plan.baseline:
                rows.append({**row, "change_pct": None, "change_ci_low": None, "change_ci_high": None,
                             "p_value": None, "verdict": BASELINE})
                continue
            same = base_one and bool((values == base[0]).all())     # one_value(base, values)
            row.update(change(base, values, same))
            decision = decisions.get((workload, phase, metric, point, variant))
            if decision is not None:
                row.update(verdict=decision.verdict, p_adjusted=decision.p_adjusted, note=decision.note,
                           p_equivalence=decision.p_equivalence, decided_after=decision.decided_after)
            else:
                held = same and (workload, *BOOTS, point) in cells and \
                    _losing(cells, (workload, *BOOTS, point, variant), plan.baseline)
                row.update(verdict="identical" if same and not held else "inconclusive", degenerate=same)
            rows.append(row)
    _exploratory_verdicts(rows, decisions, plan, cells)
    for row in rows:
        row.pop("degenerate", None)
    return [Row(**row) for row in rows]


def _boots_row(workload: str, point: str, variant: str, base: np.ndarray, values: np.ndarray, plan: Plan,
               controls: set, decision: Decision | None) -> dict:
    """The lost-boots row of a workload: the share of repetitions that lost no boot, and Fisher's test."""
    share, base_share = float(values.mean()), float(base.mean())
    spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    row = {"workload": workload, "phase": BOOTS[0], "metric": BOOTS[1], "point": point, "variant": variant,
           "baseline": plan.baseline, "n": len(values), "median": share, "mean": share, "stddev": spread,
           "ci_low": None, "ci_high": None, "ci_level": None, "direction": "higher", "unit": "share",
           "role": "control" if variant in controls else "primary", "change_pct": None, "change_ci_low": None,
           "change_ci_high": None, "p_value": None, "verdict": "inconclusive"}
    if variant == plan.baseline:
        return {**row, "verdict": BASELINE}
    lost, lost_base = int(np.count_nonzero(values == 0)), int(np.count_nonzero(base == 0))
    row.update(change_pct=_pct(share / base_share) if base_share else None,
               p_value=stats.more_often(lost, len(values), lost_base, len(base)))
    if decision is not None:
        row.update(verdict=decision.verdict, p_adjusted=decision.p_adjusted, note=decision.note,
                   decided_after=decision.decided_after)
    return row


def _exploratory_verdicts(rows: list[dict], decisions: dict, plan: Plan, cells: Cells) -> None:
    """Benjamini-Hochberg across every exploratory row; verdicts only behind an open gate, or, in discovery,
    wherever the variant kept as large a share of its repetitions as the baseline (else the boots left are those
    that passed the gates, and the row says so)."""
    family = [row for row in rows if "degenerate" in row and not row["degenerate"]]
    # a discovery has no gate: a control (the baseline again) is its own family, so that the judged variants'
    # real effects cannot lower its bar and fail the calibration; otherwise the gate keeps controls quiet
    controls = set(plan.controls) if plan.discovery else set()
    for members in [[row for row in family if row["variant"] not in controls],
                    *[[row for row in family if row["variant"] == name] for name in sorted(controls)]]:
        for row, adjusted in zip(members, stats.false_discovery([row["p_value"] for row in members])):
            row["p_adjusted"] = adjusted
    for row in rows:
        if "degenerate" in row and row["degenerate"]:
            row["p_adjusted"] = 1.0
    gate_open = {row[4] for row, decision in decisions.items()      # the declared rows: not the lost boots
                 if decision.verdict in ("better", "worse") and row[1:3] != BOOTS}
    for row in family:
        if (row["variant"] not in gate_open and not plan.discovery) or row["direction"] == "none":
            continue
        boots = (row["workload"], *BOOTS, row["point"], row["variant"])
        losing = plan.discovery and boots[:4] in cells and _losing(cells, boots, plan.baseline)
        if row["p_adjusted"] <= ALPHA and losing:
            row["note"] = "no verdict: the variant lost a larger share of its repetitions than the baseline, so " \
                          "the boots left are those that passed"
        elif row["p_adjusted"] <= ALPHA:
            by_variant = cells[(row["workload"], row["phase"], row["metric"], row["point"])]
            row["verdict"] = _direction_verdict(row["metric"], by_variant[plan.baseline][1],
                                                by_variant[row["variant"]][1])


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
    check_comparable(runs, plan.mixed_sources, plan.mixed_hosts)
    if plan.baseline not in set(runs["variant"]):
        raise UnknownVariant(name=plan.baseline, experiment="this run", known=", ".join(sorted(set(runs["variant"]))))
    kept, invalid = valid_samples(samples, runs)
    cells = gather(kept, runs) | boot_cells(runs)
    rows = compare_cells(cells, plan, variant_order(runs, plan.baseline, order))
    rows = [_with_reasons(row, runs) for row in rows]
    rows.sort(key=lambda row: sweeps.order(row.point))     # stable: within a point, the order compare_cells gave
    others = other_sources(runs, plan.baseline)
    rows = [replace(row, other_source=True) if row.variant in others else row for row in rows]
    rows = with_missing(rows, runs)
    if coverage is not None:
        rows = coverage.judged(rows)
    looks = tuple(look for look, _ in looks_reached(plan, cells) if look is not None)
    return Comparison(rows, invalid, plan, looks, whole_table=whole_table_tests(kept, plan, runs), coverage=coverage)


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
            part = part[[source_mode(metric, modes.get(workload, set())) == mode for metric in part["metric"]]]
            if "run_dir" in part:
                part = part.assign(boot=part["variant"] + ":" + part["rep"].astype(str) + ":" + part["run_dir"])
            else:
                part = part.assign(boot=part["variant"] + ":" + part["rep"].astype(str))
            table = part.pivot_table(index="boot", columns=["phase", "metric"], values="value", aggfunc="first")
            table = table.dropna(axis=1)
            first = table.index.str.startswith(f"{control}:")
            if not first.any() or first.all() or table.empty:
                continue
            values = np.vstack([table.to_numpy(dtype=float)[first], table.to_numpy(dtype=float)[~first]])
            groups.append((values, int(first.sum())))
            rows += table.shape[1]
        if groups:
            found.append((control, stats.whole_boot_test(groups), rows))
    return tuple(found)


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


# --- text out ----------------------------------------------------------------------------

def _number(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _bound(value: float | None, low: bool) -> str:
    if value is None:
        return "-inf" if low else "+inf"
    return f"{value:+.1f}" if abs(value) < 10 else f"{value:+.0f}"


def headline_rows(rows: list[Row], show_all: bool = False) -> list[Row]:
    """The rows worth a first look: primary rows, then headline metrics that are not zero everywhere, and every
    row a variant moved (better or worse)."""
    if show_all:
        return rows
    nonzero = {r.key for r in rows if r.median != 0}
    moved = {r.key for r in rows if r.verdict in ("better", "worse")}
    primary = [r for r in rows if r.margin_pct is not None]
    rest = [r for r in rows if r.margin_pct is None and (metrics.meaning(r.metric).headline and r.key in nonzero
                                                         or r.key in moved)]
    chosen = primary + [r for r in rest if (r.phase, r.metric) == BOOTS] + \
        [r for r in rest if (r.phase, r.metric) != BOOTS]
    first = {workload: index for index, workload in reversed(list(enumerate(r.workload for r in chosen)))}
    return sorted(chosen, key=lambda r: first[r.workload])      # stable: one block per workload, as printed


def footnotes(rows: list[Row], show_all: bool = False) -> list[str]:
    """'[k] row variant: note' for each headline row with a note, numbered as table_lines marks them."""
    noted = [r for r in headline_rows(rows, show_all) if r.note]
    return [f"[{k}] {r.key}{f' at {r.point}' if r.point else ''} {r.variant}: {r.note}"
            for k, r in enumerate(noted, 1)]


def baseline_medians(rows: list[Row]) -> dict[tuple, float]:
    return {(r.key, r.point): r.median for r in rows if r.variant == r.baseline}


def change_text(r: Row, base_median: float | None, bound=None) -> str:
    """'+0.3% [-1.0,+0.9]': the change and its interval; a zero-width interval (tied pairs: the values are
    discrete) is said as tied, not as a 95% interval; where the medians moved the other way, they are shown
    too. bound: how an interval end is written (default: the table's short form)."""
    if r.change_pct is None:
        return ""
    text = f"{r.change_pct:+.1f}%"
    if r.variant == r.baseline or (r.phase, r.metric) == BOOTS:
        return text
    bound = bound or _bound
    if r.change_ci_low is not None and r.change_ci_low == r.change_ci_high:
        text += " (tied pairs)"
    else:
        text += f" [{bound(r.change_ci_low, True)},{bound(r.change_ci_high, False)}]"
    moved = medians_against(r, base_median)
    if moved is not None:
        text += f" (medians {moved:+.1f}%)"
    return text


def medians_against(r: Row, base_median: float | None) -> float | None:
    """The medians' change in % where it points the other way from the change (the median of the pairwise
    ratios) and shows as more than 0.0%: a quoted change must not contradict the medians beside it. None
    otherwise."""
    if r.change_pct is None or r.change_pct == 0 or base_median is None or not base_median > 0 \
            or not math.isfinite(base_median) or not math.isfinite(r.median) or r.median < 0:
        return None
    moved = 100 * (r.median / base_median - 1)
    return moved if round(moved, 1) != 0 and (moved > 0) != (r.change_pct > 0) else None


def verdict_text(r: Row) -> str:
    """The verdict as tables print it: an exploratory better/worse is marked (FDR), so that it cannot be
    taken for a primary one."""
    explored = r.margin_pct is None and (r.phase, r.metric) != BOOTS
    return r.verdict + (" (FDR)" if explored and r.verdict in ("better", "worse") else "")


def table_lines(rows: list[Row], show_all: bool = False) -> list[list[str]]:
    """Header + rows of the headline comparison (all metrics with show_all); a verdict with a note is marked
    [k], footnotes() says what."""
    lines = [["workload", "phase", "metric", "variant", "n", "median", "change", "p", "p_adj", "verdict"]]
    marks = 0
    medians = baseline_medians(rows)
    for r in headline_rows(rows, show_all):
        marks += bool(r.note)
        change = change_text(r, medians.get((r.key, r.point)))
        metric = r.metric + (" *" if r.margin_pct is not None else "")
        variant = r.variant + (" (other kernel)" if r.other_source else "")
        workload = r.workload + (f" at {r.point}" if r.point else "")
        count = f"{r.n}/{r.n + r.n_missing}" if r.n_missing else str(r.n)
        lines.append([workload, r.phase, metric, variant, count, _number(r.median), change,
                      "" if r.p_value is None else f"{r.p_value:.3g}",
                      "" if r.p_adjusted is None else f"{r.p_adjusted:.2g}",
                      "(baseline)" if r.variant == r.baseline else verdict_text(r) + (f" [{marks}]" if r.note else "")])
    return lines


def render_table(rows, show_all=False) -> str:
    """Plain text, one block per workload (the workload is the block's title, not a column)."""
    lines = table_lines(rows, show_all)
    header, body = lines[0][1:], lines[1:]
    widths = [max(len(line[i]) for line in [header] + [b[1:] for b in body]) for i in range(len(header))]

    def join(cells):
        return " ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = []
    for workload in dict.fromkeys(line[0] for line in body):
        out += ([""] if out else []) + [f"{workload}:", join(header)]
        out += [join(line[1:]) for line in body if line[0] == workload]
    notes = [textwrap.fill(note, 100, subsequent_indent="    ") for note in footnotes(rows, show_all)]
    return "\n".join(out + ([""] + notes if notes else []))


def render_markdown(rows, show_all=False) -> str:
    lines = table_lines(rows, show_all)
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    notes = footnotes(rows, show_all)
    return "\n".join(out + ([""] + [f"{note}  " for note in notes] if notes else []))


def summary_lines(comparison: Comparison) -> list[str]:
    """What was tested and how, for the top of the table and of the report."""
    plan = comparison.plan
    lines = [line for line in [comparison.calibration_line()] if line]
    if comparison.coverage is not None:
        lines += comparison.coverage.summary()
    variants = sorted({r.variant for r in comparison.rows if r.variant != plan.baseline})
    if plan.primary:
        points = {r.point for r in comparison.rows if r.margin_pct is not None}
        at = f" x {len(points)} sweep points" if len(points) > 1 else ""
        lines.append(f"Primary (*): {len(plan.primary)} rows{at} x {len(variants)} variants against `{plan.baseline}`, "
                     f"family-wise error {ALPHA:.0%} (Holm, counting rows), equivalence margin "
                     f"+-{plan.margin_pct:g}%; {plan.design.describe()}"
                     + (f"; looked after {', '.join(map(str, comparison.looks_done))}" if plan.design.looks else ""))
    elif plan.discovery:
        judged = [v for v in variants if v not in plan.controls]
        lines.append(f"Discovery: no rows were declared, so every row is exploratory: Benjamini-Hochberg p_adj "
                     f"across all rows of {', '.join(f'`{v}`' for v in judged) or 'no variant'} against "
                     f"`{plan.baseline}` (each control a family of its own), a verdict where "
                     f"p_adj <= {ALPHA:g}, marked (FDR): a lead to confirm on fresh boots with the rows declared "
                     "primary, not a claim")
    else:
        lines.append("No primary rows measured: no verdicts (declare `primary` rows in the experiment, and run "
                     "the workloads and phases they name; or set `discovery = true`).")
    if not plan.discovery:
        lines.append("Exploratory: Benjamini-Hochberg p_adj across all exploratory rows; a verdict only for a "
                     "variant with a better/worse primary row, marked (FDR): these hold the false-discovery rate at "
                     "5%, not the family-wise error")
    short = sorted((r for r in comparison.rows if r.n_missing), key=lambda r: (r.margin_pct is None, -r.n_missing))
    if short:
        shown = "; ".join(f"{r.key} {r.variant}{f' at {r.point}' if r.point else ''} {r.n}/{r.n + r.n_missing} "
                          f"({r.missing_reason})" for r in short[:3])
        lines.append(f"Fewer values than boots (n/boots) in {len(short)} rows, e.g. {shown}"
                     + (" ..." if len(short) > 3 else ""))
    lost = [r for r in comparison.rows if (r.phase, r.metric) == BOOTS and r.verdict == "worse"]
    for r in lost:
        lines.append(f"LOST BOOTS: `{r.variant}` lost more repetitions of {r.workload}"
                     f"{f' at {r.point}' if r.point else ''} than `{plan.baseline}`: {r.note}")
    lines += list(comparison.notes)
    others = sorted({r.variant for r in comparison.rows if r.other_source})
    if others:
        lines.append(f"Other kernel: {', '.join(others)} built from another kernel source than `{plan.baseline}`: "
                     "a change there holds every difference between the two kernels, not one patch's")
    return lines
