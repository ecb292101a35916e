"""The real thing: boot the base kernel in QEMU (auto accelerator), talk to it over SSH."""

import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import experiment

pytestmark = pytest.mark.real


def harness(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=timeout)


def qemu_processes(marker: str) -> list[str]:
    result = subprocess.run(["pgrep", "-af", "qemu-system-x86_64"], capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if marker in line]


def wait_for_line(stream, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 1.0)
        if ready:
            line = stream.readline()
            if not line:
                return False
            if text in line:
                return True
    return False


def test_boot_runs_commands_over_ssh_with_swap_active():
    swap_mb = experiment.load(None).guest.swap_mb
    result = harness("boot", "--variant", "base", "--", "sh", "-c", "uname -r; cat /proc/swaps; exit 7")
    assert result.returncode == 7, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("5.10.223"), result.stdout
    [swap] = [line.split() for line in lines[1:] if line.startswith("/dev/vda")]
    assert swap[1] == "partition"
    size_kib = int(swap[2])
    assert swap_mb * 1024 - 4 <= size_kib <= swap_mb * 1024, "all of the disk but the 4 KiB header"
    assert re.search(r"guest base ready in [\d.]+ s \((KVM|TCG)\)", result.stderr), result.stderr


def test_sigterm_during_a_guest_command_leaves_no_qemu(tmp_path):
    cache = Path("~/.cache/harness").expanduser()
    process = subprocess.Popen([sys.executable, "-m", "harness", "boot", "--variant", "base", "--", "sleep", "120"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    boots = cache / "boots"
    assert wait_for_line(process.stderr, "guest$ sleep 120", timeout=180), "the guest command never started"
    assert qemu_processes(str(boots)), "QEMU is running"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert qemu_processes(str(boots)) == []
    assert not list(boots.glob("boot-*")), "the boot's temporary files are gone"
