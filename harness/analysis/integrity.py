"""Whether a variant is right before whether it is faster: what the boots read back wrong.

Every workload checks the data it reads back, and the kernel's own selftests pass or fail; a boot
records what was wrong as findings (harness.results.Finding) whether it was valid or not. A count
that must be 0 needs no test of significance: one wrong page is enough, at any number of
repetitions. So this is a rule, not a statistic:

- A variant with a finding in a phase (a wrong page or value, or a failed test by name) that no
  boot of the baseline kernel had, where the baseline kernel ran that check, is `broken`: above every
  other verdict, whatever else it changes. A complaint of the kernel on its console (a BUG, an oops,
  a WARNING, by name) is compared with every boot of the baseline kernel, whatever it ran.
- A finding on the baseline kernel (the baseline, or a control: the baseline booted again, or a
  variant whose object code is the baseline's) is the kernel's or the harness's problem, said as
  such; a variant's finding that the baseline kernel shares is not the patch's alone.
- A variant's finding where the baseline kernel never ran that check (another kernel without that
  selftest, or no boot of the baseline that got that far) is said, and judged by no one.

harness/analysis/compare.py puts the judgement into its Comparison; the tables, the report and the
mail open with it, and the commands that compare exit non-zero on `broken`.
"""

from dataclasses import dataclass, replace

import pandas as pd

from harness import metrics
from harness.results import FAILED_TEST, KERNEL_BUG, NAMED_KINDS, Finding, findings_of

BROKEN = "broken"               # the verdict word
ON_BASELINE = "on the baseline"     # the baseline kernel itself read back wrong data or failed a test
SHARED = "also on the baseline"     # a variant's finding the baseline kernel has too
UNCHECKED = "not checked on the baseline"   # the baseline kernel never ran that check
FAILED_BOOT = "failed:"         # runs.csv's reason of a boot that did not finish


@dataclass(frozen=True)
class Wrong:
    """What one variant's boots found wrong in one phase (one failed test, or one kind of wrong data), and how
    it is judged against the baseline kernel."""
    variant: str
    workload: str
    phase: str
    point: str
    kind: str               # wrong_pages | wrong_values | failed_test
    judged: str             # BROKEN | ON_BASELINE | SHARED | UNCHECKED
    boots: int              # boots of the variant with the finding
    of_boots: int           # boots of the variant that ran the workload
    count: int              # pages or values wrong over those boots; boots that failed the test
    checked: int            # pages or values checked in those boots
    first: Finding          # the finding of the first boot that had it
    rep: int                # that boot's repetition
    baseline_boots: int = 0     # boots of the baseline kernel that ran the check

    @property
    def where(self) -> str:
        return f"{self.workload}/{self.phase}" + (f" at {self.point}" if self.point else "")

    def said(self) -> str:
        """'4,096 of 4,096 pages wrong in 1 of 1 boots (rep 1: first child:0: expected 0x.., found 0x..)'."""
        if self.kind == FAILED_TEST:
            return f"test '{self.first.where}' failed in {self.boots} of {self.of_boots} boots" + (
                f" ({self.first.found})" if self.first.found else "")
        if self.kind == KERNEL_BUG:
            return f"{self.first.where} in {self.boots} of {self.of_boots} boots (rep {self.rep}: {self.first.found})"
        unit = self.kind.removeprefix("wrong_")
        first = f"first {self.first.where}: " if self.first.where else ""
        values = f"expected {self.first.expected}, found {self.first.found}" if self.first.expected else \
            f"found {self.first.found}" if self.first.found else ""
        detail = f"{first}{values}".rstrip(": ")
        return (f"{self.count:,} of {self.checked:,} {unit} wrong in {self.boots} of {self.of_boots} boots"
                + (f" (rep {self.rep}: {detail})" if detail else ""))


ANY = "*"       # a kernel complaint is matched across every workload and point: the kernel is the same


def judge(runs: pd.DataFrame, samples: pd.DataFrame, baseline: str, controls=()) -> tuple[Wrong, ...]:
    """Every variant's findings, grouped by workload, point, phase and kind (a failed test by its name; a kernel
    complaint by its name alone, in any boot), judged against the baseline kernel: the baseline and its
    controls. runs: every boot, valid or not, with its findings; samples: every boot's figures, which say which
    checks the baseline kernel ran."""
    if runs.empty or "findings" not in runs:
        return ()
    runs = _normalised(runs)
    kernel = {baseline, *controls}
    found = _found(runs)
    ran = _checks_run(samples, runs[runs["variant"].isin(kernel)])
    ran[(ANY, ANY, "")] = int(runs["variant"].isin(kernel).sum())   # every boot of the baseline kernel: a crash?
    judged = []
    for key, by_variant in found.items():
        on_kernel = any(variant in kernel for variant in by_variant)
        for variant, hits in by_variant.items():
            if variant in kernel:
                verdict = ON_BASELINE
            elif on_kernel:
                verdict = SHARED
            elif ran.get(key[:3], 0):
                verdict = BROKEN
            else:
                verdict = UNCHECKED
            judged.append(_wrong(variant, key, verdict, hits, runs, ran.get(key[:3], 0)))
    order = {variant: index for index, variant in enumerate(dict.fromkeys(runs["variant"]))}
    return tuple(sorted(judged, key=lambda w: (order.get(w.variant, 0), w.workload, w.point, w.phase)))


def _normalised(runs: pd.DataFrame) -> pd.DataFrame:
    """runs with a point and a mode, and findings as tuples of Finding whatever a reader made of the column (the
    JSON text of runs.csv, NaN where a frame without the column was joined)."""
    runs = runs if "point" in runs else runs.assign(point="")
    runs = runs if "mode" in runs else runs.assign(mode="counted")
    def as_findings(value):
        if isinstance(value, str):
            return findings_of(value)
        return tuple(value) if isinstance(value, (tuple, list)) else ()
    return runs.assign(findings=runs["findings"].map(as_findings))


Hit = tuple     # (rep, mode, workload, point, Finding) of one boot's finding


def _found(runs: pd.DataFrame) -> dict[tuple, dict[str, list[Hit]]]:
    """(workload, point, phase, kind, name) -> variant -> hits, of every boot's findings; a kernel complaint under
    (ANY, ANY, "", kind, name), wherever it came."""
    found: dict[tuple, dict[str, list[Hit]]] = {}
    for variant, workload, point, rep, mode, findings in runs[["variant", "workload", "point", "rep", "mode",
                                                               "findings"]].itertuples(index=False):
        for finding in findings:
            name = finding.where if finding.kind in NAMED_KINDS else ""
            key = (ANY, ANY, "", finding.kind, name) if finding.kind == KERNEL_BUG else \
                (workload, point, finding.phase, finding.kind, name)
            found.setdefault(key, {}).setdefault(variant, []).append((int(rep), mode, workload, point, finding))
    return found


def _checks_run(samples: pd.DataFrame, kernel_runs: pd.DataFrame) -> dict[tuple, int]:
    """(workload, point, phase) -> boots of the baseline kernel that ran a check there: a phase with a checked
    count above 0 or a selftest or stressor with a test that passed or failed (the boot may have failed
    later: what its finished phases checked still counts)."""
    if samples.empty:
        return {}
    samples = samples if "point" in samples else samples.assign(point="")
    checks = [name for name in samples["metric"].unique() if name.startswith(("checked_", "tests_passed",
                                                                              "tests_failed"))]
    keys = [key for key in ("variant", "workload", "rep", "mode", "point") if key in samples and key in kernel_runs]
    mine = samples[samples["metric"].isin(checks) & (samples["value"] > 0)].merge(kernel_runs[keys].drop_duplicates())
    boots = mine.drop_duplicates(["workload", "point", "phase", *keys])
    return {key: len(part) for key, part in boots.groupby(["workload", "point", "phase"])}


def _wrong(variant: str, key: tuple, verdict: str, hits: list[Hit], runs: pd.DataFrame,
           baseline_boots: int) -> Wrong:
    """One variant's hits of one key as a Wrong: counted per boot (repetition and mode), the first boot's kept."""
    _, _, _, kind, _ = key
    hits = sorted(hits, key=lambda hit: (hit[0], hit[1]))
    rep, _, workload, point, first = hits[0]
    if key[0] == ANY:
        mine = runs[runs["variant"] == variant]
    else:
        mine = runs[(runs["variant"] == variant) & (runs["workload"] == workload) & (runs["point"] == point)]
    boots = len({(hit[0], hit[1], hit[2], hit[3]) for hit in hits})
    tests = kind in NAMED_KINDS
    return Wrong(variant, workload, first.phase, point, kind, verdict, boots, len(mine),
                 boots if tests else sum(hit[4].count for hit in hits),
                 0 if tests else sum(hit[4].checked for hit in hits), first, rep, baseline_boots)


def broken(judged: tuple[Wrong, ...]) -> list[Wrong]:
    return [wrong for wrong in judged if wrong.judged == BROKEN]


def on_rows(rows: list, judged: tuple[Wrong, ...]) -> list:
    """The comparison's rows with the judgement on them: a must-be-zero row (wrong_pages, tests_failed, ...) of a
    broken phase is `broken`, with what was wrong as its note; one whose wrong data the baseline kernel shares
    says so in its note."""
    by_phase: dict[tuple, list[Wrong]] = {}
    for wrong in judged:
        by_phase.setdefault((wrong.variant, wrong.workload, wrong.phase, wrong.point), []).append(wrong)
    marked = []
    for row in rows:
        found = by_phase.get((row.variant, row.workload, row.phase, row.point), [])
        if not found or not metrics.meaning(row.metric).must_be_zero or row.variant == row.baseline:
            marked.append(row)
            continue
        worst = next((w for w in found if w.judged == BROKEN), found[0])
        note = "; ".join(w.said() for w in found if w.judged == worst.judged)
        if worst.judged == BROKEN:
            marked.append(replace(row, verdict=BROKEN, note=note))
        else:
            marked.append(replace(row, note=f"{worst.judged}: {note}"))
    return marked


def lines(judged: tuple[Wrong, ...], baseline: str, controls=()) -> list[str]:
    """The sentences that open a report, a mail and the console, in this order: each broken variant (its first
    phase, the pages and the first wrong value), the baseline kernel's own wrong data, findings the baseline
    kernel shares, and those nobody could judge. controls: the baseline kernel's other names in the run."""
    kernel = f"the baseline kernel (`{'`, `'.join([baseline, *controls])}`)" if controls else f"`{baseline}`"
    said = []
    for variant in dict.fromkeys(w.variant for w in judged if w.judged == BROKEN):
        mine = [w for w in judged if w.variant == variant and w.judged == BROKEN]
        first = mine[0]
        more = f"; and in {len(mine) - 1} more: " + ", ".join(w.where for w in mine[1:]) if len(mine) > 1 else ""
        what = {FAILED_TEST: "fails a test of the kernel's own", KERNEL_BUG: "makes the kernel find itself wrong"}.get(
            first.kind, "reads back wrong data")
        boots = f"{first.baseline_boots} boot{'s' if first.baseline_boots != 1 else ''}"
        said.append(f"BROKEN: `{variant}` {what} in {first.where}: {first.said()}; {kernel} had none in {boots} "
                    f"that ran the same check{more}. A count that must be 0 needs no test: `broken` stands above "
                    "every other verdict of this run, whatever it saves.")
    for wrong in [w for w in judged if w.judged == ON_BASELINE]:
        said.append(f"WRONG ON THE BASELINE KERNEL: `{wrong.variant}` in {wrong.where}: {wrong.said()}: the "
                    "kernel's or the harness's problem, not a patch's; what the variants read back there judges "
                    "nothing")
    for wrong in [w for w in judged if w.judged == SHARED]:
        said.append(f"Wrong on `{wrong.variant}` in {wrong.where} as on the baseline kernel: {wrong.said()}")
    for wrong in [w for w in judged if w.judged == UNCHECKED]:
        said.append(f"WRONG, UNJUDGED: `{wrong.variant}` in {wrong.where}: {wrong.said()}; the baseline kernel "
                    "never ran that check, so nothing says whether the patch or the kernel did it")
    return said


def clean_line(samples: pd.DataFrame) -> str:
    """'Data checked in 54 boots: 1,234,567 pages and 10,000 values read back, none wrong; 120 tests of the
    kernel's own passed' ('' when nothing was checked): said when nothing was wrong, so that a reader knows
    the checks ran."""
    if samples.empty:
        return ""
    checks = samples[samples["metric"].isin(["checked_pages", "checked_values", "tests_passed", "tests_failed"])
                     & (samples["value"] > 0)]
    boots = len(checks.drop_duplicates([name for name in ("run_dir", "variant", "workload", "rep", "mode", "point")
                                        if name in checks]))
    totals = samples.groupby("metric")["value"].sum()
    read = [f"{totals[name]:,.0f} {unit}" for name, unit in (("checked_pages", "pages"), ("checked_values", "values"))
            if totals.get(name, 0)]
    passed = f"{totals['tests_passed']:,.0f} tests of the kernel's own passed" if totals.get("tests_passed", 0) else ""
    if not read and not passed:
        return ""
    said = f"{' and '.join(read)} read back, none wrong" if read else ""
    return f"Data checked in {boots} boots: " + "; ".join(part for part in (said, passed) if part)
