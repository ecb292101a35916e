"""Do the rates spread less than the counts they replace? (prints figures; not a test)

For each variant of a run (default: the committed reference run), the coefficient of
variation (stddev / mean over valid counted boots) of a count and of the rate the default
experiment declares primary instead: copies in the write phase against copies per page
swapped in, and the reswap's swap-out I/O against swap-out I/O per page pushed out.
"""

import argparse
import statistics
from pathlib import Path

from harness import results
from harness.analysis import sampling
from harness.project import ROOT

PAIRS = (("swapcow", "write", "cow_copies", "cow_copies_per_swapin"),
         ("redis", "write", "cow_copies", "cow_copies_per_swapin"),
         ("redis", "reswap", "vmstat.pswpout", "pswpout_per_swapout"))


def spread(values) -> str:
    mean = statistics.fmean(values)
    return "-" if mean == 0 or len(values) < 2 else f"{statistics.stdev(values) / mean * 100:.2f}%"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=max(ROOT.glob("results/reference-*")))
    args = parser.parse_args()
    samples, runs, metadata = results.read(args.run_dir)
    cells = sampling.gather(sampling.valid_samples(samples, runs)[0], runs)
    order = metadata.variant_names
    print(f"Spread (coefficient of variation) over the valid boots of {args.run_dir.name}")
    print("| workload | phase | variant | n | count | its CV | rate | its CV |")
    print("|---|---|---|---|---|---|---|---|")
    for workload, phase, count, rate in PAIRS:
        counts, rates = cells.get((workload, phase, count), {}), cells.get((workload, phase, rate), {})
        for variant in sorted(counts, key=lambda name: order.index(name) if name in order else len(order)):
            if variant in rates:
                print(f"| {workload} | {phase} | {variant} | {len(counts[variant][1])} | {count} | "
                      f"{spread(counts[variant][1])} | {rate} | {spread(rates[variant][1])} |")


if __name__ == "__main__":
    main()
