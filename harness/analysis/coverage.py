"""Patch coverage: which functions each variant changed (the object-code diff against the baseline,
harness/kernel/objdiff.py) and which workload phases ran them (`calls.FUNCTION`, counted by the
function profiler in every phase of every counted boot, of the baseline and the variants alike; the
whole guest's calls: the idle phase, before the workload starts, shows the guest's background).

A phase *exercised* a variant's patch when at least one of the functions it changed was called in
the phase, in any valid counted boot of the baseline or the variant, more often per second than in
the idle phase of those boots (every boot's calls and seconds added up, per phase): a phase that
calls a function no more often than the guest's background does tells nothing of what the workload
made it do. It did not when every function the variant changed outside init sections was counted on
each kernel that has it, and none was so called: then no statement of "no change" can be made
about that phase, and its rows get the verdict `not exercised` instead of `equivalent`, `identical`
(and, for primary rows, `inconclusive`). Coverage is per function, not per line: a phase that
called a changed function may still not have taken the changed branch. When no boot of any
workload phase called any of them, every row of the variant but a `better` or `worse` one is
`not exercised`, and the report's
headline says so first. Functions in init sections ran at boot, before any phase; functions the
profiler cannot see (no `__fentry__` call: notrace, as every inline function's out-of-line copy is)
or cannot tell apart (a name an unchanged function shares) are named, and while one of them is
among a variant's changes, "not exercised" is never claimed: it might have run unseen.
"""

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from harness import results
from harness.analysis import records, sampling

IDLE = "idle"
METRIC = "calls."
SILENT = "not exercised"


@dataclass(frozen=True)
class Changed:
    """What a variant changed, as its boots could count it."""
    variant: str
    functions: tuple[str, ...]      # changed, added or removed, by their names in vmlinux
    init: tuple[str, ...] = ()      # of those, in init sections: they ran at boot, if at all
    untraced: tuple[str, ...] = ()  # of those, without __fentry__: the profiler cannot count them
    shared: tuple[str, ...] = ()    # of those, names an unchanged function shares: counted together
    counted: tuple[str, ...] = ()   # of those, with calls.FUNCTION in the run's boots
    added: tuple[str, ...] = ()     # only the variant's kernel has these
    removed: tuple[str, ...] = ()   # only the baseline's kernel has these

    @property
    def uncounted(self) -> tuple[str, ...]:
        """Functions that may run in a phase without the run knowing: neither init-only nor counted."""
        return tuple(f for f in self.functions if f not in self.init and f not in self.counted)

    @property
    def init_only(self) -> bool:
        return bool(self.functions) and set(self.functions) <= set(self.init)

    def kernels(self, function: str) -> tuple[bool, bool]:
        """(whether the baseline's kernel has function, whether the variant's has it)."""
        return function not in self.added, function not in self.removed


@dataclass(frozen=True)
class Coverage:
    baseline: str
    changed: dict = field(default_factory=dict)     # variant -> Changed
    medians: dict = field(default_factory=dict)     # (variant, workload, point, phase) -> {function: median}
    maxima: dict = field(default_factory=dict)      # the same keys -> {function: most calls in one boot}
    totals: dict = field(default_factory=dict)      # the same keys -> {function: calls in every boot together}
    seconds: dict = field(default_factory=dict)     # the same keys -> the phase's seconds in every boot together

    def calls(self, variant: str, workload: str, point: str, phase: str) -> dict[str, list]:
        """function -> [median calls on the baseline, on the variant] in a phase (None: not counted there,
        e.g. a function one kernel does not have), for each function the variant changed and the run counted."""
        mine = self.changed.get(variant)
        if mine is None:
            return {}
        base = self.medians.get((self.baseline, workload, point, phase), {})
        other = self.medians.get((variant, workload, point, phase), {})
        return {function: [base.get(function), other.get(function)] for function in mine.counted}

    def above_idle(self, variant: str, workload: str, point: str, phase: str, function: str) -> bool:
        """Whether the phase called function, in the boots of the baseline and the variant together, more often per
        second than their idle phases did (of the idle phase itself, or with no idle phase counted: whether it
        called it at all)."""
        calls = idle = 0.0
        seconds = idle_seconds = 0.0
        for kernel in dict.fromkeys((self.baseline, variant)):
            calls += self.totals.get((kernel, workload, point, phase), {}).get(function, 0.0)
            seconds += self.seconds.get((kernel, workload, point, phase), 0.0)
            idle += self.totals.get((kernel, workload, point, IDLE), {}).get(function, 0.0)
            idle_seconds += self.seconds.get((kernel, workload, point, IDLE), 0.0)
        if phase == IDLE or not idle_seconds:
            return calls > 0
        return calls > 0 and calls * idle_seconds > idle * seconds

    def exercised(self, variant: str, workload: str, point: str, phase: str) -> bool | None:
        """Whether the phase ran a function the variant changed (above); None when the run cannot tell."""
        mine = self.changed.get(variant)
        if mine is None or not mine.counted:
            return None
        calls = self.calls(variant, workload, point, phase)
        if any(self.above_idle(variant, workload, point, phase, function) for function in calls):
            return True
        if mine.uncounted:
            return None
        for function, pair in calls.items():     # each kernel that has the function must have counted it
            if any(has and value is None for has, value in zip(mine.kernels(function), pair)):
                return None
        return False

    def phases(self, variant: str) -> list[tuple[str, str, str]]:
        """(workload, point, phase) of the workload phases (not idle) counted on the baseline or the variant."""
        return list(dict.fromkeys(key[1:] for key in self.medians
                                  if key[0] in (self.baseline, variant) and key[3] != IDLE))

    def workload_exercised(self, variant: str, workload: str, point: str) -> bool | None:
        """Whether any phase of the workload (at the point) ran a function the variant changed."""
        said = [self.exercised(variant, *key) for key in self.phases(variant) if key[:2] == (workload, point)]
        return True if True in said else None if None in said or not said else False

    def silent(self, variant: str) -> bool:
        """True when no boot of any workload phase called a function the variant changed, and the run could
        count them all."""
        said = [self.exercised(variant, *key) for key in self.phases(variant)]
        if not said or not all(value is False for value in said):
            return False
        return not any(self.maxima.get((kernel, *key), {}).get(function, 0) > 0
                       for key in self.phases(variant) for kernel in (self.baseline, variant)
                       for function in self.changed[variant].counted)

    def never_ran(self, variant: str) -> list[str]:
        """The counted functions of the variant that no boot of either kernel called, in any phase, idle too."""
        mine = self.changed.get(variant)
        if mine is None or not self.phases(variant):
            return []
        ran = {function for key, found in self.maxima.items() if key[0] in (self.baseline, variant)
               for function, value in found.items() if value > 0}
        return [function for function in mine.counted if function not in ran]

    def background(self, variant: str, workload: str, point: str, phase: str) -> bool:
        """Whether a phase called a function the variant changed, but none more often per second than the idle
        phase before the workload: its calls are the guest's background, not the workload's."""
        if phase == IDLE:
            return False
        keys = [(kernel, workload, point, phase) for kernel in (self.baseline, variant)]
        called = any(self.totals.get(key, {}).get(function, 0) > 0 for key in keys
                     for function in self.changed[variant].counted)
        return called and not any(self.above_idle(variant, workload, point, phase, function)
                                  for function in self.changed[variant].counted)

    def judged(self, rows: list) -> list:
        """The comparison rows (harness/analysis/records.Row) with `exercised` and `changed_calls`, and the
        verdict `not exercised` where a row would claim no change about code its phase did not run."""
        quiet = {variant for variant in self.changed if self.silent(variant)}     # once per variant, not per row
        return [self._judged(row, row.variant in quiet) for row in rows]

    def _judged(self, row, quiet: bool):
        if row.variant not in self.changed or row.variant == self.baseline:
            return row
        if (row.phase, row.metric) == sampling.BOOTS:
            exercised, calls = self.workload_exercised(row.variant, row.workload, row.point), None
            where = f"no phase of {row.workload}"
        else:
            exercised = self.exercised(row.variant, row.workload, row.point, row.phase)
            calls = self.calls(row.variant, row.workload, row.point, row.phase) or None
            where = f"the {row.phase} phase of {row.workload}"
        row = replace(row, exercised=exercised, changed_calls=calls)
        if row.verdict in ("better", "worse"):
            return row
        if quiet:       # the headline and the coverage say why, once
            return replace(row, verdict=SILENT)
        if exercised is False and (row.verdict in records.RESTING or row.margin_pct is not None):
            said = f"{where} ran none of the functions `{row.variant}` changed"
            if row.phase != sampling.BOOTS[0] and self.background(row.variant, row.workload, row.point, row.phase):
                said = (f"{where} called the functions `{row.variant}` changed no more often per second than the "
                        "idle phase (the guest's background)")
            return replace(row, verdict=SILENT, note=f"{row.note}; {said}" if row.note else said)
        return row

    def as_dict(self) -> dict:
        """What metadata.json keeps under `coverage`: per variant, the functions it changed and how each was
        counted, and per workload phase ("WORKLOAD/PHASE", "WORKLOAD at POINT/PHASE") the median calls
        [baseline, variant] and whether the phase ran the patch (null: the run cannot tell)."""
        found = {}
        for variant, mine in self.changed.items():
            phases = {}
            for workload, point, phase in dict.fromkeys(key[1:] for key in self.medians
                                                        if key[0] in (self.baseline, variant)):
                where = f"{workload}{f' at {point}' if point else ''}/{phase}"
                phases[where] = {"calls": self.calls(variant, workload, point, phase),
                                 "exercised": self.exercised(variant, workload, point, phase)}
            found[variant] = {"baseline": self.baseline, "functions": list(mine.functions),
                              "counted": list(mine.counted), "init": list(mine.init),
                              "untraced": list(mine.untraced), "shared": list(mine.shared),
                              "silent": self.silent(variant), "never_ran": self.never_ran(variant),
                              "phases": phases}
        return found

    def silence(self, variant: str) -> str:
        """'no workload ran do_mincore(): ...' for a variant whose changes no workload phase ran."""
        mine = self.changed[variant]
        names = ", ".join(f"{function}()" for function in mine.counted[:4]) + (" ..." if len(mine.counted) > 4 else "")
        return f"no workload ran {names}: this run cannot tell what the patch does"

    def headline(self) -> str:
        """The sentence that comes before the headline: variants no workload exercised, and init-only ones."""
        said = [f"`{variant}`: {self.silence(variant)}" for variant in self.changed if self.silent(variant)]
        said += [f"`{variant}` changes only code in init sections ({', '.join(mine.init)}), which runs at boot, "
                 "before any phase: its verdicts are about the kernel it boots, not about code a workload ran"
                 for variant, mine in self.changed.items() if mine.init_only]
        return "**" + "; ".join(said) + ".**" if said else ""


    def summary(self) -> list[str]:
        """One line per variant for the top of `harness compare`: the functions it changed and where they ran."""
        lines = []
        for variant, mine in self.changed.items():
            if not mine.counted:
                lines.append(f"Patch coverage of `{variant}`: not counted in this run (it changed "
                             f"{', '.join(mine.functions[:6])}{' ...' if len(mine.functions) > 6 else ''})")
                continue
            ran = []
            for workload, point, phase in self.phases(variant):
                calls = self.calls(variant, workload, point, phase)
                busy = [f"{f} {number(b)}->{number(v)}" for f, (b, v) in calls.items()
                        if (b or 0) > 0 or (v or 0) > 0]
                if busy:
                    ran.append(f"{workload}{f' at {point}' if point else ''}/{phase} ({', '.join(busy[:2])})")
            where = "; ran in " + ", ".join(ran[:4]) + (" ..." if len(ran) > 4 else "") if ran else \
                f": {self.silence(variant)}" if self.silent(variant) else "; no phase seen running them"
            extra = f" (not counted: {', '.join(mine.uncounted)})" if mine.uncounted else ""
            extra += f" (init: {', '.join(mine.init)})" if mine.init else ""
            lines.append(f"Patch coverage of `{variant}`: changed {', '.join(mine.functions[:6])}"
                         f"{' ...' if len(mine.functions) > 6 else ''}{extra}{where}")
        return lines


def of(samples: pd.DataFrame, runs: pd.DataFrame, metadata, baseline: str) -> Coverage:
    """The coverage of a run, or of pooled runs (metadata: one RunMetadata, or a list of them): the object-code
    differences their metadata hold against this baseline (another baseline's boots were not compared with
    those builds), and the calls their valid boots counted."""
    differences = _differences([metadata] if isinstance(metadata, results.RunMetadata) else list(metadata), baseline)
    if not differences:
        return Coverage(baseline)
    medians, maxima, totals, seconds = _counted_calls(samples, runs)
    counted = {function for found in medians.values() for function in found}
    changed = {}
    for variant, difference in differences.items():
        functions = difference.functions
        if difference.identical or not functions:
            continue
        changed[variant] = Changed(variant, tuple(functions), tuple(difference.init), tuple(difference.untraced),
                                   tuple(difference.shared), tuple(f for f in functions if f in counted),
                                   tuple(difference.added), tuple(difference.removed))
    return Coverage(baseline, changed, medians, maxima, totals, seconds)


def _differences(recorded: list[results.RunMetadata], baseline: str) -> dict[str, results.ObjectCode]:
    """Each judged variant's object code against this baseline, from the first run that recorded it."""
    differences = {}
    for of_run in recorded:
        if of_run.baseline == baseline:
            for variant, difference in of_run.object_code.items():
                if variant != of_run.control:
                    differences.setdefault(variant, difference)
    return differences


def _counted_calls(samples: pd.DataFrame, runs: pd.DataFrame) -> tuple[dict, dict, dict, dict]:
    """(medians, maxima, totals) of the valid boots' calls: (variant, workload, point, phase) -> function ->
    figure; and seconds: the same keys -> the phase's duration_s added up over the boots that counted calls."""
    chosen = samples[samples["metric"].astype(str).str.startswith(METRIC) | (samples["metric"] == "duration_s")]
    chosen, _ = sampling.valid_samples(chosen, runs)
    chosen = chosen.assign(point=chosen["point"].fillna("").astype(str))
    calls = chosen[chosen["metric"].astype(str).str.startswith(METRIC)]
    medians: dict = {}
    maxima: dict = {}
    totals: dict = {}
    for (variant, workload, at, phase, metric), values in calls.groupby(
            ["variant", "workload", "point", "phase", "metric"], sort=False):
        key, function = (str(variant), str(workload), str(at), str(phase)), metric[len(METRIC):]
        medians.setdefault(key, {})[function] = float(np.median(values["value"]))
        maxima.setdefault(key, {})[function] = float(values["value"].max())
        totals.setdefault(key, {})[function] = float(values["value"].sum())
    boots = calls[["variant", "workload", "point", "phase", "rep", "mode"]].drop_duplicates()
    durations = chosen[chosen["metric"] == "duration_s"].merge(boots)
    seconds = {(str(v), str(w), str(at), str(phase)): float(part["value"].sum())
               for (v, w, at, phase), part in durations.groupby(["variant", "workload", "point", "phase"], sort=False)}
    return medians, maxima, totals, seconds


def number(value: float | None) -> str:
    """A count as the reports write it: '-' for none, whole and thousands separated when whole or from 100 up,
    else 3 significant digits."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value == int(value) or abs(value) >= 100 else f"{value:.3g}"


def section(cover: Coverage) -> list[str]:
    """Markdown lines of the report's "Patch coverage" section ([] when no variant changed a function)."""
    if not cover.changed:
        return []
    lines = ["## Patch coverage", "",
             "Median calls of each function a variant changed (every copy of it, in the whole guest, from the "
             f"function profiler) per phase of the counted boots, `{cover.baseline}` -> variant; `-`: no count "
             "there (that kernel lacks the function, or its profiler refused it). A phase ran the patch when, in "
             "every boot of both kernels together, it called one of them more often per second than the idle "
             "phase did; the idle phase, before the workload starts, shows the guest's background (the "
             "collectors start no process and take no fault). Coverage is per function, not per line: a phase "
             "that called a changed function may not have taken the changed branch.", ""]
    for variant, mine in cover.changed.items():
        lines += [f"### `{variant}`", ""]
        lines += _calls_table(cover, variant, mine.counted) if mine.counted else []
        lines += [f"- {line}" for line in notes(cover, variant)]
        lines.append("")
    return lines


def _calls_table(cover: Coverage, variant: str, counted) -> list[str]:
    """The busiest counted functions' calls per phase, whether each phase ran the patch, and the rest named."""
    keys = list(dict.fromkeys(key[1:] for key in cover.medians if key[0] in (cover.baseline, variant)))
    shown = _busiest(cover, variant, keys)
    header = ["workload/phase", *[f"`{f}`" for f in shown], "ran the patch"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for workload, point, phase in keys:
        calls = cover.calls(variant, workload, point, phase)
        cells = [f"{number(calls[f][0])} -> {number(calls[f][1])}" for f in shown]
        where = f"{workload}{f' at {point}' if point else ''}/{phase}" + \
            (" (before the workload: background)" if phase == IDLE else "")
        lines.append(f"| {where} | " + " | ".join(cells) + f" | {_ran(cover, variant, workload, point, phase)} |")
    lines.append("")
    rest = [f for f in counted if f not in shown]
    if rest:
        lines += [f"- {len(rest)} more counted functions, called less, are in `metadata.json` under "
                  f"`coverage`: {_names(rest[:20])}{' ...' if len(rest) > 20 else ''}.", ""]
    return lines


def _ran(cover: Coverage, variant: str, workload: str, point: str, phase: str) -> str:
    ran = cover.exercised(variant, workload, point, phase)
    if not ran and cover.background(variant, workload, point, phase):
        return ("no: called no more often per second than idle (the guest's background)" if ran is False else
                "?: called no more often per second than idle")
    return "yes" if ran else "no" if ran is False else "?"


TABLE_FUNCTIONS = 8      # columns of a variant's coverage table; the rest are named under it


def _busiest(cover: Coverage, variant: str, keys) -> list[str]:
    """The counted functions of the variant with the most calls in any phase, at most TABLE_FUNCTIONS of them,
    in the order the variant lists them."""
    counted = cover.changed[variant].counted
    most = {f: max((value or 0 for key in keys for value in cover.calls(variant, *key)[f]), default=0)
            for f in counted}
    chosen = set(sorted(counted, key=lambda f: -most[f])[:TABLE_FUNCTIONS])
    return [f for f in counted if f in chosen]


def notes(cover: Coverage, variant: str) -> list[str]:
    """What the table of a variant cannot show: silence, init-only code, functions not counted or never run."""
    mine = cover.changed[variant]
    said = []
    if cover.silent(variant):
        said.append(f"**{cover.silence(variant)}**: its rows are `{SILENT}`.")
    if mine.init:
        said.append(f"In init sections (run at boot, before any phase; freed after it): {_names(mine.init)}.")
    if mine.untraced:
        said.append(f"Not counted: {_names(mine.untraced)}: no `__fentry__` call, so the function profiler cannot "
                    "see it (notrace, as every inline function's out-of-line copy is); while it is among the "
                    "changes, no phase is called unexercised.")
    if mine.shared:
        said.append(f"Not counted: {_names(mine.shared)}: an unchanged function has the same name, and the "
                    "profiler counts every function of a name together; while it is among the changes, no phase "
                    "is called unexercised.")
    others = [f for f in mine.uncounted if f not in mine.untraced and f not in mine.shared]
    if others:
        said.append(f"Not counted in any boot: {_names(others)}.")
    never = cover.never_ran(variant)
    if never:
        said.append(f"Changed, but called in no boot of either kernel, in any phase: {_names(never)}.")
    return said


def _names(functions) -> str:
    return ", ".join(f"`{function}`" for function in functions)
