"""Import: a patch as found (git format-patch file, mbox, a mail or archive page quoting the diff
with its whitespace mangled) anchored on a real tree and written as a clean `git format-patch` file,
one per patch of a series: what `harness patch import` does, and `harness try` when a patch does not
apply as given. patchmail.py reads the mail; the indentation of added lines is reindent.py's."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from harness import project
from harness.errors import BadPatchInput, HunkAnchorsTwice, HunkNotAnchored, PatchParseError
from harness.files import write_atomic
from harness.kernel import checkpatch, patches, patchmail, reindent
from harness.kernel.patchmail import FileDiff, Hunk, Message

SIGNATURE = "harness patch import"


# --- `harness patch import` ----------------------------------------------

@dataclass(frozen=True)
class Written:
    """A patch file an import wrote, and what the tree's checkpatch.pl found in it (None: the tree has none)."""
    path: Path
    findings: list[checkpatch.Finding] | None


@dataclass(frozen=True)
class Outcome:
    """What `harness patch import` did: the patch files written, and whether git apply takes them in order."""
    written: list[Written]
    applies: bool
    detail: str          # why git apply refuses them

    def stanza(self) -> str:
        """The [series] stanza of an experiment file that applies the patches written, in order."""
        return "[series]\npatches = [" + ", ".join(f'"{_patch_reference(w.path)}"' for w in self.written) + "]"


def import_patches(message: Path, tree: Path, output: Path, series: bool = False, author: str = "",
                   upstream: str = "") -> Outcome:
    """The patch in message anchored on tree and written to output; with series, every patch of message (an
    mbox or a folder of .patch files) into the folder output. Nothing is written unless every patch anchors.
    Each file is checked with git apply --check, in series order, and with the tree's checkpatch.pl.
    BadPatchInput when message and the options do not fit together."""
    parts = _parts(message, output, series, upstream)
    if series:
        texts = {output / patch.name: patch.text for patch in import_series(parts, tree, author)}
    else:
        texts = {output: import_message(parts[0].text, tree, message.name, author, upstream)}
    written = [_write(path, text) for path, text in texts.items()]
    applies, detail = patches.git_check_series(written, tree)
    return Outcome([Written(path, checkpatch.run(path, tree)) for path in written], applies, detail)


def _parts(message: Path, output: Path, series: bool, upstream: str) -> list[patchmail.Part]:
    """The patches message holds; BadPatchInput when it holds none or the options do not fit it."""
    parts = patchmail.split_series(message)
    if not parts:
        raise BadPatchInput(path=message, why="it holds a cover letter and no patch", fix="pass the patches too")
    if not series and (len(parts) > 1 or message.is_dir()):
        raise BadPatchInput(path=message, why=f"it holds {len(parts)} patches", fix="pass --series -o FOLDER")
    if series and upstream:
        raise BadPatchInput(path=message, why="--upstream names one commit", fix="import a series without it")
    if output.exists() and output.is_dir() != series:
        raise BadPatchInput(path=message, why=f"-o {output} is {'a file' if series else 'a folder'}",
                            fix="with --series, -o names a folder; without, the patch file")
    return parts


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, errors="surrogateescape")
    return path


def _patch_reference(path: Path) -> str:
    """How an experiment names a patch: relative to patches/ when it is there, else its path."""
    try:
        return str(path.resolve().relative_to(project.PATCHES))
    except ValueError:
        return str(path.resolve())


# --- anchoring a patch on the tree ----------------------------------------

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
    """The diff's hunks anchored on the file's text (current: as earlier patches of a series left it,
    else the tree's), with the tree's own old lines; added lines re-indented when loose (quoted)."""
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
    return ResolvedFile(path, old_text, patches.apply_hunks(old_text, resolved), resolved)


def _anchor(hunk: Hunk, file_lines, number, path, tree) -> tuple[int, bool]:
    """(start, exact): the one place the hunk's old lines sit in the file, exactly, or else ignoring
    whitespace (a quoted mail mangles it); refused when there is no such place or more than one."""
    exact = patches.find_anchors(hunk.old_lines(), file_lines, exact=True)
    if len(exact) == 1:
        return exact[0], True
    loose = exact or patches.find_anchors(hunk.old_lines(), file_lines, exact=False)
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
            text = text.rstrip() if trust_added else reindent.indent_for(text, written) + text.strip()
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


# --- rendering ----------------------------------------------------------

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
    """The diffstat git format-patch writes under '---' (bars scaled down to 50 columns)."""
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
