"""Boot benchmark (prints figures; not a test).

Runs `harness boot --variant base -- uname -r` N times (default 5) and prints, per run and
as medians, the boot-to-SSH-ready time the harness reports and the wall time of the whole
command (boot + command + shutdown). The kernel and image are built first, untimed.
"""

import argparse
import re
import statistics
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    args = parser.parse_args()
    command = [sys.executable, "-m", "harness", "boot", "--variant", "base", "--accel", args.accel, "--", "uname", "-r"]
    subprocess.run(command, check=True, capture_output=True)   # builds and image, untimed
    ready, whole, accels = [], [], set()
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        whole.append(time.monotonic() - started)
        match = re.search(r"ready in ([\d.]+) s \((\w+)\)", result.stderr)
        ready.append(float(match.group(1)))
        accels.add(match.group(2))
        print(f"run {run}: {result.stdout.strip()}  ready {ready[-1]:.1f} s  whole {whole[-1]:.1f} s  "
              f"({match.group(2)})")
    print(f"\naccelerator: {', '.join(sorted(accels))}; median of {args.runs}: boot-to-SSH-ready "
          f"{statistics.median(ready):.2f} s, boot+command+shutdown {statistics.median(whole):.2f} s")


if __name__ == "__main__":
    main()
