"""Patches: import (anchor a possibly mangled diff on a real tree and write a clean patch),
check (does a series apply, hunk by hunk) and the git apply command line the build uses."""

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import runner
from harness.errors import HunkAnchorsTwice, HunkNotAnchored, PatchParseError
from harness.kernel import patchmail
from harness.kernel.patchmail import FileDiff, Hunk, Message

TAB_WIDTH = 8
SIGNATURE = "harness patch import"


# --- import --------------------------------------------------------------

def import_message(text: str, tree: Path, name: str = "message", author: str = "",
                   upstream: str = "") -> str:
    """Turn a patch as found (format-patch, mbox, quoted mail) into clean format-patch text for tree."""
    message = patchmail.parse(text, name)
    if author:
        message.author = author
    if not message.author:
        raise PatchParseError(path=name, why="no author found: pass --author 'Name <email>'")
    files = [_resolve_file(diff, tree, message.quoted) for diff in message.files]
    return render(message, files, tree, upstream)


@dataclass
class ResolvedFile:
    path: str
    old_text: str
    new_text: str
    hunks: list[Hunk]          # with real line numbers and real indentation


def _resolve_file(diff: FileDiff, tree: Path, loose: bool) -> ResolvedFile:
    path = diff.path
    target = tree / path
    old_text = target.read_text(errors="surrogateescape") if target.is_file() else ""
    file_lines = old_text.split("\n")
    resolved, delta = [], 0
    for number, hunk in enumerate(diff.hunks, 1):
        start, exact = _anchor(hunk, file_lines, number, path, tree) if hunk.old_lines() else (0, True)
        fixed = _restore(hunk, file_lines, start, exact and not loose)
        fixed.new_start = fixed.old_start + delta if fixed.old_count else fixed.old_start + delta + 1
        delta += fixed.new_count - fixed.old_count
        resolved.append(fixed)
    _check_order(resolved, path)
    return ResolvedFile(path, old_text, apply_hunks(old_text, resolved), resolved)


def _key(line: str) -> str:
    return re.sub(r"\s+", "", line)


def find_anchors(old_lines: list[str], file_lines: list[str], exact: bool) -> list[int]:
    """0-based starts where old_lines occur in file_lines (exactly, or ignoring all whitespace)."""
    normalise = (lambda line: line) if exact else _key
    want = [normalise(line) for line in old_lines]
    have = [normalise(line) for line in file_lines]
    size = len(want)
    return [start for start in range(len(have) - size + 1)
            if have[start] == want[0] and have[start:start + size] == want]


def _anchor(hunk: Hunk, file_lines, number, path, tree) -> tuple[int, bool]:
    exact = find_anchors(hunk.old_lines(), file_lines, exact=True)
    if len(exact) == 1:
        return exact[0], True
    loose = exact or find_anchors(hunk.old_lines(), file_lines, exact=False)
    if not loose:
        raise HunkNotAnchored(hunk=number, file=path, header=hunk.header, tree=tree)
    if len(loose) > 1:
        raise HunkAnchorsTwice(hunk=number, file=path, header=hunk.header, count=len(loose), tree=tree,
                               lines=", ".join(str(start + 1) for start in loose))
    return loose[0], False


def _restore(hunk: Hunk, file_lines: list[str], start: int, trust_added: bool) -> Hunk:
    """The hunk at start with the tree's own text for old lines and re-indented added lines."""
    lines, position = [], start
    written = file_lines[:start]          # the new file as far as this hunk has got
    for tag, text in hunk.lines:
        if tag == "+":
            text = text.rstrip() if trust_added else indent_for(text, written) + text.strip()
            written.append(text)
        else:
            text = file_lines[position]
            position += 1
            if tag == " ":
                written.append(text)
        lines.append((tag, text))
    old_count = sum(tag != "+" for tag, _ in lines)
    new_count = sum(tag != "-" for tag, _ in lines)
    return Hunk(start + 1 if old_count else start, old_count, 0, new_count, section_heading(file_lines, start), lines)


def _check_order(hunks: list[Hunk], path: str) -> None:
    for before, after in zip(hunks, hunks[1:]):
        if after.old_start < before.old_start + before.old_count:
            raise PatchParseError(path=path, why=f"hunks {before.header} and {after.header} overlap in the tree")


def section_heading(file_lines: list[str], start: int) -> str:
    """What git shows after @@: the last line before the hunk that starts with a letter, _ or $."""
    for line in reversed(file_lines[:start]):
        if re.match(r"^[A-Za-z_$]", line):
            return line.rstrip()[:80]
    return ""


# --- indentation of added lines ------------------------------------------

def indent_for(text: str, written: list[str]) -> str:
    """The kernel-style indentation of an added line, given the lines written before it."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#") or re.match(r"^[A-Za-z_]\w*:$", stripped):
        return ""   # blank, preprocessor, goto label
    previous = [line for line in written if line.strip()][-2:]
    if not previous:
        return ""
    last = previous[-1]
    before = previous[0] if len(previous) == 2 else ""
    base = _indent_after(last, before, stripped)
    if stripped.startswith("}") and not _in_comment(last):
        base = _dedent(base)
    return base


def _indent_after(last: str, before: str, stripped: str) -> str:
    indent = _leading(last)
    code = last.strip()
    if _in_comment(last):
        return indent + " " if code.startswith("/*") else indent
    if code.endswith("*/") and code.startswith("*"):
        return indent[:-1] if indent.endswith(" ") else indent   # back to the comment's opener
    if code.endswith("{"):
        return indent + "\t"
    if _open_paren_column(last) is not None:
        return _column_indent(_open_paren_column(last) + 1)
    if _is_bare_control(code):
        return indent + "\t"
    if code.endswith(";") and _is_bare_control(before.strip()):
        return _leading(before)
    return indent


def _in_comment(line: str) -> bool:
    code = line.strip()
    opens = code.startswith("/*") and "*/" not in code
    continues = code.startswith("*") and not code.startswith("*/") and not code.endswith("*/")
    return opens or continues


def _is_bare_control(code: str) -> bool:
    """`if (...)`, `for (...)`, `while (...)`, `else`: a header whose body is the next statement."""
    if code in ("else", "do"):
        return True
    return bool(re.match(r"^(}\s*)?(if|for|while|else\s+if|switch)\s*\(.*\)$", code)) and _balanced(code)


def _balanced(code: str) -> bool:
    return code.count("(") == code.count(")")


def _open_paren_column(line: str) -> int | None:
    """The display column of the last unclosed '(' in line, if any."""
    stack, column = [], 0
    for char in line:
        if char == "(":
            stack.append(column)
        elif char == ")" and stack:
            stack.pop()
        column = (column // TAB_WIDTH + 1) * TAB_WIDTH if char == "\t" else column + 1
    return stack[-1] if stack else None


def _column_indent(column: int) -> str:
    return "\t" * (column // TAB_WIDTH) + " " * (column % TAB_WIDTH)


def _leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _dedent(indent: str) -> str:
    return indent[:-1] if indent.endswith("\t") else indent[:-TAB_WIDTH] if indent.endswith(" " * TAB_WIDTH) else indent


# --- applying and rendering ---------------------------------------------

def apply_hunks(old_text: str, hunks: list[Hunk]) -> str:
    """old_text with the (already anchored) hunks applied."""
    lines = old_text.split("\n") if old_text else []
    for hunk in reversed(hunks):
        start = hunk.old_start - 1 if hunk.old_count else hunk.old_start
        lines[start:start + hunk.old_count] = hunk.new_lines()
    return "\n".join(lines)


def render(message: Message, files: list[ResolvedFile], tree: Path, upstream: str = "") -> str:
    """Clean `git format-patch` text."""
    out = ["From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
           f"From: {message.author}"]
    if message.date:
        out.append(f"Date: {message.date}")
    out += [f"Subject: [PATCH] {message.subject}", ""]
    if upstream:
        out += [f"commit {upstream} upstream.", ""]
    out += [message.body, "---", *diffstat(files), ""]
    for resolved in files:
        out += _file_diff(resolved)
    out += ["-- ", SIGNATURE, ""]
    return "\n".join(out) + "\n"


def _blob_id(text: str) -> str:
    data = text.encode(errors="surrogateescape")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()[:12]


def _file_diff(resolved: ResolvedFile) -> list[str]:
    mode = oct((0o100644))[2:]
    out = [f"diff --git a/{resolved.path} b/{resolved.path}",
           f"index {_blob_id(resolved.old_text)}..{_blob_id(resolved.new_text)} {mode}",
           f"--- a/{resolved.path}", f"+++ b/{resolved.path}"]
    for hunk in resolved.hunks:
        out.append(hunk.header + (f" {hunk.section}" if hunk.section else ""))
        out += [tag + text for tag, text in hunk.lines]
    return out


def diffstat(files: list[ResolvedFile]) -> list[str]:
    counts = [(f.path, sum(t == "+" for h in f.hunks for t, _ in h.lines),
               sum(t == "-" for h in f.hunks for t, _ in h.lines)) for f in files]
    width = max(len(path) for path, _, _ in counts)
    largest = max(added + removed for _, added, removed in counts) or 1
    scale = min(1.0, 50 / largest)
    out = []
    for path, added, removed in counts:
        out.append(f" {path.ljust(width)} | {added + removed} "
                   f"{'+' * round(added * scale)}{'-' * round(removed * scale)}")
    added = sum(a for _, a, _ in counts)
    removed = sum(r for _, _, r in counts)
    plural = "s" if len(counts) != 1 else ""
    out.append(f" {len(counts)} file{plural} changed, {added} insertion{'s' if added != 1 else ''}(+), "
               f"{removed} deletion{'s' if removed != 1 else ''}(-)")
    return out


# --- checking a series ---------------------------------------------------

@dataclass(frozen=True)
class HunkReport:
    patch: str
    file: str
    number: int
    header: str
    ok: bool
    detail: str


def check_series(patch_files, tree: Path) -> list[HunkReport]:
    """Apply the series in order to a scratch copy of the files it touches; report every hunk."""
    parsed = [(Path(p), patchmail.parse(Path(p).read_text(errors="surrogateescape"), str(p))) for p in patch_files]
    contents = {}
    for _, message in parsed:
        for diff in message.files:
            if diff.path not in contents:
                source = tree / diff.path
                contents[diff.path] = source.read_text(errors="surrogateescape") if source.is_file() else ""
    reports = []
    for patch, message in parsed:
        for diff in message.files:
            contents[diff.path], file_reports = _check_file(patch.name, diff.path, diff, contents[diff.path])
            reports += file_reports
    return reports


def _check_file(patch_name: str, path: str, diff: FileDiff, text: str) -> tuple[str, list[HunkReport]]:
    file_lines = text.split("\n") if text else []
    reports, placed = [], []
    for number, hunk in enumerate(diff.hunks, 1):
        ok, detail, start = _locate(hunk, file_lines)
        reports.append(HunkReport(patch_name, path, number, hunk.header, ok, detail))
        if ok:
            placed.append(Hunk(start + 1 if hunk.old_count else start, len(hunk.old_lines()), 0,
                               len(hunk.new_lines()), "", hunk.lines))
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
        for patch in patch_files:
            for diff in patchmail.parse(Path(patch).read_text(errors="surrogateescape"), str(patch)).files:
                source = tree / diff.old_path
                if diff.old_path != "/dev/null" and source.is_file() and not (scratch / diff.old_path).exists():
                    (scratch / diff.old_path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, scratch / diff.old_path)
        for patch in patch_files:
            result = runner.run(git_apply_argv(patch), cwd=scratch, env=git_env(scratch), check=False)
            if result.returncode != 0:
                return False, f"{Path(patch).name}: " + "; ".join(result.output.strip().splitlines())
        return True, ""
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
