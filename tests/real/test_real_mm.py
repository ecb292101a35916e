"""More of mm, for real: the huge-page, reclaim and stress-ng workloads, zswap, the integrity checks and the
tree's own selftests, on Linux 5.10 (the default experiment's build: THP in madvise mode, zswap) and Debian's
6.12 (experiments/mm-four-kernels.toml's, which keeps wp_page_copy() out of line), booted under QEMU, measured
by perf, the cause probe and vmstat. Every figure asserted follows from what the workload did (its pages, its
parameters), not from a recorded run: a kernel or a harness that does not do it fails.

Uses the default cache (~/.cache/harness). 5.10 shares the default experiment's build; from an empty cache
6.12's takes about 9 minutes here.
"""

from pathlib import Path

import pandas as pd
import pytest

from harness import workloads
from tests.real.cli import harness, show

pytestmark = pytest.mark.real

EXPERIMENT = "mm-four-kernels"
KERNELS = [("base", "5.10."), ("v6.12", "6.12.")]
# 5.10 from the default experiment, whose build every other test on 5.10 shares; 6.12 from the four-kernel one
EXPERIMENT_OF = {"base": "do-wp-page-swapcache", "v6.12": EXPERIMENT}
HUGE_PAGES = 4096 // 512      # thpcow's areas at size_mb=16, in 2 MiB huge pages
MTHP = "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc"


def measured(out: Path, variant: str, release: str, *args, experiment: str | Path = "") -> tuple[dict, dict]:
    """(the one run's record, {phase: {metric: value}}) of `harness run` of one valid boot."""
    harness("run", "-e", experiment or EXPERIMENT_OF[variant], "--variant", variant, "--reps", "1", "-o", out, *args)
    [run] = pd.read_csv(out / "runs.csv").to_dict("records")
    assert str(run["valid"]) == "True", run["reason"]
    assert str(run["kernel_release"]).startswith(release), run
    samples = pd.read_csv(out / "samples.csv")
    phases = {phase: dict(zip(group["metric"], group["value"])) for phase, group in samples.groupby("phase")}
    return run, phases


@pytest.mark.parametrize("variant, release", KERNELS)
def test_thpcow_faults_collapses_copies_and_swaps_huge_pages(tmp_path, variant, release):
    run, phases = measured(tmp_path / "run", variant, release, "--workload", "thpcow")
    fault, collapse, cow, reuse = phases["fault"], phases["collapse"], phases["cow"], phases["reuse"]
    assert fault["program.hugepages"] == HUGE_PAGES
    assert fault["vmstat.thp_fault_alloc"] >= HUGE_PAGES, "a huge page at the first fault of each 2 MiB"
    assert fault["program.huge"] == HUGE_PAGES
    assert collapse["program.huge"] == HUGE_PAGES and collapse["vmstat.thp_collapse_alloc"] >= HUGE_PAGES
    # COW after fork: the write splits the huge mapping and copies 4 KiB pages of the huge page
    assert cow["cow_copies"] * 4096 >= 2 << 20, "at least one huge page's worth copied by the faulting process"
    assert cow["cow_copies.huge_page"] >= 0.99 * cow["pages"] and cow["vmstat.thp_split_pmd"] >= HUGE_PAGES
    # after the child exits its pages are mapped once, but by page tables: 5.10 and 6.12 still copy them
    assert reuse["cow_copies.huge_page"] >= 0.99 * reuse["pages"]
    swapout = phases["swapout"]
    assert swapout["vmstat.thp_swpout"] + swapout["vmstat.thp_swpout_fallback"] >= HUGE_PAGES
    assert phases["swapin"]["process.swapped_in_pages"] >= 0.9 * swapout["pages"]
    if variant == "v6.12":      # 64 KiB folios, and a COW of their pages
        mthp = phases["mthpfault"]
        assert mthp["program.folios"] >= 0.9 * mthp["program.wanted"] and mthp["program.wanted"] == 256
        assert phases["mthpcow"]["cow_copies.huge_page"] >= 0.99 * phases["mthpcow"]["pages"]
    else:
        assert "mthpfault" not in phases and f"mthpfault ({MTHP})" in run["warnings"]
    show(f"thpcow on {run['kernel_release']}", f"fault thp_fault_alloc {fault['vmstat.thp_fault_alloc']:.0f}; "
         f"cow copies {cow['cow_copies']:.0f} (huge_page {cow['cow_copies.huge_page']:.0f}), split_pmd "
         f"{cow['vmstat.thp_split_pmd']:.0f}; reuse copies {reuse['cow_copies']:.0f}; collapse_alloc "
         f"{collapse['vmstat.thp_collapse_alloc']:.0f}; swpout {swapout['vmstat.thp_swpout']:.0f}, fallback "
         f"{swapout['vmstat.thp_swpout_fallback']:.0f}")


@pytest.mark.parametrize("variant, release", KERNELS)
def test_reclaim_reclaims_anon_and_page_cache_under_memory_max_and_counts_the_refaults(tmp_path, variant, release):
    run, phases = measured(tmp_path / "run", variant, release, "--workload", "reclaim")
    params = workloads.load("reclaim").params()
    over = (params["anon_mb"] - params["limit_mb"]) * 256       # anonymous pages that cannot fit: to swap
    fill, refault, stream = phases["fill"], phases["refault"], phases["stream"]
    assert fill["vmstat.pgsteal_anon"] >= over, "anon_mb is over memory.max: reclaim must swap some out"
    assert fill["vmstat.pgsteal_file"] > 0 and fill["memcg.pgsteal"] >= over
    assert refault["vmstat.workingset_refault_file"] >= 0.5 * refault["program.file_pages"]
    # what went to swap comes back (VmSwap's net change is small: reclaim pushes other pages out meanwhile)
    assert refault["vmstat.workingset_refault_anon"] >= over and refault["vmstat.pswpin"] >= over
    for phase in (fill, refault, stream):      # reclaim takes no page it did not scan
        assert phase["scan_per_reclaim"] >= 1 and phase["refaults_per_reclaim"] > 0
    show(f"reclaim on {run['kernel_release']}", "; ".join(
        f"{name} steal anon {p['vmstat.pgsteal_anon']:.0f} file {p['vmstat.pgsteal_file']:.0f}, refaults anon "
        f"{p['vmstat.workingset_refault_anon']:.0f} file {p['vmstat.workingset_refault_file']:.0f}, scan/reclaim "
        f"{p['scan_per_reclaim']:.2f}" for name, p in (("fill", fill), ("refault", refault), ("stream", stream))))


@pytest.mark.parametrize("variant, release", KERNELS)
def test_stress_ng_runs_each_stressor_as_a_phase_with_its_bogo_ops_and_counters(tmp_path, variant, release):
    run, phases = measured(tmp_path / "run", variant, release, "--workload", "stressng")
    params = workloads.load("stressng").params()
    stressors = [phase for phase in workloads.load("stressng").phases if phase != "idle"]
    assert set(stressors) <= set(phases)
    for stressor in stressors:
        assert phases[stressor]["bogo_ops"] == params[f"{stressor}_ops"], stressor
        assert phases[stressor]["bogo_ops_per_s"] > 0
    assert phases["fork"]["system.cow_copies"] > phases["idle"]["system.cow_copies"], "forked children copy"
    assert phases["pageswap"]["vmstat.pswpout"] >= params["pageswap_ops"] * 0.5
    show(f"stress-ng on {run['kernel_release']}", ", ".join(
        f"{s} {phases[s]['bogo_ops_per_s']:.0f} ops/s" for s in stressors))


@pytest.mark.parametrize("variant, release", KERNELS)
def test_zswap_takes_the_pages_swapcow_swaps_out_before_the_disk(tmp_path, variant, release):
    spec = tmp_path / "zswap.toml"
    shipped = (Path(__file__).parents[2] / "experiments" / f"{EXPERIMENT_OF[variant]}.toml").read_text()
    assert shipped.rstrip().rsplit("\n[", 1)[1].startswith("guest]"), "[guest] is the file's last table"
    spec.write_text(shipped.rstrip() + '\nswap = "zswap"\nzswap_pool_pct = 25\n')
    run, phases = measured(tmp_path / "run", variant, release, "--workload", "swapcow", experiment=spec)
    assert run["swap"] == "zswap" and run["swap_compressor"] == "lzo"
    swapout = phases["swapout"]
    assert swapout["process.swapped_out_pages"] >= 0.9 * swapout["pages"]
    assert swapout["zswap.stored_pages"] >= 0.9 * swapout["pages"], "zswap holds what went out"
    assert swapout["vmstat.pswpout"] <= 0.01 * swapout["pages"], "and almost nothing reached the disk"
    if variant == "v6.12":
        assert swapout["vmstat.zswpout"] >= 0.9 * swapout["pages"]
        assert phases["read"]["vmstat.zswpin"] >= 0.9 * swapout["pages"]
    show(f"zswap on {run['kernel_release']}", f"swapout stored {swapout['zswap.stored_pages']:.0f} of "
         f"{swapout['pages']:.0f} pages in {swapout['zswap.pool_kb']:.0f} KiB, pswpout {swapout['vmstat.pswpout']:.0f}")


@pytest.mark.parametrize("variant, release", KERNELS)
def test_integrity_and_the_trees_own_selftests_find_nothing_wrong_on_a_released_kernel(tmp_path, variant, release):
    out = tmp_path / "run"
    harness("run", "-e", EXPERIMENT_OF[variant], "--variant", variant, "--reps", "1", "-o", out, "--workload",
            "integrity", "--workload", "selftests")
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs["valid"].astype(str).eq("True").all() and (runs["findings"] == "").all(), runs.to_dict("records")
    assert runs["kernel_release"].astype(str).str.startswith(release).all()
    samples = pd.read_csv(out / "samples.csv")
    checks = samples.pivot_table(index=["workload", "phase"], columns="metric", values="value", aggfunc="first")
    integrity = checks.loc["integrity"]
    assert list(integrity.index.sort_values()) == sorted(workloads.load("integrity").phases), "THP and KSM too"
    assert (integrity["checked_pages"] >= 512).all() and (integrity["wrong_pages"] == 0).all()
    tests = checks.loc["selftests"].drop("idle")
    assert (tests["tests_failed"] == 0).all()
    assert tests.loc[["map_populate", "mremap_dontunmap", "mlock2"], "tests_passed"].min() >= 1
    if variant == "v6.12":      # the COW tests, with the pins of CONFIG_GUP_TEST, and KSM's
        assert tests.loc["cow", "tests_passed"] >= 300 and tests.loc["ksm_functional", "tests_passed"] >= 5
        assert tests.loc["gup_longterm", "tests_passed"] >= 1, "CONFIG_GUP_TEST lets it pin"
    else:
        assert "cow" not in tests.index and "lacks: cow" in runs[runs["workload"] == "selftests"]["warnings"].iloc[0]
    show(f"integrity and selftests on {runs['kernel_release'].iloc[0]}",
         f"{integrity['checked_pages'].sum():,.0f} pages checked in {len(integrity)} phases, none wrong; selftests "
         + ", ".join(f"{phase} {row.tests_passed:.0f}/{row.tests_passed + row.tests_failed:.0f}"
                     for phase, row in tests.iterrows()))


def test_the_coverage_map_shows_huge_page_and_reclaim_functions_run_by_the_new_workloads():
    functions = ["do_huge_pmd_wp_page", "__split_huge_pmd", "workingset_refault", "shrink_page_list"]
    said = harness("workloads", "-e", EXPERIMENT_OF["base"], "--covers", "--workload", "thpcow", "--workload",
                   "reclaim", *functions).stdout
    lines = {line.split(":", 1)[0]: line for line in said.splitlines() if not line.startswith(" ")}
    assert "thpcow/cow" in lines["do_huge_pmd_wp_page"] and "thpcow/cow" in lines["__split_huge_pmd"], said
    assert "reclaim/refault" in lines["workingset_refault"] and "reclaim/fill" in lines["shrink_page_list"], said
    assert "reclaim/" not in lines["do_huge_pmd_wp_page"], "reclaim maps no huge page: " + said
    show("harness workloads --covers (5.10)", " | ".join(lines[f] for f in functions))



def test_redis_runs_valid_on_6_12_and_copies_nothing_after_swap_in(tmp_path):
    """The one shipped workload the four-kernel experiment leaves out, on the newest kernel."""
    run, phases = measured(tmp_path / "run", "v6.12", "6.12.", "--workload", "redis")
    read, write = phases["read"], phases["write"]
    assert read["process.swapped_in_pages"] >= 0.5 * phases["swapout"]["process.swapped_out_pages"]
    assert write["cow_copies_per_swapin"] < 0.01, "6.12 carries the seed's series: no copy after swap-in"
    assert write["cow_copies.swapcache"] == 0
    show(f"redis on {run['kernel_release']}", f"read swapped in {read['process.swapped_in_pages']:.0f} pages; write "
         f"copies {write['cow_copies']:.0f} ({write['cow_copies_per_swapin']:.4f} per page swapped in)")
