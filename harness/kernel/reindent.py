"""The C re-indenter: the kernel-style indentation of a line a patch adds, from the lines written
before it. An import needs it for a diff quoted in a mail, whose leading whitespace the archive
stripped or mangled (harness/kernel/importer.py)."""

import re

TAB_WIDTH = 8


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
    return _leading(lines[code[_outermost_header(lines, code, start)]])


def _outermost_header(lines: list[str], code: list[int], start: int) -> int:
    """A complete statement begins at code[start]: the position in code of the outermost brace-less
    header it is the body of (start itself when there is none); the next line goes back there."""
    while start > 0:
        header = _statement_start(lines, code, start - 1)
        if not _is_bare_control(_joined(lines, code, header, start - 1)):
            break
        start = header
    return start


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
