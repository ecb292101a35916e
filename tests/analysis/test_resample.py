"""The resampler the simulations use, on the committed 2-repetition run (fast)."""

import numpy as np

from harness import results
from harness.analysis import compare, resample
from tests.conftest import DATA


def sources():
    samples, runs, metadata = results.read(DATA / "run-small")
    return resample.pools(samples, runs), compare.Plan.from_metadata(metadata, "base")


def test_pools_hold_each_kernels_valid_boots_by_workload_and_mode():
    pools, _ = sources()
    assert set(pools) == {"base", "patched"}
    pool = pools["base"][("swapcow", "counted")]
    assert pool.values.shape == (2, len(pool.columns)) and ("write", "cow_copies") in pool.columns


def test_draws_come_from_the_pool_whole_boots_or_per_metric():
    pools, _ = sources()
    pool = pools["patched"][("swapcow", "counted")]
    column = pool.columns.index(("write", "cow_copies"))
    for per_metric in (False, True):
        cells = resample.draw({"patched": pools["patched"]}, 5, np.random.default_rng(1), per_metric)
        numbers, values = cells[("swapcow", "write", "cow_copies")]["patched"]
        assert list(numbers) == [1, 2, 3, 4, 5] and set(values) <= set(pool.values[:, column])
    shorter = resample.up_to(cells, 3)
    assert list(shorter[("swapcow", "write", "cow_copies")]["patched"][0]) == [1, 2, 3]


def test_an_a_a_tally_at_two_repetitions_claims_nothing():
    pools, plan = sources()
    aa = {"base": pools["base"], "patched": pools["base"]}
    tally = resample.tally(aa, plan, reps=2, tables=4, seed=7)
    assert (tally.tables, tally.any_claim, tally.claims, tally.reps_used) == (4, 0, 0, 2)
    assert tally.line().startswith("4 tables: P(any better/worse) = 0.000")
    rows, used = resample.table(aa, plan, 2, np.random.default_rng(3), max_reps=3)
    assert used == 3 and rows, "undecided at 2, the sequential table goes on to its limit"
