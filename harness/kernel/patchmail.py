"""Reading a patch out of what people send: git format-patch files, mboxes, and mailing-list
messages or archive pages that quote the diff ('> ' prefixes), often with whitespace mangled.

The result is a Message whose hunks hold the lines as found; anchoring them on a real tree
and restoring indentation is importer.py's job (with reindent.py).
"""

import email
import email.policy
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import PatchParseError

_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_QUOTE = re.compile(r"^> ?")
_DIFF_START = re.compile(r"^(diff --git |--- (a/|/dev/null))")
_MBOX_FROM = re.compile(r"^From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ")      # the From_ line opening each message
_NUMBERED = re.compile(r"\[[^\]]*?\b(\d+)/(\d+)\s*\]")                        # [PATCH v2 3/9]


@dataclass
class Hunk:
    old_start: int
    old_count: int
    new_start: int
    new_count: int
    section: str
    lines: list[tuple[str, str]] = field(default_factory=list)   # (' ' | '-' | '+', text)

    @property
    def header(self) -> str:
        return f"@@ -{self.old_start},{self.old_count} +{self.new_start},{self.new_count} @@"

    def old_lines(self) -> list[str]:
        return [text for tag, text in self.lines if tag != "+"]

    def new_lines(self) -> list[str]:
        return [text for tag, text in self.lines if tag != "-"]


@dataclass
class FileDiff:
    old_path: str      # path in the tree, or /dev/null
    new_path: str
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The file's path in the tree (the new path for a file the patch creates)."""
        return self.new_path if self.old_path == "/dev/null" else self.old_path


@dataclass
class Message:
    subject: str = ""
    author: str = ""
    date: str = ""
    body: str = ""          # the commit message, without the subject
    files: list[FileDiff] = field(default_factory=list)
    quoted: bool = False    # the diff came quoted in a reply; whitespace is not to be trusted


def parse(text: str, name: str = "message") -> Message:
    """Find the patch in text: headers, commit message and diff."""
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    quoted = any(_QUOTE.match(line) and _DIFF_START.match(_QUOTE.sub("", line, count=1)) for line in lines)
    message = Message(quoted=quoted)
    _read_headers(text, lines, message)
    patch_lines = _unquote(lines) if quoted else _after_headers(lines)
    message.body, diff_lines = _split_body(patch_lines)
    message.files = _parse_diff(diff_lines, loose=quoted)
    if quoted and not message.author:
        message.author = _first_signoff(message.body)
    if not message.files or not any(diff.hunks for diff in message.files):
        raise PatchParseError(path=name, why="no 'diff --git' or '--- a/' section with @@ hunks found")
    return message


@dataclass(frozen=True)
class Part:
    """One message of a series: its text, where it came from, and its [n/N] place."""
    text: str
    origin: str
    number: int | None = None
    total: int | None = None

    @property
    def is_cover_letter(self) -> bool:
        return self.number == 0


def split_series(source: Path) -> list[Part]:
    """The patches in source, in series order: an mbox (git format-patch --stdout, or a mail folder
    exported as one file) or a folder of .patch files. The cover letter ([PATCH 0/N]) is left out;
    numbered messages go by their number, the rest keep their order."""
    if source.is_dir():
        texts = [(path.read_text(errors="surrogateescape"), path.name) for path in sorted(source.glob("*.patch"))]
        if not texts:
            raise PatchParseError(path=source, why="the folder holds no .patch files")
    else:
        texts = [(text, f"{source.name} message {index}") for index, text in
                 enumerate(split_mbox(source.read_text(errors="surrogateescape")), 1)]
    parts = []
    for text, origin in texts:
        subject = _subject_line(text)
        numbered = _NUMBERED.search(subject)
        parts.append(Part(text, origin, *(int(group) for group in numbered.groups())) if numbered
                     else Part(text, origin))
    patches = [part for part in parts if not part.is_cover_letter]
    numbers = [part.number for part in patches if part.number is not None]
    if len(set(numbers)) != len(numbers):
        raise PatchParseError(path=source, why=f"patch numbers repeat ({', '.join(map(str, sorted(numbers)))}): "
                              "keep one version of each patch of the series")
    return sorted(patches, key=lambda part: part.number if part.number is not None else 0) \
        if len(numbers) == len(patches) else patches


def split_mbox(text: str) -> list[str]:
    """The messages of an mbox; a text without From_ lines is one message."""
    text = text.replace("\r\n", "\n")
    messages, current = [], []
    for line in text.split("\n"):
        if _MBOX_FROM.match(line) and any(part.strip() for part in current):
            messages.append("\n".join(current))
            current = []
        current.append(line)
    messages.append("\n".join(current))
    return [message for message in messages if message.strip()]


def _subject_line(text: str) -> str:
    """The Subject header (unfolded), or the first line of an archive page."""
    match = re.search(r"^Subject:\s*(.*(?:\n[ \t].*)*)", text, re.M | re.I)
    if match:
        return " ".join(match.group(1).split())
    return next((line for line in text.splitlines() if line.strip()), "")


def _unquote(lines: list[str]) -> list[str]:
    """The quoted lines, one level of '> ' removed. Where the reply's own text interrupts the
    quoted commit message, a blank line keeps the paragraphs apart."""
    kept, interrupted, in_diff = [], False, False
    for line in lines:
        if not _QUOTE.match(line):
            interrupted = interrupted or bool(kept)
            continue
        line = _QUOTE.sub("", line, count=1)
        in_diff = in_diff or bool(_DIFF_START.match(line)) or line.rstrip() == "---"
        if interrupted and not in_diff and kept[-1].strip():
            kept.append("")
        interrupted = False
        kept.append(line)
    return kept


def clean_subject(subject: str) -> str:
    """'Re: [PATCH RFC v2 1/9] mm: x' -> 'mm: x'."""
    subject = " ".join(subject.split())
    while True:
        stripped = re.sub(r"^(?:(?:re|fwd?|aw):\s*|\[[^\]]*\]\s*)", "", subject, flags=re.I)
        if stripped == subject:
            return subject
        subject = stripped


def _header_block(lines: list[str]) -> tuple[int, int] | None:
    """(start, end) of a mail header block at the top of lines, or None when there is none."""
    start = 1 if lines and lines[0].startswith("From ") else 0
    end = lines.index("", start) if "" in lines[start:] else len(lines)
    block = lines[start:end]
    well_formed = all(re.match(r"^([A-Za-z0-9-]+: |[ \t])", line) for line in block)
    if block and well_formed and any(re.match(r"^(From|Subject): ", line, re.I) for line in block):
        return start, end
    return None


def _read_headers(text: str, lines: list[str], message: Message) -> None:
    block = _header_block(lines)
    if block:
        start = block[0]
        mail = email.message_from_string("\n".join(lines[start:]), policy=email.policy.default)
        message.subject = clean_subject(str(mail.get("Subject", "")))
        message.author = str(mail.get("From", ""))
        message.date = str(mail.get("Date", ""))
        return
    # An archive page: title on the first line, pseudo-headers after it; the patch's author
    # is whoever the reply quotes, taken from the quoted sign-off later.
    message.subject = clean_subject(next((line for line in lines if line.strip()), ""))


def _after_headers(lines: list[str]) -> list[str]:
    """The lines after the mail headers (the first blank line), or all lines if there are none."""
    block = _header_block(lines)
    return lines[block[1] + 1:] if block else lines


def _split_body(lines: list[str]) -> tuple[str, list[str]]:
    """Commit message (up to the '---' line or the diff) and the rest."""
    body = []
    for index, line in enumerate(lines):
        if line.rstrip() == "---" or _DIFF_START.match(line):
            return _trim_body(body), lines[index:]
        body.append(line)
    return _trim_body(body), []


def _trim_body(body: list[str]) -> str:
    # Drop a leading attribution line such as "On 1/26/22 10:55, Name wrote:".
    while body and (not body[0].strip() or re.match(r"^On .* wrote:$", body[0].strip())):
        body.pop(0)
    return "\n".join(line.rstrip() for line in body).strip("\n")


def _first_signoff(body: str) -> str:
    match = re.search(r"^Signed-off-by:\s*(.+)$", body, re.M)
    return match.group(1).strip() if match else ""


def _parse_diff(lines: list[str], loose: bool) -> list[FileDiff]:
    files: list[FileDiff] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ "):
            files.append(FileDiff(_path(line[4:]), _path(lines[index + 1][4:])))
            index += 2
            continue
        header = _HUNK_HEADER.match(line)
        if header and files:
            hunk, index = _read_hunk(header, lines, index + 1, loose)
            files[-1].hunks.append(hunk)
            continue
        index += 1
    return files


def _path(text: str) -> str:
    path = text.split("\t")[0].strip()
    return path if path == "/dev/null" else re.sub(r"^[ab]/", "", path)


def _read_hunk(header, lines, index, loose) -> tuple[Hunk, int]:
    old_count = int(header.group(2) if header.group(2) is not None else 1)
    new_count = int(header.group(4) if header.group(4) is not None else 1)
    hunk = Hunk(int(header.group(1)), old_count, int(header.group(3)), new_count, header.group(5).strip())
    old_seen = new_seen = 0
    while index < len(lines) and (old_seen < old_count or new_seen < new_count):
        line = lines[index]
        if _HUNK_HEADER.match(line) or line.startswith("diff --git ") or line == "-- ":
            break
        index += 1
        if line.startswith("\\"):
            continue
        tag, text = _classify(line, loose)
        hunk.lines.append((tag, text))
        old_seen += tag != "+"
        new_seen += tag != "-"
    return hunk, index


def _classify(line: str, loose: bool) -> tuple[str, str]:
    if line[:1] in ("+", "-", " "):
        return line[0], line[1:]
    if loose or line == "":
        return " ", line   # a context line whose leading space the archive stripped
    raise PatchParseError(path="diff", why=f"unexpected line in a hunk: {line[:60]!r}")
