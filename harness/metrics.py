"""What every metric means, in one table: kind, direction, unit, scope, and which boots measure it.

`kind`: `counter` (events over the phase; a phase repeated over cycles adds up), `level` (a
reading at the end of the phase; not added), `rate` (a ratio of two figures of the same boot,
derived after the phases). `direction`: which way is better, or `none`: a metric without a
direction gets statistics but never a verdict. `scope`: `process` (the workload's process or
the workload's own figure) or `system` (the whole guest). `timing`: measured on boots without
kprobes and profiler, because the probes slow down most the variant that hits them most.
`headline`: shown in the short comparison table; a headline timing metric is also in the
report's instrumentation cost table. `probed`: measured only on boots with kprobes (counted),
so a boot without them (timed) has none, and a gate on it cannot be checked there.
`must_be_zero`: a count of what went wrong (pages read back wrong, tests of the kernel's own that
failed): one boot with one is a finding about the kernel (harness/analysis/integrity.py), never a
statistic, so it has no direction.

The first pattern that matches a name wins (fnmatch), so specific names come before the
patterns that would also match them.
"""

import functools
from dataclasses import dataclass
from fnmatch import fnmatchcase

# Why a write fault copied its page (harness/measure/causes.py): the suffixes of cow_copies.* metrics.
CAUSES = ("zero_page", "huge_page", "ksm", "shared", "swapcache", "other_ref", "other")


@dataclass(frozen=True)
class Meaning:
    pattern: str
    kind: str          # counter | level | rate
    direction: str     # lower | higher | none
    unit: str
    scope: str         # process | system
    timing: bool = False
    summary: str = ""
    headline: bool = False     # in the short table (compare without --all) and, if timing, the instrumentation cost
    probed: bool = False       # only counted boots (kprobes, perf, the cause records) have it
    must_be_zero: bool = False  # a count of wrong data or failed tests: judged by integrity.py, not by statistics


TABLE = (
    Meaning("cow_copies", "counter", "lower", "copies", "process", headline=True,
            summary="calls of the experiment's cow_probe (wp_page_copy) in the workload process", probed=True),
    Meaning("cow_copies.*", "counter", "lower", "copies", "process",
            summary="cow_copies of one cause (harness/measure/causes.py), from a record of every copy", probed=True),
    Meaning("copy_share", "rate", "lower", "share", "process",
            summary="cow_copies / wp_faults: the write faults on present pages that copied", probed=True),
    Meaning("reuse_share", "rate", "higher", "share", "process",
            summary="1 - copy_share: the write faults on present pages that kept their page", probed=True),
    Meaning("valid_share", "rate", "higher", "share", "system", headline=True,
            summary="phase `boots`: the repetitions whose every boot passed the workload's gates (a boot lost to "
                    "the harness or its worker is left out)"),
    Meaning("wp_faults", "counter", "none", "faults", "process",
            summary="calls of the experiment's fault_probe (do_wp_page) in the workload process: write faults "
                    "on present pages", probed=True),
    Meaning("cow_copies_per_swapin", "rate", "lower", "copies per page", "process", headline=True,
            summary="cow_copies / pages the workload swapped in during its read phase", probed=True),
    Meaning("cow_copies_per_page", "rate", "lower", "copies per page", "process",
            summary="cow_copies / pages the phase touched", probed=True),
    Meaning("swapins_per_page", "rate", "none", "pages per page", "process",
            summary="process.swapped_in_pages / pages the phase touched"),
    Meaning("pswpout_per_swapout", "rate", "lower", "pages written per page", "system",
            summary="vmstat.pswpout / process.swapped_out_pages: swap-out I/O per page the workload lost to swap"),
    Meaning("system.cow_copies", "counter", "lower", "copies", "system",
            summary="calls of the cow_probe in the whole guest (init, sshd and perf included)", probed=True),
    Meaning("system.cow_copies.*", "counter", "lower", "copies", "system",
            summary="system.cow_copies of one cause", probed=True),
    Meaning("pages", "counter", "none", "pages", "process", summary="pages the phase touched or meant to move"),
    Meaning("checked_pages", "counter", "none", "pages", "process",
            summary="pages whose content the workload checked against what was written (each check counted)"),
    Meaning("wrong_pages", "counter", "none", "pages", "process", headline=True, must_be_zero=True,
            summary="checked pages that did not hold what was written: another process's data, or a lost write"),
    Meaning("checked_values", "counter", "none", "values", "process",
            summary="values the client read back and checked against what it wrote (redis)"),
    Meaning("wrong_values", "counter", "none", "values", "process", headline=True, must_be_zero=True,
            summary="values read back that are not what was written (redis)"),
    Meaning("tests_passed", "counter", "none", "tests", "process",
            summary="test cases of the kernel's own selftest that passed in the phase"),
    Meaning("tests_failed", "counter", "none", "tests", "process", headline=True, must_be_zero=True,
            summary="test cases of the kernel's own selftest that failed in the phase"),
    Meaning("tests_skipped", "counter", "none", "tests", "process",
            summary="test cases of the kernel's own selftest that skipped (a feature the kernel or guest lacks)"),
    Meaning("duration_s", "counter", "lower", "s", "process", timing=True, summary="wall time of the phase",
            headline=True),
    Meaning("ops_per_s", "level", "higher", "ops/s", "process", timing=True, summary="client operations per second",
            headline=True),
    Meaning("latency_*_ms", "level", "lower", "ms", "process", timing=True,
            summary="client latency of a pipelined batch"),
    Meaning("vmstat.pgreuse", "counter", "higher", "faults", "system", summary="write faults that reused the page"),
    Meaning("vmstat.swap_ra_hit", "counter", "higher", "pages", "system", summary="swap readahead pages used"),
    Meaning("vmstat.swap_ra", "counter", "none", "pages", "system", summary="pages read ahead from swap"),
    Meaning("vmstat.pgscan_kswapd", "counter", "none", "pages", "system"),
    Meaning("vmstat.pgsteal_kswapd", "counter", "none", "pages", "system"),
    Meaning("vmstat.pgsteal_direct", "counter", "none", "pages", "system"),
    Meaning("vmstat.pswp*", "counter", "lower", "pages", "system", summary="pages read from / written to swap",
            headline=True),
    Meaning("vmstat.pg*fault", "counter", "lower", "faults", "system"),
    Meaning("vmstat.pgscan_direct", "counter", "lower", "pages", "system", summary="pages scanned in direct reclaim"),
    Meaning("vmstat.workingset_refault_*", "counter", "lower", "pages", "system",
            summary="reclaimed pages faulted back in while still in the workingset (their shadow entry was recent)"),
    Meaning("vmstat.workingset_activate_*", "counter", "none", "pages", "system",
            summary="refaulted pages activated at once: they were part of the workingset"),
    Meaning("vmstat.workingset_restore_*", "counter", "none", "pages", "system",
            summary="refaulted pages that had been active before they were reclaimed"),
    Meaning("vmstat.pgscan_anon", "counter", "none", "pages", "system",
            summary="anonymous pages reclaim scanned (kswapd, direct and memory-cgroup reclaim)"),
    Meaning("vmstat.pgscan_file", "counter", "none", "pages", "system",
            summary="page-cache pages reclaim scanned (kswapd, direct and memory-cgroup reclaim)"),
    Meaning("vmstat.pgsteal_anon", "counter", "none", "pages", "system",
            summary="anonymous pages reclaimed (to swap)"),
    Meaning("vmstat.pgsteal_file", "counter", "none", "pages", "system", summary="page-cache pages reclaimed"),
    Meaning("vmstat.pgactivate", "counter", "none", "pages", "system", summary="pages moved to an active LRU list"),
    Meaning("vmstat.pgdeactivate", "counter", "none", "pages", "system",
            summary="pages moved to an inactive LRU list"),
    Meaning("vmstat.pgrefill", "counter", "none", "pages", "system",
            summary="active pages scanned to refill the inactive lists"),
    Meaning("vmstat.thp_fault_alloc", "counter", "none", "huge pages", "system",
            summary="huge pages allocated at a page fault"),
    Meaning("vmstat.thp_fault_fallback", "counter", "lower", "faults", "system",
            summary="page faults that wanted a huge page and fell back to small pages"),
    Meaning("vmstat.thp_collapse_alloc", "counter", "none", "huge pages", "system",
            summary="huge pages khugepaged allocated to collapse a region into"),
    Meaning("vmstat.thp_collapse_alloc_failed", "counter", "lower", "huge pages", "system",
            summary="collapses that found no huge page"),
    Meaning("vmstat.thp_split_pmd", "counter", "none", "splits", "system",
            summary="huge-page mappings split into page tables (a COW of a huge page, a partial munmap, ...)"),
    Meaning("vmstat.thp_split_page", "counter", "none", "splits", "system",
            summary="huge pages split into small pages"),
    Meaning("vmstat.thp_deferred_split_page", "counter", "none", "pages", "system",
            summary="partly unmapped huge pages queued to be split"),
    Meaning("vmstat.thp_swpout", "counter", "none", "huge pages", "system",
            summary="huge pages swapped out whole"),
    Meaning("vmstat.thp_swpout_fallback", "counter", "lower", "huge pages", "system",
            summary="huge pages split before swap-out (no room for them whole)"),
    Meaning("vmstat.zswpout", "counter", "none", "pages", "system", summary="pages zswap took in (6.x)"),
    Meaning("vmstat.zswpin", "counter", "none", "pages", "system", summary="pages loaded back from zswap (6.x)"),
    Meaning("vmstat.zswpwb", "counter", "lower", "pages", "system",
            summary="pages zswap wrote back to the swap disk (6.x)"),
    Meaning("vmstat.oom_kill", "counter", "lower", "kills", "system"),
    Meaning("vmstat.*", "counter", "none", "events", "system"),
    Meaning("swap.used_pct", "level", "none", "%", "system",
            summary="swap in use in % of the swap device, the higher of the phase's start and end "
                    "(past 50% vm_swap_full() frees swap slots on swap-in)"),
    Meaning("memcg.*_kb", "level", "none", "KiB", "process", summary="memory cgroup reading at the end of the phase"),
    Meaning("memcg.workingset_refault_*", "counter", "lower", "pages", "process",
            summary="the workload's reclaimed pages faulted back in while still in its workingset"),
    Meaning("memcg.pgscan", "counter", "none", "pages", "process", summary="pages reclaim scanned in the cgroup"),
    Meaning("memcg.pgsteal", "counter", "none", "pages", "process", summary="pages reclaimed from the cgroup"),
    Meaning("memcg.pg*activate", "counter", "none", "pages", "process",
            summary="the cgroup's pages moved between the active and inactive LRU lists"),
    Meaning("memcg.pgrefill", "counter", "none", "pages", "process"),
    Meaning("memcg.workingset_*", "counter", "none", "pages", "process"),
    Meaning("memcg.*", "counter", "lower", "events", "process", summary="memory cgroup event count"),
    Meaning("zswap.stored_pages", "level", "none", "pages", "system",
            summary="pages held compressed in zswap at the end of the phase"),
    Meaning("zswap.pool_kb", "level", "none", "KiB", "system", summary="zswap's pool at the end of the phase"),
    Meaning("zswap.same_filled_pages", "level", "none", "pages", "system",
            summary="zswap pages stored as one repeated word"),
    Meaning("zswap.written_back_pages", "counter", "lower", "pages", "system",
            summary="pages zswap wrote back to the swap disk to make room"),
    Meaning("zswap.pool_limit_hit", "counter", "lower", "events", "system",
            summary="stores that found zswap's pool at its limit (zswap_pool_pct)"),
    Meaning("zswap.reject_*", "counter", "lower", "pages", "system",
            summary="pages zswap refused (poor compression, no memory, ...): they went to the disk"),
    Meaning("zswap.*", "counter", "none", "events", "system", summary="a zswap debugfs counter"),
    Meaning("scan_per_reclaim", "rate", "lower", "pages per page", "system",
            summary="(vmstat.pgscan_anon + pgscan_file) / (pgsteal_anon + pgsteal_file): pages scanned per page "
                    "reclaimed in the phase"),
    Meaning("refaults_per_reclaim", "rate", "lower", "pages per page", "system",
            summary="(vmstat.workingset_refault_anon + _file) / pages reclaimed in the phase: what reclaim took "
                    "that was needed again soon"),
    Meaning("activations_per_reclaim", "rate", "none", "pages per page", "system",
            summary="vmstat.pgactivate / pages reclaimed in the phase"),
    Meaning("program.*", "counter", "none", "", "process",
            summary="a figure the workload's program reported for the phase (its workload.toml says what)"),
    Meaning("bogo_ops", "counter", "none", "ops", "process",
            summary="stress-ng's bogo operations in the phase (all instances)"),
    Meaning("bogo_ops_per_s", "level", "higher", "ops/s", "process", timing=True, headline=True,
            summary="stress-ng's bogo operations per second of wall time"),
    Meaning("process.vmswap_kb", "level", "none", "KiB", "process"),
    Meaning("process.swapped_*_pages", "counter", "none", "pages", "process",
            summary="change of the workload process's VmSwap"),
    Meaning("perf.system.*-faults", "counter", "lower", "faults", "system", probed=True),
    Meaning("perf.system.*", "counter", "none", "hits", "system", summary="kprobe hits in the whole guest",
            probed=True),
    Meaning("perf.*-faults", "counter", "lower", "faults", "process", probed=True),
    Meaning("perf.*", "counter", "none", "hits", "process", summary="kprobe hits in the workload process", probed=True),
    Meaning("calls.*", "counter", "none", "calls", "system", probed=True,
            summary="calls of a function a variant changed (every copy of it), in the whole guest, from the "
                    "function profiler: the patch coverage of the phase"),
    Meaning("ftrace.*", "counter", "none", "hits", "system", summary="function profiler hits (a cross-check)",
            probed=True),
)

UNKNOWN = Meaning("*", "counter", "none", "", "system", summary="not in the metrics table: no verdict")


@functools.lru_cache(maxsize=4096)
def meaning(name: str) -> Meaning:
    """The table's entry for a metric name; UNKNOWN (no direction) for a name it does not know."""
    return next((entry for entry in TABLE if fnmatchcase(name, entry.pattern)), UNKNOWN)


def known(name: str) -> bool:
    return meaning(name) is not UNKNOWN


def derive(phases: dict[str, dict], read_phase: str) -> None:
    """Add the rates to each phase's figures (in place), from figures of the same boot.

    cow_copies_per_page and swapins_per_page divide by the phase's own `pages`;
    cow_copies_per_swapin divides the copies of each phase after the read phase by the pages
    the workload swapped in during the read phase: the pages a write can find in the swap cache.
    pswpout_per_swapout is the swap-out I/O of a phase per page the workload's process lost to swap
    (below 1 when pages still had a valid copy in swap and left without a write). copy_share and
    reuse_share split the phase's write faults on present pages into those that copied and the rest.
    """
    order = list(phases)
    swapped_in = phases.get(read_phase, {}).get("process.swapped_in_pages")
    for position, figures in enumerate(phases.values()):
        pages = figures.get("pages")
        if pages:
            if "cow_copies" in figures:
                figures["cow_copies_per_page"] = figures["cow_copies"] / pages
            if "process.swapped_in_pages" in figures:
                figures["swapins_per_page"] = figures["process.swapped_in_pages"] / pages
        if figures.get("wp_faults") and "cow_copies" in figures:
            figures["copy_share"] = min(1.0, figures["cow_copies"] / figures["wp_faults"])
            figures["reuse_share"] = 1.0 - figures["copy_share"]
        if figures.get("process.swapped_out_pages") and "vmstat.pswpout" in figures:
            figures["pswpout_per_swapout"] = figures["vmstat.pswpout"] / figures["process.swapped_out_pages"]
        reclaim_rates(figures)
        after_read = read_phase in order and position > order.index(read_phase)
        if after_read and swapped_in and "cow_copies" in figures:
            figures["cow_copies_per_swapin"] = figures["cow_copies"] / swapped_in


def reclaim_rates(figures: dict) -> None:
    """scan_per_reclaim, refaults_per_reclaim and activations_per_reclaim of a phase that reclaimed pages
    (vmstat's anon and file steals; a kernel before 5.8 lacks them, and the rates)."""
    stolen = [figures.get(f"vmstat.pgsteal_{kind}") for kind in ("anon", "file")]
    if None in stolen or not sum(stolen):
        return
    reclaimed = sum(stolen)
    scanned = [figures.get(f"vmstat.pgscan_{kind}") for kind in ("anon", "file")]
    if None not in scanned:
        figures["scan_per_reclaim"] = sum(scanned) / reclaimed
    refaults = [figures.get(f"vmstat.workingset_refault_{kind}") for kind in ("anon", "file")]
    if None not in refaults:
        figures["refaults_per_reclaim"] = sum(refaults) / reclaimed
    if "vmstat.pgactivate" in figures:
        figures["activations_per_reclaim"] = figures["vmstat.pgactivate"] / reclaimed
