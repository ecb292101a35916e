"""The commit-msg hook that `make setup` installs: the kernel's style for every commit."""

import subprocess

import pytest

from harness.project import ROOT

HOOK = ROOT / ".githooks" / "commit-msg"
BODY = "\n\nWhy, with the figures: 529 passed (pytest -q).\n"


def verdict(tmp_path, message: str) -> tuple[int, str]:
    file = tmp_path / "COMMIT_EDITMSG"
    file.write_text(message)
    done = subprocess.run([HOOK, file], capture_output=True, text=True)
    return done.returncode, done.stderr


@pytest.mark.parametrize("message", ["results: RunMetadata, the one record of a run's metadata" + BODY,
                                     "x" * 72 + BODY, "Merge branch 'split-compare'\n",
                                     "bench: the conductor\n\nWhy.\n# Please enter the commit message\n"])
def test_a_commit_in_the_kernels_style_passes(tmp_path, message):
    assert verdict(tmp_path, message) == (0, "")


def test_a_subject_over_72_columns_is_refused_with_its_width(tmp_path):
    status, said = verdict(tmp_path, "x" * 73 + BODY)
    assert status == 1 and "the subject is 73 columns; at most 72" in said


@pytest.mark.parametrize("message", ["bench: the conductor\n", "bench: the conductor\nWhy, on line two.\n",
                                     "bench: the conductor\n\n\n# only comments\n"])
def test_a_commit_without_a_body_after_a_blank_line_is_refused(tmp_path, message):
    status, said = verdict(tmp_path, message)
    assert status == 1 and "a blank line after the subject, then a body" in said
