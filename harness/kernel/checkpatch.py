"""The tree's own style check: run its scripts/checkpatch.pl on a patch file and read the findings,
telling those in the diff (an import's business) from those in the commit message."""

import re
from dataclasses import dataclass
from pathlib import Path

from harness import runner

# What checkpatch is told to ignore: the "commit <id> upstream." line an import records is
# stable-tree style (GIT_COMMIT_ID), and its commit is not in an older tree (UNKNOWN_COMMIT_ID).
IGNORED = ("GIT_COMMIT_ID", "UNKNOWN_COMMIT_ID")
_FINDING = re.compile(r"^[^:]*:(\d+): (ERROR|WARNING|CHECK):(\w+): (.*)$")


@dataclass(frozen=True)
class Finding:
    level: str        # ERROR | WARNING | CHECK
    kind: str         # checkpatch's type, such as LEADING_SPACE
    line: int         # in the patch file
    text: str
    in_code: bool     # in the diff (the import's business), not in the commit message

    def __str__(self) -> str:
        return f"{self.level}:{self.kind} line {self.line}{'' if self.in_code else ' (message)'}: {self.text}"


def run(patch: Path, tree: Path) -> list[Finding] | None:
    """The tree's scripts/checkpatch.pl on patch; None when the tree has no checkpatch.pl."""
    script = tree / "scripts" / "checkpatch.pl"
    if not script.is_file():
        return None
    result = runner.run(["perl", script, f"--root={tree}", "--terse", "--no-summary", "--show-types",
                         "--ignore", ",".join(IGNORED), Path(patch).resolve()], check=False, cwd=tree)
    return findings(result.output, Path(patch).read_text(errors="surrogateescape").splitlines())


def findings(output: str, lines: list[str]) -> list[Finding]:
    """The findings of checkpatch's --terse output on the patch whose lines are given."""
    diff_starts = next((index for index, line in enumerate(lines) if line.startswith("diff --git ")), len(lines))
    found = []
    for line in output.splitlines():
        if match := _FINDING.match(line.strip()):
            number = int(match.group(1))
            text = lines[number - 1] if 0 < number <= len(lines) else ""
            # a line number past the diff's start is in the diff only on a diff line: the "-- "
            # signature below the diff is the format-patch trailer, not code
            in_code = number > diff_starts and text[:1] in ("+", "-", " ", "@") and text != "-- "
            found.append(Finding(match.group(2), match.group(3), number, match.group(4), in_code))
    return found


def summary(found: list[Finding] | None, tree: Path) -> str:
    """One line: the errors and warnings in the code, and how many findings are in the message."""
    if found is None:
        return f"checkpatch: {tree} has no scripts/checkpatch.pl, not checked"
    code = [finding for finding in found if finding.in_code]
    count = {level: sum(f.level == level for f in code) for level in ("ERROR", "WARNING")}
    return (f"checkpatch: {count['ERROR']} error(s), {count['WARNING']} warning(s) in the code; "
            f"{len(found) - len(code)} finding(s) in the commit message")
