"""Build benchmark (prints figures; not a test).

From an empty build cache and an empty ccache: build `base` and `patched` of the default
experiment, then build `patched` again with --rebuild. Prints the cold build wall time, the
variant build that follows it (the one-file patch over a warm ccache), the forced rebuild,
their ratios to the cold build, and ccache hit rates. It deletes <cache>/builds and
<cache>/ccache first: the kernel sources stay.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def harness(cache_dir: Path, *args) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "harness", "--cache-dir", str(cache_dir), *args], check=True)
    return time.monotonic() - started


def newest_build(cache_dir: Path, variant: str) -> dict:
    records = [json.loads(p.read_text()) for p in (cache_dir / "builds").glob("*/build.json")]
    records = [r for r in records if r["variant"] == variant]
    return max(records, key=lambda r: Path(r["directory"], "build.json").stat().st_mtime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/harness").expanduser())
    args = parser.parse_args()
    for folder in ("builds", "ccache"):
        subprocess.run(["find", str(args.cache_dir / folder), "-type", "d", "-exec", "chmod", "u+w", "{}", "+"],
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(args.cache_dir / folder, ignore_errors=True)

    both = harness(args.cache_dir, "build", "--variant", "base", "--variant", "patched")
    base, patched = newest_build(args.cache_dir, "base"), newest_build(args.cache_dir, "patched")
    rebuild = harness(args.cache_dir, "build", "--variant", "patched", "--rebuild")
    again = newest_build(args.cache_dir, "patched")

    def rate(record):
        total = record["ccache_hits"] + record["ccache_misses"]
        return f"{record['ccache_hits']}/{total} hits ({100 * record['ccache_hits'] / max(total, 1):.1f}%)"

    cold = base["duration_s"]
    print()
    print(f"{'stage':<44} {'wall s':>8} {'/ cold':>7}  ccache")
    print(f"{'cold build, base (empty ccache)':<44} {cold:>8.0f} {1:>7.0%}  {rate(base)}")
    print(f"{'variant build, patched (after base)':<44} {patched['duration_s']:>8.0f} "
          f"{patched['duration_s'] / cold:>7.1%}  {rate(patched)}")
    print(f"{'forced rebuild, patched (--rebuild)':<44} {again['duration_s']:>8.0f} "
          f"{again['duration_s'] / cold:>7.1%}  {rate(again)}")
    for name, record in (("base (cold)", base), ("patched (after base)", patched), ("patched (--rebuild)", again)):
        stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in record["stage_seconds"].items())
        print(f"  stages of {name}: {stages}")
    print(f"{'harness build base+patched, whole command':<44} {both:>8.0f}")
    print(f"{'harness build patched --rebuild, whole cmd':<44} {rebuild:>8.0f}")


if __name__ == "__main__":
    main()
