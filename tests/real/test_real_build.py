"""The real thing: Debian's 5.10 source, the seed patch imported from the mail, two kernel builds.

Slow (minutes with a warm ccache, about 7 with a cold one); CI runs it. Uses the default
cache (~/.cache/harness) so that sources and ccache survive between runs, and forces both
builds with --rebuild so that the build itself is exercised every time.
"""

import re
from pathlib import Path

import pytest

from harness import project
from harness.kernel import importer
from tests.conftest import SEED_MAIL
from tests.real.cli import harness

pytestmark = pytest.mark.real

SEED_PATCH = project.PATCHES / "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-swapcache.patch"




@pytest.fixture(scope="module")
def tree() -> Path:
    return Path(harness("source", "fetch", timeout=None).stdout.strip())


@pytest.fixture(scope="module")
def builds(tree) -> dict[str, Path]:
    output = harness("build", "--variant", "base", "--variant", "patched", "--rebuild", timeout=None).stdout
    found = dict(re.findall(r"^(\w+): (\S+/bzImage) ", output, re.M))
    assert set(found) == {"base", "patched"}, output
    return {name: Path(path).parent for name, path in found.items()}


def do_wp_page(memory_c: Path) -> str:
    text = memory_c.read_text()
    start = text.index("static vm_fault_t do_wp_page(struct vm_fault *vmf)\n")
    return text[start:text.index("\n}\n", start)]


def test_default_source_is_linux_5_10_223(tree):
    assert "SUBLEVEL = 223" in (tree / "Makefile").read_text()
    assert "if (PageKsm(page) || page_count(page) != 1)" in do_wp_page(tree / "mm/memory.c")


def test_seed_imports_to_the_committed_patch(tree):
    text = importer.import_message(SEED_MAIL.read_text(), tree,
                                   author="David Hildenbrand <david@redhat.com>", upstream="53a05ad9f21d")
    assert text == SEED_PATCH.read_text()
    assert "@@ -3159,19 +3159,27 @@ static vm_fault_t do_wp_page(struct vm_fault *vmf)" in text


def test_base_and_patched_build_and_differ(builds):
    base, patched = builds["base"], builds["patched"]
    assert base.joinpath("bzImage").stat().st_size > 500_000
    assert base.joinpath("bzImage").read_bytes() != patched.joinpath("bzImage").read_bytes()
    for build in (base, patched):
        system_map = build.joinpath("System.map").read_text()
        for symbol in ("wp_page_copy", "do_wp_page", "do_swap_page"):
            assert re.search(rf"^[0-9a-f]+ [tT] {symbol}$", system_map, re.M), (build, symbol)
        config = build.joinpath("config").read_text()
        assert "CONFIG_KPROBE_EVENTS=y" in config and "CONFIG_SWAP=y" in config
    assert "try_to_free_swap(page);" in do_wp_page(patched / "linux/mm/memory.c")
    assert "try_to_free_swap(page);" not in do_wp_page(base / "linux/mm/memory.c")
