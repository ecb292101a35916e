"""`harness workloads --covers` from a recorded run, and the reasons a function cannot be counted."""

import json
from contextlib import contextmanager
from dataclasses import replace

import pytest
from click.testing import CliRunner

from harness import covers, experiment, workloads
from harness.cli import main
from harness.errors import BootFailed, CoverageUnknown, NoProfiler, ProfilingBootFailed
from harness.guest import image as guest_image
from harness.kernel import objdiff
from harness.measure import cell, drivers
from tests.conftest import DATA
from tests.fakes.guest import FakeBooted, FakeBuild, ReplayedSession, recordings

FACTS = {"functions": {"do_wp_page": ["a"], "swap_setup": ["b"], "page_mapcount": ["c", "d"]},
         "init": ["swap_setup"], "untraced": ["page_mapcount"]}


def test_a_function_that_cannot_be_counted_says_why():
    assert covers.why_uncounted("do_wp_page", FACTS) == ""
    assert covers.why_uncounted("swap_setup", FACTS).startswith("in an init section")
    assert covers.why_uncounted("page_mapcount", FACTS).startswith("no __fentry__ call")
    assert covers.why_uncounted("do_mincore", FACTS).startswith("this kernel's vmlinux has no such function")


def test_a_run_that_counted_a_function_answers_for_it(tmp_path):
    found = covers.from_run(DATA / "run-coverage", ["do_wp_page"])
    assert found.phases("do_wp_page") == [("swapcow", "fill"), ("swapcow", "swapout"), ("swapcow", "read"),
                                          ("swapcow", "write")], "idle is background, not a workload phase"
    assert found.calls["do_wp_page"][("swapcow", "write")] >= 4096
    with pytest.raises(CoverageUnknown, match="No count of swap_setup in .*it counted: do_wp_page, unmap_page_range"):
        covers.from_run(DATA / "run-coverage", ["do_wp_page", "swap_setup"])
    quiet = covers.from_run(DATA / "run-unexercised", ["__x64_sys_mincore"])
    assert quiet.phases("__x64_sys_mincore") == []
    assert "__x64_sys_mincore: no workload phase calls it" in quiet.lines()


def test_the_command_lists_workloads_and_refuses_functions_without_covers(tmp_path):
    listed = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "workloads"])
    assert listed.exit_code == 0 and "swapcow: " in listed.output and "phases: idle, fill, swapout, read, write" \
        in listed.output, listed.output
    wrong = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "workloads", "do_wp_page"])
    assert wrong.exit_code == 2 and "FUNCTION... goes with --covers" in wrong.output
    answered = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "workloads", "--covers", "do_wp_page",
                                         "--run", str(DATA / "run-coverage")])
    assert answered.exit_code == 0 and "do_wp_page: run by swapcow/fill" in answered.output, answered.output


# --- one counted boot per workload, through the real cell code, the guest replayed from the recorded run -----

FUNCTIONS = {"do_wp_page": ["a"], "unmap_page_range": ["b"], "swap_setup": ["c"], "page_mapcount": ["d"],
             "shrink_page_list": ["e"]}


class Profiled:
    """A built kernel (its object-code facts kept in its folder, as a real build keeps them), the guest image,
    and the boots: each replays the recorded swapcow cell of the variant, in a guest whose profiler cannot see
    shrink_page_list; refuse: the error the boot raises instead; meant: the pages the swapout phase says it
    meant to move (0: as recorded)."""

    def __init__(self, tmp_path, monkeypatch):
        self.built = FakeBuild("base")
        self.built.directory = tmp_path / "build"
        self.built.directory.mkdir()
        (self.built.directory / objdiff.FACTS_FILE).write_text(json.dumps({
            "version": objdiff.FACTS_VERSION, "sections": {}, "functions": FUNCTIONS, "init": ["swap_setup"],
            "untraced": ["page_mapcount"]}))
        self.boots, self.refuse, self.meant = [], None, 0
        monkeypatch.setattr(covers.build, "build_all", self.build_all)
        monkeypatch.setattr(covers.guest_image, "build", lambda cache: guest_image.Image(tmp_path / "i.cpio", "d", ()))
        monkeypatch.setattr(cell.boot, "booted", self.booted)
        monkeypatch.setattr(drivers, "IDLE_S", 0.0)

    def build_all(self, spec, variants, cache_dir):
        assert [v.name for v in variants] == ["base"]
        return [self.built]

    @contextmanager
    def booted(self, kernel, image, config, accel, log_dir, work_dir, timeout=None, append="", consoles=None):
        phases = recordings("swapcow", kernel.variant)
        if self.meant:
            phases = [(phase, replace(recording, said=recording.said.replace("pages=16384", f"pages={self.meant}")))
                      if phase == "swapout" else (phase, recording) for phase, recording in phases]
        session = ReplayedSession(phases, unseen=("shrink_page_list",))
        self.boots.append(session)
        if self.refuse:
            raise self.refuse
        yield FakeBooted(session)


SWAPCOW = ((workloads.load("swapcow"), workloads.load("swapcow").params()),)
ASKED = ["do_wp_page", "unmap_page_range", "swap_setup", "page_mapcount", "shrink_page_list", "do_mincore"]


def test_one_counted_boot_per_workload_answers_and_is_kept_with_the_build(tmp_path, monkeypatch):
    profiled = Profiled(tmp_path, monkeypatch)
    spec = experiment.load(None)
    found = covers.profile(spec, "base", ASKED, SWAPCOW, tmp_path / "cache", "tcg")
    [session] = profiled.boots
    assert "calls\tdo_wp_page\tunmap_page_range\tshrink_page_list" in session.requests("harness-collect"), \
        "only what the profiler can count is asked"
    assert found.source == "one counted boot per workload of base (linux-5.10.223, build base)"
    assert list(found.calls["do_wp_page"]) == [("swapcow", phase) for phase in
                                               ("idle", "fill", "swapout", "read", "write")], "in the order they ran"
    assert found.calls["do_wp_page"][("swapcow", "write")] == 16384, "a write fault on each page, and no other"
    assert found.calls["unmap_page_range"][("swapcow", "write")] == 0
    assert found.uncounted == {
        "swap_setup": "in an init section: it runs at boot, before any phase, and is freed after it",
        "page_mapcount": "no __fentry__ call, so the function profiler cannot see it (notrace, as every inline "
                         "function's out-of-line copy is)",
        "do_mincore": "this kernel's vmlinux has no such function (inlined everywhere, misspelt, or not built)",
        "shrink_page_list": "the guest's profiler refused it (not in available_filter_functions)"}
    assert found.lines()[1:3] == ["do_wp_page: run by swapcow/fill, swapcow/write",
                                  "  swapcow: idle 0, fill 2, swapout 0, read 0, write 16,384"]
    assert set(found.seconds) == set(found.calls["do_wp_page"])
    assert found.seconds[("swapcow", "idle")] < 0.1, "the test's idle phase sleeps 0 s"
    assert found.rate("do_wp_page", "swapcow", "write") == 16384 / found.seconds[("swapcow", "write")] > 10000
    [kept] = (profiled.built.directory / covers.FOLDER).iterdir()
    assert kept.name.startswith("swapcow-") and json.loads(kept.read_text())["shrink_page_list"] is None
    again = covers.profile(spec, "base", ["do_wp_page", "unmap_page_range"], SWAPCOW, tmp_path / "cache", "tcg")
    assert len(profiled.boots) == 1, "the kept counts answer a later question: no boot"
    assert again.calls == {f: found.calls[f] for f in ("do_wp_page", "unmap_page_range")}
    assert again.seconds == found.seconds, "and the phases' seconds"
    kept.write_text(json.dumps({f: v for f, v in json.loads(kept.read_text()).items() if f != covers.SECONDS}))
    covers.profile(spec, "base", ["do_wp_page"], SWAPCOW, tmp_path / "cache", "tcg")
    assert len(profiled.boots) == 2, "counts kept without the phases' seconds are counted again"


def test_functions_the_profiler_cannot_count_boot_nothing(tmp_path, monkeypatch):
    profiled = Profiled(tmp_path, monkeypatch)
    found = covers.profile(experiment.load(None), "base", ["swap_setup"], SWAPCOW, tmp_path / "cache")
    assert profiled.boots == [] and found.calls == {} and list(found.uncounted) == ["swap_setup"]


def test_an_experiment_without_probes_cannot_profile(tmp_path):
    spec = experiment.from_dict({"variants": [{"name": "base"}], "probes": []}, tmp_path / "bare.toml")
    with pytest.raises(NoProfiler, match=r"^Experiment bare has no probes, so its boots run no function profiler and "
                                         "cannot count do_wp_page: name an experiment with `probes`"):
        covers.profile(spec, "base", ["do_wp_page"], SWAPCOW, tmp_path / "cache")


def test_an_invalid_profiling_boot_answers_now_and_is_not_kept(tmp_path, monkeypatch, caplog):
    profiled = Profiled(tmp_path, monkeypatch)
    profiled.meant = 32768       # the guest moved half of what the swapout phase meant to: the gates refuse the boot
    found = covers.profile(experiment.load(None), "base", ["do_wp_page"], SWAPCOW, tmp_path / "cache")
    assert found.calls["do_wp_page"][("swapcow", "write")] == 16384
    assert "the profiling boot of swapcow on base was invalid (swapout: process.swapped_out_pages is 16,384, below " \
           "0.9 x swapout.pages (32,768); read: " in caplog.text
    assert caplog.messages[-1].endswith("): its counts answer now, and are not kept")
    assert not (profiled.built.directory / covers.FOLDER).exists()


def test_a_profiling_boot_that_fails_is_one_line_naming_the_kernel(tmp_path, monkeypatch):
    profiled = Profiled(tmp_path, monkeypatch)
    profiled.refuse = BootFailed(what="the guest was not ready in 300 s", tail="Kernel panic", log=tmp_path / "c.log")
    with pytest.raises(ProfilingBootFailed, match=r"^The profiling boot of swapcow on base failed \(.*the guest was "
                       r"not ready in 300 s.*\): nothing was counted or kept; see the log, or `harness boot --variant "
                       "base` to try the kernel by hand$"):
        covers.profile(experiment.load(None), "base", ["do_wp_page"], SWAPCOW, tmp_path / "cache")
    assert not (profiled.built.directory / covers.FOLDER).exists()
