"""DIR/report.md: the calibration line, the headline finding in one sentence with its numbers,
the primary hypotheses, what emulated timings can carry, the instrumentation cost, the
comparison table, the plots, the boots used, and the provenance of every number in it."""

from pathlib import Path

import numpy as np
import pandas as pd

from harness import metrics, results, workloads
from harness import sweep as sweeps
from harness.analysis import coverage, discovery, records, sampling, stats, tables
from harness.files import write_atomic

COST_PHASES = ("read", "write", "mixed")


def headline_sentence(rows: list[records.Row], headline: str, release: str, accelerator: str,
                      ran: tuple[str, ...] = ()) -> str:
    """The finding in one sentence; a sweep's, one clause per point. ran: the variants that booted."""
    chosen = [r for r in rows if r.key == headline]
    points = list(dict.fromkeys(r.point for r in chosen))
    if len(points) > 1:
        said = [_headline_at(rows, headline, point, ran) for point in points]
        return f"On Linux {release} under {accelerator.upper()}: " + " ".join(said)
    found = _headline_at(rows, headline, points[0] if points else "", ran)
    return found if found.startswith(("No valid", "Every variant", "Only `")) else \
        f"On Linux {release} under {accelerator.upper()}, " + found


def _headline_at(rows: list[records.Row], headline: str, point: str, ran: tuple[str, ...] = ()) -> str:
    workload, phase, metric = headline.split("/")
    chosen = [r for r in rows if r.key == headline and r.point == point]
    base = next((r for r in chosen if r.variant == r.baseline), None)
    others = [r for r in chosen if r.variant != r.baseline and r.role != "control"]
    controls = [r.variant for r in chosen if r.role == "control"]
    if base is not None and not others and controls:
        return (f"Every variant here ran as an A/A control against `{base.variant}` ({', '.join(controls)}: the "
                "baseline kernel again, or its object code unchanged): the calibration line above is the finding.")
    if base is not None and not others:
        silent = [variant for variant in ran if variant != base.variant and variant not in controls]
        if silent:
            return (f"No valid samples of {metric} in the {phase} phase of {workload} from "
                    f"{', '.join(f'`{v}`' for v in silent)}: see runs.csv for why (`{base.variant}` has a median "
                    f"of {coverage.number(base.median)} over {base.n} boots).")
        return (f"Only `{base.variant}` ran here, so there is nothing to compare it with: {metric} in the {phase} "
                f"phase of {workload} has a median of {coverage.number(base.median)} over {base.n} boots.")
    if base is None:
        return f"No valid samples of {metric} in the {phase} phase of {workload}: see runs.csv for why."
    return (f"At {point}: " if point else "") + "; ".join(_change_sentence(r, base) for r in others) + "."


def _change_sentence(r: records.Row, base: records.Row) -> str:
    """What one variant did to the headline row: the medians, the change with its interval and tests, the
    verdict."""
    tied = r.change_ci_low is not None and r.change_ci_low == r.change_ci_high
    moved = tables.medians_against(r, base.median)
    change = "" if r.change_pct is None else (
        f" ({r.change_pct:+.1f}%, " + ("the same in every tied pair of boots" if tied else
                                       f"95% CI [{_pct(r.change_ci_low)}, {_pct(r.change_ci_high)}]")
        + (f", though the medians moved {moved:+.1f}%" if moved is not None else ""))
    p_value = "" if r.p_value is None else f"; exact rank test p = {r.p_value:.2g}"
    adjusted = "" if r.p_adjusted is None else f", adjusted {r.p_adjusted:.2g}"
    other = " (another kernel)" if r.other_source else ""
    fdr = " (FDR)" if tables.verdict_text(r) != r.verdict else ""
    return (f"`{r.variant}`{other} changes {r.metric} in the {r.phase} phase of {r.workload} from a median of "
            f"{coverage.number(base.median)} to {coverage.number(r.median)}{change}{p_value}{adjusted}; "
            f"n = {base.n} + {r.n}"
            f"{')' if change else ''}: **{r.verdict}**{fdr}" + (f" ({r.note})" if r.note else ""))


def lost_sentence(rows: list[records.Row]) -> str:
    """'' unless a variant lost a larger share of a workload's repetitions than the baseline; then it, bold, with
    the reasons and the verdict of the lost-boots row, whatever it is: a patch that breaks a workload's gates
    yields invalid boots, not values, and the verdicts of that workload rest on the boots that passed."""
    lost = sampling.lost_more(rows)
    if not lost:
        return ""
    said = "; ".join(f"`{r.variant}` in {r.workload}{f' at {r.point}' if r.point else ''}: {r.note} "
                     f"({r.verdict})" for r in lost)
    return (f"**Lost boots: a variant lost more repetitions than `{lost[0].baseline}`: {said}. The verdicts of "
            "those workloads rest on the boots that passed.**")


CAUSE_WORDS = {"zero_page": "zero-page copies", "ksm": "KSM copies", "shared": "copies of shared pages",
               "swapcache": "swap-cache copies", "other_ref": "copies of pages someone else held",
               "other": "other copies"}


def cause_sentence(rows: list[records.Row], workload: str, phase: str) -> str:
    """Which cause of copies moved in a phase: per variant, the cause whose median changed most."""
    chosen = [r for r in rows if (r.workload, r.phase) == (workload, phase) and r.metric.startswith("cow_copies.")]
    base = {r.metric: r for r in chosen if r.variant == r.baseline}
    parts = []
    for variant in dict.fromkeys(r.variant for r in chosen if r.variant != r.baseline and r.role != "control"):
        mine = [r for r in chosen if r.variant == variant and r.metric in base]
        if mine and all(r.exercised is False for r in mine):
            continue        # no claim about code the phase did not run (harness/analysis/coverage.py)
        moved = max(mine, key=lambda r: abs(r.median - base[r.metric].median), default=None)
        if moved is None or moved.median == base[moved.metric].median:
            parts.append(f"in `{variant}` no cause of copies changed its median")
            continue
        words = CAUSE_WORDS.get(moved.metric.split(".", 1)[1], moved.metric)
        fdr = ", FDR" if tables.verdict_text(moved) != moved.verdict else ""
        verdict = f" ({moved.verdict}{fdr})" if moved.verdict != "inconclusive" else ""
        parts.append(f"in `{variant}` the {words} went from {coverage.number(base[moved.metric].median)} to "
                     f"{coverage.number(moved.median)}{verdict}")
    return f"By cause, in the {phase} phase of {workload}: " + "; ".join(parts) + "." if parts else ""


def _pct(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:+.1f}%"


def primary_table(rows: list[records.Row]) -> list[str]:
    """Markdown lines: every primary row of every variant, with the look that decided it."""
    chosen = [r for r in rows if r.margin_pct is not None and r.variant != r.baseline]
    if not chosen:
        return []
    base = {(r.key, r.point): r for r in rows if r.margin_pct is not None and r.variant == r.baseline}
    lines = ["| row | variant | n | baseline | variant | change [95% CI] | p (no change) | p (within margin) "
             "| p_adj | verdict | decided after |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in chosen:
        change = tables.change_text(r, base[(r.key, r.point)].median, lambda value, low: _pct(value)) or "-"
        variant = r.variant + (" (other kernel)" if r.other_source else "")
        key, at = (r.key, r.point), f" at {r.point}" if r.point else ""
        lines.append(f"| {r.key}{at} | {variant} | {base[key].n} + {r.n} | {coverage.number(base[key].median)} | "
                     f"{coverage.number(r.median)} | {change} | {r.p_value:.2g} | {r.p_equivalence:.2g} | "
                     f"{r.p_adjusted:.2g} | "
                     f"**{r.verdict}**{f' ({r.note})' if r.note else ''} | {r.decided_after or '-'} |")
    return lines


def instrumentation_cost(samples: pd.DataFrame, order: list[str]) -> list[str]:
    """Markdown lines: timings with probes (counted boots) against without (timed boots)."""
    cost = [name for name in samples["metric"].unique()
            if metrics.meaning(name).timing and metrics.meaning(name).headline]
    chosen = samples[samples["metric"].isin(cost) & samples["phase"].isin(COST_PHASES)]
    if chosen.empty or set(chosen["mode"]) != {"counted", "timed"}:
        return []
    variants = {variant: index for index, variant in enumerate(order)}
    workloads = {workload: index for index, workload in enumerate(dict.fromkeys(chosen["workload"]))}
    chosen = chosen.assign(workload_rank=chosen["workload"].map(workloads), phase_rank=chosen["phase"].map(
        COST_PHASES.index), variant_rank=chosen["variant"].map(lambda v: variants.get(v, len(variants))))
    lines = ["| workload | phase | metric | variant | with probes | without | probes change it by |",
             "|---|---|---|---|---|---|---|"]
    keys = ["workload_rank", "phase_rank", "metric", "variant_rank", "workload", "phase", "variant"]
    for (*_, workload, phase, variant), part in chosen.groupby(keys):
        metric = part["metric"].iloc[0]
        counted = part[part["mode"] == "counted"]["value"]
        timed = part[part["mode"] == "timed"]["value"]
        if counted.empty or timed.empty:
            continue
        with_probes, without = float(np.median(counted)), float(np.median(timed))
        lines.append(f"| {workload} | {phase} | {metric} | {variant} | {with_probes:.3g} | {without:.3g} | "
                     f"{(with_probes / without - 1) * 100:+.0f}% |")
    return lines


def boots_used(runs: pd.DataFrame, comparison: records.Comparison, metadata: results.RunMetadata) -> list[str]:
    runs = sampling.with_points(runs)
    lines = []
    for (workload, point, variant, mode), part in runs.groupby(["workload", "point", "variant", "mode"], sort=False):
        valid = part["valid"].astype(bool)
        reasons = part.loc[~valid, "reason"].fillna("invalid").astype(str).value_counts() if "reason" in part \
            else pd.Series(dtype=int)
        why = "; ".join(f"{count} x {reason}" for reason, count in reasons.items())
        lines.append(f"- {workload}{f' at {point}' if point else ''}, {variant}, {mode}: {int(valid.sum())} valid of "
                     f"{len(valid)}" + (f" (invalid: {why})" if why else ""))
    design = comparison.plan.design
    if metadata.reps == "auto":
        done = "?" if metadata.reps_done is None else metadata.reps_done
        lines.insert(0, f"- Repetitions: auto, {done} done (first look {metadata.min_reps}, at most "
                        f"{metadata.max_reps}); {design.describe()}")
    else:
        lines.insert(0, f"- Repetitions: {'?' if metadata.reps is None else metadata.reps} (fixed)")
    return lines


def placement_line(placement: results.PlacementFacts | None, runs: pd.DataFrame) -> str:
    """Where the cells ran: one at a time here, several at once, or on a cluster's hosts (and their vCPUs)."""
    if not placement:
        return "- Cells: one at a time on this machine"
    said = placement.where or "?"
    if placement.guest_cpus is not None:
        said += f"; at most {placement.guest_cpus} vCPU(s) per guest, so that cells at once do not share cores"
    elif (placement.jobs or 1) > 1:
        said += "; every guest with the vCPUs it asks: counted boots share the cores"
    hosts = runs["host"].dropna().astype(str) if "host" in runs else pd.Series(dtype=str)
    if hosts.nunique() > 1 or placement.cluster or placement.scheduler:
        said += "; cells per host: " + ", ".join(f"{host} {count}" for host, count in sorted(hosts.value_counts()
                                                                                              .items()))
    return f"- Cells: {said}"


TIMING_NOTE = {
    "tcg": ("Timings here are from QEMU TCG, an emulated CPU: a guest second is the time the emulator took, "
            "and TCG's costs per instruction class differ from hardware (page-table walks, TLB flushes and "
            "page copies are emulated in software). They can show that one kernel did more work than the other "
            "under the same emulator; they cannot give the seconds or the ratio that hardware would show. "
            "Quote counts for what the patch does; measure timings on KVM hosts."),
    "kvm": ("Timings are from KVM guests: the guest runs on the host CPU, so seconds and ratios carry over to "
            "hardware of the same kind, with the noise of a virtual machine."),
}


def timing_note(metadata: results.RunMetadata, accelerator: str) -> str:
    """What the run's timings can carry, or, when the timed boots were left out, why in one line."""
    if metadata.untimed:
        return f"No timed boots were taken: {metadata.untimed}. `--timing` takes them anyway."
    return TIMING_NOTE.get(accelerator, TIMING_NOTE["tcg"])


def discovery_sentence(comparison: records.Comparison, confirm: Path | None) -> str:
    """'' unless the run was a discovery; then how many rows moved of those tested (the judged variants' rows
    with more than one value, as Benjamini-Hochberg counted them), in how many clusters of rows that moved
    together in the same boots (discovery.clusters: each one finding), that the first sentence was chosen after the
    fact, and the command that confirms them; the repetitions at which a row that moves alone could pass, when
    the run had fewer; when nothing moved, whether anything could have."""
    if not comparison.plan.discovery or _by_rule_only(comparison.rows):
        return ""
    found = discovery.discoveries(comparison.rows)
    tested = [r for r in comparison.rows if r.role == "exploratory" and r.variant != r.baseline
              and r.p_adjusted is not None and r.verdict != "identical"]
    bases = {(r.key, r.point): r.n for r in comparison.rows if r.variant == r.baseline}
    reps = max((min(bases[(r.key, r.point)], r.n) for r in tested if r.n and bases.get((r.key, r.point))),
               default=0)
    needed = discovery.discovery_reps(len(tested))
    alone = (f" A row that moves alone, in every boot, passes at {needed} + {needed} boots; this run has {reps} + "
             f"{reps}: below that only rows that move by the dozen together can (--reps auto goes on to "
             f"{needed})." if needed and reps < needed else "")
    if not found:
        floor = min((stats.smallest_p(bases[(r.key, r.point)], r.n) for r in tested
                     if r.n and bases.get((r.key, r.point))), default=1.0)
        could = "" if floor * len(tested) <= records.ALPHA or len(tested) <= 1 else (
            f": at these boots no row could have (the smallest exact p, {floor:.2g}, cannot pass a family of "
            f"{len(tested)} rows; run more repetitions)")
        return (f"Exploratory (a discovery: no rows declared): no row of {len(tested)} tested moved at a "
                f"{records.ALPHA:.0%} false-discovery rate{could}.{alone}")
    per = "; ".join(f"`{variant}` {sum(r.variant == variant for r in found)}" for variant in
                    dict.fromkeys(r.variant for r in found))
    groups = len(comparison.clusters)
    together = (f", in {groups} cluster{'s' * (groups != 1)} of rows that moved together in the same boots (a "
                "cluster is one finding: its rows are the same boots seen through several counters)") if groups else ""
    confirm_with = f" Confirm them on fresh boots: `harness bench -e {confirm} --control`." if confirm else ""
    return (f"Exploratory (a discovery: no rows declared): {len(found)} of {len(tested)} rows tested moved at a "
            f"{records.ALPHA:.0%} false-discovery rate ({per}){together}; the sentence above is the strongest of "
            f"them, chosen after the fact, so its interval overstates how sure it is; a lead, not a claim."
            f"{confirm_with}{alone}")


def unjudged_sentence(comparison: records.Comparison, confirm: Path | None) -> str:
    """'' unless a closed gate kept rows quiet (discovery.unjudged); then, per variant, how many rows moved at the
    exploratory level, the strongest of them with its medians, and the command that judges them on fresh boots."""
    found = discovery.unjudged(comparison.rows, comparison.plan)
    if not found:
        return ""
    base = {(r.key, r.point): r.median for r in comparison.rows if r.variant == r.baseline}
    parts = []
    for variant in dict.fromkeys(r.variant for r in found):
        mine = [r for r in found if r.variant == variant]
        top = mine[0]
        change = f", {top.change_pct:+.0f}%" if top.change_pct is not None else ""
        parts.append(f"`{variant}` {len(mine)}, the strongest {top.metric} in the {top.phase} phase of {top.workload} "
                     f"({coverage.number(base[(top.key, top.point)])} to {coverage.number(top.median)}{change}, p_adj "
                     f"{top.p_adjusted:.2g})")
    judge = f" Judge them on fresh boots: `harness bench -e {confirm} --control`." if confirm else ""
    return (f"At the exploratory level ({records.ALPHA:.0%} false-discovery rate) rows moved that have no verdict, "
            f"since no primary row of their variant moved: {'; '.join(parts)}. Unjudged leads, not findings."
            f"{judge}")


def _by_rule_only(rows: list[records.Row]) -> list[str]:
    """The run's workloads when every one is judged by a rule (workloads.by_rule: integrity, selftests), else []."""
    ran = list(dict.fromkeys(r.workload for r in rows))
    return ran if ran and all(workloads.by_rule(name) for name in ran) else []


def title(metadata: results.RunMetadata, run_dir: Path) -> str:
    return f"# {metadata.experiment or run_dir.name}: {metadata.description}".rstrip(": ")


def findings(runs: pd.DataFrame, metadata: results.RunMetadata, comparison: records.Comparison, headline: str,
             confirm: Path | None = None) -> list[str]:
    """The report's opening sentences after the calibration: the headline finding (after what the coverage
    rules out), the discovery, lost boots, and which cause of copies moved."""
    rows = comparison.rows
    valid = results.valid_runs(runs)
    release = ", ".join(sorted(set(valid["kernel_release"].astype(str)))) or "?"
    accelerator = ", ".join(sorted(set(valid["accelerator"].dropna().astype(str)))) or "?"
    ran = tuple(dict.fromkeys(runs["variant"].astype(str)))
    silent = comparison.coverage.headline() if comparison.coverage is not None else ""
    checks = _by_rule_only(rows)
    said = [f"Only workloads that check the kernel is right ran here ({', '.join(checks)}), one repetition a "
            f"variant: what they read back is the finding (above), and no row of theirs carries a statistic."
            if checks else (silent + " " if silent else "") + headline_sentence(rows, headline, release, accelerator,
                                                                                 ran)]
    said.insert(0, lost_sentence(rows))       # first: no finding below stands on a fair sample of the boots
    said += [discovery_sentence(comparison, confirm), unjudged_sentence(comparison, confirm)]
    said.append(cause_sentence(rows, *headline.split("/")[:2]) if headline and not metadata.sweep and not checks
                else "")
    return [sentence for sentence in said if sentence]


def write(run_dir: Path, comparison: records.Comparison, plots: list[Path], headline: str,
          confirm: Path | None = None) -> Path:
    """RUN_DIR/report.md: the findings first, then how they were reached, then where the boots came from."""
    samples, runs, metadata = results.read(run_dir)
    valid = results.valid_runs(runs)
    accelerator = ", ".join(sorted(set(valid["accelerator"].dropna().astype(str)))) or "?"
    lines = _opening(run_dir, comparison, runs, metadata, headline, confirm)
    lines += [*primary_table(comparison.rows), ""]
    lines += sweep_lines(metadata, runs)
    lines += warning_lines(runs)
    lines += ["## What the timings can carry", "", timing_note(metadata, accelerator), ""]
    order = list(dict.fromkeys([comparison.plan.baseline] + metadata.variant_names))
    lines += _cost_section(instrumentation_cost(samples.merge(valid[["variant", "workload", "rep", "mode", "point"]]),
                                                order))
    lines += coverage.section(comparison.coverage) if comparison.coverage is not None else []
    lines += _comparison_section(comparison, len(valid))
    lines += object_code(metadata)
    lines += ["## Figures", ""]
    lines += [f"![{path.stem}](plots/{path.name})" for path in plots if path.suffix == ".png"]
    lines += ["", "## Boots", "", *boots_used(runs, comparison, metadata)]
    lines += ["", "## Provenance", "", *provenance(metadata, runs, comparison.invalid)]
    path = run_dir / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _opening(run_dir: Path, comparison: records.Comparison, runs: pd.DataFrame, metadata: results.RunMetadata,
             headline: str, confirm: Path | None) -> list[str]:
    """What was read back wrong (first of all, in bold: `broken` stands above every other verdict), the title, the
    calibration (in bold when it failed), the findings and the primary hypotheses' summary."""
    calibration = tables.calibration_line(comparison)
    lines = [f"**{line}**" if line.startswith(("BROKEN", "WRONG")) else line
             for line in tables.integrity_lines(comparison)]
    lines = [line for said in lines for line in (said, "")] + [title(metadata, run_dir), ""]
    if calibration:
        lines += [f"**{calibration}**" if comparison.failed else calibration, ""]
    for sentence in findings(runs, metadata, comparison, headline, confirm):
        lines += [sentence, ""]
    return lines + ["## Primary hypotheses", "", *tables.method_lines(comparison), ""]


def _cost_section(cost: list[str]) -> list[str]:
    if not cost:
        return []
    return ["## Instrumentation cost", "",
            "Medians of the same phases on boots with kprobes and the function profiler (counted) and "
            "without (timed); the comparison takes timings from the timed boots only.", "", *cost, ""]


def _comparison_section(comparison: records.Comparison, valid: int) -> list[str]:
    """Every row of the comparison, one table per workload and sweep point."""
    rows = comparison.rows
    lines = ["## Comparison", "",
             f"Medians over valid runs ({valid} valid, {comparison.invalid} invalid and left out), each variant "
             f"against `{comparison.plan.baseline}`; change: the median of the pairwise ratios (Hodges-Lehmann) "
             "with the 95% interval of the exact rank test; p: exact rank test (ties included); p_adj: adjusted "
             "as above; * marks primary rows. `harness compare` shows every metric.", ""]
    for workload, point in dict.fromkeys((r.workload, r.point) for r in rows):
        lines += [f"### {workload}" + (f" at {point}" if point else ""), "",
                  tables.render_markdown([r for r in rows if (r.workload, r.point) == (workload, point)]), ""]
    return lines


def warning_lines(runs: pd.DataFrame) -> list[str]:
    """Markdown lines: every warning the cells recorded, with the boots that gave it ([] when none did)."""
    if "warnings" not in runs:
        return []
    seen: dict[tuple, list[int]] = {}
    for run in runs.fillna({"warnings": ""}).itertuples(index=False):
        for warning in filter(None, str(run.warnings).split("; ")):
            where = (run.workload, getattr(run, "point", "") or "", run.variant, warning)
            seen.setdefault(where, []).append(int(run.rep))
    if not seen:
        return []
    lines = ["## Warnings", "", "What the cells warned of (runs.csv, `warnings`; a warning alone leaves a boot "
             "valid):", ""]
    points = runs["point"].fillna("").astype(str) if "point" in runs else pd.Series("", index=runs.index)
    for (workload, point, variant, warning), reps in seen.items():
        total = int(((runs["workload"] == workload) & (runs["variant"] == variant) & (points == point)).sum())
        at = f" at {point}" if point else ""
        lines.append(f"- {workload}{at}, `{variant}`, {len(reps)} of {total} boots: {warning}")
    return lines + [""]


def sweep_lines(metadata: results.RunMetadata, runs: pd.DataFrame) -> list[str]:
    """Markdown lines for a sweep's run: its axes, cells and wall time, and the points where swap-in ran
    past vm_swap_full() (a warning of the collectors), where fewer pages stay in the swap cache."""
    sweep = metadata.sweep
    if not sweep:
        return []
    axes = "; ".join(f"`{name}` = {', '.join(map(str, values))}" for name, values in sweep["axes"].items())
    seconds = float(runs["duration_s"].fillna(0).sum()) if "duration_s" in runs else 0.0
    lines = ["## Along the sweep", "", f"Axes: {axes}. {len(runs)} cells, {seconds / 60:.0f} min of boots and "
             "workloads. Figures: the `sweep-*` plots below.", ""]
    warned = runs[runs["warnings"].astype(str).str.contains("vm_swap_full", regex=False)]
    if warned.empty:
        return lines + ["No point ran swap-in past half of the swap device (vm_swap_full()).", ""]
    lines.append("Points where swap-in ran with more than half of the swap device in use (vm_swap_full(): the "
                 "kernel frees the swap slot of each page it swaps in, so fewer writes find a swap-cache page):")
    groups = sorted(warned.groupby(["workload", "point"], sort=False), key=lambda g: sweeps.order(g[0][1]))
    for (workload, point), part in groups:
        total = len(runs[(runs["workload"] == workload) & (runs["point"] == point)])
        lines.append(f"- {workload} at {point or 'the one point'}: {len(part)} of {total} cells")
    return lines + [""]


def object_code(metadata: results.RunMetadata) -> list[str]:
    """Markdown lines: what each variant changed in the machine code (vmlinux against the baseline's)."""
    differences = metadata.object_code
    if not differences:
        return []
    lines = ["## Object code", "", "Each variant's vmlinux against the baseline's: executable sections byte for byte, "
             "every function's disassembly with addresses taken out, and the tree's scripts/bloat-o-meter.", ""]
    for name, difference in differences.items():
        judged = (" It ran as an A/A control." if name in metadata.as_control else
                  " It was judged as a variant (--force)." if difference.identical and metadata.force else "")
        touched = difference.changed + difference.added + difference.removed
        if difference.identical:
            lines.append(f"- `{name}`: identical to `{difference.baseline}`: any difference would be noise.{judged}")
        elif not touched:
            lines.append(f"- `{name}`: text differs from `{difference.baseline}` in addresses only (data layout).")
        else:
            listed = ", ".join(f"`{function}`" for function in difference.changed)
            extra = (f"; added {', '.join(difference.added) or 'none'}, removed "
                     f"{', '.join(difference.removed) or 'none'}") if difference.added or difference.removed else ""
            lines.append(f"- `{name}`: code changed in {listed or 'no common function'}{extra}")
        if difference.bloat:
            lines += ["", "  ```", *[f"  {line}" for line in difference.bloat.splitlines()], "  ```"]
    return lines + [""]


def _variant_line(variant: results.VariantRecord, metadata: results.RunMetadata) -> str:
    """A variant's provenance: its patches, what its build was made from, and its source when not the run's."""
    build = metadata.builds.get(variant.name, results.BuildFacts())
    patches = ", ".join(variant.patches) or "no patches"
    control = " (control: the baseline kernel again)" if variant.name == metadata.control else ""
    control += f" from `{variant.source}`" if variant.source != metadata.source else ""
    return (f"- `{variant.name}`{control}: {patches} (patch hash {build.patch_hash or '?'}, config hash "
            f"{build.config_hash or '?'}, build {build.key or '?'}, {build.compiler or '?'})"
            f"{tree_state(build.source_state)}")


def tree_state(made_from: dict) -> str:
    """What a dir: tree held when it was built, as recorded; empty for a fetched tree."""
    if "git_commit" in made_from:
        return (f"; tree {made_from['path']} at {made_from['git_commit'][:12]} with {made_from['changed_files']} "
                f"changed and {made_from['untracked_files']} untracked files (diff sha256 "
                f"{made_from['diff_sha256'][:12]})")
    if "listing_sha256" in made_from:
        return (f"; tree {made_from['path']} of {made_from['files']:,} files (listing sha256 "
                f"{made_from['listing_sha256'][:12]})")
    return ""


def provenance(metadata: results.RunMetadata, runs: pd.DataFrame, invalid: int) -> list[str]:
    lines = [f"- Reproduce: `{metadata.command or '?'}`", f"- Kernel source: `{metadata.source or '?'}`"]
    lines += [_variant_line(variant, metadata) for variant in metadata.variants]
    host = metadata.host
    lines += [f"- QEMU: {metadata.qemu or '?'}; accelerator: "
              f"{', '.join(sorted(set(runs['accelerator'].dropna().astype(str)))) or '?'}",
              f"- Guest: {metadata.guest}; workloads: {metadata.workloads}",
              f"- Host: {host.cpu or '?'}, {host.cores or '?'} cores, {host.memory_mb or '?'} MiB, "
              f"{host.os or '?'}, kernel {host.kernel or '?'}",
              placement_line(metadata.placement, runs),
              f"- Runs: {len(runs)} boots, {invalid} invalid (reasons in runs.csv); order: seed "
              f"{'?' if metadata.seed is None else metadata.seed}; started {metadata.started or '?'}, finished "
              f"{metadata.finished or '?'}"]
    if metadata.left_out:
        lines.append(f"- Left out of this directory: {metadata.left_out}")
    return lines
