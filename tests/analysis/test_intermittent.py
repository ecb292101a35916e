"""By simulation through the real verdict code: a patch that breaks in some boots only.

Synthetic runs resampled from the committed reference run, where the patched kernel is the base
kernel except that a share of its boots reuse nothing on forkcow/reuse (reuse_share 0 instead of
1.0, a primary row): the picture of a race. `equivalent` must never stand on a sample that holds a
broken boot, so it comes out at most as often as no broken boot is drawn, and the more boots the
design takes, the rarer it gets."""

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from harness import cli
from harness.analysis import compare, resample
from tests.analysis.test_verdict_errors import plan, reference_pools

pytestmark = pytest.mark.simulation

TABLES = 600
ROW = ("forkcow", "reuse", "reuse_share", "")
POOL = 20          # boots in the synthetic patched pool: 1, 2 or 4 broken make 5%, 10% or 20%


def broken_sources(broken: int) -> dict:
    """base and control from the reference base boots; patched the same boots, `broken` of POOL reusing
    nothing."""
    pools = reference_pools()
    base = pools["base"]
    forkcow = base[("forkcow", "counted", "")]
    values = forkcow.values[np.arange(POOL) % len(forkcow.values)].copy()
    values[:broken, forkcow.columns.index(ROW[1:3])] = 0.0
    patched = dict(base) | {("forkcow", "counted", ""): resample.Pool(forkcow.columns, values)}
    return {"base": base, "patched": patched, "control": base}


@dataclass(frozen=True)
class Seen:
    tables: int
    equivalent: int                 # tables whose forkcow/reuse/reuse_share of patched is `equivalent`
    equivalent_on_broken: int       # ... although the sample holds a broken boot
    no_broken: int                  # tables whose sample holds no broken boot
    worse: int
    reps_used: float

    def line(self) -> str:
        return (f"{self.tables} tables: equivalent {self.equivalent / self.tables:.3f} (on a broken sample "
                f"{self.equivalent_on_broken}), no broken boot drawn {self.no_broken / self.tables:.3f}, worse "
                f"{self.worse / self.tables:.3f}, mean repetitions {self.reps_used:.2f}")


DESIGNS = {"6 + 6": (False, cli.DEFAULT_REPS, None), "10 + 10": (False, 10, None),
           "--reps auto": (True, cli.AUTO_FIRST_LOOK, 10)}


def _seen(args) -> Seen:
    broken, design_name, seed, tables = args
    auto, reps, max_reps = DESIGNS[design_name]
    sources, rng, design = broken_sources(broken), np.random.default_rng(seed), plan(auto)
    key = (*ROW, "patched")
    equivalent = on_broken = clean = worse = used_total = 0
    for _ in range(tables):
        cells, used = resample.run(sources, design, reps, rng, max_reps=max_reps)
        verdict = compare.decide(cells, design, list(sources))[key].verdict
        has_broken = bool((cells[ROW]["patched"][1] == 0).any())
        equivalent += verdict == "equivalent"
        on_broken += verdict == "equivalent" and has_broken
        clean += not has_broken
        worse += verdict == "worse"
        used_total += used
    return Seen(tables, equivalent, on_broken, clean, worse, used_total / tables)


def seen(broken: int, design_name: str) -> Seen:
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_seen, [(broken, design_name, seed, TABLES // 2) for seed in (1, 2)]))
    return Seen(sum(p.tables for p in parts), sum(p.equivalent for p in parts),
                sum(p.equivalent_on_broken for p in parts), sum(p.no_broken for p in parts),
                sum(p.worse for p in parts), sum(p.reps_used for p in parts) / len(parts))


def near(found: Seen, expected: float) -> bool:
    """found.equivalent / found.tables within 4 standard errors of expected."""
    return abs(found.equivalent / found.tables - expected) < 4 * np.sqrt(expected * (1 - expected) / found.tables)


@pytest.mark.parametrize("broken", [1, 2, 4], ids=["5pct", "10pct", "20pct"])
def test_equivalent_never_stands_on_a_broken_boot(broken):
    share = broken / POOL
    found = {name: seen(broken, name) for name in DESIGNS}
    for name, one in found.items():
        print(f"{share:.0%} of patched boots broken, {name}: {one.line()}")
        assert one.equivalent_on_broken == 0 and one.equivalent <= one.no_broken
    # equivalent only when no broken boot was drawn among the boots taken: (1 - share)^6 at 6 + 6, ^10 at
    # 10 + 10; --reps auto decides a clean row at its first look (6) and takes more boots only on a row that
    # a broken boot held open, so its rate is that of 6 + 6
    assert near(found["6 + 6"], (1 - share) ** 6) and near(found["--reps auto"], (1 - share) ** 6)
    assert near(found["10 + 10"], (1 - share) ** 10)
    assert found["--reps auto"].worse >= found["6 + 6"].worse and found["10 + 10"].worse >= found["6 + 6"].worse
