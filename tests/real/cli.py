"""The harness as a user runs it, for the real tests: `python -m harness ARGS` in a child process."""

import subprocess
import sys


def harness(*args, timeout: float | None = 3600, check: bool = True) -> subprocess.CompletedProcess:
    """What `harness ARGS` did (arguments as strings), within timeout seconds (None: however long it takes); with
    check, its exit status 0 asserted, the tails of its output in the message."""
    result = subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def show(what: str, figure: str) -> None:
    """A figure of a real test, printed under -s or -rP: what it is, and its value."""
    print(f"\n[figure] {what}: {figure}")
