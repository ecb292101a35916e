"""The kernel tree's own mm selftests: built statically from a tree (harness/kernel/selftests.py, with the
real gcc on a tree made here), copied into the guest and run one per phase by the `selftests` driver, their
TAP cases counted, a failed case a finding."""

import tarfile
from pathlib import Path

import pytest

from harness import workloads
from harness.errors import BadWorkload
from harness.kernel import selftests
from harness.measure import drivers
from tests.fakes.guest import Answer, FakeSession

# What Linux 6.12's tools/testing/selftests/mm/cow prints, cut (kselftest's TAP).
COW_OUTPUT = """\
# [INFO] detected PMD size: 2048 KiB
TAP version 13
1..4
# [RUN] Basic COW after fork() ... with base page
ok 1 No leak from parent into child
# [RUN] Basic COW after fork() ... with PTE-mapped THP (2048 kB)
not ok 2 No leak from parent into child
# [RUN] vmsplice() + unmap in child ... with hugetlb (2048 kB)
ok 3 # SKIP need more free huge pages
ok 4 # XFAIL vmsplice() + unmap in child with mprotect() optimization
# Totals: pass:1 fail:1 xfail:1 xpass:0 skip:1 error:0
"""


def test_tap_cases_are_counted_and_named_after_the_run_line_before_them():
    passed, failed, skipped = drivers.selftest_cases(COW_OUTPUT, 1, "./cow", 300)
    assert passed == ["Basic COW after fork() ... with base page"]
    assert failed == ["Basic COW after fork() ... with PTE-mapped THP (2048 kB)"], "one name, pass or fail"
    assert skipped == ["vmsplice() + unmap in child ... with hugetlb (2048 kB)",
                       "XFAIL vmsplice() + unmap in child with mprotect() optimization"]


@pytest.mark.parametrize("output, status, expected", [
    ("", 0, (["./map_populate"], [], [])),                                  # no TAP: the exit status says
    ("", 4, ([], [], ["./map_populate"])),                                  # KSFT_SKIP
    ("segfault\n", 139, ([], ["./map_populate: exit status 139"], [])),     # a crash
    ("ok 1 first\n", 124, (["first"], ["./map_populate: killed after 300 s"], [])),    # the timeout
    ("ok 1 first\n", 1, (["first"], ["./map_populate: exit status 1"], [])),          # failed after its cases
    ("ok 1 first\n", drivers.LOST, (["first"], ["./map_populate: the guest went away during it"], [])),
])
def test_a_program_without_a_failed_case_is_judged_by_its_exit_status(output, status, expected):
    assert drivers.selftest_cases(output, status, "./map_populate", 300) == expected


def test_the_shipped_selftests_workload_has_a_test_for_every_phase():
    workload = workloads.load("selftests")
    driver = drivers.driver(workload, workload.params(), None)
    assert set(driver.tests()) == set(workload.phases) - {"idle"}
    assert driver.phase_plan() == list(workload.phases)
    assert workload.most_reps == 1 and workload.correctness
    chosen = drivers.driver(workload, workload.params({"tests": "mkdirty, cow"}), None).phase_plan()
    assert chosen == ["idle", "cow", "mkdirty"], "in the workload's order"
    with pytest.raises(BadWorkload, match="tests=cow,nonesuch: choose from all, cow"):
        drivers.driver(workload, workload.params({"tests": "cow,nonesuch"}), None).phase_plan()


@pytest.fixture
def tree(tmp_path) -> Path:
    """A kernel tree with a `make headers` and an mm selftests folder of two tests and a helper."""
    tree = tmp_path / "linux"
    mm = tree / "tools" / "testing" / "selftests" / "mm"
    mm.mkdir(parents=True)
    (tree / "Makefile").write_text("headers:\n\tmkdir -p usr/include/linux\n"
                                   "\techo '#define HARNESS_UAPI 7' > usr/include/linux/harness.h\n")
    (tree / "tools" / "testing" / "selftests" / "kselftest.h").write_text("#define KSFT_PASS 0\n")
    (mm / "vm_util.c").write_text("int helper(void) { return 0; }\n")
    (mm / "good.c").write_text('#include <stdio.h>\n#include <linux/harness.h>\n#include "../kselftest.h"\n'
                               "int helper(void);\n"
                               'int main(void) { printf("ok 1 uapi %d\\n", HARNESS_UAPI); return helper(); }\n')
    (mm / "broken.c").write_text("int main(void) { return undeclared; }\n")
    return tree


TESTS = [selftests.Test("good", ("good.c",), helpers=("vm_util.c", "thp_settings.c")),
         selftests.Test("broken", ("broken.c",)), selftests.Test("absent", ("absent.c",))]


def test_a_trees_selftests_are_built_statically_with_its_headers_and_the_unbuildable_said(tree, tmp_path):
    built = selftests.build(tree, tmp_path / "out", TESTS)
    assert built.folder == "tools/testing/selftests/mm" and built.programs == ("good",)
    assert built.unbuilt["absent"] == "no tools/testing/selftests/mm/absent.c"
    assert built.unbuilt["broken"].startswith("does not build: broken.c:1:") and "undeclared" in built.unbuilt["broken"]
    with tarfile.open(built.tarball) as archive:
        assert archive.getnames() == ["good"]
    program = tmp_path / "out" / "bin" / "good"
    assert b"ld-linux" not in program.read_bytes()[:4096], "static: the guest has no loader for it"
    import subprocess
    assert subprocess.run([program], capture_output=True, text=True).stdout == "ok 1 uapi 7\n", \
        "compiled against the tree's own exported headers, linked with its helper"
    assert built.said() == ("selftests tools/testing/selftests/mm lacks: absent; selftests that do not build: "
                            f"broken ({built.unbuilt['broken']})")
    again = selftests.build(tree, tmp_path / "out", TESTS)
    assert again == built, "kept: a second run reads what the first built"


def test_a_tree_without_mm_selftests_says_so_in_one_line(tmp_path):
    (tmp_path / "linux").mkdir()
    built = selftests.build(tmp_path / "linux", tmp_path / "out", TESTS)
    assert built.tarball is None and built.folder == ""
    assert built.said() == ("the kernel tree has no mm selftests (tools/testing/selftests/mm or "
                            "tools/testing/selftests/vm): no selftest runs on it")


class _Kernel:
    def __init__(self, built):
        self.selftests = built


def test_the_driver_copies_the_tests_runs_what_was_built_and_a_failed_case_is_a_finding(tree, tmp_path):
    built = selftests.build(tree, tmp_path / "out", TESTS)
    workload = workloads.load("selftests")
    session = FakeSession({
        "mkdir -p /tmp/harness-selftests && tar -x -f /tmp/harness-selftests.tar -C /tmp/harness-selftests": "",
        "cd /tmp/harness-selftests && timeout 300 ./cow 2>&1": Answer(COW_OUTPUT, status=1)})
    driver = drivers.driver(workload, workload.params(), session)
    built = selftests.Built(built.folder, built.tarball, ("cow",),
                            {"mkdirty": "no tools/testing/selftests/mm/mkdirty.c"})
    said = driver.prepare(_Kernel(built))
    assert session.files["/tmp/harness-selftests.tar"] == Path(built.tarball).read_bytes()
    assert said == ["selftests tools/testing/selftests/mm lacks: mkdirty"]
    assert "mkdirty" not in driver.phase_plan() and "cow" in driver.phase_plan()
    outcome = driver.run_phase("cow")
    assert dict(outcome.client) == {"tests_passed": 1, "tests_failed": 1, "tests_skipped": 2}
    [finding] = outcome.found("cow")
    assert (finding.kind, finding.where) == ("failed_test", "Basic COW after fork() ... with PTE-mapped THP (2048 kB)")


def test_a_kernel_without_built_selftests_skips_every_test_and_says_why():
    workload = workloads.load("selftests")
    driver = drivers.driver(workload, workload.params(), FakeSession())
    said = driver.prepare(_Kernel(None))
    assert said == ["no selftests were built for this kernel here (a worker on another host gets none)"]
    assert driver.phase_plan() == ["idle"]


def test_a_guest_that_goes_away_during_a_test_fails_it_with_the_cases_it_printed(tree, tmp_path):
    # a kernel that dies in a test is the finding: the test fails, its cases so far are kept
    built = selftests.build(tree, tmp_path / "out", TESTS)
    workload = workloads.load("selftests")
    session = FakeSession({
        "mkdir -p /tmp/harness-selftests && tar -x -f /tmp/harness-selftests.tar -C /tmp/harness-selftests": "",
        "cd /tmp/harness-selftests && timeout 300 ./cow 2>&1": Answer(COW_OUTPUT.split("# [RUN] vmsplice")[0],
                                                                       seconds=5)})
    driver = drivers.driver(workload, workload.params(), session)
    driver.prepare(_Kernel(selftests.Built(built.folder, built.tarball, ("cow",), {})))
    session.lose_connection(after=1)
    outcome = driver.run_phase("cow")
    assert dict(outcome.client) == {"tests_passed": 1, "tests_failed": 2, "tests_skipped": 0}
    assert [finding.where for finding in outcome.found("cow")] == [
        "Basic COW after fork() ... with PTE-mapped THP (2048 kB)", "./cow: the guest went away during it"]
