"""The object code of two builds compared: did a patch change the machine code, and where.

Three views of two vmlinux files:
- sections: the size and a hash of every executable section (readelf); equal bytes in all of
  them mean the code is identical, whatever the patch changed in the source;
- functions: every function disassembled (objdump -d) with addresses, RIP displacements and
  offsets taken out (`call <schedule>` stays, where schedule lies does not), hashed per
  function; a function whose hash differs had its code changed;
- sizes: the tree's own scripts/bloat-o-meter, the table kernel developers know.
A build's sections and function hashes are computed once and kept in its folder, with the
functions that live in init sections (run at boot, then freed) and those that the function
profiler cannot see (no `call __fentry__` at their start: notrace, which every inline function's
out-of-line copy is, or the cold part of another function).
"""

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

from harness import runner
from harness.files import write_atomic
from harness.results import ObjectCode

FACTS_FILE = "object-code.json"
FACTS_VERSION = 4
INIT_SECTIONS = (".init.", ".exit.", ".head.text")     # freed after boot, or never run after it
_SECTION = re.compile(r"^\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+\S+\s+(\S*)")
_FUNCTION = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_SECTION_HEAD = re.compile(r"^Disassembly of section (\S+):$")
_INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\t(.*)$")
_ADDRESS = re.compile(r"\b(?:0x)?f{8}[0-9a-f]{8}\b|-0x7[0-9a-f]{7}\b")   # absolute, or sign-extended 32-bit
_PADDING = re.compile(r"^(?:int3|(?:\S+ )*nop\w*\b.*|xchg +%ax,%ax|data16 .*)$")
_RIP = re.compile(r"-?0x[0-9a-f]+\(%rip\)")
_OFFSET = re.compile(r"\+0x[0-9a-f]+>")


def facts(vmlinux: Path, keep_in: Path | None = None) -> dict:
    """Sections and per-function hashes of vmlinux, from keep_in/object-code.json when it is there."""
    kept = keep_in / FACTS_FILE if keep_in else None
    if kept and kept.is_file():
        data = json.loads(kept.read_text())
        if data.get("version") == FACTS_VERSION:
            return data
    data = {"version": FACTS_VERSION, "sections": sections(vmlinux), **disassembled(vmlinux)}
    if kept:
        write_atomic(kept, json.dumps(data) + "\n")
    return data


def sections(vmlinux: Path) -> dict[str, list]:
    """name -> [size, sha256 of the bytes] of every executable section."""
    found = {}
    with open(vmlinux, "rb") as stream:
        for line in runner.output_of(["readelf", "-S", "-W", vmlinux]).splitlines():
            match = _SECTION.match(line)
            if match and "X" in match.group(4):
                offset, size = int(match.group(2), 16), int(match.group(3), 16)
                stream.seek(offset)
                found[match.group(1)] = [size, hashlib.sha256(stream.read(size)).hexdigest()]
    return found


def function_hashes(vmlinux: Path) -> dict[str, list[str]]:
    """function -> the sorted hashes of its normalised disassembly (static functions of one name
    can have several copies, and a patch can add or drop one)."""
    return disassembled(vmlinux)["functions"]


def disassembled(vmlinux: Path) -> dict:
    """{"functions": function hashes (above), "init": functions whose every copy is in an init section,
    "untraced": functions with a copy that does not start with a call of __fentry__ (the function profiler
    cannot count it)}."""
    hashes: dict[str, list[str]] = {}
    init, live, untraced = set(), set(), set()
    name, digest, section, first = None, None, "", True

    def close():
        if name is not None:
            hashes.setdefault(name, []).append(digest.hexdigest()[:16])
    for line in runner.lines_of(["objdump", "-d", "--no-show-raw-insn", "-w", str(vmlinux)]):
        if match := _FUNCTION.match(line):
            close()
            name, digest, first = match.group(1), hashlib.sha256(), True
            (init if section.startswith(INIT_SECTIONS) else live).add(name)
        elif match := _SECTION_HEAD.match(line):
            close()
            name, section = None, match.group(1)
        elif name is not None and (match := _INSTRUCTION.match(line)):
            if first and not match.group(1).startswith("endbr64"):     # IBT's landing pad comes first
                if "__fentry__" not in match.group(1):
                    untraced.add(name)
                first = False
            if not _PADDING.match(match.group(1)):
                digest.update(normalise(match.group(1)).encode() + b"\n")
    close()
    return {"functions": {name: sorted(copies) for name, copies in hashes.items()}, "init": sorted(init - live),
            "untraced": sorted(untraced)}


def normalise(instruction: str) -> str:
    """An instruction without what moves when other code moves: absolute addresses, RIP
    displacements and symbol offsets (`call ffffffff8100042b <f>` -> `call A <f>`). Padding
    between functions (int3, nops) is left out before this."""
    text = _ADDRESS.sub("A", instruction)
    text = _RIP.sub("R(%rip)", text)
    return " ".join(_OFFSET.sub("+>", text).split())


def compare(variant: str, baseline: str, old: dict, new: dict, bloat: str = "") -> ObjectCode:
    """The difference between two builds' facts."""
    differing = {name: [old["sections"].get(name, [0])[0], new["sections"].get(name, [0])[0]]
                 for name in sorted(set(old["sections"]) | set(new["sections"]))
                 if old["sections"].get(name) != new["sections"].get(name)}
    before, after = old["functions"], new["functions"]
    changed = [name + (f" ({len(before[name])} -> {len(after[name])} copies)" if len(before[name]) != len(after[name])
                       else "") for name in sorted(set(before) & set(after)) if before[name] != after[name]]
    difference = ObjectCode(variant, baseline, not differing, [] if not differing else changed,
                            sorted(set(after) - set(before)), sorted(set(before) - set(after)), differing, bloat)
    touched = difference.functions
    init = set(old.get("init", ())) | set(new.get("init", ()))
    untraced = set(old.get("untraced", ())) | set(new.get("untraced", ()))
    return replace(difference, init=[name for name in touched if name in init],
                   untraced=[name for name in touched if name in untraced and name not in init],
                   shared=[name for name in touched if name not in init and _kept_copy(before, after, name)])


def _kept_copy(before: dict, after: dict, name: str) -> bool:
    """Whether a changed name also names a copy the patch left as it was: several static functions of one name
    (in different files, or an inline function's out-of-line copies), of which some did not change. The
    profiler counts every function of a name together, so its calls may be the unchanged ones'."""
    old, new = list(before.get(name, ())), list(after.get(name, ()))
    return any(new.count(digest) and old.count(digest) for digest in set(old))


def bloat_o_meter(tree: Path, old_vmlinux: Path, new_vmlinux: Path) -> str:
    """scripts/bloat-o-meter's output (symbol sizes old -> new); '' when the tree has no such script."""
    script = tree / "scripts" / "bloat-o-meter"
    if not script.is_file():
        return ""
    result = runner.run(["python3", script, old_vmlinux, new_vmlinux], check=False)
    return result.output.strip() if result.returncode == 0 else ""
