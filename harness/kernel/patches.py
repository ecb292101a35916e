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
    return _import(text, tree, name, author, upstream, {})[0]


@dataclass(frozen=True)
class Imported:
    name: str         # NNNN-subject.patch, as git format-patch names it
    text: str
    origin: str       # where in the input it came from


def import_series(parts: list[patchmail.Part], tree: Path, author: str = "") -> list[Imported]:
    """Each patch of a series anchored on the tree as the patches before it left it."""
    overlay: dict[str, str] = {}          # path -> text after the patches imported so far
    imported = []
    for number, part in enumerate(parts, 1):
        text, message = _import(part.text, tree, part.origin, author, "", overlay)
        imported.append(Imported(patch_file_name(number, message.subject), text, part.origin))
    return imported


def patch_file_name(number: int, subject: str) -> str:
    """git format-patch's name: 0003-mm-do-this.patch (letters, digits, '.', '_' kept; runs of the
    rest become one '-'; cut to 64 characters with the number and .patch, as git cuts it)."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", subject).strip(".-")[:52]
    return f"{number:04d}-{slug or 'patch'}.patch"


def _import(text: str, tree: Path, name: str, author: str, upstream: str, overlay: dict[str, str]):
    """(clean text, message); overlay (path -> current text) is read before the tree and updated."""
    message = patchmail.parse(text, name)
    if author:
        message.author = author
    if not message.author:
        raise PatchParseError(path=name, why="no author found: pass --author 'Name <email>'")
    files = [_resolve_file(diff, tree, message.quoted, overlay.get(diff.path)) for diff in message.files]
    for resolved in files:
        overlay[resolved.path] = resolved.new_text
    return render(message, files, tree, upstream), message


@dataclass
class ResolvedFile:
    path: str
    old_text: str
    new_text: str
    hunks: list[Hunk]          # with real line numbers and real indentation


def _resolve_file(diff: FileDiff, tree: Path, loose: bool, current: str | None = None) -> ResolvedFile:
    path = diff.path
    target = tree / path
    if current is not None:
        old_text = current
    else:
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
    """The kernel-style indentation of an added line, given the lines written before it: inside a
    block comment, after one (the comment's own indentation), or after code, where a brace-less
    `if`/`else`/`for`/`while` body ends with its first statement, comments between them or not."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#") or re.match(r"^[A-Za-z_]\w*:$", stripped):
        return ""   # blank, preprocessor, goto label
    lines = [line for line in written if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return ""
    last = lines[-1]
    if _in_comment(last):
        return _leading(last) + " " if last.strip().startswith("/*") else _leading(last)
    if _is_comment(last):
        base = _leading(lines[_comment_start(lines)])
    else:
        base = _after_code(lines)
    if stripped.startswith("}"):
        base = _dedent(base)
    return base


def _after_code(lines: list[str]) -> str:
    """The indentation of the line after the code that ends lines (comments skipped)."""
    code = [index for index, line in enumerate(lines) if not _is_comment(line)]
    if not code:
        return _leading(lines[-1])
    last = lines[code[-1]]
    text = _code_of(last)
    if text.endswith("{"):
        return _leading(last) + "\t"
    if (column := _open_paren_column(last)) is not None:
        return _column_indent(column + 1)
    start = _statement_start(lines, code, len(code) - 1)
    if _is_bare_control(_joined(lines, code, start, len(code) - 1)):
        return _leading(lines[code[start]]) + "\t"
    if re.match(r"^(case\b.*|default\s*):$", text):
        return _leading(last) + "\t"
    if not text.endswith((";", "}")):
        return _leading(last)
    while start > 0:      # a complete statement: climb out of the brace-less headers it is the body of
        header = _statement_start(lines, code, start - 1)
        if not _is_bare_control(_joined(lines, code, header, start - 1)):
            break
        start = header
    return _leading(lines[code[start]])


def _statement_start(lines: list[str], code: list[int], end: int) -> int:
    """The position in code of the first line of the statement or header whose last line is code[end]
    (the line where its parentheses opened)."""
    depth, position = 0, end
    while True:
        text = _code_of(lines[code[position]])
        depth += text.count(")") - text.count("(")
        if depth <= 0 or position == 0:
            return position
        position -= 1


def _joined(lines: list[str], code: list[int], start: int, end: int) -> str:
    return " ".join(_code_of(lines[code[index]]) for index in range(start, end + 1))


def _code_of(line: str) -> str:
    """The code of a line without comments at its end, stripped."""
    return re.sub(r"\s*(/\*.*?\*/|//.*)\s*$", "", line.strip()).strip()


def _is_comment(line: str) -> bool:
    """A line that is all comment: part of a block comment, or a comment on its own."""
    code = line.strip()
    return code.startswith(("/*", "//")) or _comment_star(code)


def _comment_star(code: str) -> bool:
    """' * text', ' *' or ' */' of a block comment; not code such as '*pte = entry;'."""
    return code.startswith("*") and (len(code) == 1 or code[1] in " \t/")


def _comment_start(lines: list[str]) -> int:
    """The index of the line that opened the comment ending at lines[-1]."""
    index = len(lines) - 1
    while index > 0 and not lines[index].strip().startswith(("/*", "//")) and _is_comment(lines[index - 1]):
        index -= 1
    return index


def _in_comment(line: str) -> bool:
    code = line.strip()
    opens = code.startswith("/*") and "*/" not in code
    continues = _comment_star(code) and not code.startswith("*/") and not code.endswith("*/")
    return opens or continues


def _is_bare_control(code: str) -> bool:
    """`if (...)`, `for (...)`, `while (...)`, `else`: a header whose body is the next statement."""
    code = " ".join(code.split())
    if code in ("else", "do", "} else"):
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


# --- the tree's own style check ------------------------------------------

# What checkpatch is told to ignore: the "commit <id> upstream." line an import records is
# stable-tree style (GIT_COMMIT_ID), and its commit is not in an older tree (UNKNOWN_COMMIT_ID).
CHECKPATCH_IGNORED = ("GIT_COMMIT_ID", "UNKNOWN_COMMIT_ID")
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


def checkpatch(patch: Path, tree: Path) -> list[Finding] | None:
    """The tree's scripts/checkpatch.pl on patch; None when the tree has no checkpatch.pl."""
    script = tree / "scripts" / "checkpatch.pl"
    if not script.is_file():
        return None
    result = runner.run(["perl", script, f"--root={tree}", "--terse", "--no-summary", "--show-types",
                         "--ignore", ",".join(CHECKPATCH_IGNORED), Path(patch).resolve()], check=False, cwd=tree)
    lines = Path(patch).read_text(errors="surrogateescape").splitlines()
    diff_starts = next((index for index, line in enumerate(lines) if line.startswith("diff --git ")), len(lines))
    findings = []
    for line in result.output.splitlines():
        if match := _FINDING.match(line.strip()):
            number = int(match.group(1))
            text = lines[number - 1] if 0 < number <= len(lines) else ""
            in_code = number > diff_starts and text[:1] in ("+", "-", " ", "@") and text != "-- "
            findings.append(Finding(match.group(2), match.group(3), number, match.group(4), in_code))
    return findings


def checkpatch_summary(findings: list[Finding] | None, tree: Path) -> str:
    if findings is None:
        return f"checkpatch: {tree} has no scripts/checkpatch.pl, not checked"
    code = [finding for finding in findings if finding.in_code]
    count = {level: sum(f.level == level for f in code) for level in ("ERROR", "WARNING")}
    return (f"checkpatch: {count['ERROR']} error(s), {count['WARNING']} warning(s) in the code; "
            f"{len(findings) - len(code)} finding(s) in the commit message")
