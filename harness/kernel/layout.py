"""What a built kernel says about the memory it copies at a COW fault: the offsets of the
fields of struct vm_fault and struct page, the page-flag bits and the constants that
harness.measure.causes needs to tell why a copy happened. Nothing is typed in: a small C file
(cow_layout.c) is compiled with the exact command kbuild used for mm/memory.o, and the values
are read from its assembly, the way the kernel's own asm-offsets.c works. A kernel where that
fails (another struct layout, no such function, no kbuild record) gets the reason instead, and
the cause metrics are absent for it.

The facts are kept in the build's folder (cow-layout.json), next to object-code.json.
"""

import json
import re
import shlex
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import runner
from harness.files import write_atomic

FACTS_FILE = "cow-layout.json"
FACTS_VERSION = 1      # bump when cow_layout.c or what is derived from it changes (PG_head, added later, is
                       # optional: a layout kept without it still serves every cause but a huge page's head)
SOURCE = Path(__file__).with_name("cow_layout.c")
ZERO_PFN_SYMBOL = "zero_pfn"
_VALUE = re.compile(r'"->(\w+) \$?(-?\d+) ')
NEEDED = ("vm_fault_page", "vm_fault_orig_pte", "page_flags", "page_compound_head", "page_mapping",
          "page_mapcount", "page_refcount", "PG_swapcache", "PG_swapbacked", "PAGE_MAPPING_FLAGS",
          "PAGE_MAPPING_KSM", "PTE_PFN_MASK", "PAGE_SHIFT")


@dataclass(frozen=True)
class Layout:
    """The built kernel's facts for one copy function (its first argument a struct vm_fault *),
    or why there are none (`unavailable`)."""
    probe: str
    values: dict = field(default_factory=dict)
    unavailable: str = ""

    def event(self, name: str) -> str:
        """The kprobe_events line of a probe on the copy function that fetches what the classifier reads."""
        v = self.values
        page = f"+{v['vm_fault_page']}($arg1)"
        return (f"p:{name} {self.probe} page={page}:x64 pte=+{v['vm_fault_orig_pte']}($arg1):x64 "
                f"zero_pfn=@{ZERO_PFN_SYMBOL}:x64 flags=+{v['page_flags']}({page}):x64 "
                f"head=+{v['page_compound_head']}({page}):x64 mapping=+{v['page_mapping']}({page}):x64 "
                f"mapcount=+{v['page_mapcount']}({page}):s32 refcount=+{v['page_refcount']}({page}):s32")

    def as_dict(self) -> dict:
        return {"version": FACTS_VERSION, **asdict(self)}


def of_build(tree: Path, system_map: Path, probe: str, keep_in: Path) -> Layout:
    """The layout of the kernel built in tree, from keep_in/cow-layout.json when it is there."""
    kept = keep_in / FACTS_FILE
    if kept.is_file():
        data = json.loads(kept.read_text())
        if data.pop("version", None) == FACTS_VERSION and data.get("probe") == probe:
            return Layout(**data)
    layout = derive(tree, system_map, probe)
    write_atomic(kept, json.dumps(layout.as_dict(), indent=2) + "\n")
    return layout


def derive(tree: Path, system_map: Path, probe: str) -> Layout:
    """Compile cow_layout.c against tree; a Layout with `unavailable` set says why it cannot be had."""
    why = _unsupported(tree, system_map, probe)
    if why:
        return Layout(probe, unavailable=why)
    argv = compile_argv((tree / "mm" / ".memory.o.cmd").read_text(), SOURCE, Path("cow-layout.s"))
    with tempfile.TemporaryDirectory(prefix="harness-layout-") as scratch:
        output = Path(scratch) / "cow-layout.s"
        argv[argv.index("cow-layout.s")] = str(output)
        result = runner.run(argv, cwd=tree, check=False)
        if result.returncode != 0:
            said = result.output.strip().splitlines() or [f"exit status {result.returncode}"]
            first = next((line for line in said if "error:" in line), said[-1])
            return Layout(probe, unavailable=f"cow_layout.c does not compile against this tree: {first.strip()}")
        values = parse_values(output.read_text())
    missing = [name for name in NEEDED if name not in values]
    if missing:
        return Layout(probe, unavailable=f"no value for {', '.join(missing)} in the compiled layout")
    return Layout(probe, values)


def _unsupported(tree: Path, system_map: Path, probe: str) -> str:
    """Why this tree's copy function cannot be attributed, or ''."""
    memory_c = tree / "mm" / "memory.c"
    if not (tree / "mm" / ".memory.o.cmd").is_file() or not memory_c.is_file():
        return "no kbuild record of mm/memory.o in the build tree (an out-of-tree or foreign build)"
    text = memory_c.read_text(errors="replace")
    if not re.search(rf"\b{re.escape(probe)}\(struct vm_fault \*\w+\)", text):
        return f"{probe}() in mm/memory.c does not take a struct vm_fault * as its only argument"
    if "get_page(vmf->page);" not in text and "folio_get(folio);" not in text:
        return ("do_wp_page() in mm/memory.c does not take a reference with get_page(vmf->page) (or, since 6.x, "
                "folio_get(folio)) before copying")
    symbols = re.findall(r"^[0-9a-f]+ [dDbBrR] (\S+)$", system_map.read_text(), re.M) if system_map.is_file() else []
    if ZERO_PFN_SYMBOL not in symbols:
        return f"no data symbol {ZERO_PFN_SYMBOL} in System.map"
    return ""


def compile_argv(command_file: str, source: Path, output: Path) -> list[str]:
    """The compiler command kbuild recorded for mm/memory.o (`cmd_mm/memory.o := ...`; `savedcmd_` since
    Linux 6.3), turned into one that writes the assembly of source to output: no ccache, no dependency file."""
    line = next(line for line in command_file.splitlines() if line.startswith(("cmd_", "savedcmd_")))
    argv = shlex.split(line.split(":=", 1)[1])
    if argv and argv[0] == "ccache":
        argv = argv[1:]
    argv = [word for word in argv if not word.startswith("-Wp,-MMD")]
    if "-c" in argv:
        argv = argv[:argv.index("-c")]
    return [*argv, "-S", "-o", str(output), str(source)]


def parse_values(assembly: str) -> dict[str, int]:
    """'->NAME $VALUE ...' markers of the compiled layout -> {NAME: VALUE}."""
    return {name: int(value) for name, value in _VALUE.findall(assembly)}
