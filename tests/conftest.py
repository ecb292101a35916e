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
