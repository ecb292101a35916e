"""Figures for a run directory, PNG and SVG in DIR/plots/: every raw point, the median and its
order-statistic interval, per variant and phase, with each variant's verdicts in the legend.

Variants keep the experiment's order, the baseline first, and one colour each across every
figure. Counts that fall to near zero stay readable on a symmetric-log axis. Timings come from
the boots without probes, counts from the instrumented ones, as in the comparison. Titles say
what, in which unit, on which kernel with which patch, and under which accelerator."""

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import results  # noqa: E402
from harness.analysis import compare, stats  # noqa: E402
from harness.measure import causes, metrics  # noqa: E402

COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
CAUSE_COLOURS = dict(zip(causes.CAUSES, ("#8DA0CB", "#E78AC3", "#66C2A5", "#FC8D62", "#A6D854", "#B3B3B3")))
LOG_SPAN = 30      # a panel whose medians differ by more than this factor gets a symmetric-log axis


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


def variant_order(metadata: dict, runs: pd.DataFrame) -> list[str]:
    """The experiment's order with the baseline first; variants only in the data after them."""
    names = [v["name"] for v in metadata.get("variants", [])] + list(dict.fromkeys(runs["variant"]))
    names = list(dict.fromkeys(names))
    baseline = metadata.get("baseline", names[0] if names else "base")
    return [baseline] + [name for name in names if name != baseline] if baseline in names else names


def subtitle(metadata: dict, runs: pd.DataFrame) -> str:
    """'Linux 5.10.223, TCG | base: no patches; patched: 0001-...patch'; when variants run different
    kernels, each variant names its own."""
    valid = runs[runs["kernel_release"].notna()] if len(runs) else runs
    releases = {variant: sorted(set(part["kernel_release"].astype(str))) for variant, part in valid.groupby("variant")}
    everywhere = sorted({release for found in releases.values() for release in found}) or ["?"]
    accel = ", ".join(sorted(set(runs["accelerator"].dropna().astype(str)))).upper() or "?"

    def described(variant: dict) -> str:
        own = f"Linux {', '.join(releases.get(variant['name'], ['?']))}, " if len(everywhere) > 1 else ""
        return f"{variant['name']}: {own}{', '.join(variant['patches']) or 'no patches'}"

    patches = "; ".join(described(v) for v in metadata.get("variants", []))
    return (f"Linux {everywhere[0]}, {accel}" if len(everywhere) == 1 else accel) + f" | {patches}"


def legend_label(variant: str, rows: list[compare.Row], baseline: str) -> str:
    """'patched: write better, reswap equivalent' from the figure's rows of one variant."""
    if variant == baseline:
        return f"{variant} (baseline)"
    said = [f"{r.phase} {r.verdict}" for r in rows if r.variant == variant and r.verdict != "inconclusive"]
    return f"{variant}: {', '.join(said)}" if said else f"{variant}: no verdict"


def draw(figure: Figure, samples: pd.DataFrame, runs: pd.DataFrame, metadata: dict, out_dir: Path,
         rows: list[compare.Row], order: list[str]) -> list[Path]:
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
    width = max(8.0, (0.8 + phase_count * (0.3 + 0.32 * len(present))) * len(workloads) + 1.0)
    fig, axes = plt.subplots(1, len(workloads), figsize=(width, 5.4), squeeze=False)
    for axis, workload in zip(axes[0], workloads):
        panel_rows = [r for r in rows if r.metric == figure.metric and r.workload == workload
                      and (not figure.phases or r.phase in figure.phases)]
        _panel(axis, chosen[chosen["workload"] == workload], present, order, workload, figure.unit)
        handles = [axis.scatter([], [], s=24, color=_colour(v, order)) for v in present]
        axis.legend(handles, [legend_label(v, panel_rows, order[0]) for v in present], loc="upper center",
                    bbox_to_anchor=(0.5, -0.1), fontsize=7, frameon=False, ncol=1)
    accel = set(runs["accelerator"].dropna().astype(str))
    note = " (TCG: emulated time)" if metrics.meaning(figure.metric).timing and "tcg" in accel else ""
    lines = textwrap.wrap(subtitle(metadata, runs), width=int(width * 13))
    fig.suptitle("\n".join([f"{figure.title}{note}", *lines]), fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, figure.name)


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    """NAME.png and NAME.svg in out_dir; the figure is closed."""
    paths = []
    for suffix in ("png", "svg"):
        path = out_dir / f"{name}.{suffix}"
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def _colour(variant: str, order: list[str]) -> str:
    return COLOURS[order.index(variant) % len(COLOURS)] if variant in order else "#333333"


def _panel(axis, data: pd.DataFrame, present: list[str], order: list[str], workload: str, unit: str) -> None:
    phases = list(dict.fromkeys(data["phase"]))
    width = 0.8 / max(len(present), 1)
    rng = np.random.default_rng(20220128)
    medians = []
    for index, variant in enumerate(present):
        colour = _colour(variant, order)
        for position, phase in enumerate(phases):
            values = data[(data["phase"] == phase) & (data["variant"] == variant)]["value"].to_numpy(dtype=float)
            if not len(values):
                continue
            x = position - 0.4 + width * (index + 0.5)
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
            medians.append(median)
    axis.set_xticks(range(len(phases)), phases)
    axis.set_xlim(-0.6, len(phases) - 0.4)
    axis.set_title(workload, fontsize=10)
    axis.set_ylabel(unit)
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
    axis.grid(axis="y", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)


def _short(value: float) -> str:
    """A median as a label: 16,384 / 0.367 / 4."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def plot_all(samples: pd.DataFrame, runs: pd.DataFrame, metadata: dict, out_dir: Path,
             rows: list[compare.Row] | None = None) -> list[Path]:
    """Every figure that the run has data for; returns the files written (valid runs only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, _ = compare.valid_samples(samples, runs)
    valid_runs = results.valid_runs(runs)
    cells = compare.gather(kept, runs) if len(kept) else {}
    measured = pd.DataFrame([{"workload": w, "phase": p, "metric": m, "variant": v, "value": value}
                             for (w, p, m), by_variant in cells.items() for v, (_, values) in by_variant.items()
                             for value in values], columns=["workload", "phase", "metric", "variant", "value"])
    order = variant_order(metadata, runs)
    paths = []
    for figure in FIGURES:
        paths += draw(figure, measured, valid_runs, metadata, out_dir, rows or [], order)
    return paths + draw_causes(measured, valid_runs, metadata, out_dir, order)


def draw_causes(measured: pd.DataFrame, runs: pd.DataFrame, metadata: dict, out_dir: Path,
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
    width = max(8.0, sum(len(shown[w]) for w in workloads) * (0.5 + 0.45 * len(present)) + 2.5)
    fig, axes = plt.subplots(1, len(workloads), figsize=(width, 5.4), squeeze=False)
    for axis, workload in zip(axes[0], workloads):
        _cause_panel(axis, medians.loc[workload], shown[workload], present)
        axis.set_title(workload, fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=CAUSE_COLOURS[c]) for c in reversed(causes.CAUSES)]
    fig.legend(handles, list(reversed(causes.CAUSES)), loc="center right", fontsize=8, frameon=False)
    lines = textwrap.wrap(subtitle(metadata, runs), width=int(width * 13))
    fig.suptitle("\n".join(["COW copies in the workload by cause (median per cause, counted boots)", *lines]),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / width, 1))
    return _save(fig, out_dir, "causes")


def _cause_panel(axis, medians: pd.Series, phases: list[str], present: list[str]) -> None:
    """Stacked bars: phase groups, a bar per variant, a segment per cause."""
    width = 0.8 / max(len(present), 1)
    ticks, labels = [], []
    for position, phase in enumerate(phases):
        for index, variant in enumerate(present):
            x = position - 0.4 + width * (index + 0.5)
            bottom = 0.0
            for cause in causes.CAUSES:
                value = float(medians.get((phase, variant, f"cow_copies.{cause}"), 0.0))
                if value:
                    axis.bar(x, value, width * 0.9, bottom=bottom, color=CAUSE_COLOURS[cause])
                    bottom += value
            axis.annotate(_short(bottom), (x, bottom), textcoords="offset points", xytext=(0, 3), ha="center",
                          va="bottom", fontsize=7)
            ticks.append(x)
            labels.append(variant)
    axis.set_xticks(ticks, labels, rotation=90, fontsize=7)
    for position, phase in enumerate(phases):
        axis.annotate(phase, (position, 0), xycoords=("data", "axes fraction"), xytext=(0, -60),
                      textcoords="offset points", ha="center", va="top", fontsize=9)
    axis.set_xlim(-0.6, len(phases) - 0.4)
    axis.set_ylim(0, axis.get_ylim()[1] * 1.15)
    axis.set_ylabel("copies per phase")
    axis.grid(axis="y", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)
