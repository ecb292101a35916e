"""`harness history`: the index of run folders, the runs that disagree, and the page, on made-up runs and on
every committed one; the page as a real browser loads it (Debian's chromium, headless)."""

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import history, project
from harness.cli import main
from harness.errors import NoRuns

RESULTS = project.ROOT / "results"
ROW = "swapcow/write/cow_copies"


def run_folder(folder: Path, verdict: str, swap: str = "virtio-blk", started: str = "2026-12-01T10:00:00+0000",
               patch_hash: str = "abc", median: float = 1.0) -> Path:
    """A run folder as bench leaves it, reduced to what history reads: base and patched, one primary row."""
    folder.mkdir(parents=True)
    build = {"key": "k", "release": "linux-5.10.223", "source": "debian:linux-source-5.10=5.10.223-1",
             "patches": [], "patch_hash": "none", "config_hash": "c0", "compiler": "gcc"}
    metadata = {"format": 5, "experiment": "made-up", "started": started, "baseline": "base", "primary": [ROW],
                "guest": {"memory_mb": 1024, "swap": swap}, "workloads": {"swapcow": {"size_mb": 8}},
                "variants": [{"name": "base", "patches": []}, {"name": "patched", "patches": ["0001-x.patch"]}],
                "builds": {"base": build, "patched": {**build, "patches": ["0001-x.patch"], "patch_hash": patch_hash}}}
    (folder / "metadata.json").write_text(json.dumps(metadata))

    def row(variant, value, said, role="primary"):
        return {"workload": "swapcow", "phase": "write", "metric": "cow_copies", "variant": variant,
                "baseline": "base", "n": 6, "median": value, "ci_low": value, "ci_high": value, "verdict": said,
                "role": role}
    (folder / "comparison.json").write_text(json.dumps([row("base", 2048.0, "baseline"),
                                                        row("patched", median, verdict)]))
    (folder / "runs.csv").write_text("variant,valid\n" + "base,True\npatched,True\npatched,False\n")
    (folder / "report.md").write_text("# made up\n")
    return folder


def test_the_index_has_a_row_per_run_and_variant_with_its_verdicts(tmp_path):
    run_folder(tmp_path / "runs" / "one", "better")
    run_folder(tmp_path / "runs" / "nested" / "two", "identical", started="2026-12-02T10:00:00+0000")
    table, page, count = history.write([tmp_path / "runs"], tmp_path / "out")
    rows = list(csv.DictReader(table.open()))
    assert count == 2 and [(r["run"], r["variant"]) for r in rows] == [
        ("one", "base"), ("one", "patched"), ("nested/two", "base"), ("nested/two", "patched")]
    assert rows[1]["verdicts"] == f"{ROW}=better" and rows[1]["kernel"] == "5.10.223" and rows[1]["boots"] == "1"
    assert rows[1]["patches"] == "0001-x.patch" and rows[1]["guest"] == "memory_mb=1024 swap=virtio-blk"
    assert rows[0]["verdicts"] == "" and rows[3]["report"] == "nested/two/report.md"
    assert list(rows[0]) == list(history.COLUMNS)


def test_runs_that_measured_the_same_thing_and_decided_otherwise_are_flagged(tmp_path):
    run_folder(tmp_path / "a", "better")
    run_folder(tmp_path / "b", "identical", median=2048.0)         # the same kernels and machine: disagrees
    run_folder(tmp_path / "c", "inconclusive", median=900.0)       # undecided: no disagreement
    run_folder(tmp_path / "d", "worse", swap="zram")               # another machine: not the same measurement
    run_folder(tmp_path / "e", "worse", patch_hash="other")        # another patch
    table, page, _ = history.write([tmp_path], tmp_path / "out")
    flagged = {r["run"]: r["disagrees"] for r in csv.DictReader(table.open()) if r["disagrees"]}
    assert flagged == {"a": f"{ROW}: better here, identical in b", "b": f"{ROW}: identical here, better in a"}
    text = page.read_text()
    assert "<h2>Runs that disagree</h2>" in text and text.count('class="disagrees"') == 2


def test_no_run_folder_is_one_line_naming_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoRuns, match="empty"):
        history.write([tmp_path / "empty"], tmp_path / "out")
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "history", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "No run folder" in result.output
    assert not (tmp_path / "empty" / "history").exists()


def committed_runs() -> list[str]:
    return sorted(path.name for path in RESULTS.iterdir() if (path / "metadata.json").is_file())


def test_every_committed_run_is_in_the_index_and_on_the_page(tmp_path):
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "history", str(RESULTS), "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "out" / history.CSV_NAME).open()))
    names = committed_runs()
    assert sorted(set(r["run"] for r in rows)) == names and len(names) >= 14
    for name in names:
        variants = [v["name"] for v in json.loads((RESULTS / name / "metadata.json").read_text())["variants"]]
        assert [r["variant"] for r in rows if r["run"] == name] == variants, name
    page = (tmp_path / "out" / history.PAGE_NAME).read_text()
    assert all(f'data-run="{name}"' in page for name in names)
    reference = next(r for r in rows if r["run"].startswith("reference-") and r["variant"] == "patched")
    assert "swapcow/write/cow_copies_per_swapin=better" in reference["verdicts"], reference


@pytest.mark.real
def test_the_page_loads_in_a_real_browser_without_errors_and_shows_every_committed_run(tmp_path):
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: `harness doctor --install --tests` installs it"
    out = tmp_path / "out"
    history.write([RESULTS], out)
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--virtual-time-budget=5000", "--dump-dom", (out / history.PAGE_NAME).as_uri()],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert re.search(r'<html[^>]* data-loaded="yes"', html), "the page's last script ran"
    assert "data-errors" not in html, re.search(r'data-errors="[^"]*"', html)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shown = set(re.findall(r'<tr[^>]* data-run="([^"]+)"', html))
    assert shown == set(committed_runs())
    figures = re.findall(r'<figure id="([^"]+)">', html)
    assert len(figures) >= 4 and html.count("<svg") == len(figures), "one inline plot per primary row"
    links = re.findall(r'<a href="([^"]+)">', html)
    assert links and all((out / link).resolve().is_file() for link in links), "every report link leads to a file"
