"""The real thing for dir: trees: a kernel developer's own git work tree of Linux 5.10, edited in
one .c file and switched between branches, is built again each time its content changes and not
when it does not, and the object-code diff between the builds names the function that changed.

Uses the default cache (~/.cache/harness). The tree's builds share ccache with the other real
tests' 5.10 builds (same fragments), so each is a cached build plus a copy of the tree.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from harness import project
from harness.kernel import objdiff
from tests.real.cli import harness

pytestmark = pytest.mark.real

GIT = ["git", "-c", "user.name=Ann Author", "-c", "user.email=ann@example.org"]
# Two sysctl handlers of mm/util.c, called through a ctl_table (so never inlined): each edit
# changes one constant of one function's code.
EDITS = {
    "overcommit_ratio_handler": ("\t\tsysctl_overcommit_kbytes = 0;\n", "\t\tsysctl_overcommit_kbytes = 1;\n"),
    "overcommit_kbytes_handler": ("\t\tsysctl_overcommit_ratio = 0;\n", "\t\tsysctl_overcommit_ratio = 2;\n"),
}




def git(tree: Path, *args) -> str:
    return subprocess.run([*GIT, "-C", str(tree), *args], check=True, capture_output=True, text=True).stdout


def edit(tree: Path, function: str) -> None:
    util = tree / "mm" / "util.c"
    old, new = EDITS[function]
    text = util.read_text()
    assert text.count(old) == 1, function
    util.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def work_tree(tmp_path_factory) -> Path:
    """Debian's 5.10 tree as a git work tree with one commit on master."""
    pristine = Path(harness("source", "fetch", timeout=None).stdout.strip())
    tree = tmp_path_factory.mktemp("dir-tree") / "linux"
    subprocess.run(["cp", "-a", str(pristine), str(tree)], check=True)
    subprocess.run(["chmod", "-R", "u+w", str(tree)], check=True)
    ignore = tree / ".gitignore"        # Debian's packaging ignores everything at the top; a kernel repository does not
    text = ignore.read_text()
    ignore.write_text(text[:text.index("# Debian packaging")])
    git(tree, "init", "-q", "-b", "master")
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "Linux 5.10.223 as Debian ships it")
    return tree


@pytest.fixture(scope="module")
def experiment_file(work_tree, tmp_path_factory) -> Path:
    """The default experiment on the work tree, its baseline only."""
    text = (project.EXPERIMENTS / "do-wp-page-swapcache.toml").read_text()
    text = re.sub(r'^source = ".*"$', f'source = "dir:{work_tree}"', text, count=1, flags=re.M)
    text = re.sub(r'\[\[variants\]\]\nname = "patched"\npatches = \[.*\]\n', "", text)
    path = tmp_path_factory.mktemp("dir-experiment") / "own-tree.toml"
    path.write_text(text)
    return path


def build(experiment_file: Path) -> tuple[Path, float]:
    """The build folder of the base variant and the seconds the build took (as recorded)."""
    output = harness("build", "-e", experiment_file, timeout=None).stdout
    found = re.search(r"^base: (\S+)/bzImage \(.*, (\d+) s\)$", output, re.M)
    assert found, output
    return Path(found.group(1)), float(found.group(2))


def changed_functions(old: Path, new: Path) -> list[str]:
    difference = objdiff.compare("new", "old", objdiff.facts(old / "linux" / "vmlinux", old),
                                 objdiff.facts(new / "linux" / "vmlinux", new))
    return difference.changed + difference.added + difference.removed


def test_an_edited_tree_is_rebuilt_and_its_changed_function_named(work_tree, experiment_file):
    first, _ = build(experiment_file)
    again, _ = build(experiment_file)
    assert again == first, "an untouched tree is a cache hit"
    edit(work_tree, "overcommit_ratio_handler")     # mm/util.c only: the top Makefile is untouched
    edited, _ = build(experiment_file)
    assert edited != first
    assert changed_functions(first, edited) == ["overcommit_ratio_handler"]
    # build.json keeps what the first build of this content was made from (another test run may have
    # made it, from another path and commit): the content's part is the same
    state = json.loads((edited / "build.json").read_text())["source_state"]
    assert state["git_tree"] == git(work_tree, "rev-parse", "HEAD:").strip()
    assert state["changed_files"] == 1 and state["untracked_files"] == 0
    print(f"\n[figure] dir: tree edited in mm/util.c: new build {edited.name}, changed: overcommit_ratio_handler")

    git(work_tree, "stash", "-q")                   # back to the commit: the first build again
    assert build(experiment_file)[0] == first

    git(work_tree, "checkout", "-q", "-b", "other")
    edit(work_tree, "overcommit_kbytes_handler")
    git(work_tree, "commit", "-qam", "mm: another overcommit_kbytes")
    other, _ = build(experiment_file)
    assert other not in (first, edited)
    assert changed_functions(first, other) == ["overcommit_kbytes_handler"]
    git(work_tree, "checkout", "-q", "master")      # a branch switch back: the first build again
    assert build(experiment_file)[0] == first
    print(f"[figure] branch switch: build {other.name}, changed: overcommit_kbytes_handler; back on master: "
          f"{first.name} again")
