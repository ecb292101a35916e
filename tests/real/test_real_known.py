"""A known upstream change, measured for real: the cheapest of patches/known/ (docs/results.md, "Known changes,
measured"), tried as a reviewer would, and the harness must find the direction its changelog implies.

0bcac06f27d7 "mm, swap: skip swapcache for swapin of synchronous device" (v4.15) lets a zram swap-in bypass the
swap cache; 5.10 copies any anonymous page a second reference holds at a write fault, so with the revert every
page that swapcow's read phase brought back from zram sits in the swap cache at its write, and is copied. On
the virtio disk the revert changes nothing (not a synchronous device): that half is in the committed run."""

import json

import pytest

from harness.project import ROOT
from tests.real.cli import harness, show

pytestmark = pytest.mark.real

ZRAM_REVERT = ROOT / "patches" / "known" / "0001-mm-swap-in-through-the-swap-cache-from-zram-too-undo.patch"
SIZE_MB = 8
PAGES = SIZE_MB * 256


def test_undoing_the_zram_swap_cache_skip_makes_every_page_read_back_from_zram_a_copy(tmp_path):
    out = tmp_path / "known"
    result = harness("try", ZRAM_REVERT, "--guest", "swap=zram", "--workload", "swapcow", "-p", f"size_mb={SIZE_MB}",
                     "-o", out, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {(r["workload"], r["phase"], r["metric"], r["variant"]): r
            for r in json.loads((out / "comparison.json").read_text())}
    base, patched, control = (rows[("swapcow", "write", "cow_copies", v)] for v in ("base", "patched", "control"))
    assert base["median"] < 0.05 * PAGES, f"zram's pages skip the swap cache and are reused: {base['median']}"
    assert patched["median"] >= 0.9 * PAGES, f"through the swap cache, 5.10 copies them: {patched['median']}"
    assert patched["verdict"] == "worse", patched
    assert control["verdict"] not in ("better", "worse"), "the baseline kernel again moves nowhere"
    swapcache = rows[("swapcow", "write", "cow_copies.swapcache", "patched")]
    assert swapcache["median"] >= 0.9 * PAGES, "the copies are of swap-cache pages, as the mechanism says"
    readahead = {v: rows[("swapcow", "read", "vmstat.swap_ra_hit", v)] for v in ("base", "patched")}
    assert readahead["base"]["median"] == 0 and readahead["patched"]["median"] > 0, "swap readahead runs on zram again"
    assert readahead["patched"]["exercised"], "the read phase is where do_swap_page ran"
    runs = (out / "runs.csv").read_text()
    assert "zram" in runs and "virtio-blk" not in runs, "every boot swapped to zram"
    assert not any(line.startswith(("BROKEN", "WRONG")) for line in result.stdout.splitlines())
    show("swapcow/write/cow_copies, base -> patched, zram", f"{base['median']:,.0f} -> {patched['median']:,.0f} of "
         f"{PAGES:,} pages ({patched['verdict']}, p = {patched['p_value']:.4f})")
