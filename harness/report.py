"""DIR/report.md: the headline finding in one sentence with its numbers, the comparison
table, the plots, and the provenance of every number in it."""

import json
from pathlib import Path

import pandas as pd

from harness import compare
from harness.files import write_atomic


def headline_sentence(rows: list[compare.Row], headline: str, release: str, accelerator: str) -> str:
    workload, phase, metric = headline.split("/")
    chosen = [r for r in rows if (r.workload, r.phase, r.metric) == (workload, phase, metric)]
    base = next((r for r in chosen if r.variant == r.baseline), None)
    others = [r for r in chosen if r.variant != r.baseline]
    if base is None or not others:
        return f"No valid samples of {metric} in the {phase} phase of {workload}: see runs.csv for why."
    parts = []
    for r in others:
        change = "" if r.change_pct is None else (
            f" ({r.change_pct:+.1f}%, 95% CI [{r.change_ci_low:+.1f}%, {r.change_ci_high:+.1f}%]")
        p_value = "" if r.p_value is None else f"; Mann-Whitney p = {r.p_value:.3g}"
        parts.append(f"`{r.variant}` changes {metric} in the {phase} phase of {workload} from a median of "
                     f"{base.median:,.0f} to {r.median:,.0f}{change}{p_value}; n = {base.n} + {r.n}"
                     f"{')' if change else ''}: **{r.verdict}**")
    return f"On Linux {release} under {accelerator.upper()}, " + "; ".join(parts) + "."


def write(run_dir: Path, rows: list[compare.Row], invalid: int, plots: list[Path], headline: str) -> Path:
    metadata = json.loads((run_dir / "metadata.json").read_text())
    runs = pd.read_csv(run_dir / "runs.csv")
    valid = runs[runs["valid"].astype(str) == "True"]
    release = ", ".join(sorted(set(valid["kernel_release"].astype(str)))) or "?"
    accelerator = ", ".join(sorted(set(valid["accelerator"].dropna().astype(str)))) or "?"
    lines = [f"# {metadata.get('experiment', run_dir.name)}: {metadata.get('description', '')}".rstrip(": "), "",
             headline_sentence(rows, headline, release, accelerator), "",
             "## Comparison", "",
             f"Medians over valid runs ({len(valid)} valid, {invalid} invalid and left out), each variant against "
             f"`{rows[0].baseline if rows else 'base'}`; change with its 95% bootstrap interval; two-sided "
             "Mann-Whitney U p-value. `harness compare` shows every metric.", ""]
    for workload in dict.fromkeys(r.workload for r in rows):
        lines += [f"### {workload}", "", compare.render_markdown([r for r in rows if r.workload == workload]), ""]
    if accelerator == "tcg":
        lines += ["Timings are from QEMU TCG (emulated CPU): compare ratios between variants, not seconds.", ""]
    lines += ["## Figures", ""]
    lines += [f"![{path.stem}](plots/{path.name})" for path in plots if path.suffix == ".png"]
    lines += ["", "## Provenance", "", *provenance(metadata, runs, invalid)]
    path = run_dir / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def provenance(metadata: dict, runs: pd.DataFrame, invalid: int) -> list[str]:
    builds = metadata.get("builds", {})
    lines = [f"- Reproduce: `{metadata.get('command', '?')}`",
             f"- Kernel source: `{metadata.get('source', '?')}`"]
    for variant in metadata.get("variants", []):
        build = builds.get(variant["name"], {})
        patches = ", ".join(variant["patches"]) or "no patches"
        lines.append(f"- `{variant['name']}`: {patches} (patch hash {build.get('patch_hash', '?')}, config hash "
                     f"{build.get('config_hash', '?')}, build {build.get('key', '?')}, {build.get('compiler', '?')})")
    host = metadata.get("host", {})
    lines += [f"- QEMU: {metadata.get('qemu', '?')}; accelerator: "
              f"{', '.join(sorted(set(runs['accelerator'].dropna().astype(str)))) or '?'}",
              f"- Guest: {metadata.get('guest', {})}; workloads: {metadata.get('workloads', {})}",
              f"- Host: {host.get('cpu', '?')}, {host.get('cores', '?')} cores, {host.get('memory_mb', '?')} MiB, "
              f"{host.get('os', '?')}, kernel {host.get('kernel', '?')}",
              f"- Runs: {len(runs)} boots, {invalid} invalid (reasons in runs.csv); order: seed "
              f"{metadata.get('seed', '?')}; started {metadata.get('started', '?')}, finished "
              f"{metadata.get('finished', '?')}"]
    if metadata.get("left_out"):
        lines.append(f"- Left out of this directory: {metadata['left_out']}")
    return lines
