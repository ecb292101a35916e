"""`harness history`: every run folder found, as an index (one CSV row per run and variant) and a static HTML
page (no server: the plots are matplotlib's SVGs inline) with one plot per primary row across the runs and
kernels, links to each run's report, and the runs that disagree flagged.

A run is any folder with metadata.json and comparison.json (what `bench`, `try`, `compare` and a bisection's
steps write); a folder given is searched for them below it, and a run's own folders are not. What a run says
of a variant is its comparison's verdicts: the primary rows', or, in a discovery (no row declared), the rows it
found better or worse (marked *). Runs *disagree* on a row when they measured the same thing the same way (the
same baseline and variant kernels: source, patches and configuration; the same guest and workload parameters)
and one decided the row moved (`better` or `worse`) where another decided it the other way or not at all
(`equivalent`, `identical`): more boots may turn `inconclusive` into either, so that is no disagreement.
"""

import csv
import html
import io
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from harness import files, results
from harness.errors import NoRuns

log = logging.getLogger("harness.history")

CSV_NAME = "history.csv"
PAGE_NAME = "index.html"
COLUMNS = ("run", "started", "experiment", "variant", "baseline", "kernel", "source", "patches", "guest", "boots",
           "verdicts", "disagrees", "report")
MOVED = ("better", "worse")
STILL = ("equivalent", "identical")
BOOTS = "boots"         # the phase of the lost-boots rows (harness/analysis/sampling.BOOTS)


@dataclass(frozen=True)
class Verdict:
    """One row of one run's comparison, for one variant."""
    run: str
    started: str
    row: str
    variant: str
    kernel: str
    verdict: str
    median: float | None
    ci_low: float | None
    ci_high: float | None
    primary: bool
    same: str           # what must be equal for two runs' verdicts to be compared (see the module's docstring)


@dataclass(frozen=True)
class Run:
    path: Path
    name: str           # its path relative to the common top of the folders given
    metadata: results.RunMetadata
    verdicts: tuple[Verdict, ...]


def find(folders: list[Path]) -> list[Path]:
    """The run folders in folders and below them, each once, in path order (a run's own folders not searched)."""
    found: dict[Path, None] = {}

    def walk(folder: Path) -> None:
        if (folder / "metadata.json").is_file() and (folder / "comparison.json").is_file():
            found[folder.resolve()] = None
        for child in sorted(entry for entry in folder.iterdir() if entry.is_dir() and entry.name != "raw"):
            walk(child)
    for folder in folders:
        walk(Path(folder))
    return list(found)


def read(path: Path, top: Path) -> Run:
    """A run folder's metadata and its comparison's verdicts of the rows that matter (the module's docstring)."""
    metadata = results.read_metadata(path)
    rows = json.loads((path / "comparison.json").read_text())
    builds = metadata.builds
    discovery = not any(row.get("role") == "primary" and row["phase"] != BOOTS for row in rows)

    def kernel(variant: str) -> str:
        facts = builds.get(variant)
        if facts is None:
            return ""
        return "|".join([facts.key, facts.source or metadata.source, ";".join(facts.patches), facts.patch_hash,
                         facts.config_hash])

    def release(variant: str) -> str:
        facts = builds.get(variant)
        return facts.release.removeprefix("linux-") if facts else ""

    verdicts = []
    for row in rows:
        if row.get("point") or row["verdict"] == "baseline":
            continue
        primary = row.get("role") == "primary"
        if row["phase"] == BOOTS and row["verdict"] not in MOVED:
            continue        # the lost-boots rows: said only when a variant lost more boots (or fewer)
        if not primary and not (discovery and row.get("role") == "exploratory" and row["verdict"] in MOVED):
            continue
        key = f"{row['workload']}/{row['phase']}/{row['metric']}"
        same = "||".join([key, kernel(row["baseline"]), kernel(row["variant"]),
                          json.dumps(metadata.guest, sort_keys=True),
                          json.dumps(metadata.workloads.get(row["workload"], {}), sort_keys=True)])
        base = next((other for other in rows if other["variant"] == row["baseline"] and other["workload"] == row[
            "workload"] and other["phase"] == row["phase"] and other["metric"] == row["metric"]
            and not other.get("point")), None)
        if base is not None and not any(v.row == key and v.variant == row["baseline"] for v in verdicts):
            verdicts.append(Verdict(_name(path, top), metadata.started, key, row["baseline"], release(row["baseline"]),
                                    "baseline", base["median"], base["ci_low"], base["ci_high"], primary, ""))
        verdicts.append(Verdict(_name(path, top), metadata.started, key, row["variant"], release(row["variant"]),
                                row["verdict"], row["median"], row["ci_low"], row["ci_high"], primary, same))
    return Run(path, _name(path, top), metadata, tuple(verdicts))


def _name(path: Path, top: Path) -> str:
    try:
        return str(path.relative_to(top))
    except ValueError:
        return str(path)


def disagreements(runs: list[Run]) -> dict[tuple[str, str], list[str]]:
    """{(run, variant): [what it disagrees on, with which run]} of the runs that disagree on a row."""
    by_same: dict[str, list[Verdict]] = {}
    for run in runs:
        for verdict in run.verdicts:
            if verdict.same and verdict.verdict in (*MOVED, *STILL):
                by_same.setdefault(verdict.same, []).append(verdict)
    found: dict[tuple[str, str], list[str]] = {}
    for verdicts in by_same.values():
        for one in verdicts:
            for other in verdicts:
                if other.run != one.run and _opposed(one.verdict, other.verdict):
                    found.setdefault((one.run, one.variant), []).append(
                        f"{one.row}: {one.verdict} here, {other.verdict} in {other.run}")
    return found


def _opposed(one: str, other: str) -> bool:
    """Two decided verdicts that cannot both be right: a move and another move, or a move and no move."""
    return one != other and (one in MOVED or other in MOVED) and not (one in STILL and other in STILL)


def index_rows(runs: list[Run], flagged: dict) -> list[dict]:
    """history.csv's rows: one per run and variant, oldest run first."""
    rows = []
    for run in sorted(runs, key=lambda r: (r.metadata.started, r.name)):
        valid = {}
        runs_csv = run.path / "runs.csv"
        if runs_csv.is_file():
            for record in csv.DictReader(runs_csv.open()):
                valid[record["variant"]] = valid.get(record["variant"], 0) + (record["valid"] == "True")
        for variant in run.metadata.variants:
            facts = run.metadata.builds.get(variant.name)
            said = [f"{v.row}={v.verdict}" + ("" if v.primary else "*") for v in run.verdicts
                    if v.variant == variant.name and v.verdict != "baseline"]
            rows.append({
                "run": run.name, "started": run.metadata.started, "experiment": run.metadata.experiment,
                "variant": variant.name, "baseline": run.metadata.baseline,
                "kernel": facts.release.removeprefix("linux-") if facts else "",
                "source": (facts.source if facts else "") or run.metadata.source,
                "patches": ";".join(variant.patches), "guest": _guest(run.metadata.guest),
                "boots": valid.get(variant.name, 0), "verdicts": "; ".join(said),
                "disagrees": "; ".join(flagged.get((run.name, variant.name), [])),
                "report": f"{run.name}/report.md" if (run.path / "report.md").is_file() else ""})
    return rows


def _guest(guest: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in guest.items() if key in ("memory_mb", "swap", "thp") and value)


def write(folders: list[Path], out: Path) -> tuple[Path, Path, int]:
    """history.csv and index.html of the runs in folders, into out; (their paths, the runs found)."""
    from harness.analysis import plots

    paths = find(folders)
    if not paths:
        raise NoRuns(folders=", ".join(map(str, folders)))
    top = Path(_common(paths))
    runs = [read(path, top) for path in paths]
    flagged = disagreements(runs)
    rows = index_rows(runs, flagged)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    table = out / CSV_NAME
    files.write_atomic(table, buffer.getvalue())
    keys = list(dict.fromkeys(v.row for run in runs for v in run.verdicts if v.primary))
    figures = {key: plots.history_svg(key, [v for run in runs for v in run.verdicts if v.row == key], flagged)
               for key in keys}
    page = out / PAGE_NAME
    files.write_atomic(page, _page(rows, figures, flagged, top, out))
    log.info("history: %d run(s), %d row(s) plotted, %d variant(s) flagged", len(runs), len(figures), len(flagged))
    return table, page, len(runs)


def _common(paths: list[Path]) -> str:
    return os.path.commonpath([str(path.parent) for path in paths])


def _page(rows: list[dict], figures: dict[str, str], flagged: dict, top: Path, out: Path) -> str:
    """The static page: the runs' table (links to their reports), the disagreements, a plot per row."""
    def link(row: dict) -> str:
        if not row["report"]:
            return html.escape(row["run"])
        target = os.path.relpath(top / row["report"], out)
        return f'<a href="{html.escape(target)}">{html.escape(row["run"])}</a>'

    runs = list(dict.fromkeys(row["run"] for row in rows))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>harness history</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1600px}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}tr.disagrees td"
             "{background:#fde2e1}figure{margin:1em 0}svg{max-width:100%;height:auto}</style>",
             "<script>window.addEventListener('error',function(e){document.documentElement.dataset.errors="
             "(document.documentElement.dataset.errors||'')+e.message+';'});</script>",
             f'</head><body data-runs="{len(runs)}">',
             "<h1>Runs of the harness, and how their rows moved</h1>",
             f"<p>{len(runs)} run(s) under {html.escape(str(top))}, made {time.strftime('%Y-%m-%d %H:%M')}. "
             "One row per run and variant; verdicts are each variant's against its run's baseline (primary rows, or "
             "* the rows a discovery found). A flagged row disagrees with another run that measured the same thing "
             "the same way.</p>"]
    if flagged:
        parts += ["<h2>Runs that disagree</h2>", "<ul>"] + [
            f"<li>{html.escape(run)} {html.escape(variant)}: {html.escape('; '.join(said))}</li>"
            for (run, variant), said in sorted(flagged.items())] + ["</ul>"]
    heads = ("started", "run", "experiment", "variant", "kernel", "patches", "guest", "boots", "verdicts", "disagrees")
    parts += ["<h2>Runs</h2>", "<table><tr>" + "".join(f"<th>{name}</th>" for name in heads) + "</tr>"]
    for row in rows:
        mark = ' class="disagrees"' if row["disagrees"] else ""
        cells = [html.escape(row["started"][:16]), link(row)] + [
            html.escape(str(row[name])).replace(";", ";<br>")
            for name in ("experiment", "variant", "kernel", "patches", "guest", "boots", "verdicts", "disagrees")]
        parts.append(f'<tr{mark} data-run="{html.escape(row["run"])}">' + "".join(f"<td>{c}</td>" for c in cells)
                     + "</tr>")
    parts += ["</table>", "<h2>Rows across runs</h2>"]
    for key, svg in figures.items():
        parts += [f'<figure id="{html.escape(key)}"><figcaption>{html.escape(key)}</figcaption>', svg, "</figure>"]
    parts += ["<script>document.documentElement.dataset.loaded='yes';</script>", "</body></html>", ""]
    return "\n".join(parts)
