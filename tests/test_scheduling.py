"""`make test` runs pytest -n 2 with the scheduler of tests/conftest.py: every test under tests/real and
tests/faults on one worker, in the order written, and the rest beside them on the other; a real or faults test
elsewhere fails with the fix."""

import re
import shutil
import subprocess
import sys

from tests.conftest import TESTS

GUEST_TEST = '''import os, time
import pytest
pytestmark = pytest.mark.{marker}
@pytest.mark.parametrize("i", range(4))
def test_guest(i):
    time.sleep(0.2)
    print("worker", os.environ["PYTEST_XDIST_WORKER"])
'''
UNIT_TEST = '''import time
import pytest
@pytest.mark.parametrize("i", range(8))
def test_unit(i):
    time.sleep(0.1)
'''


def run(root):
    shutil.copy(TESTS / "conftest.py", root / "tests" / "conftest.py")
    (root / "tests" / "__init__.py").write_text("")
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", "tests"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    return result, re.findall(r"^\[(gw\d)\] \[ *\d+%\] (\w+) (\S+)", result.stdout, re.M)


def test_the_guest_tests_run_on_one_worker_in_order_and_the_rest_beside_them(tmp_path):
    for folder, marker in (("real", "real"), ("faults", "faults")):
        (tmp_path / "tests" / folder).mkdir(parents=True)
        (tmp_path / "tests" / folder / f"test_{folder}.py").write_text(GUEST_TEST.format(marker=marker))
    (tmp_path / "tests" / "test_unit.py").write_text(UNIT_TEST)
    result, ran = run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    guests = [(worker, test) for worker, outcome, test in ran if test.startswith(("tests/real/", "tests/faults/"))]
    units = [(worker, test) for worker, outcome, test in ran if test.startswith("tests/test_unit.py")]
    assert len(guests) == 8 and len(units) == 8 and {outcome for _, outcome, _ in ran} == {"PASSED"}, ran
    assert len({worker for worker, _ in guests}) == 1, guests
    assert [test for _, test in guests] == [f"tests/{folder}/test_{folder}.py::test_guest[{i}]"
                                            for folder in ("faults", "real") for i in range(4)], guests
    assert {worker for worker, _ in units} != {guests[0][0]}, "the unit tests ran beside the guests"


def test_a_real_test_outside_the_guest_folders_fails_with_the_fix(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_stray.py").write_text(GUEST_TEST.format(marker="real"))
    (tmp_path / "tests" / "test_unit.py").write_text(UNIT_TEST)
    result, ran = run(tmp_path)
    assert result.returncode == 1
    assert {(outcome, test.split("::")[0]) for _, outcome, test in ran} == \
        {("ERROR", "tests/test_stray.py"), ("PASSED", "tests/test_unit.py")}, ran
    assert "a real or faults test outside tests/real/ and tests/faults/, where `make test` would run it beside " \
        "the guests: move it there" in result.stdout
