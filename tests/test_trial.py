"""`harness try` before any measured boot: the kernel, the patches, the experiment it writes and the
workloads it chooses (the real builds and boots: tests/real/test_real_try.py)."""

import json
import logging
import tomllib

import pytest

from harness import covers, experiment, results, trial
from harness.errors import (
    BadGuestSetting,
    BadPatchInput,
    HunkNotAnchored,
    NoChangedCode,
    NotAGitTree,
    SeriesDoesNotApply,
    UnexercisedPatch,
)
from harness.kernel import objdiff
from harness.project import ROOT
from tests.conftest import DATA, SEED_MAIL, git_repo
from tests.kernel.test_debian import DIGEST, FAKE_POLICY
from tests.kernel.test_importer import COVER, SERIES
from tests.kernel.test_patches import NEW_FILE
from tests.kernel.test_source import fake_apt

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
    head = git_repo(repo, {"Makefile": "VERSION = 6\n"})
    assert trial.kernel_spec(None, repo, TEMPLATE, tmp_path) == f"git:{repo.resolve()}@{head}"
    with pytest.raises(NotAGitTree):
        trial.kernel_spec(None, DATA / "excerpt", TEMPLATE, tmp_path)     # a folder inside this repository
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAGitTree):
        trial.kernel_spec(None, tmp_path / "plain", TEMPLATE, tmp_path)
    assert trial.kernel_spec(None, None, TEMPLATE, tmp_path) == TEMPLATE.source
    assert trial.kernel_spec("dir:/somewhere", None, TEMPLATE, tmp_path) == "dir:/somewhere"


def profiled(calls: dict, seconds: dict | None = None):
    """covers.profile as a function of the counts given: {function: {(workload, phase): calls}}, and the phases'
    seconds {(workload, phase): s}."""
    def profile(spec, variant, functions, chosen, cache_dir, accel="auto"):
        assert variant == spec.variants[-1].name, "the last variant's kernel has every change of the series"
        return covers.Map({f: calls[f] for f in functions if f in calls}, {}, f"boots of {variant}", seconds or {})
    return profile


def test_workloads_are_those_whose_phases_call_the_changes_far_above_idle_per_second_busiest_first(
        tmp_path, monkeypatch):
    monkeypatch.setattr(covers, "profile", profiled({
        "do_wp_page": {("swapcow", "idle"): 0, ("swapcow", "write"): 16500, ("redis", "idle"): 0,
                       ("redis", "write"): 5600, ("forkcow", "idle"): 0, ("forkcow", "exit"): 0,
                       ("reclaim", "idle"): 3, ("reclaim", "fill"): 330, ("reclaim", "stream"): 200}},
        {("swapcow", "idle"): 0.5, ("swapcow", "write"): 0.4, ("redis", "idle"): 0.5, ("redis", "write"): 0.9,
         ("forkcow", "idle"): 0.5, ("forkcow", "exit"): 0.02, ("reclaim", "idle"): 0.5, ("reclaim", "fill"): 6.0,
         ("reclaim", "stream"): 8.0}))
    chosen, why = trial.choose(TEMPLATE, ("do_wp_page",), (), tmp_path, "tcg", False)
    assert chosen == ("swapcow", "redis"), "41,250 calls per second before 6,222; reclaim's 55/s is not 10 x 6/s"
    said = "\n".join(why)
    assert "  swapcow: write do_wp_page 16,500 in 0.40 s, 41,250/s (idle 0 in 0.50 s)" in said
    assert ("  left out: reclaim: fill do_wp_page 330 in 6.00 s, 55/s (idle 3 in 0.50 s): under 10 times idle's "
            "6/s") in said
    assert "forkcow" not in said, "a workload that never calls it is not worth a line"


def test_a_phase_without_seconds_is_compared_by_its_calls(tmp_path, monkeypatch):
    monkeypatch.setattr(covers, "profile", profiled({
        "do_wp_page": {("swapcow", "idle"): 120, ("swapcow", "write"): 16500, ("forkcow", "idle"): 125,
                       ("forkcow", "exit"): 125}}))
    chosen, why = trial.choose(TEMPLATE, ("do_wp_page",), (), tmp_path, "tcg", False)
    assert chosen == ("swapcow",), "forkcow calls it no more than idle does"
    assert "  left out: forkcow: exit do_wp_page 125 (idle 125)" in why


def test_no_workload_running_the_patch_stops_before_a_measured_boot(tmp_path, monkeypatch):
    monkeypatch.setattr(covers, "profile", profiled({
        "__x64_sys_mincore": {("swapcow", "idle"): 0, ("swapcow", "write"): 0}}))
    with pytest.raises(UnexercisedPatch, match="No shipped workload phase calls __x64_sys_mincore far more often "
                                               "than its idle phase does .*--workload.*--force"):
        trial.choose(TEMPLATE, ("__x64_sys_mincore",), (), tmp_path, "tcg", False)
    chosen, why = trial.choose(TEMPLATE, ("__x64_sys_mincore",), (), tmp_path, "tcg", True)
    assert chosen == () and "--force runs every shipped workload" in why[-1]


def test_the_run_folder_takes_what_try_wrote_and_nothing_else(tmp_path):
    folder = tmp_path / "run"
    trial.Trial("x = 1\n", "try", "mm-first", "dir:/x", {"0001-mm-first.patch": "diff\n"}).write(folder)
    assert results.RunDirectory.is_fresh(folder)
    (folder / "other.toml").write_text("")
    assert not results.RunDirectory.is_fresh(folder)


def test_the_kernel_is_named_once_and_a_dirty_tree_is_built_at_head(tmp_path, caplog):
    with pytest.raises(BadPatchInput, match=rf"^{tmp_path} cannot be imported as asked \(--kernel and --tree both name "
                                            r"the kernel\): pass one of them$"):
        trial.kernel_spec("6.1", tmp_path, TEMPLATE, tmp_path)
    repo = tmp_path / "linux"
    head = git_repo(repo, {"Makefile": "VERSION = 6\n"})
    (repo / "Makefile").write_text("VERSION = 7\n")
    assert trial.kernel_spec(None, repo, TEMPLATE, tmp_path) == f"git:{repo.resolve()}@{head}"
    assert f"{repo} has uncommitted changes: the build takes HEAD ({head[:12]}) without them" in caplog.messages


def test_a_short_kernel_is_debians_newest_of_that_series(tmp_path, monkeypatch, caplog):
    fake_apt(tmp_path, monkeypatch, apt_cache=FAKE_POLICY)        # apt-get and apt-cache on PATH, no network
    monkeypatch.setenv("FAKE_CANDIDATE", "6.1.119-1")
    monkeypatch.setenv("FAKE_SHA256", DIGEST)
    with caplog.at_level(logging.INFO, "harness.try"):
        spec = trial.kernel_spec("6.1", None, TEMPLATE, tmp_path)
    assert spec == f"debian:linux-source-6.1=6.1.119-1#sha256={DIGEST}"
    assert "--kernel 6.1: Debian's newest linux-source-6.1 is 6.1.119-1" in caplog.messages
    assert (tmp_path / "downloads" / ".apt-any" / "sources.list").is_file()


def test_a_cover_letter_alone_is_refused(tmp_path, fake_tree):
    mbox = tmp_path / "cover.mbox"
    mbox.write_text(COVER)
    with pytest.raises(BadPatchInput, match=rf"^{mbox} cannot be imported as asked \(it holds a cover letter and no "
                                            r"patch\): pass the patches too$"):
        trial.patch_texts([mbox], fake_tree)


def test_a_series_that_applies_neither_as_given_nor_imported_names_the_patch(tmp_path, fake_tree):
    patch = tmp_path / "new.patch"
    patch.write_text(NEW_FILE)          # creates mm/memory.c, which the tree has
    with pytest.raises(SeriesDoesNotApply, match=r"^0001-mm-add-memory.c.patch does not apply to .*fakelinux, as given "
                                                 r"nor imported \(at a place git apply refuses\): rebase it "
                                                 "onto that kernel"):
        trial.patch_texts([patch], fake_tree)


# --- prepare: the builds' object code faked as kept facts, the boots as covers.profile's answers -----------

class Built:
    """A build of a trial's variant whose object-code facts are kept in its folder (objdiff reads them, as it
    does for a build it already disassembled); code: function -> hash, per variant."""

    def __init__(self, folder, variant, code: dict):
        self.variant, self.directory = variant, folder / variant
        self.tree, self.vmlinux = self.directory / "linux", self.directory / "vmlinux"
        self.directory.mkdir(parents=True)
        self.vmlinux.write_bytes(b"\x7fELF")
        (self.directory / objdiff.FACTS_FILE).write_text(json.dumps({
            "version": objdiff.FACTS_VERSION, "sections": {".text": [100, "".join(sorted(code.values()))]},
            "functions": {name: [digest] for name, digest in code.items()}}))


def builds_of(monkeypatch, tmp_path, codes: dict):
    """build.build_all answered with Built, per variant name; the variants it was asked for, in a list."""
    asked = []

    def build_all(spec, variants, cache_dir):
        asked.append([v.name for v in variants])
        return [Built(tmp_path / "builds" / str(len(asked)), v.name, codes[v.name]) for v in variants]
    monkeypatch.setattr(trial.build, "build_all", build_all)
    return asked


def test_a_trial_names_the_series_its_builds_and_the_workloads_asked_for(tmp_path, fake_tree, monkeypatch):
    mbox = tmp_path / "series.mbox"
    mbox.write_text(COVER + "\n" + SERIES)
    asked = builds_of(monkeypatch, tmp_path, {"base": {"do_wp_page": "a", "wp_page_copy": "b"},
                                              "+1": {"do_wp_page": "A", "wp_page_copy": "b"},
                                              "+1..2": {"do_wp_page": "A", "wp_page_copy": "B", "new_one": "c"}})
    tried = trial.prepare([mbox], f"dir:{fake_tree}", None, None, ("swapcow",), ("swapcow.size_mb=32",),
                          tmp_path / "cache", command="harness try series.mbox")
    assert asked == [["base", "+1", "+1..2"]]
    assert (tried.source, tried.slug, tried.imported) == (f"dir:{fake_tree}", "mm-first", False)
    assert tried.changed == {"+1": ["do_wp_page"], "+1..2": ["do_wp_page", "wp_page_copy", "new_one"]}
    assert tried.workloads == ("swapcow", "integrity", "selftests"), "whether the kernel is right comes first"
    assert tried.choice == ("workloads named on the command line: swapcow", "always run, whatever the coverage "
                            "chose: integrity, selftests (is the kernel right: what the pages hold after every kind "
                            "of copy and reuse)")
    spec = experiment.load(str(tried.write(tmp_path / "run")))
    assert [v.name for v in spec.variants] == ["base", "+1", "+1..2"]
    assert spec.workloads == ("swapcow", "integrity", "selftests")
    assert spec.parameters_of("swapcow") == {"size_mb": 32}, "-p's values, not the defaults"
    assert tried.text.startswith("# Written by `harness try series.mbox` on ")
    assert "[parameters.swapcow]\nsize_mb = 32\n" in tried.text


def test_guest_settings_are_the_machine_the_trial_and_its_profile_boot(tmp_path, fake_tree, monkeypatch):
    patch = tmp_path / "first.patch"
    patch.write_text(SERIES.split("\nFrom 2222")[0] + "\n")
    builds_of(monkeypatch, tmp_path, {"base": {"do_wp_page": "a"}, "patched": {"do_wp_page": "A"}})
    profiled_in = []

    def profile(spec, variant, functions, chosen, cache_dir, accel="auto"):
        profiled_in.append(spec.guest)
        return covers.Map({"do_wp_page": {("swapcow", "idle"): 1, ("swapcow", "write"): 900}}, {}, "boots")
    monkeypatch.setattr(covers, "profile", profile)
    guest = trial.guest_settings(("swap=zram", "memory_mb=2048"))
    assert guest == {"swap": "zram", "memory_mb": 2048}
    tried = trial.prepare([patch], f"dir:{fake_tree}", None, None, (), (), tmp_path / "cache", guest=guest)
    spec = experiment.load(str(tried.write(tmp_path / "run")))
    assert (spec.guest.swap, spec.guest.memory_mb) == ("zram", 2048)
    assert spec.guest.swap_mb == TEMPLATE.guest.swap_mb and spec.guest.cpus == TEMPLATE.guest.cpus
    assert [(g.swap, g.memory_mb) for g in profiled_in] == [("zram", 2048)], "coverage is read in that machine too"


@pytest.mark.parametrize("setting, message", [
    ("swap=zrm", "--guest swap=zrm: must be one of virtio-blk, zram, zswap, not 'zrm'"),
    ("swap", "--guest swap: takes KEY=VALUE with KEY one of memory_mb, cpus, swap_mb, swap, thp, "),
    ("ram=2048", "--guest ram=2048: takes KEY=VALUE with KEY one of memory_mb, "),
    ("memory_mb=lots", "--guest memory_mb=lots: must be a positive whole number, not 'lots'"),
])
def test_a_bad_guest_setting_is_named_with_what_it_takes(setting, message):
    with pytest.raises(BadGuestSetting) as raised:
        trial.guest_settings(("cpus=2", setting))
    assert str(raised.value).startswith(message)


def test_a_patch_that_changes_no_object_code_stops_before_any_boot(tmp_path, fake_tree, monkeypatch):
    patch = tmp_path / "first.patch"
    patch.write_text(SERIES.split("\nFrom 2222")[0] + "\n")
    same = {"do_wp_page": "a"}
    builds_of(monkeypatch, tmp_path, {"base": same, "patched": same})
    monkeypatch.setattr(covers, "profile", lambda *a, **k: pytest.fail("no boot: nothing changed"))
    with pytest.raises(NoChangedCode, match=rf"^The patch changes no object code of dir:{fake_tree} as this "
                       r"configuration builds it \(variants patched identical to base\): nothing to measure; --force"):
        trial.prepare([patch], f"dir:{fake_tree}", None, None, (), (), tmp_path / "cache")
    forced = trial.prepare([patch], f"dir:{fake_tree}", None, None, (), (), tmp_path / "cache", force=True)
    assert forced.changed == {"patched": []} and forced.workloads == ()
    assert forced.choice[0].startswith("no changed function can be counted")
    assert "# workloads: every one shipped" in forced.text


def test_a_function_the_series_removed_is_profiled_on_the_baseline(tmp_path, monkeypatch):
    spec_file = tmp_path / "try.toml"
    (tmp_path / "patches").mkdir()
    for name in ("0001-a.patch", "0002-b.patch"):
        (tmp_path / "patches" / name).write_text("")
    spec_file.write_text(trial.experiment_text("try", "dir:/x", TEMPLATE, ["0001-a.patch", "0002-b.patch"]))
    spec = experiment.load(str(spec_file))
    profiled_on = []

    def profile(spec, variant, functions, chosen, cache_dir, accel="auto"):
        profiled_on.append((variant, list(functions)))
        if variant == "+1..2":       # the series removed old_helper: this kernel has no such function
            return covers.Map({"do_wp_page": {("swapcow", "idle"): 1, ("swapcow", "write"): 9}},
                              {"old_helper": "this kernel's vmlinux has no such function"}, "boots of +1..2")
        return covers.Map({"old_helper": {("redis", "idle"): 0, ("redis", "fill"): 40}}, {}, "boots of base")
    monkeypatch.setattr(covers, "profile", profile)
    chosen, why = trial.choose(spec, ("do_wp_page", "old_helper"), (), tmp_path, "tcg", False)
    assert profiled_on == [("+1..2", ["do_wp_page", "old_helper"]), ("base", ["old_helper"])]
    assert chosen == ("redis", "swapcow")
    assert why[1:] == ("  redis: fill old_helper 40 (idle 0)", "  swapcow: write do_wp_page 9 (idle 1)"), \
        "the busiest first"
