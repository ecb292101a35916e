"""The real thing for sweeps: swapcow on 5.10 along the swap size, where the copies of the base
kernel follow min(pages, half the swap) because vm_swap_full() frees the swap slots of what is
swapped in past half; and a boot that swaps to zram."""

import json
import subprocess
import sys
import tomllib

import pandas as pd
import pytest

from harness import project
from tests.real.cli import harness

pytestmark = pytest.mark.real

SIZE_MB = 32
PAGES = SIZE_MB * 256
SWAP_MB = (48, 96, 160)        # 48: 67% in use when the pages come back; 96 and 160 below half


def experiment_file(tmp_path, guest: str, sweep: str = "") -> str:
    """The default experiment's kernel (same build), base only, swapcow at SIZE_MB, with guest and sweep."""
    shipped = tomllib.loads((project.EXPERIMENTS / f"{project.DEFAULT_EXPERIMENT}.toml").read_text())
    path = tmp_path / "sweep.toml"
    path.write_text(f'source = "{shipped["source"]}"\nkconfigs = {json.dumps(shipped["kconfigs"])}\n'
                    f'probes = {json.dumps(shipped["probes"])}\nworkloads = ["swapcow"]\n'
                    'primary = ["swapcow/write/cow_copies_per_swapin"]\n'
                    '[[variants]]\nname = "base"\n'
                    f'[parameters.swapcow]\nsize_mb = {SIZE_MB}\n[guest]\n{guest}\n{sweep}')
    return str(path)




def test_copies_follow_half_the_swap_and_the_point_past_it_is_named(tmp_path):
    sweep = ('[sweep]\nguest.swap_mb = [' + ", ".join(map(str, SWAP_MB)) + ']\n'
             'plots = ["swapcow/write/cow_copies"]\n'
             '[[sweep.reference]]\nlabel = "half the swap"\ny = "(guest.swap_mb * 256 - 1) / 2"\n'
             'metric = "cow_copies"\n')
    out = tmp_path / "run"
    harness("run", "-e", experiment_file(tmp_path, "memory_mb = 1024", sweep), "-o", str(out))
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    samples = pd.read_csv(out / "samples.csv", keep_default_na=False)
    assert runs["valid"].all() and len(runs) == len(SWAP_MB), runs[["point", "reason"]]
    for swap_mb in SWAP_MB:
        point = f"guest.swap_mb={swap_mb}"
        mine = samples[samples["point"] == point]
        figures = {(row.phase, row.metric): row.value for row in mine.itertuples()}
        model = min(PAGES, (swap_mb * 256 - 1) / 2)
        copies = figures[("write", "cow_copies")]
        print(f"\n[figure] swapcow {SIZE_MB} MiB, swap {swap_mb} MiB on base: {copies:,.0f} copies, model "
              f"{model:,.0f} ({(copies / model - 1) * 100:+.1f}%); swap {figures[('read', 'swap.used_pct')]:.0f}% "
              "in use in the read phase")
        assert abs(copies / model - 1) <= 0.05, (swap_mb, copies, model)
        warned = "vm_swap_full" in runs[runs["point"] == point]["warnings"].iloc[0]
        assert warned == (PAGES > model), (point, runs[runs["point"] == point]["warnings"].iloc[0])
        assert runs[runs["point"] == point]["swap_mb"].iloc[0] == swap_mb
    listed = harness("plot", str(out)).stdout.split()
    assert str(out / "plots" / "sweep-swapcow-write-cow_copies.png") in listed
    assert set(samples["point"]) == {f"guest.swap_mb={s}" for s in SWAP_MB}
    alone = subprocess.run([sys.executable, "-m", "harness", "compare", str(out), "--format", "json"],
                           capture_output=True, text=True, timeout=600)
    assert alone.returncode == 1 and "valid boots of one variant only (base)" in alone.stderr, alone.stderr


def test_a_guest_that_swaps_to_zram_runs_swapcow_valid(tmp_path):
    out = tmp_path / "zram"
    harness("run", "-e", experiment_file(tmp_path, 'swap = "zram"\nswap_mb = 64'), "-o", str(out),
            "-p", "size_mb=16")
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs["valid"].all(), runs[["reason", "warnings"]]
    assert list(runs["swap"]) == ["zram"] and runs["swap_compressor"].iloc[0] in ("lzo-rle", "lzo"), runs
    samples = pd.read_csv(out / "samples.csv")
    figures = {(row.phase, row.metric): row.value for row in samples.itertuples()}
    pages = 16 * 256
    assert figures[("swapout", "vmstat.pswpout")] >= 0.9 * pages
    assert figures[("read", "vmstat.pswpin")] >= 0.9 * pages
    print(f"\n[figure] swapcow 16 MiB on zram ({runs['swap_compressor'].iloc[0]}), base: "
          f"{figures[('write', 'cow_copies')]:,.0f} copies in the write phase of {pages:,} pages swapped in")
    # 5.10 swaps in from a synchronous device without the swap cache for a page mapped once: nothing to copy
    assert figures[("write", "cow_copies")] <= 0.01 * pages
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["guest"]["swap"] == "zram"
