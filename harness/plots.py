"""Figures for a run directory, PNG and SVG in DIR/plots/: every raw point, the median and its
95% bootstrap interval, per variant and phase. Titles say what, in which unit, on which
kernel with which patch, and under which accelerator (TCG timings are emulated)."""

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import compare  # noqa: E402

COLOURS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860")


@dataclass(frozen=True)
class Figure:
    name: str
    metric: str
    title: str
    unit: str
    phases: tuple[str, ...] = ()       # () = every phase that has the metric
    workloads: tuple[str, ...] = ()    # () = every workload that has the metric
    timing: bool = False               # an emulated time under TCG


FIGURES = (
    Figure("copies", "cow_copies", "COW copies (wp_page_copy calls in the workload)", "copies per phase"),
    Figure("write-duration", "duration_s", "Write phase duration", "seconds", phases=("write", "mixed"), timing=True),
    Figure("ops", "ops_per_s", "redis throughput", "operations per second", workloads=("redis",), timing=True),
    Figure("swapins", "process.swapped_in_pages", "Pages swapped in by the workload", "pages (4 KiB)"),
    Figure("swapouts", "vmstat.pswpout", "Pages written to swap (pswpout)", "pages (4 KiB)"),
    Figure("reswap", "vmstat.pswpout", "Swap-out I/O after the write phase (reswap)", "pages written (pswpout)",
           phases=("reswap",)),
)


def subtitle(metadata: dict, runs: pd.DataFrame) -> str:
    release = sorted(set(runs["kernel_release"].astype(str)))[0] if len(runs) else "?"
    accel = ", ".join(sorted(set(runs["accelerator"].dropna().astype(str)))).upper() or "?"
    patches = "; ".join(f"{v['name']}: {', '.join(v['patches']) or 'no patches'}" for v in metadata.get("variants", []))
    return f"Linux {release}, {accel} | {patches}"


def draw(figure: Figure, samples: pd.DataFrame, runs: pd.DataFrame, metadata: dict, out_dir: Path) -> list[Path]:
    chosen = samples[samples["metric"] == figure.metric]
    if figure.phases:
        chosen = chosen[chosen["phase"].isin(figure.phases)]
    if figure.workloads:
        chosen = chosen[chosen["workload"].isin(figure.workloads)]
    if chosen.empty:
        return []
    workloads = list(dict.fromkeys(chosen["workload"]))
    variants = list(dict.fromkeys(runs["variant"]))
    width = max(8.0, 5.2 * len(workloads) + 1)
    fig, axes = plt.subplots(1, len(workloads), figsize=(width, 5.0), squeeze=False)
    for axis, workload in zip(axes[0], workloads):
        _panel(axis, chosen[chosen["workload"] == workload], variants, workload, figure.unit)
    accel = set(runs["accelerator"].dropna().astype(str))
    note = " (TCG: emulated time, compare ratios, not seconds)" if figure.timing and "tcg" in accel else ""
    lines = textwrap.wrap(subtitle(metadata, runs), width=int(width * 13))
    fig.suptitle("\n".join([f"{figure.title}{note}", *lines]), fontsize=10)
    axes[0][0].legend(loc="best", fontsize=8, frameon=False)
    fig.tight_layout()
    paths = []
    for suffix in ("png", "svg"):
        path = out_dir / f"{figure.name}.{suffix}"
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def _panel(axis, data: pd.DataFrame, variants, workload: str, unit: str) -> None:
    phases = list(dict.fromkeys(data["phase"]))
    width = 0.8 / max(len(variants), 1)
    rng = np.random.default_rng(compare.BOOTSTRAP_SEED)
    for index, variant in enumerate(variants):
        colour = COLOURS[index % len(COLOURS)]
        for position, phase in enumerate(phases):
            values = data[(data["phase"] == phase) & (data["variant"] == variant)]["value"].to_numpy(dtype=float)
            if not len(values):
                continue
            x = position - 0.4 + width * (index + 0.5)
            jitter = rng.uniform(-width * 0.12, width * 0.12, len(values))
            axis.scatter(x + jitter, values, s=14, color=colour, alpha=0.55, linewidths=0,
                         label=variant if position == 0 else None)
            low, high = compare.interval(compare.bootstrap_medians(values, rng))
            median = float(np.median(values))
            axis.errorbar(x, median, yerr=[[median - low], [high - median]], fmt="_", color=colour,
                          markersize=16, markeredgewidth=2, capsize=4, elinewidth=1.2)
            axis.annotate(_short(median), (x, max(high, values.max())), textcoords="offset points", xytext=(0, 3),
                          ha="center", fontsize=7, color=colour)
    axis.set_xticks(range(len(phases)), phases)
    axis.set_xlim(-0.6, len(phases) - 0.4)
    axis.set_title(workload, fontsize=10)
    axis.set_ylabel(unit)
    axis.set_ylim(0, axis.get_ylim()[1] * 1.08)   # room for the median labels
    axis.grid(axis="y", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)


def _short(value: float) -> str:
    """A median as a label: 16,384 / 0.367 / 4."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def plot_all(samples: pd.DataFrame, runs: pd.DataFrame, metadata: dict, out_dir: Path) -> list[Path]:
    """Every figure that the run has data for; returns the files written (valid runs only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, _ = compare.valid_samples(samples, runs)
    valid_runs = runs[runs["valid"].astype(str) == "True"]
    paths = []
    for figure in FIGURES:
        paths += draw(figure, kept, valid_runs, metadata, out_dir)
    return paths
