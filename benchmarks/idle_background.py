"""What the idle phase must cover (prints figures; not a test).

The idle phase counts the guest's background before the workload starts: what the guest does with no
workload (kernel threads, timers, the SSH server, the collector itself), so that a phase's counts can be
told from it. This boots the default experiment's baseline --boots times and, in each boot, counts windows
of nothing at every length of --lengths (in a shuffled order, each --windows times), with the probes and the
patch's changed functions of a counted boot. Prints, per window length, the median and the largest count of
each figure that is ever non-zero, and the figures' rates per second: a background that is a steady rate
needs only a window long enough to see it; one in bursts (a timer every few seconds) needs a window that
covers a burst, or a rate that says it happened.

    python benchmarks/idle_background.py [--boots 3] [--windows 4] [--lengths 0.25,0.5,1,2,4]
"""

import argparse
import random
import statistics
import time
from pathlib import Path

from harness import experiment
from harness.guest import boot
from harness.guest import image as guest_image
from harness.kernel import build
from harness.measure import collectors

SHOWN = ("system.cow_copies", "perf.system.page-faults", "perf.system.do_wp_page", "perf.system.do_swap_page",
         "vmstat.pgfault", "vmstat.pswpin", "vmstat.pswpout", "vmstat.pgscan_kswapd")


def windows(session, spec, lengths, count, calls) -> list[tuple[float, dict]]:
    collector = collectors.Collector(session)
    try:
        collectors.start(collector, spec.probes, None, calls)
        plan = [length for length in lengths for _ in range(count)]
        random.shuffle(plan)
        found = []
        for length in plan:
            with collectors.Phase(collector, spec.probes, spec.cow_probe, fault_probe=spec.fault_probe,
                                  calls=calls) as counters:
                started = time.monotonic()
                time.sleep(length)
                took = time.monotonic() - started
            found.append((took, counters.metrics))
        return found
    finally:
        collector.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--lengths", default="0.25,0.5,1,2,4")
    parser.add_argument("--calls", default="do_wp_page,unmap_page_range", help="functions counted as calls.NAME")
    args = parser.parse_args()
    lengths = [float(text) for text in args.lengths.split(",")]
    calls = tuple(name for name in args.calls.split(",") if name)
    spec = experiment.load(None)
    cache = Path("~/.cache/harness").expanduser()
    [built] = build.build_all(spec, spec.select([spec.baseline]), cache)
    image = guest_image.build(cache)
    by_length: dict[float, list[dict]] = {length: [] for length in lengths}
    busy = []
    for boot_number in range(1, args.boots + 1):
        with boot.booted(built, image, spec.guest, "auto", cache / "logs" / "boots", cache / "boots") as guest:
            for index, (took, metrics) in enumerate(windows(guest.session, spec, lengths, args.windows, calls)):
                length = min(lengths, key=lambda length: abs(length - took))
                by_length[length].append(metrics)
                counted = {name: value for name, value in metrics.items() if name in SHOWN and value}
                if counted:
                    busy.append(f"boot {boot_number}, window {index + 1} ({length:g} s): {counted}")
    names = [name for name in [*SHOWN, *(f"calls.{f}" for f in calls)]
             if any(m.get(name) for found in by_length.values() for m in found)]
    print(f"{args.boots} boots of {spec.baseline}, {args.windows} windows of each length per boot; "
          "median / largest count per window, then the median per second")
    print("| figure | " + " | ".join(f"{length:g} s" for length in lengths) + " |")
    print("| --- |" + " --- |" * len(lengths))
    for name in names:
        cells = []
        for length in lengths:
            values = [m.get(name, 0) for m in by_length[length]]
            middle = statistics.median(values)
            cells.append(f"{middle:g} / {max(values):g} ({middle / length:.1f}/s)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nwindows with a count ({len(busy)} of {sum(map(len, by_length.values()))}):")
    print("\n".join(busy) or "none")


if __name__ == "__main__":
    main()
