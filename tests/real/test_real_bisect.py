"""Bisection for real: a git repository made here from Debian's 5.10 tree, with commits of no effect around the
one that changes a counted row, bisected with `harness bisect` on that row, builds and boots included.

The commits: the tree as Debian ships it (the good end); a documentation edit (no code); the seed patch ("mm:
optimize do_wp_page() for exclusive pages in the swapcache"), after which swapcow's write phase copies almost no
page it swapped in; an edit of a sysctl handler in mm/util.c (code, but none that swapcow runs: the bad end). Their
authors, dates and trees are fixed, so the commit ids are the same every time and a warm cache holds their builds
(sources/git-*, builds/): the first run builds four 5.10 kernels on ccache's objects, later ones none.
"""

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from harness import project
from tests.real.cli import harness, show

pytestmark = pytest.mark.real

SIZE_MB = 8
PAGES = SIZE_MB * 256
ROW = "swapcow/write/cow_copies"
SEED = project.ROOT / "patches" / "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-swapcache.patch"
WHO = {"GIT_AUTHOR_NAME": "Ann Author", "GIT_AUTHOR_EMAIL": "ann@example.org",
       "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_NAME": "Ann Author",
       "GIT_COMMITTER_EMAIL": "ann@example.org", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


def git(repo: Path, work_tree: Path, *args, stdin: str | None = None) -> str:
    """git ARGS on the bare repository repo, with work_tree as its work tree and an index of its own."""
    env = {**os.environ, **WHO, "GIT_DIR": str(repo), "GIT_WORK_TREE": str(work_tree),
           "GIT_INDEX_FILE": str(repo / "index")}
    return subprocess.run(["git", *args], cwd=work_tree, env=env, input=stdin, check=True, capture_output=True,
                          text=True).stdout


def edit(repo: Path, work_tree: Path, path: str, old: str, new: str) -> None:
    """Replace old (once in the file) by new in path, in the index only (the work tree is the read-only pristine)."""
    text = git(repo, work_tree, "show", f":{path}")
    assert text.count(old) == 1, (path, old)
    blob = git(repo, work_tree, "hash-object", "-w", "--stdin", f"--path={path}", stdin=text.replace(old, new)).strip()
    git(repo, work_tree, "update-index", "--cacheinfo", f"100644,{blob},{path}")


def commit(repo: Path, work_tree: Path, message: str) -> str:
    git(repo, work_tree, "commit", "-q", "--no-verify", "-m", message)
    return git(repo, work_tree, "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> tuple[Path, dict]:
    """(a bare repository of Debian's 5.10 tree with four commits, {what: commit id})."""
    pristine = Path(harness("source", "fetch", timeout=None).stdout.strip())
    repo = tmp_path_factory.mktemp("bisect") / "linux.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "master", str(repo)], check=True)
    git(repo, pristine, "add", "-A", "-f", ".")
    ids = {"good": commit(repo, pristine, "Linux 5.10.223 as Debian ships it")}
    edit(repo, pristine, "Documentation/admin-guide/mm/concepts.rst", "The memory management in Linux is a complex",
         "Memory management in Linux is a complex")
    ids["documentation"] = commit(repo, pristine, "docs: mm: reword the first sentence of concepts.rst")
    git(repo, pristine, "apply", "--cached", str(SEED))
    ids["seed"] = commit(repo, pristine, "mm: optimize do_wp_page() for exclusive pages in the swapcache")
    edit(repo, pristine, "mm/util.c", "\t\tsysctl_overcommit_kbytes = 0;\n", "\t\tsysctl_overcommit_kbytes = 1;\n")
    ids["bad"] = commit(repo, pristine, "mm: util: an overcommit_ratio write sets overcommit_kbytes to 1")
    return repo, ids


def test_bisect_names_the_commit_that_moves_the_row(repository, tmp_path):
    repo, ids = repository
    out = tmp_path / "bisect"
    result = harness("bisect", "--tree", repo, "--good", ids["good"], "--bad", ids["bad"], "--row", ROW,
                     "-p", f"size_mb={SIZE_MB}", "-o", out, timeout=None, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((out / "bisect.json").read_text())
    steps = list(csv.DictReader((out / "steps.csv").open()))
    first = f"The first bad commit is {ids['seed'][:12]} "
    assert first in result.stdout and first in (out / "report.md").read_text(), result.stdout[-2000:]
    ends = state["ends"]["measured"]
    assert ends["verdict"] == "better", ends
    assert ends["baseline_median"] >= 0.9 * PAGES and ends["median"] <= 0.05 * PAGES, ends
    candidates = len(state["candidates"])
    assert candidates == 4 and len(state["steps"]) <= math.ceil(math.log2(candidates - 1)), state["steps"]
    taken = {state["candidates"][step["candidate"]]["commit"]: step["decision"] for step in state["steps"]}
    assert taken.get(ids["seed"]) == "bad" and "skip" not in taken.values(), taken
    assert taken.get(ids["documentation"], "good") == "good", taken
    assert [row["step"] for row in steps] == [str(n) for n in range(len(state["steps"]) + 1)], steps
    assert (out / "plots" / "row.svg").read_text().lstrip().startswith("<?xml"), "the plot of the row"
    for step in state["steps"]:
        assert (out / step["folder"] / "report.md").is_file(), "each step is a run folder with its report"
    seconds = sum(float(row["seconds"]) for row in steps)
    show("bisect, 5.10 repository of 4 commits", f"{len(state['steps'])} step(s) after the ends, "
         f"{seconds:,.0f} s of runs; " + "; ".join(f"{row['candidate']} {row['decision']} ({row['verdict']}, "
                                                  f"{row['good_median']} -> {row['median']}, n = {row['n']}, "
                                                  f"{row['seconds']} s)" for row in steps))
