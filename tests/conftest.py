import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
DATA = TESTS / "data"
FAKES = TESTS / "fakes"
FAKELINUX = FAKES / "fakelinux"
SEED_MAIL = TESTS.parent / "patches" / "mail" / "do-wp-page-swapcache-review.txt"   # quoted and mangled


def git(repo: Path, *args: str) -> str:
    """git ARGS in repo, as a committer of its own (the machine's git may have none); its output."""
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=Ann Author", "-c", "user.email=ann@example.org",
                           *args], check=True, capture_output=True, text=True).stdout


def git_repo(repo: Path, files: dict[str, str], message: str = "one") -> str:
    """A new git repository at repo holding files (path -> text) in one commit; that commit's id."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def fake_tree(tmp_path) -> Path:
    """A writable copy of the fake kernel tree."""
    tree = tmp_path / "fakelinux"
    shutil.copytree(FAKELINUX, tree)
    return tree
