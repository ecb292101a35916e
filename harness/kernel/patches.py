"""Applying patches to a tree: where a hunk's lines sit in a file, a series checked hunk by hunk
(`harness patch check`) and with git apply --check, and the git apply command line the build uses."""

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import runner
from harness.errors import PatchParseError
from harness.kernel import patchmail
from harness.kernel.patchmail import FileDiff, Hunk


def find_anchors(old_lines: list[str], file_lines: list[str], exact: bool) -> list[int]:
    """0-based starts where old_lines occur in file_lines (exactly, or ignoring all whitespace)."""
    normalise = (lambda line: line) if exact else _key
    want = [normalise(line) for line in old_lines]
    have = [normalise(line) for line in file_lines]
    size = len(want)
    return [start for start in range(len(have) - size + 1)
            if have[start] == want[0] and have[start:start + size] == want]


def _key(line: str) -> str:
    return re.sub(r"\s+", "", line)


def apply_hunks(old_text: str, hunks: list[Hunk]) -> str:
    """old_text with the (already anchored) hunks applied."""
    lines = old_text.split("\n") if old_text else []
    for hunk in reversed(hunks):
        start = hunk.old_start - 1 if hunk.old_count else hunk.old_start
        lines[start:start + hunk.old_count] = hunk.new_lines()
    return "\n".join(lines)


# --- checking a series ---------------------------------------------------

@dataclass(frozen=True)
class HunkReport:
    patch: str
    file: str
    number: int
    header: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class SeriesCheck:
    """What `harness patch check` says of a series: every hunk, and whether git apply takes it all."""
    reports: list[HunkReport]
    applies: bool        # git apply --check takes the series, in order
    detail: str          # why it does not

    @property
    def ok(self) -> bool:
        return self.applies and all(report.ok for report in self.reports)


def check(patch_files, tree: Path) -> SeriesCheck:
    """The series checked hunk by hunk (check_series) and as git applies it (git_check_series)."""
    reports = check_series(patch_files, tree)
    return SeriesCheck(reports, *git_check_series(patch_files, tree))


def check_series(patch_files, tree: Path) -> list[HunkReport]:
    """Apply the series in order to a scratch copy of the files it touches; report every hunk."""
    parsed = [(Path(p), patchmail.parse(Path(p).read_text(errors="surrogateescape"), str(p))) for p in patch_files]
    contents = _originals([message for _, message in parsed], tree)
    reports = []
    for patch, message in parsed:
        for diff in message.files:
            contents[diff.path], file_reports = _check_file(patch.name, diff.path, diff, contents[diff.path])
            reports += file_reports
    return reports


def _originals(messages: list[patchmail.Message], tree: Path) -> dict[str, str]:
    """path -> the tree's text of every file the messages touch ('' for a file they create)."""
    contents = {}
    for message in messages:
        for diff in message.files:
            if diff.path not in contents:
                source = tree / diff.path
                contents[diff.path] = source.read_text(errors="surrogateescape") if source.is_file() else ""
    return contents


def _check_file(patch_name: str, path: str, diff: FileDiff, text: str) -> tuple[str, list[HunkReport]]:
    file_lines = text.split("\n") if text else []
    reports, placed = [], []
    for number, hunk in enumerate(diff.hunks, 1):
        ok, detail, start = _locate(hunk, file_lines)
        reports.append(HunkReport(patch_name, path, number, hunk.header, ok, detail))
        if ok:
            placed.append(Hunk(start + 1 if hunk.old_count else start, len(hunk.old_lines()), 0,
                               len(hunk.new_lines()), "", hunk.lines))
    # the next patch of the series sees this one applied only if all of it applied
    return (apply_hunks(text, placed) if len(placed) == len(diff.hunks) else text), reports


def _locate(hunk: Hunk, file_lines) -> tuple[bool, str, int]:
    if not hunk.old_lines():
        return True, "adds a new file", 0
    exact = find_anchors(hunk.old_lines(), file_lines, exact=True)
    if exact:
        start = min(exact, key=lambda s: abs(s + 1 - hunk.old_start))
        offset = start + 1 - hunk.old_start
        return True, f"applies at line {start + 1}" + (f" (offset {offset:+d} lines)" if offset else ""), start
    loose = find_anchors(hunk.old_lines(), file_lines, exact=False)
    if loose:
        where = ", ".join(str(s + 1) for s in loose)
        return (False, f"matches only when whitespace is ignored (line {where}): re-import it with "
                "'harness patch import'", -1)
    return False, "context and removed lines not found: the file differs from what the patch expects", -1


def first_failure(patch: Path, tree: Path) -> str:
    """'mm/memory.c hunk 1' for the first hunk of patch that does not apply to tree."""
    try:
        failed = [r for r in check_series([patch], tree) if not r.ok]
    except PatchParseError as error:
        return str(error)
    return f"{failed[0].file} hunk {failed[0].number}" if failed else "a place git apply refuses"


# --- git apply -----------------------------------------------------------

def touched_files(patch: Path) -> list[str]:
    """Paths in the tree that patch modifies or deletes."""
    message = patchmail.parse(Path(patch).read_text(errors="surrogateescape"), str(patch))
    return [diff.old_path for diff in message.files if diff.old_path != "/dev/null"]


def git_apply_argv(patch: Path, check: bool = False) -> list[str]:
    return ["git", "apply", "--whitespace=nowarn", *(["--check"] if check else []), Path(patch).resolve()]


def git_env(tree: Path) -> dict[str, str]:
    """Keep git from treating a repository above the tree as the one to patch."""
    return {"GIT_CEILING_DIRECTORIES": str(Path(tree).resolve().parent)}


def git_check_series(patch_files, tree: Path) -> tuple[bool, str]:
    """git apply --check of a whole series, in order, on a scratch copy of the touched files."""
    scratch = Path(tempfile.mkdtemp(prefix="harness-check-"))
    try:
        _copy_touched(patch_files, tree, scratch)
        for patch in patch_files:
            result = runner.run(git_apply_argv(patch), cwd=scratch, env=git_env(scratch), check=False)
            if result.returncode != 0:
                return False, f"{Path(patch).name}: " + "; ".join(result.output.strip().splitlines())
        return True, ""
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _copy_touched(patch_files, tree: Path, scratch: Path) -> None:
    """The tree's files the series touches, copied into scratch (a kernel tree is too big to copy whole)."""
    for patch in patch_files:
        for diff in patchmail.parse(Path(patch).read_text(errors="surrogateescape"), str(patch)).files:
            # the new path too: git apply refuses to create (or rename onto) a file the tree has
            for path in dict.fromkeys((diff.old_path, diff.new_path)):
                source = tree / path
                if path != "/dev/null" and source.is_file() and not (scratch / path).exists():
                    (scratch / path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, scratch / path)
