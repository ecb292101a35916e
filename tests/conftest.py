import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
DATA = TESTS / "data"
FAKES = TESTS / "fakes"
FAKELINUX = FAKES / "fakelinux"
SEED_MAIL = TESTS.parent / "patches" / "mail" / "do-wp-page-swapcache-review.txt"   # quoted and mangled


@pytest.fixture
def fake_tree(tmp_path) -> Path:
    """A writable copy of the fake kernel tree."""
    tree = tmp_path / "fakelinux"
    shutil.copytree(FAKELINUX, tree)
    return tree



# The tests that boot guests, build kernels or break the host on purpose (the real and faults tests, kept in
# tests/real and tests/faults) run one at a time, in the order written, on one pytest-xdist worker: two kernel
# builds or two guests at once would only fight over the two cores. `make test` runs `pytest -n 2`; the unit
# tests and the simulations, which need neither, run beside them on the other worker.
GUEST_FOLDERS = ("tests/real/", "tests/faults/")


def pytest_runtest_setup(item):
    if (item.get_closest_marker("real") or item.get_closest_marker("faults")) and \
            not item.nodeid.startswith(GUEST_FOLDERS):
        pytest.fail(f"a real or faults test outside {' and '.join(GUEST_FOLDERS)}, where `make test` would run it "
                    "beside the guests: move it there", pytrace=False)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GuestsInOneUnit(LoadScopeScheduling):
        """One work unit for every test under GUEST_FOLDERS (the largest, so it is sent first), one for each
        other test."""

        def _split_scope(self, nodeid: str) -> str:
            return "guests" if nodeid.startswith(GUEST_FOLDERS) else nodeid

    return GuestsInOneUnit(config, log)
