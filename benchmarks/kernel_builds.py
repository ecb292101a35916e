"""Build benchmark across kernels (prints figures; not a test).

Builds the baseline of the default experiment (Debian's 5.10) and `v6.1` of the 6.1 experiment
(Debian's 6.1) with --rebuild, one after the other, and prints each build's wall time, stages
and ccache hit rate. With --cold it first deletes <cache>/builds and <cache>/ccache (the sources
stay), so that the figures are cold builds; without it they are cached builds (a warm ccache).
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

KERNELS = (("do-wp-page-swapcache", "base"), ("do-wp-page-swapcache-6.1", "v6.1"))


def build(cache_dir: Path, experiment: str, variant: str) -> tuple[float, dict]:
    started = time.monotonic()
    output = subprocess.run([sys.executable, "-m", "harness", "--cache-dir", str(cache_dir), "build", "-e",
                             experiment, "--variant", variant, "--rebuild"], check=True, capture_output=True,
                            text=True).stdout
    directory = Path(output.split(": ", 1)[1].split(" ", 1)[0]).parent
    return time.monotonic() - started, json.loads((directory / "build.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/harness").expanduser())
    parser.add_argument("--cold", action="store_true", help="Delete builds and ccache first.")
    args = parser.parse_args()
    if args.cold:
        for folder in ("builds", "ccache"):
            subprocess.run(["find", str(args.cache_dir / folder), "-type", "d", "-exec", "chmod", "u+w", "{}", "+"],
                           stderr=subprocess.DEVNULL)
            shutil.rmtree(args.cache_dir / folder, ignore_errors=True)
    print(f"{'kernel':<16} {'build s':>8} {'command s':>10}  ccache hits  stages")
    for experiment, variant in KERNELS:
        wall, record = build(args.cache_dir, experiment, variant)
        total = record["ccache_hits"] + record["ccache_misses"]
        stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in record["stage_seconds"].items())
        print(f"{record['release']:<16} {record['duration_s']:>8.0f} {wall:>10.0f}  "
              f"{record['ccache_hits']}/{total} ({100 * record['ccache_hits'] / max(total, 1):.0f}%)  {stages}")
    print(f"({'cold: empty ccache' if args.cold else 'cached: warm ccache, --rebuild'})")


if __name__ == "__main__":
    main()
