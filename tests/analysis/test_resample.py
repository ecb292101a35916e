"""The resampler the simulations use, on the committed 2-repetition run (fast)."""

import numpy as np

from harness import results
from harness.analysis import compare, records, resample
from tests.conftest import DATA


def sources():
    samples, runs, metadata = results.read(DATA / "run-small")
    return resample.pools(samples, runs), records.Plan.from_metadata(metadata, "base")


def test_pools_hold_each_kernels_valid_boots_by_workload_and_mode():
    pools, _ = sources()
    assert set(pools) == {"base", "patched"}
    pool = pools["base"][("swapcow", "counted", "")]
    assert pool.values.shape == (2, len(pool.columns)) and ("write", "cow_copies") in pool.columns


def test_draws_come_from_the_pool_whole_boots_or_per_metric():
    pools, _ = sources()
    pool = pools["patched"][("swapcow", "counted", "")]
    column = pool.columns.index(("write", "cow_copies"))
    for per_metric in (False, True):
        cells = resample.draw({"patched": pools["patched"]}, 5, np.random.default_rng(1), per_metric)
        numbers, values = cells[("swapcow", "write", "cow_copies", "")]["patched"]
        assert list(numbers) == [1, 2, 3, 4, 5] and set(values) <= set(pool.values[:, column])
    shorter = resample.up_to(cells, 3)
    assert list(shorter[("swapcow", "write", "cow_copies", "")]["patched"][0]) == [1, 2, 3]


def test_an_a_a_tally_at_two_repetitions_claims_nothing():
    pools, plan = sources()
    aa = {"base": pools["base"], "patched": pools["base"]}
    tally = resample.tally(aa, plan, reps=2, tables=4, seed=7)
    assert (tally.tables, tally.any_claim, tally.claims, tally.reps_used) == (4, 0, 0, 2)
    assert tally.line().startswith("4 tables: P(any better/worse) = 0.000")
    rows, used = resample.table(aa, plan, 2, np.random.default_rng(3), max_reps=3)
    assert used == 3 and rows, "undecided at 2, the sequential table goes on to its limit"


def test_a_metric_only_some_boots_have_is_left_out_of_a_draw_that_missed_them():
    sparse = resample.Pool((("write", "copy_share"), ("write", "cow_copies")),
                           np.array([[0.5, 10.0], [np.nan, 12.0], [np.nan, 11.0]]))
    sources = {"base": {("swapcow", "counted", ""): sparse}, "patched": {("swapcow", "counted", ""): sparse}}
    for seed in range(20):
        cells = resample.draw(sources, 2, np.random.default_rng(seed))
        for by_variant in cells.values():
            assert all(len(values) for _, values in by_variant.values())
        rows = compare.compare_cells(cells, records.Plan("base", (), 5.0, None, records.Design()), ["base", "patched"])
        assert {row.metric for row in rows} <= {"copy_share", "cow_copies"}
        early = resample.up_to(resample.draw(sources, 6, np.random.default_rng(seed)), 1)
        assert all(len(values) for by_variant in early.values() for _, values in by_variant.values())
