"""`harness workloads --covers` from a recorded run, and the reasons a function cannot be counted."""

import pytest
from click.testing import CliRunner

from harness import covers
from harness.cli import main
from harness.errors import CoverageUnknown
from tests.conftest import DATA

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
