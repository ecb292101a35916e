"""A comparison as text: the CLI's table, the Markdown table, the summary lines above both, and the
words of a row (its change, its verdict) that the report and the mail quote.

harness/analysis/compare.py decides; this module only says what it decided. Nothing here changes a
row: every function takes compare's records (Row, Comparison) and returns strings.
"""

import math
import textwrap

from harness import metrics
from harness.analysis import integrity
from harness.analysis.records import ALPHA, Comparison, Row
from harness.analysis.sampling import BOOTS, lost_more

CONTROL_KINDS = {True: "the baseline kernel again", False: "object code identical to the baseline"}
SHOWN_FAILED = 4        # failed control rows named in the calibration line
SHOWN_SHORT = 3         # rows with fewer values than boots named in the summary


def number(value, digits=3) -> str:
    """A median as tables print it: '-' for none, thousands separated, else `digits` significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _bound(value: float | None, low: bool) -> str:
    if value is None:
        return "-inf" if low else "+inf"
    return f"{value:+.1f}" if abs(value) < 10 else f"{value:+.0f}"


def _at(r: Row) -> str:
    return f" at {r.point}" if r.point else ""


# --- which rows ----------------------------------------------------------------------------

def headline_rows(rows: list[Row], show_all: bool = False) -> list[Row]:
    """The rows worth a first look: primary rows, then headline metrics that are not zero everywhere, and every
    row a variant moved (better or worse)."""
    if show_all:
        return rows
    nonzero = {r.key for r in rows if r.median != 0}
    moved = {r.key for r in rows if r.verdict in ("better", "worse", integrity.BROKEN)}
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
    return [f"[{k}] {r.key}{_at(r)} {r.variant}: {r.note}" for k, r in enumerate(noted, 1)]


def baseline_medians(rows: list[Row]) -> dict[tuple, float]:
    return {(r.key, r.point): r.median for r in rows if r.variant == r.baseline}


# --- a row's words -------------------------------------------------------------------------

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


# --- the tables ----------------------------------------------------------------------------

HEADER = ["workload", "phase", "metric", "variant", "n", "median", "change", "p", "p_adj", "verdict"]


def table_lines(rows: list[Row], show_all: bool = False) -> list[list[str]]:
    """Header + rows of the headline comparison (all metrics with show_all); a verdict with a note is marked
    [k], footnotes() says what."""
    lines = [list(HEADER)]
    marks = 0
    medians = baseline_medians(rows)
    for r in headline_rows(rows, show_all):
        marks += bool(r.note)
        lines.append(_table_line(r, medians.get((r.key, r.point)), marks))
    return lines


def _table_line(r: Row, base_median: float | None, mark: int) -> list[str]:
    """One row's cells under HEADER; mark: the number of its footnote, if it has a note."""
    metric = r.metric + (" *" if r.margin_pct is not None else "")
    variant = r.variant + (" (other kernel)" if r.other_source else "")
    count = f"{r.n}/{r.n + r.n_missing}" if r.n_missing else str(r.n)
    verdict = "(baseline)" if r.variant == r.baseline else verdict_text(r) + (f" [{mark}]" if r.note else "")
    return [r.workload + _at(r), r.phase, metric, variant, count, number(r.median), change_text(r, base_median),
            "" if r.p_value is None else f"{r.p_value:.3g}", "" if r.p_adjusted is None else f"{r.p_adjusted:.2g}",
            verdict]


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


# --- the summary above them ----------------------------------------------------------------

def calibration_line(comparison: Comparison) -> str:
    """'' without a control; else whether the controls (the baseline again, or a variant whose object
    code is the baseline's) came out clean."""
    present = comparison.controls_present
    if not present:
        return ""
    plan = comparison.plan
    what = ", ".join(f"`{name}` ({CONTROL_KINDS[name == plan.control]})" for name in present)
    whole = "".join(f"; over all {rows} rows at once (whole boots permuted) `{name}` against "
                    f"`{plan.baseline}`: p = {p:.2g}" for name, p, rows in comparison.whole_table)
    if comparison.drift and not comparison.calibration_failed and not comparison.whole_table_failed:
        return (f"CALIBRATION FAILED: the baseline kernel moved between the pooled folders ("
                f"{'; '.join(comparison.drift[:SHOWN_FAILED])}{' ...' if len(comparison.drift) > SHOWN_FAILED else ''}"
                "): the pooled verdicts would compare days as well as kernels, and none can be trusted" + whole)
    if comparison.failed:
        drifted = f"; the baseline kernel also moved between the pooled folders ({comparison.drift[0]} ...)" \
            if comparison.drift else ""
        return (f"CALIBRATION FAILED: {what} differs from `{plan.baseline}` in {_failed_rows(comparison)}{drifted}: "
                "no verdict of this run can be trusted" + whole)
    return f"Calibration passed: {what} has no better/worse verdict against `{plan.baseline}`" + whole + \
        calibration_power(comparison, present)


def _failed_rows(comparison: Comparison) -> str:
    """The control rows that came out better/worse (the first few), else the whole-table tests that failed."""
    failed = comparison.calibration_failed
    rows = ", ".join(f"{r.variant} {r.key} {r.verdict}" for r in failed[:SHOWN_FAILED])
    rows += " ..." if len(failed) > SHOWN_FAILED else ""
    return rows or "the whole table (" + ", ".join(f"`{name}` p = {p:.2g}" for name, p, _
                                                   in comparison.whole_table_failed) + ")"


def calibration_power(comparison: Comparison, controls: list[str]) -> str:
    """'; at 6 + 6 boots ...': the drift of a primary row the calibration would see with 80% probability
    (Comparison.calibration_power), '' without primary rows."""
    power = comparison.calibration_power(controls)
    if power is None:
        return ""
    if power.shift is None:
        return (f"; at {power.n_base} + {power.n_control} boots it could not see any drift (no row can reach "
                f"p <= {power.bar:.2g})")
    return (f"; at {power.n_base} + {power.n_control} boots it sees a drift of the baseline by {power.shift:g} "
            f"standard deviations of a primary row with 80% probability (a row's bar: p <= {power.bar:.2g}), "
            "smaller drifts pass unseen")


def integrity_lines(comparison: Comparison) -> list[str]:
    """What the boots read back wrong (integrity.lines), first of all: `broken` above every other verdict."""
    present = {r.variant for r in comparison.rows}
    controls = [name for name in comparison.plan.controls if name in present]
    return integrity.lines(comparison.wrong, comparison.plan.baseline, controls)


def summary_lines(comparison: Comparison) -> list[str]:
    """What was read back wrong, the calibration, then what was tested and how: the top of the table."""
    return integrity_lines(comparison) + [line for line in [calibration_line(comparison)] if line] + \
        method_lines(comparison)


def method_lines(comparison: Comparison) -> list[str]:
    """What was tested and how (summary_lines without what was wrong and the calibration): the report's and the
    mail's, which say those two first."""
    lines = []
    if comparison.coverage is not None:
        lines += comparison.coverage.summary()
    lines.append(_family_line(comparison))
    if not comparison.plan.discovery:
        lines.append("Exploratory: Benjamini-Hochberg p_adj across all exploratory rows; a verdict only for a "
                     "variant with a better/worse primary row, marked (FDR): these hold the false-discovery rate at "
                     "5%, not the family-wise error")
    lines += _short_lines(comparison.rows)
    lines += [f"LOST BOOTS: `{r.variant}` lost more repetitions of {r.workload}{_at(r)} than "
              f"`{comparison.plan.baseline}` ({r.verdict}): {r.note}" for r in lost_more(comparison.rows)]
    lines += list(comparison.notes)
    return lines + _other_kernel_lines(comparison) + ([comparison.checked] if comparison.checked else [])


def _family_line(comparison: Comparison) -> str:
    """How the verdicts were reached: the primary family, a discovery, or neither (no verdicts)."""
    plan = comparison.plan
    variants = sorted({r.variant for r in comparison.rows if r.variant != plan.baseline})
    if plan.primary:
        points = {r.point for r in comparison.rows if r.margin_pct is not None}
        at = f" x {len(points)} sweep points" if len(points) > 1 else ""
        return (f"Primary (*): {len(plan.primary)} rows{at} x {len(variants)} variants against `{plan.baseline}`, "
                f"family-wise error {ALPHA:.0%} (Holm, counting rows), equivalence margin "
                f"+-{plan.margin_pct:g}%; {plan.design.describe()}"
                + (f"; looked after {', '.join(map(str, comparison.looks_done))}" if plan.design.looks else ""))
    if plan.discovery:
        judged = [v for v in variants if v not in plan.controls]
        return (f"Discovery: no rows were declared, so every row is exploratory: Benjamini-Hochberg p_adj "
                f"across all rows of {', '.join(f'`{v}`' for v in judged) or 'no variant'} against "
                f"`{plan.baseline}` (each control a family of its own), a verdict where "
                f"p_adj <= {ALPHA:g}, marked (FDR): a lead to confirm on fresh boots with the rows declared "
                "primary, not a claim")
    return ("No primary rows measured: no verdicts (declare `primary` rows in the experiment, and run "
            "the workloads and phases they name; or set `discovery = true`).")


def _short_lines(rows: list[Row]) -> list[str]:
    """The rows with fewer values than boots, primary ones and the shortest first ([] when none is)."""
    short = sorted((r for r in rows if r.n_missing), key=lambda r: (r.margin_pct is None, -r.n_missing))
    if not short:
        return []
    shown = "; ".join(f"{r.key} {r.variant}{_at(r)} {r.n}/{r.n + r.n_missing} ({r.missing_reason})"
                      for r in short[:SHOWN_SHORT])
    return [f"Fewer values than boots (n/boots) in {len(short)} rows, e.g. {shown}"
            + (" ..." if len(short) > SHOWN_SHORT else "")]


def _other_kernel_lines(comparison: Comparison) -> list[str]:
    others = sorted({r.variant for r in comparison.rows if r.other_source})
    if not others:
        return []
    return [f"Other kernel: {', '.join(others)} built from another kernel source than `{comparison.plan.baseline}`: "
            "a change there holds every difference between the two kernels, not one patch's"]
