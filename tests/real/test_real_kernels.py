"""The real thing across kernels and series: a package from a second Debian suite; Debian's 6.12
built with the shipped fragments (as experiments/mm-four-kernels.toml builds it, the configuration
tests/real/test_real_mm.py uses too: make test builds two), booted, running swapcow; an mbox
series imported, applied in order and checked by the tree's own checkpatch.pl; a comment-only
patch whose object code is the baseline's, run as an A/A control.

Uses the default cache (~/.cache/harness). From an empty cache the 6.12 build takes about 9
minutes here; afterwards it is cached like every build.
"""

import json
import logging
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness import project
from harness.kernel import checkpatch, debian, importer, patchmail
from tests.conftest import SEED_MAIL
from tests.kernel.test_importer import hunk_lines, mangled_quote
from tests.real.cli import harness, show

pytestmark = pytest.mark.real

SEED_PATCH = project.PATCHES / "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-swapcache.patch"
GIT = ["git", "-c", "user.name=Ann Author", "-c", "user.email=ann@example.org"]






@pytest.fixture(scope="module")
def tree() -> Path:
    return Path(harness("source", "fetch").stdout.strip())


def test_a_package_from_a_second_suite_is_found_without_naming_its_suite(tmp_path, caplog):
    caplog.set_level(logging.INFO, "harness.debian")
    deb = debian.download("hello=2.10-3", tmp_path / "downloads")      # bookworm's; bullseye has 2.10-2
    version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True).stdout.strip()
    assert version == "2.10-3" and "hello=2.10-3: found in bookworm" in caplog.text
    show("hello=2.10-3 fetched from", "bookworm (searched: " + ", ".join(debian.searched_suites()) + ")")


def test_linux_6_12_builds_with_the_shipped_fragments_boots_and_runs_swapcow(tmp_path):
    out = tmp_path / "run"
    result = harness("run", "-e", "mm-four-kernels", "--variant", "v6.12", "--workload", "swapcow",
                     "--reps", "1", "-p", "size_mb=64", "-o", out)
    [run] = pd.read_csv(out / "runs.csv").to_dict("records")
    assert run["valid"] is True or run["valid"] == "True", run
    assert str(run["kernel_release"]).startswith("6.12.") and run["source"].startswith("debian:linux-source-6.12=")
    samples = pd.read_csv(out / "samples.csv")
    read, write = (samples[(samples["phase"] == phase)].set_index("metric")["value"] for phase in ("read", "write"))
    assert read["process.swapped_in_pages"] >= 16384 * 0.9 and read["perf.page-faults"] >= 16384 * 0.9
    # 6.12 maps a page it swaps in for a read writable when the swap entry was the process's alone: the
    # write phase then takes no fault at all (5.10 copies each page there; 6.1 reuses it in do_wp_page())
    assert write["perf.page-faults"] < 0.01 * 16384 and write["wp_faults"] < 0.01 * 16384, write.to_dict()
    assert write["cow_copies"] < 0.01 * 16384 and write["cow_copies.swapcache"] == 0
    layout = json.loads(run_metadata(out))["cow_layout"]["v6.12"]
    assert layout["unavailable"] == "" and layout["values"]["vm_fault_page"] == 80, "6.12's vm_fault is not 5.10's"
    show("6.12 swapcow 64 MiB", f"read phase {read['perf.page-faults']:.0f} faults; write phase "
         f"{write['perf.page-faults']:.0f} faults, cow_copies {write['cow_copies']:.0f}, vm_fault.page at "
         f"+{layout['values']['vm_fault_page']} ({result.stdout.strip()})")


def run_metadata(out: Path) -> str:
    return (out / "metadata.json").read_text()


def memory_c_repo(tree: Path, repo: Path) -> Path:
    """A git repository at repo holding the tree's mm/memory.c, committed: patches made in it apply to the tree."""
    (repo / "mm").mkdir(parents=True)
    (repo / "mm" / "memory.c").write_text((tree / "mm" / "memory.c").read_text())
    subprocess.run([*GIT, "init", "-q", repo], check=True)
    subprocess.run([*GIT, "-C", repo, "add", "."], check=True)
    subprocess.run([*GIT, "-C", repo, "commit", "-qm", "5.10"], check=True)
    return repo


def commit_edit(repo: Path, path: str, old: str, new: str, subject: str) -> None:
    target = repo / path
    text = target.read_text()
    assert text.count(old) == 1, old
    target.write_text(text.replace(old, new))
    subprocess.run([*GIT, "-C", repo, "commit", "-qam", f"{subject}\n\nWhy it is done.\n\n"
                    "Signed-off-by: Ann Author <ann@example.org>"], check=True)


FOLLOW_UP_OLD = "\t\tif (PageSwapCache(page))\n\t\t\ttry_to_free_swap(page);\n"
FOLLOW_UP_NEW = ("\t\tif (PageSwapCache(page))\n"
                 "\t\t\t/*\n"
                 "\t\t\t * The swap cache holds the only other reference: drop it\n"
                 "\t\t\t * so that the page can be reused.\n"
                 "\t\t\t */\n"
                 "\t\t\ttry_to_free_swap(page);\n"
                 "\t\tif (!PageAnon(page))\n"
                 "\t\t\tgoto copy_unlock;\n")


@pytest.fixture(scope="module")
def series(tree, tmp_path_factory) -> tuple[Path, list[str]]:
    """A git format-patch mbox (cover letter and two patches) made against mm/memory.c of the tree:
    the seed patch, then a follow-up with a brace-less body made of a comment block and a statement."""
    work = tmp_path_factory.mktemp("series")
    repo = memory_c_repo(tree, work / "repo")
    subprocess.run([*GIT, "-C", repo, "am", "-q", SEED_PATCH], check=True)
    commit_edit(repo, "mm/memory.c", FOLLOW_UP_OLD, FOLLOW_UP_NEW, "mm: copy what is not anonymous")
    mbox = work / "series.mbox"
    subprocess.run([*GIT, "-C", repo, "format-patch", "-q", "--cover-letter", "-2", "--subject-prefix=PATCH v2",
                    "--stdout"], check=True, stdout=open(mbox, "w"))
    diffs = [subprocess.run(["git", "-C", repo, "show", "--format=", f"HEAD~{n}"], capture_output=True,
                            text=True, check=True).stdout for n in (1, 0)]
    return mbox, diffs


def test_an_mbox_series_imports_into_patches_that_apply_in_order_and_pass_checkpatch(tmp_path, tree, series):
    mbox, diffs = series
    out = tmp_path / "patches"
    result = harness("patch", "import", mbox, "--series", "-o", out)
    written = sorted(out.glob("*.patch"))
    assert [path.name for path in written] == [
        "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-sw.patch",
        "0002-mm-copy-what-is-not-anonymous.patch"], "the cover letter is left out, the rest in [n/N] order"
    assert "git apply --check accepts the series" in result.stdout
    assert result.stdout.count("checkpatch: 0 error(s), 0 warning(s) in the code") == 2, result.stdout
    assert f'patches = ["{written[0]}", "{written[1]}"]' in result.stdout
    for path, diff in zip(written, diffs):
        assert hunk_lines(path.read_text()) == hunk_lines(diff)
    show("mbox of a cover letter and two patches", f"{len(written)} patches; " +
         "; ".join(line for line in result.stdout.splitlines() if "checkpatch" in line))


def test_a_mangled_quote_of_the_follow_up_imports_byte_for_byte_after_the_first(tree, series):
    mbox, diffs = series
    first, second = [part.text for part in patchmail.split_series(mbox)]
    quoted = patchmail.Part(mangled_quote(second), "a reply quoting patch 2/2")
    imported = importer.import_series([patchmail.Part(first, "1/2"), quoted], tree, author="Ann Author <ann@e.org>")
    assert hunk_lines(imported[1].text) == hunk_lines(diffs[1])


def test_the_seed_still_imports_byte_for_byte_and_passes_checkpatch_in_its_code(tmp_path, tree):
    text = importer.import_message(SEED_MAIL.read_text(), tree, author="David Hildenbrand <david@redhat.com>",
                                   upstream="53a05ad9f21d")
    assert text == SEED_PATCH.read_text()
    findings = checkpatch.run(SEED_PATCH, tree)
    assert findings is not None and [f for f in findings if f.in_code] == []
    show("seed patch checkpatch", checkpatch.summary(findings, tree))


def test_a_comment_only_patch_runs_as_an_a_a_control_and_the_seed_names_its_functions(tmp_path, tree):
    repo = memory_c_repo(tree, tmp_path / "repo")
    commit_edit(repo, "mm/memory.c", "PageKsm() doesn't necessarily raise the page refcount",
                "PageKsm() does not necessarily raise the page refcount", "mm: reword a comment")
    comment = tmp_path / "0001-mm-reword-a-comment.patch"
    comment.write_text(subprocess.run([*GIT, "-C", repo, "format-patch", "-1", "--stdout"], capture_output=True,
                                      text=True, check=True).stdout)
    default = (project.EXPERIMENTS / f"{project.DEFAULT_EXPERIMENT}.toml").read_text()
    spec = tmp_path / "comment.toml"
    spec.write_text(default.split("[[variants]]")[0] + '[[variants]]\nname = "base"\n\n[[variants]]\nname = "comment"\n'
                    f'patches = ["{comment}"]\n\n[[variants]]\nname = "patched"\npatches = ["{SEED_PATCH}"]\n')
    out = tmp_path / "run"
    result = harness("run", "-e", spec, "--workload", "swapcow", "--reps", "1", "-p", "size_mb=16", "--seed", "1",
                     "-o", out)
    said = re.search(r"variant comment: (.*)", result.stderr)
    assert said and said.group(1).startswith("object code identical to base: any difference would be noise; it runs "
                                             "as an A/A control"), result.stderr[-2000:]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["as_control"] == ["comment"] and metadata["object_code"]["comment"]["identical"]
    seed = metadata["object_code"]["patched"]
    assert not seed["identical"] and "do_wp_page" in seed["changed"] and "do_wp_page" in seed["bloat"]
    compared = harness("compare", out).stdout.replace("\n  ", " ")      # the summary wraps at 100 columns
    assert "`comment` (object code identical to the baseline)" in compared
    show("object code of the seed patch", "changed: " + ", ".join(seed["changed"]))
