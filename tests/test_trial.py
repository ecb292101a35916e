"""`harness try` before any measured boot: the kernel, the patches, the experiment it writes and the
workloads it chooses (the real builds and boots: tests/real/test_real_try.py)."""

import subprocess
import tomllib

import pytest

from harness import covers, experiment, results, trial
from harness.errors import HunkNotAnchored, NotAGitTree, UnexercisedPatch
from harness.project import ROOT
from tests.conftest import DATA, SEED_MAIL
from tests.kernel.test_patches import COVER, SERIES

SEED = ROOT / "patches" / "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-swapcache.patch"
TEMPLATE = experiment.load(None)


def test_a_patch_that_applies_is_kept_byte_for_byte():
    texts, imported = trial.patch_texts([DATA / "seed-on-excerpt.patch"], DATA / "excerpt")
    assert not imported
    assert list(texts.values()) == [(DATA / "seed-on-excerpt.patch").read_text()]
    assert list(texts) == ["0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-sw.patch"]


def test_a_quoted_mail_is_imported_to_apply(tmp_path):
    texts, imported = trial.patch_texts([SEED_MAIL], DATA / "excerpt")
    assert imported
    [text] = texts.values()
    assert text.startswith("From ") and "diff --git a/mm/memory.c b/mm/memory.c" in text and "\n> " not in text


def test_a_series_in_an_mbox_becomes_cumulative_variants(tmp_path, fake_tree):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(COVER + "\n" + SERIES)
    texts, _ = trial.patch_texts([mbox], fake_tree)
    assert list(texts) == ["0001-mm-first.patch", "0002-mm-second.patch"]
    text = trial.experiment_text("mm-first", "dir:/x", TEMPLATE, list(texts), ("swapcow",), ("why",), "mm: first")
    file = tmp_path / "mm-first.toml"
    file.write_text(text)
    spec = experiment.load(str(file))
    assert [v.name for v in spec.variants] == ["base", "+1", "+1..2"]
    assert [p.name for p in spec.variants[2].patches] == list(texts)
    assert spec.discovery and not spec.primary and spec.workloads == ("swapcow",)
    assert spec.source == "dir:/x" and spec.kconfigs == TEMPLATE.kconfigs and spec.guest == TEMPLATE.guest
    assert tomllib.loads(text)["description"] == "mm: first"


def test_a_patch_for_another_kernel_names_the_hunk(tmp_path):
    tree = tmp_path / "tree" / "mm"
    tree.mkdir(parents=True)
    (tree / "memory.c").write_text("int other;\n")
    with pytest.raises(HunkNotAnchored, match="Hunk 1 of mm/memory.c .* anchors nowhere"):
        trial.patch_texts([DATA / "seed-on-excerpt.patch"], tree.parent)


def test_the_tree_is_built_at_its_head_commit(tmp_path):
    repo = tmp_path / "linux"
    repo.mkdir()
    (repo / "Makefile").write_text("VERSION = 6\n")
    git = ["git", "-C", str(repo), "-c", "user.name=a", "-c", "user.email=a@b"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert trial.kernel_spec(None, repo, TEMPLATE, tmp_path) == f"git:{repo.resolve()}@{head}"
    with pytest.raises(NotAGitTree):
        trial.kernel_spec(None, DATA / "excerpt", TEMPLATE, tmp_path)     # a folder inside this repository
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAGitTree):
        trial.kernel_spec(None, tmp_path / "plain", TEMPLATE, tmp_path)
    assert trial.kernel_spec(None, None, TEMPLATE, tmp_path) == TEMPLATE.source
    assert trial.kernel_spec("dir:/somewhere", None, TEMPLATE, tmp_path) == "dir:/somewhere"


def profiled(calls: dict):
    """covers.profile as a function of the counts given: {function: {(workload, phase): calls}}."""
    def profile(spec, variant, functions, chosen, cache_dir, accel="auto"):
        assert variant == spec.variants[-1].name, "the last variant's kernel has every change of the series"
        return covers.Map({f: calls[f] for f in functions if f in calls}, {}, f"boots of {variant}")
    return profile


def test_workloads_are_those_whose_phases_call_the_changes_more_than_idle(tmp_path, monkeypatch):
    monkeypatch.setattr(covers, "profile", profiled({
        "do_wp_page": {("swapcow", "idle"): 120, ("swapcow", "write"): 16500, ("redis", "idle"): 120,
                       ("redis", "write"): 5000, ("forkcow", "idle"): 125, ("forkcow", "exit"): 125}}))
    chosen, why = trial.choose(TEMPLATE, ("do_wp_page",), (), tmp_path, "tcg", False)
    assert chosen == ("redis", "swapcow"), "forkcow calls it no more than idle does"
    assert "swapcow: write do_wp_page 16,500 (idle 120)" in "\n".join(why)


def test_no_workload_running_the_patch_stops_before_a_measured_boot(tmp_path, monkeypatch):
    monkeypatch.setattr(covers, "profile", profiled({
        "__x64_sys_mincore": {("swapcow", "idle"): 0, ("swapcow", "write"): 0}}))
    with pytest.raises(UnexercisedPatch, match="No shipped workload phase calls __x64_sys_mincore more than its "
                                               "idle phase does .*--workload.*--force"):
        trial.choose(TEMPLATE, ("__x64_sys_mincore",), (), tmp_path, "tcg", False)
    chosen, why = trial.choose(TEMPLATE, ("__x64_sys_mincore",), (), tmp_path, "tcg", True)
    assert chosen == () and "--force runs every shipped workload" in why[-1]


def test_the_run_folder_takes_what_try_wrote_and_nothing_else(tmp_path):
    folder = tmp_path / "run"
    trial.Trial("x = 1\n", "try", "mm-first", "dir:/x", {"0001-mm-first.patch": "diff\n"}).write(folder)
    assert results.RunDirectory.is_fresh(folder)
    (folder / "other.toml").write_text("")
    assert not results.RunDirectory.is_fresh(folder)
