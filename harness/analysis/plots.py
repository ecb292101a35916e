"""Figures for a run directory, PNG and SVG in DIR/plots/: every raw point, the median and its
order-statistic interval, per variant and phase, with each variant's verdicts in the legend.

Variants keep the experiment's order, the baseline first, and one colour each across every
figure. Counts that fall to near zero stay readable on a symmetric-log axis. Timings come from
the boots without probes, counts from the instrumented ones, as in the comparison. Titles say
what, in which unit, on which kernel with which patch, and under which accelerator.

A sweep's run (harness/sweep.py) is drawn along its axis instead: per plotted row, the metric
against the first axis (a panel per value of a second one), a line per variant through the
medians with the interval as a band, every raw point, and the experiment's reference lines."""

import io
import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "harness"     # the same ids in every SVG of the same figure
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from harness import (  # noqa: E402
    metrics,  # noqa: E402
    project,
    results,
)
from harness import sweep as sweeps  # noqa: E402
from harness.analysis import records, sampling, stats  # noqa: E402
from harness.kernel import patchmail  # noqa: E402
from harness.measure import causes  # noqa: E402
from harness.results import RunMetadata  # noqa: E402

COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
CAUSE_COLOURS = {"zero_page": "#8DA0CB", "huge_page": "#FFD92F", "ksm": "#E78AC3", "shared": "#66C2A5",
                 "swapcache": "#FC8D62", "other_ref": "#A6D854", "other": "#B3B3B3"}
CAUSE_HATCHES = {"zero_page": "//", "huge_page": "++", "ksm": "\\\\", "shared": "xx", "swapcache": "..",
                 "other_ref": "--", "other": "oo"}
REFERENCE_SPAN = 1.5    # a sweep's reference line up to this factor above the data sets the y range
LOG_SPAN = 30      # a panel whose medians differ by more than this factor gets a symmetric-log axis
DPI = 150
MAX_WIDTH_IN = 1600 / DPI     # no figure wider than 1,600 pixels: more panels wrap into rows
PANEL_HEIGHT_IN = 5.0
CAPTION = ("Points: one boot each; bar: the median; whiskers: the median's 95% interval (order statistics). "
           "Counts from the boots with probes, timings from those without.")


@dataclass(frozen=True)
class Figure:
    name: str
    metric: str
    title: str
    unit: str
    phases: tuple[str, ...] = ()       # () = every phase that has the metric
    workloads: tuple[str, ...] = ()    # () = every workload that has the metric


FIGURES = (
    Figure("copies", "cow_copies", "COW copies (wp_page_copy calls in the workload)", "copies per phase"),
    Figure("copy-rate", "cow_copies_per_swapin", "COW copies per page swapped in by the read phase",
           "copies per page"),
    Figure("write-duration", "duration_s", "Write phase duration (boots without probes)", "seconds",
           phases=("write", "mixed")),
    Figure("ops", "ops_per_s", "redis throughput (boots without probes)", "operations per second",
           workloads=("redis",)),
    Figure("swapins", "process.swapped_in_pages", "Pages swapped in by the workload", "pages (4 KiB)"),
    Figure("swapouts", "vmstat.pswpout", "Pages written to swap (pswpout)", "pages (4 KiB)"),
    Figure("reswap", "vmstat.pswpout", "Swap-out I/O after the write phase (reswap)", "pages written (pswpout)",
           phases=("reswap",)),
)


def subject_of(patch: str, metadata: RunMetadata) -> str:
    """A patch's subject, read from its file beside the experiment or in patches/, for runs that did not record
    it; its file name when the file is not there."""
    beside = Path(metadata.experiment_file or ".").parent
    for folder in (beside, beside / "patches", project.PATCHES, *sorted(project.PATCHES.glob("*/"))):
        path = folder / patch
        if path.is_file():
            try:
                return patchmail.parse(path.read_text(errors="surrogateescape"), patch).subject or patch
            except Exception:   # a file that does not parse keeps its name: the figure must still be drawn
                return patch
    return patch


def variant_order(metadata: RunMetadata, runs: pd.DataFrame) -> list[str]:
    """The experiment's order with the baseline first; variants only in the data after them."""
    names = list(dict.fromkeys(metadata.variant_names + list(dict.fromkeys(runs["variant"]))))
    baseline = metadata.baseline
    return [baseline] + [name for name in names if name != baseline] if baseline in names else names


def subtitle(metadata: RunMetadata, runs: pd.DataFrame) -> str:
    """'Linux 5.10.223, TCG | base: no patches; patched: 0001-...patch'; when variants run different
    kernels, each variant names its own."""
    valid = runs[runs["kernel_release"].notna()] if len(runs) else runs
    releases = {variant: sorted(set(part["kernel_release"].astype(str))) for variant, part in valid.groupby("variant")}
    everywhere = sorted({release for found in releases.values() for release in found}) or ["?"]
    accel = ", ".join(sorted(set(runs["accelerator"].dropna().astype(str)))).upper() or "?"

    def described(variant: results.VariantRecord) -> str:
        own = f"Linux {', '.join(releases.get(variant.name, ['?']))}, " if len(everywhere) > 1 else ""
        subjects = list(variant.subjects) or [subject_of(name, metadata) for name in variant.patches]
        if len(subjects) > 2:
            subjects = [f"{len(subjects)} patches, the last: {subjects[-1]}"]
        return f"{variant.name}: {own}{'; '.join(subjects) or 'no patches'}"

    patches = "; ".join(described(v) for v in metadata.variants)
    return (f"Linux {everywhere[0]}, {accel}" if len(everywhere) == 1 else accel) + f" | {patches}"


def claimed(row: records.Row) -> bool:
    """Whether a row's verdict is worth a label: not inconclusive, and `identical` on primary rows only (off
    them it marks the many counters that stay 0)."""
    return row.verdict not in ("inconclusive", records.BASELINE) and \
        (row.verdict != "identical" or row.margin_pct is not None)


def legend_label(variant: str, rows: list[records.Row], baseline: str) -> str:
    """'patched: write better, reswap equivalent' from the figure's rows of one variant; without such a verdict,
    the words its rows have in the tables ('patched: inconclusive')."""
    if variant == baseline:
        return f"{variant} (baseline)"
    said = [f"{r.phase} {r.verdict}" for r in rows if r.variant == variant and claimed(r)]
    words = list(dict.fromkeys(r.verdict for r in rows if r.variant == variant))   # the tables' words, unclaimed
    return f"{variant}: {', '.join(said or words) or 'no values'}"


def draw(figure: Figure, samples: pd.DataFrame, runs: pd.DataFrame, metadata: RunMetadata, out_dir: Path,
         rows: list[records.Row], order: list[str]) -> list[Path]:
    chosen = samples[samples["metric"] == figure.metric]
    if figure.phases:
        chosen = chosen[chosen["phase"].isin(figure.phases)]
    if figure.workloads:
        chosen = chosen[chosen["workload"].isin(figure.workloads)]
    if chosen.empty:
        return []
    workloads = list(dict.fromkeys(chosen["workload"]))
    present = [v for v in order if v in set(chosen["variant"])]
    phase_count = max(chosen[chosen["workload"] == w]["phase"].nunique() for w in workloads)
    fig, axes, width = _grid(len(workloads), 0.8 + phase_count * (0.3 + 0.32 * len(present)))
    for axis, workload in zip(axes, workloads):
        panel_rows = [r for r in rows if r.metric == figure.metric and r.workload == workload
                      and (not figure.phases or r.phase in figure.phases)]
        _panel(axis, chosen[chosen["workload"] == workload], present, order, workload, figure.unit)
        handles = [axis.scatter([], [], s=24, color=_colour(v, order)) for v in present]
        axis.legend(handles, [legend_label(v, panel_rows, order[0]) for v in present], loc="upper center",
                    bbox_to_anchor=(0.5, -0.1), fontsize=7, frameon=False, ncol=1)
    accel = set(runs["accelerator"].dropna().astype(str))
    note = " (TCG: emulated time)" if metrics.meaning(figure.metric).timing and "tcg" in accel else ""
    _titled(fig, f"{figure.title}{note}", subtitle(metadata, runs), CAPTION, width)
    return _save(fig, out_dir, figure.name)


def _grid(panels: int, panel_width: float, height: float = PANEL_HEIGHT_IN):
    """(figure, the axes in reading order, width in inches): as many panels a row as fit in MAX_WIDTH_IN, the
    rest in further rows; spare axes are hidden."""
    panel_width = min(max(panel_width, 3.2), MAX_WIDTH_IN - 0.5)
    columns = max(1, min(panels, int((MAX_WIDTH_IN - 0.5) // panel_width)))
    rows = math.ceil(panels / columns)
    width = min(MAX_WIDTH_IN, max(8.0, panel_width * columns + 0.5))
    fig, grid = plt.subplots(rows, columns, figsize=(width, height * rows + 1.2), squeeze=False)
    axes = [axis for row in grid for axis in row]
    for spare in axes[panels:]:
        spare.set_visible(False)
    return fig, axes[:panels], width


def _titled(fig, title: str, sub: str, caption: str, width: float, rect=(0, 0, 1, 1)) -> None:
    """The title, the subtitle wrapped to the figure, and the caption under the panels (what the marks are)."""
    characters = int(width * 12)
    lines = textwrap.wrap(sub, width=characters)
    fig.suptitle("\n".join([title, *lines]), fontsize=10)
    caption_lines = textwrap.wrap(caption, width=int(width * 14))
    fig.text(0.01, 0.005, "\n".join(caption_lines), fontsize=7, color="#444444", ha="left", va="bottom")
    height = fig.get_size_inches()[1]
    bottom = rect[1] + 0.14 * len(caption_lines) / height
    top = rect[3] - 0.17 * (len(lines) + 1) / height          # the title's lines, above the panels' own titles
    fig.tight_layout(rect=(rect[0], bottom, rect[2], top))


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    """NAME.png and NAME.svg in out_dir; the figure is closed."""
    paths = []
    for suffix, stamp in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        path = out_dir / f"{name}.{suffix}"
        partial = path.with_name(f".{path.name}.part")
        fig.savefig(partial, dpi=DPI, metadata=stamp, format=suffix)  # no date, no version: the same file each time
        os.replace(partial, path)       # never half a figure
        paths.append(path)
    plt.close(fig)
    return paths


def _colour(variant: str, order: list[str]) -> str:
    return COLOURS[order.index(variant) % len(COLOURS)] if variant in order else "#333333"


def _panel(axis, data: pd.DataFrame, present: list[str], order: list[str], workload: str, unit: str) -> None:
    """One workload's phases: per variant a column of its boots, the median and its interval."""
    phases = list(dict.fromkeys(data["phase"]))
    width = 0.8 / max(len(present), 1)
    rng = np.random.default_rng(20220128)
    medians = []
    for index, variant in enumerate(present):
        colour = _colour(variant, order)
        for position, phase in enumerate(phases):
            values = data[(data["phase"] == phase) & (data["variant"] == variant)]["value"].to_numpy(dtype=float)
            if len(values):
                medians.append(_column(axis, position - 0.4 + width * (index + 0.5), values, width, colour, rng))
    axis.set_xticks(range(len(phases)), phases)
    axis.set_xlim(-0.6, len(phases) - 0.4)
    axis.set_title(workload, fontsize=10)
    axis.set_ylabel(unit)
    _y_scale(axis, medians, unit)
    _plain(axis)


def _column(axis, x: float, values: np.ndarray, width: float, colour: str, rng) -> float:
    """The boots of one variant in one phase at x: jittered points, the median with its interval and its
    label; returns the median."""
    jitter = rng.uniform(-width * 0.15, width * 0.15, len(values))
    axis.scatter(x + jitter, values, s=12, color=colour, alpha=0.55, linewidths=0)
    median = float(np.median(values))
    low, high, _ = stats.median_interval(values)
    if low is not None:
        axis.errorbar(x, median, yerr=[[median - low], [high - median]], fmt="none", ecolor=colour,
                      capsize=3, elinewidth=1.0)
    axis.plot([x - width * 0.35, x + width * 0.35], [median, median], color=colour, linewidth=2.2)
    # one rotated label per column, above the column's own points: columns never share x
    axis.annotate(_short(median), (x, max(values.max(), high or median)), textcoords="offset points",
                  xytext=(0, 4), ha="center", va="bottom", rotation=90, fontsize=7, color=colour)
    return median


def _y_scale(axis, medians: list[float], unit: str) -> None:
    """A symmetric log scale when the medians span more than LOG_SPAN, with room above for the labels."""
    positive = [m for m in medians if m > 0]
    if positive and max(positive) / max(min(positive), 1e-12) > LOG_SPAN or (positive and 0 in medians
                                                                             and max(positive) > LOG_SPAN):
        # the linear part ends at a power of ten, one decade wide: 0 and the first decade never collide
        threshold = 10.0 ** math.floor(math.log10(min(positive))) if min(positive) < 1 else 1.0
        axis.set_yscale("symlog", linthresh=threshold, linscale=1.0)
        axis.set_ylim(0, axis.get_ylim()[1] * 8)       # room for the rotated labels on a log scale
        axis.set_ylabel(f"{unit} (symmetric log)")
    else:
        axis.set_ylim(0, axis.get_ylim()[1] * 1.25)    # room for the rotated labels


def _short(value: float) -> str:
    """A median as a label: 16,384 / 0.367 / 4."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


NUMBERS = FuncFormatter(lambda value, _: _short(value))     # the labels' notation on every axis


def _plain(axis) -> None:
    """The look of every panel's y axis: the labels' numbers, horizontal grid lines, no top or right frame."""
    axis.yaxis.set_major_formatter(NUMBERS)
    axis.grid(axis="y", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)


def plot_all(samples: pd.DataFrame, runs: pd.DataFrame, metadata: RunMetadata, out_dir: Path,
             rows: list[records.Row] | None = None) -> list[Path]:
    """Every figure that the run has data for; returns the files written (valid runs only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, _ = sampling.valid_samples(samples, runs)
    valid_runs = results.valid_runs(runs)
    cells = sampling.gather(kept, runs) if len(kept) else {}
    # a sweep's workloads are drawn along its axis; the one-point figures hold the workloads it does not vary
    measured = pd.DataFrame([{"workload": w, "phase": p, "metric": m, "variant": v, "value": value}
                             for (w, p, m, point), by_variant in cells.items() if not point
                             for v, (_, values) in by_variant.items() for value in values],
                            columns=["workload", "phase", "metric", "variant", "value"])
    order = variant_order(metadata, runs)
    sweep = sweeps.Sweep.from_dict(metadata.sweep)
    paths = draw_sweep(cells, sweep, valid_runs, metadata, out_dir, rows or [], order) if sweep else []
    rows = [row for row in rows or [] if not row.point]
    for figure in FIGURES:
        paths += draw(figure, measured, valid_runs, metadata, out_dir, rows, order)
    return paths + draw_causes(measured, valid_runs, metadata, out_dir, order)


def draw_causes(measured: pd.DataFrame, runs: pd.DataFrame, metadata: RunMetadata, out_dir: Path,
                order: list[str]) -> list[Path]:
    """causes.png: per workload, the phases with copies; one bar per variant, stacked by cause (medians)."""
    names = [f"cow_copies.{cause}" for cause in causes.CAUSES]
    chosen = measured[measured["metric"].isin(names)]
    if chosen.empty:
        return []
    medians = chosen.groupby(["workload", "phase", "variant", "metric"], sort=False)["value"].median()
    totals = medians.groupby(level=[0, 1]).sum()
    workloads = list(dict.fromkeys(chosen["workload"]))
    shown = {w: [p for p in dict.fromkeys(chosen[chosen["workload"] == w]["phase"]) if totals[(w, p)] > 0]
             for w in workloads}
    workloads = [w for w in workloads if shown[w]]
    if not workloads:
        return []
    present = [v for v in order if v in set(chosen["variant"])]
    widest = max(len(shown[w]) for w in workloads)
    fig, axes, width = _grid(len(workloads), widest * (0.5 + 0.45 * len(present)) + 1.0)
    for axis, workload in zip(axes, workloads):
        _cause_panel(axis, medians.loc[workload], shown[workload], present)
        axis.set_title(workload, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=CAUSE_COLOURS[c], hatch=CAUSE_HATCHES[c], edgecolor="white")
               for c in reversed(causes.CAUSES)]
    fig.legend(handles, list(reversed(causes.CAUSES)), loc="center right", fontsize=8, frameon=False)
    _titled(fig, "COW copies in the workload by cause (median per cause, counted boots)", subtitle(metadata, runs),
            "Bars: per variant, the median copies of each cause over the boots with probes, stacked; the number on "
            "a bar is their sum. Causes are hatched so that their colours are never a variant's.", width,
            rect=(0, 0, 1 - 1.3 / width, 1))
    return _save(fig, out_dir, "causes")


def _cause_panel(axis, medians: pd.Series, phases: list[str], present: list[str]) -> None:
    """Stacked bars: phase groups, a bar per variant, a segment per cause. A crowded panel (the integrity
    workload's 14 phases) turns its sums and phase names so that they do not run into each other."""
    width = 0.8 / max(len(present), 1)
    crowded = len(phases) * len(present) > 24
    ticks, labels = [], []
    for position, phase in enumerate(phases):
        for index, variant in enumerate(present):
            x = position - 0.4 + width * (index + 0.5)
            bottom = 0.0
            for cause in causes.CAUSES:
                value = float(medians.get((phase, variant, f"cow_copies.{cause}"), 0.0))
                if value:
                    axis.bar(x, value, width * 0.9, bottom=bottom, facecolor=CAUSE_COLOURS[cause],
                             hatch=CAUSE_HATCHES[cause], edgecolor="white", linewidth=0)
                    bottom += value
            axis.annotate(_short(bottom), (x, bottom), textcoords="offset points", xytext=(0, 3), ha="center",
                          va="bottom", fontsize=6 if crowded else 7, rotation=90 if crowded else 0)
            ticks.append(x)
            labels.append(variant)
    axis.set_xticks(ticks, labels, rotation=90, fontsize=7)
    for position, phase in enumerate(phases):
        axis.annotate(phase, (position, 0), xycoords=("data", "axes fraction"), xytext=(0, -60),
                      textcoords="offset points", ha="right" if crowded else "center", va="top",
                      fontsize=8 if crowded else 9, rotation=30 if crowded else 0)
    axis.set_xlim(-0.6, len(phases) - 0.4)
    axis.set_ylim(0, axis.get_ylim()[1] * 1.15)
    axis.set_ylabel("copies per phase")
    _plain(axis)


# --- sweeps: the metric along the axis ------------------------------------------------------

def sweep_rows(sweep: sweeps.Sweep, metadata: RunMetadata) -> list[str]:
    """WORKLOAD/PHASE/METRIC drawn along the axis: the sweep's `plots`, else the primary rows."""
    return list(dict.fromkeys(sweep.plots or metadata.primary))


def draw_sweep(cells: records.Cells, sweep: sweeps.Sweep, runs: pd.DataFrame, metadata: RunMetadata, out_dir: Path,
               rows: list[records.Row], order: list[str]) -> list[Path]:
    """sweep-WORKLOAD-PHASE-METRIC.png (and .svg) for every row drawn along the axis that has data."""
    paths = []
    for key in sweep_rows(sweep, metadata):
        workload, phase, metric = key.split("/")
        axes = sweep.axes_of(workload)
        data = {point: by_variant for (w, p, m, point), by_variant in cells.items() if (w, p, m) == (workload, phase,
                                                                                                   metric)}
        if not axes or not data:
            continue
        fig = sweep_figure(key, axes, data, sweep, metadata, runs, [r for r in rows if r.key == key], order)
        paths += _save(fig, out_dir, f"sweep-{workload}-{phase}-{metric}".replace(".", "_"))
    return paths


def sweep_figure(key: str, axes: tuple, data: dict, sweep: sweeps.Sweep, metadata: RunMetadata, runs: pd.DataFrame,
                 rows: list[records.Row], order: list[str]):
    """The figure of one row: a panel per value of the second axis (one panel with one axis)."""
    workload, phase, metric = key.split("/")
    x_axis, panel_axis = axes[0], (axes[1] if len(axes) > 1 else None)
    panels = list(panel_axis.values) if panel_axis else [None]
    fig, axes, width = _grid(len(panels), 5.0)     # two panels side by side within 1,600 pixels
    for axis in axes[1:]:
        axis.sharey(axes[0])
    tops, shown = [], []
    for axis, panel in zip(axes, panels):
        fixed = {panel_axis.name: panel} if panel_axis else {}
        mine = {point: by_variant for point, by_variant in data.items()
                if all(sweeps.parse_label(point).get(name) == value for name, value in fixed.items())}
        tops.append(_sweep_panel(axis, x_axis, mine, [r for r in rows if not fixed or
                                                      sweeps.parse_label(r.point).get(panel_axis.name) == panel],
                                 order))
        shown += _references(axis, x_axis, key, sweep, fixed, metadata)
        axis.set_title(f"{panel_axis.words} = {panel}" if panel_axis else workload, fontsize=10)
        axis.set_xlabel(x_axis.words)
        axis.yaxis.set_major_formatter(NUMBERS)
    _shared_y(axes[0], max(tops), shown, metrics.meaning(metric).unit or metric)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.06), ncol=min(3, max(len(labels), 1)),
               fontsize=8, frameon=False)
    accel = set(runs["accelerator"].dropna().astype(str))
    note = " (TCG: emulated time)" if metrics.meaning(metric).timing and "tcg" in accel else ""
    _titled(fig, f"{metric} in the {phase} phase of {workload}, along {x_axis.words}{note}", subtitle(metadata, runs),
            "Points: one boot each; line: the medians; band: each median's 95% interval (order statistics); "
            "grey lines: the experiment's references.", width, rect=(0, 0.1 + 0.02 * (len(labels) // 3), 1, 1))
    return fig


def _shared_y(axis, top: float, references: list[float], label: str) -> None:
    """One y range for the shared axis; a reference line far above the data runs off the top rather than
    flattening the data."""
    axis.set_ylim(0, (max([top] + [y for y in references if y <= REFERENCE_SPAN * top]) * 1.12) or 1.0)
    axis.set_ylabel(label)


def _positions(axis_spec: sweeps.Axis) -> dict:
    """x position of each axis value: the value itself when the axis is numeric, else its index."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in axis_spec.values)
    return {value: (float(value) if numeric else float(index)) for index, value in enumerate(axis_spec.values)}


def _sweep_panel(axis, x_axis: sweeps.Axis, data: dict, rows: list[records.Row], order: list[str]) -> float:
    """Lines, bands and raw points of every variant; returns the highest value drawn."""
    positions = _positions(x_axis)
    span = (max(positions.values()) - min(positions.values())) or 1.0
    rng = np.random.default_rng(20220128)
    present = [v for v in order if any(v in by_variant for by_variant in data.values())]
    top = 0.0
    for index, variant in enumerate(present):
        shift = (index - (len(present) - 1) / 2) * span * 0.012
        line = _sweep_points(axis, x_axis, data, variant, _colour(variant, order), positions, shift, span, rng)
        top = max([top] + [item[5] for item in line])
        _sweep_line(axis, line, variant, order, {r.point: r.verdict for r in rows if r.variant == variant
                                                 and claimed(r)})
    if not all(isinstance(v, (int, float)) for v in x_axis.values):
        axis.set_xticks(list(positions.values()), [str(v) for v in positions])
    else:
        axis.set_xticks(list(positions.values()))
    axis.grid(alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)
    return top


def _sweep_points(axis, x_axis: sweeps.Axis, data: dict, variant: str, colour: str, positions: dict, shift: float,
                  span: float, rng) -> list[tuple]:
    """One variant's boots at every point, jittered; (x, median, low, high, point, highest drawn) per point,
    along the axis."""
    line = []
    for point, by_variant in data.items():
        if variant not in by_variant:
            continue
        x = positions[sweeps.parse_label(point)[x_axis.name]] + shift
        values = by_variant[variant][1]
        axis.scatter(x + rng.uniform(-span * 0.004, span * 0.004, len(values)), values, s=12, color=colour,
                     alpha=0.5, linewidths=0)
        low, high, _ = stats.median_interval(values)
        line.append((x, float(np.median(values)), low, high, point, max(float(values.max()), high or 0.0)))
    return sorted(line)


def _sweep_line(axis, line: list[tuple], variant: str, order: list[str], said: dict) -> None:
    """The medians joined, their intervals as a band, and the verdict at each point that has one."""
    colour = _colour(variant, order)
    axis.plot([item[0] for item in line], [item[1] for item in line], color=colour, linewidth=1.8, marker="o",
              markersize=4, label=variant + (" (baseline)" if variant == order[0] else ""))
    bounded = [item for item in line if item[2] is not None]
    if bounded:
        axis.fill_between([item[0] for item in bounded], [item[2] for item in bounded],
                          [item[3] for item in bounded], color=colour, alpha=0.15, linewidth=0)
    for x, median, *_, point, _ in line:
        if point in said:
            axis.annotate(said[point], (x, median), textcoords="offset points", xytext=(0, 7), ha="center",
                          fontsize=7, color=colour)


def _references(axis, x_axis: sweeps.Axis, key: str, sweep: sweeps.Sweep, fixed: dict, metadata: RunMetadata) -> list:
    """The experiment's reference lines for this row: y lines evaluated at every axis value, x lines at one.
    Returns the y values drawn."""
    drawn: list[float] = []
    guest, params = metadata.guest, metadata.workloads
    positions = _positions(x_axis)
    styles = iter(("--", ":", "-.", (0, (5, 2, 1, 2))))
    for reference in sweep.references:
        if not reference.belongs_to(key):
            continue
        style = next(styles, "--")
        try:
            if reference.y:
                xs = list(positions.values())
                ys = [sweeps.evaluate(reference.y, sweeps.point_names(_label(x_axis, value, fixed), guest, params))
                      for value in positions]
                axis.plot(xs, ys, color="#555555", linestyle=style, linewidth=1.1, label=reference.label)
                drawn += ys
            else:
                labels = [_label(x_axis, value, fixed) for value in positions]
                x = sweeps.evaluate(reference.x, sweeps.point_names(labels[0], guest, params))
                axis.axvline(x, color="#555555", linestyle=style, linewidth=1.1, label=reference.label)
        except KeyError as missing:
            axis.annotate(f"{reference.label}: no value for {missing}", (0.01, 0.01), xycoords="axes fraction",
                          fontsize=6, color="#aa0000")
    return drawn


def _label(x_axis: sweeps.Axis, value, fixed: dict) -> str:
    return sweeps.Point(tuple({x_axis.name: value, **fixed}.items())).label


DECISION_COLOURS = {"good": COLOURS[0], "bad": COLOURS[3], "skip": "#8C8C8C"}


def bisection_plot(points: list[tuple[int, str, str, tuple]], row: str, names: list[str], out_dir: Path) -> Path:
    """A bisection's row along its candidates, oldest first (names; the good end first, the bad end last): the
    boots of each kernel measured, (index, name, good | bad | skip, values), coloured by what it was taken
    for, with its median. Written as row.png and row.svg in out_dir; the SVG's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    width = min(MAX_WIDTH_IN, max(8.0, 0.45 * len(names) + 3))
    fig, axis = plt.subplots(figsize=(width, PANEL_HEIGHT_IN))
    rng = np.random.default_rng(20220128)
    medians = []
    for index, _, decided, values in points:
        if len(values):
            medians.append(_column(axis, index, np.asarray(values, dtype=float), 0.6,
                                   DECISION_COLOURS.get(decided, "#333333"), rng))
    shown = range(len(names)) if len(names) <= 40 else sorted({index for index, *_ in points})
    axis.set_xticks(list(shown), [names[index] for index in shown], rotation=60, ha="right", fontsize=7)
    axis.set_xlim(-0.7, len(names) - 0.3)
    axis.set_xlabel("candidates, oldest first (the good end on the left, the bad end on the right)")
    _y_scale(axis, medians, row.split("/")[2])
    _plain(axis)
    for decided, colour in DECISION_COLOURS.items():
        axis.scatter([], [], color=colour, label=f"taken as {decided}")
    axis.legend(fontsize=8, loc="best")
    _titled(fig, f"Bisection of {row}", "each kernel measured against the good end in a run of its own",
            CAPTION.split(" Counts")[0], width)
    return _save(fig, out_dir, "row")[1]


def history_svg(row: str, verdicts: list, flagged: dict) -> str:
    """One row across runs (harness/history.py's Verdicts: each run's baseline and variants, oldest run first):
    the median and its interval, coloured by kernel release, a square for a variant and a circle for a
    baseline, a red edge where the run disagrees with another; the SVG's text, to put inline in a page."""
    ordered = sorted(verdicts, key=lambda v: (v.started, v.run, v.verdict != "baseline", v.variant))
    kernels = list(dict.fromkeys(v.kernel for v in ordered))
    width = min(MAX_WIDTH_IN, max(8.0, 0.32 * len(ordered) + 3))
    fig, axis = plt.subplots(figsize=(width, 4.2))
    medians = []
    for x, verdict in enumerate(ordered):
        if verdict.median is None:
            continue
        colour = COLOURS[kernels.index(verdict.kernel) % len(COLOURS)]
        low = verdict.median if verdict.ci_low is None else verdict.ci_low
        high = verdict.median if verdict.ci_high is None else verdict.ci_high
        axis.errorbar(x, verdict.median, yerr=[[max(verdict.median - low, 0)], [max(high - verdict.median, 0)]],
                      fmt="s" if verdict.verdict != "baseline" else "o", color=colour, capsize=2, markersize=5,
                      markeredgecolor="#C00000" if (verdict.run, verdict.variant) in flagged else colour)
        medians.append(verdict.median)
    labels = [f"{v.started[:10]} {v.run[:26]} {v.variant}" + ("" if v.verdict == "baseline" else f" ({v.verdict})")
              for v in ordered]
    axis.set_xticks(range(len(ordered)), labels, rotation=70, ha="right", fontsize=6)
    axis.set_xlim(-0.7, len(ordered) - 0.3)
    _y_scale(axis, medians, row.split("/")[2])
    _plain(axis)
    for kernel in kernels:
        axis.scatter([], [], color=COLOURS[kernels.index(kernel) % len(COLOURS)], label=kernel or "?")
    axis.legend(fontsize=7, loc="best", title="kernel", title_fontsize=7)
    axis.set_title(f"{row}: each run's baseline (circle) and variants (square), oldest run first", fontsize=9)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]
