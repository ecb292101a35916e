"""The summary a reviewer mails to a list: `harness compare --format email` and RUN/report.txt.

Plain text, no line over 72 columns, no Markdown: what the boots read back wrong (a `broken` variant
first of all), the headline sentence, the calibration, what the
object code and the coverage say, how the rows were tested, then the rows that have a verdict
with the kernels as columns, in the manner of mmtests' compare-kernels (the median, its change
against the baseline and a mark for the verdict), a legend of the marks and the command that
reproduces the run. A row whose change (Hodges-Lehmann) and medians point in opposite directions
is marked, and a note under the table gives the medians' change, so that no line quoted from the
table contradicts another.
"""

import re
import shlex
import textwrap

from harness.analysis import records, tables
from harness.results import RunMetadata

WIDTH = 72
MARKS = {"broken": "X", "better": "B", "worse": "W", "equivalent": "E", "identical": "I", "inconclusive": "?",
         "not exercised": "N"}
DECIDED = ("broken", "better", "worse", "equivalent")
BASE_COLUMN = 9          # the baseline's median
VARIANT_COLUMN = 20      # a variant's median, change and mark
LABEL_MIN = 20         # narrower, and the metric's name goes on a line of its own


def plain(text: str) -> str:
    """Markdown's emphasis and code marks taken out."""
    return text.replace("**", "").replace("`", "")


def wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(plain(text), WIDTH, initial_indent=indent, subsequent_indent=indent or "  ",
                         break_on_hyphens=False, break_long_words=True)


def render(comparison: records.Comparison, title: str, opening: list[str], metadata: RunMetadata, order: list[str],
           command: str = "") -> str:
    """The whole mail body. opening: the report's first sentences (the headline finding first); order: the
    variants, the baseline first; command: what reproduces the run (default: the one the run recorded)."""
    out = [line for said in tables.integrity_lines(comparison) for line in wrap(said) + [""]]
    out += wrap(title.lstrip("# ")) + [""]
    for sentence in opening:
        out += wrap(sentence) + [""]
    calibration = [line for line in [tables.calibration_line(comparison)] if line]
    said = [line for line in tables.method_lines(comparison) if not line.startswith("Exploratory:")]
    for line in calibration + object_code_lines(metadata) + said:
        out += wrap(line)
    out += [""] + table(comparison.rows, order) + [""] + legend(comparison)
    out += [""] + reproduce(command or metadata.command)
    return "\n".join(line.rstrip() for line in out) + "\n"


def object_code_lines(metadata: RunMetadata) -> list[str]:
    lines = []
    for name, difference in metadata.object_code.items():
        touched = difference.changed + difference.added + difference.removed
        if difference.identical:
            lines.append(f"Object code of {name}: identical to {difference.baseline}")
        elif touched:
            lines.append(f"Object code of {name}: {len(touched)} function(s) differ from {difference.baseline}: "
                         + ", ".join(touched[:8]) + (" ..." if len(touched) > 8 else ""))
        else:
            lines.append(f"Object code of {name}: addresses only (data layout)")
    return lines


def chosen_rows(rows: list[records.Row]) -> list[tuple]:
    """(workload, phase, metric, point) of the rows worth mailing: the primary rows, and every row where a
    variant has a decided verdict (better, worse, equivalent), in the comparison's order."""
    keys = [(r.workload, r.phase, r.metric, r.point) for r in rows
            if r.margin_pct is not None or (r.variant != r.baseline and r.verdict in DECIDED)]
    return list(dict.fromkeys(keys))


def table(rows: list[records.Row], order: list[str]) -> list[str]:
    """The rows with a verdict, kernels as columns; as many variant columns as fit in WIDTH, the rest in
    further blocks that repeat the baseline."""
    keys = chosen_rows(rows)
    if not keys:
        return ["No row has a verdict (better, worse or equivalent)."]
    by_key = {(r.workload, r.phase, r.metric, r.point, r.variant): r for r in rows}
    baseline, others = order[0], [v for v in order[1:] if any(r.variant == v for r in rows)]
    per_block = max(1, (WIDTH - BASE_COLUMN - LABEL_MIN) // VARIANT_COLUMN)
    out, notes = [], []
    for start in range(0, max(1, len(others)), per_block):
        out += [""] if out else []
        out += _block(keys, by_key, baseline, others[start:start + per_block], notes)
    return out + ([""] + [line for note in dict.fromkeys(notes) for line in wrap(note)] if notes else [])


def _block(keys: list[tuple], by_key: dict, baseline: str, block: list[str], notes: list[str]) -> list[str]:
    """One block of columns: the header of kernel names, then a heading per phase and a line per metric;
    the notes of its cells are added to notes."""
    label = WIDTH - BASE_COLUMN - VARIANT_COLUMN * len(block)
    out = [" " * label + baseline.rjust(BASE_COLUMN)[-BASE_COLUMN:]
           + "".join(v.rjust(VARIANT_COLUMN)[-VARIANT_COLUMN:] for v in block)]
    heading = None
    for workload, phase, metric, point in keys:
        if (workload, phase, point) != heading:
            heading = (workload, phase, point)
            out.append(f"{workload} {phase}" + (f" at {point}" if point else ""))
        base = by_key.get((workload, phase, metric, point, baseline))
        name = f"  {metric}" + (" (P)" if base is not None and base.margin_pct is not None else "")
        cells = [_number(base.median if base else None).rjust(BASE_COLUMN)]
        for variant in block:
            cell, note = _cell(by_key.get((workload, phase, metric, point, variant)), base)
            cells.append(cell.rjust(VARIANT_COLUMN))
            if note:
                notes.append(f"^ {workload} {phase} {metric} {variant}: {note}")
        values = "".join(cells)
        out += [name.ljust(label) + values] if len(name) <= label - 1 else [name, " " * label + values]
    return out


def _cell(r: records.Row | None, base: records.Row | None) -> tuple[str, str]:
    """'   0  -100% B*': a variant's median, its change and the mark of its verdict; and a note when the
    change and the medians point in opposite directions."""
    if r is None:
        return "-", ""
    explored = tables.verdict_text(r) != r.verdict
    mark = MARKS.get(r.verdict, "?") + ("*" if explored else " ")
    change, note = "", ""
    if r.change_pct is not None and r.variant != r.baseline:
        change = _pct(r.change_pct)
        moved = tables.medians_against(r, base.median if base is not None else None)
        if moved is not None:
            change += "^"
            note = (f"the change is the median of the pairwise ratios ({_pct(r.change_pct)}); the medians moved "
                    f"{_pct(moved)}")
    return f"{_number(r.median)} {change:>7} {mark}", note


def _pct(value: float) -> str:
    return f"{value:+.0f}%" if abs(value) >= 10 else f"{value:+.1f}%"


def _number(value) -> str:
    text = tables.number(value)
    return text if len(text) <= 8 else f"{value:.3g}"


def legend(comparison: records.Comparison) -> list[str]:
    margin = comparison.plan.margin_pct
    broken = ("X broken (read back wrong data, or failed a test of the kernel's own, that the baseline did not), "
              if comparison.broken else "")
    text = (f"{broken}B better, W worse, E equivalent (within +-{margin:g}%), I identical in every boot, "
            "? inconclusive, N not exercised (no phase ran the changed code). * marks an exploratory verdict (5% "
            "false-discovery rate); unmarked verdicts of (P) primary rows hold a 5% family-wise error. Values are "
            "medians over the valid boots; the change is the median of the pairwise ratios (Hodges-Lehmann).")
    return wrap(text)


def reproduce(command: str) -> list[str]:
    """'Reproduce: harness ...', continued with backslashes at WIDTH (a backslash-newline joins even the two
    halves of a word in the shell, outside quotes)."""
    if not command:
        return []
    words = shlex.split(command)
    lines, current = [], "Reproduce:"
    for word in (shlex.quote(word) for word in words):
        if len(current) + 1 + len(word) <= WIDTH - 2:
            current += " " + word
            continue
        if len(word) <= WIDTH - 4 or re.search(r"['\"]", word):
            lines.append(current + " \\")
            current = "  " + word
            continue
        room = WIDTH - 2 - len(current) - 1
        current += " " + word[:room]
        rest = word[room:]
        while rest:
            lines.append(current + "\\")
            current, rest = rest[:WIDTH - 1], rest[WIDTH - 1:]
    return lines + [current]
