"""The layout of a built kernel from an offsets object: real gcc, with the command kbuild recorded,
on a tiny tree whose headers define the structs (the real kernels are in tests/real)."""

import json

import pytest

from harness.kernel import layout

HEADERS = {
    "linux/kbuild.h": '#define DEFINE(sym, val) asm volatile("\\n.ascii \\"->" #sym " %0 " #val "\\"" : : "i" (val))\n',
    "linux/mm_types.h": "struct page { unsigned long flags; unsigned long compound_head; void *pad; void *mapping;\n"
                        "  unsigned long index; unsigned long priv; int _mapcount; int _refcount; };\n",
    "linux/mm.h": "#define offsetof(type, field) __builtin_offsetof(type, field)\n#include <linux/mm_types.h>\n"
                  "struct vm_fault { void *vma; unsigned long address; unsigned long orig_pte; struct page *page; };\n"
                  "#define PTE_PFN_MASK 0xffffffffff000UL\n#define PAGE_SHIFT 12\n",
    "linux/page-flags.h": "enum pageflags { PG_locked, PG_owner_priv_1 = 8, PG_head = 16, PG_swapbacked = 19,\n"
                          "  PG_swapcache = PG_owner_priv_1 };\n"
                          "#define PAGE_MAPPING_FLAGS 3\n#define PAGE_MAPPING_KSM 3\n",
}
MEMORY_C = "static int wp_page_copy(struct vm_fault *vmf)\n{\n}\n\tget_page(vmf->page);\n\treturn wp_page_copy(vmf);\n"
SYSTEM_MAP = "ffffffff81000000 T wp_page_copy\nffffffff82000000 D zero_pfn\n"


def fake_tree(root, headers=HEADERS, memory_c=MEMORY_C, system_map=SYSTEM_MAP):
    tree = root / "linux"
    for name, text in headers.items():
        (tree / "include" / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / "include" / name).write_text("#pragma once\n" + text)
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "memory.c").write_text(memory_c)
    (tree / "mm" / ".memory.o.cmd").write_text(
        "cmd_mm/memory.o := ccache gcc -Wp,-MMD,mm/.memory.o.d -nostdinc -I./include "
        "-DKBUILD_BASENAME='\"memory\"' -O2 -c -o mm/memory.o mm/memory.c\n\nsource_mm/memory.o := mm/memory.c\n")
    (root / "System.map").write_text(system_map)
    return tree


def test_the_values_come_from_the_compiled_tree_and_are_kept(tmp_path):
    tree = fake_tree(tmp_path)
    found = layout.of_build(tree, tmp_path / "System.map", "wp_page_copy", tmp_path)
    assert found.unavailable == ""
    assert found.values == {"vm_fault_page": 24, "vm_fault_orig_pte": 16, "page_flags": 0, "page_compound_head": 8,
                            "page_mapping": 24, "page_mapcount": 48, "page_refcount": 52, "PG_swapcache": 8,
                            "PG_swapbacked": 19, "PG_head": 16, "PAGE_MAPPING_FLAGS": 3, "PAGE_MAPPING_KSM": 3,
                            "PTE_PFN_MASK": 0xffffffffff000, "PAGE_SHIFT": 12}
    assert found.event("cow_cause") == (
        "p:cow_cause wp_page_copy page=+24($arg1):x64 pte=+16($arg1):x64 zero_pfn=@zero_pfn:x64 "
        "flags=+0(+24($arg1)):x64 head=+8(+24($arg1)):x64 mapping=+24(+24($arg1)):x64 "
        "mapcount=+48(+24($arg1)):s32 refcount=+52(+24($arg1)):s32")
    kept = json.loads((tmp_path / layout.FACTS_FILE).read_text())
    assert kept["values"]["vm_fault_page"] == 24
    (tmp_path / "linux" / "mm" / ".memory.o.cmd").unlink()
    assert layout.of_build(tree, tmp_path / "System.map", "wp_page_copy", tmp_path) == found, "read back, not derived"


@pytest.mark.parametrize("change, reason", [
    ({"headers": {**HEADERS, "linux/mm_types.h": "struct page { unsigned long flags; int _mapcount; };\n"}},
     "cow_layout.c does not compile against this tree: "),
    ({"memory_c": "static int wp_page_copy(struct vm_fault *vmf, int extra)\n"},
     "wp_page_copy() in mm/memory.c does not take a struct vm_fault * as its only argument"),
    ({"memory_c": "static int wp_page_copy(struct vm_fault *vmf)\n"},
     "do_wp_page() in mm/memory.c does not take a reference with get_page(vmf->page) (or, since 6.x, "
     "folio_get(folio)) before copying"),
    ({"system_map": "ffffffff81000000 T wp_page_copy\n"}, "no data symbol zero_pfn in System.map"),
])
def test_a_kernel_without_the_facts_says_why(tmp_path, change, reason):
    tree = fake_tree(tmp_path, **change)
    found = layout.derive(tree, tmp_path / "System.map", "wp_page_copy")
    assert found.values == {} and found.unavailable.startswith(reason), found.unavailable
    if "headers" in change:
        assert "compound_head" in found.unavailable, "the compiler's own error names the missing field"


def test_a_tree_without_kbuild_records_says_so(tmp_path):
    tree = fake_tree(tmp_path)
    (tree / "mm" / ".memory.o.cmd").unlink()
    assert "no kbuild record of mm/memory.o" in layout.derive(tree, tmp_path / "System.map", "wp_page_copy").unavailable


def test_the_compile_command_is_kbuilds_own_without_ccache_or_dependency_file():
    recorded = ("cmd_mm/memory.o := ccache gcc -Wp,-MMD,mm/.memory.o.d -nostdinc "
                "-DKBUILD_MODNAME='\"memory\"' -Os -c -o mm/memory.o mm/memory.c\n")
    assert layout.compile_argv(recorded, "/x/cow_layout.c", "out.s") == [
        "gcc", "-nostdinc", '-DKBUILD_MODNAME="memory"', "-Os", "-S", "-o", "out.s", "/x/cow_layout.c"]
    saved = "savedcmd_" + recorded          # what kbuild of Linux 6.3 and later writes
    assert layout.compile_argv(saved, "/x/cow_layout.c", "out.s") == \
        layout.compile_argv(recorded, "/x/cow_layout.c", "out.s")
