"""The real thing: boot the base kernel in QEMU (auto accelerator), talk to it over SSH."""

import hashlib
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import experiment
from harness.errors import BootFailed, GuestCommandFailed, GuestTimedOut
from harness.guest import boot, image
from harness.kernel import build
from tests.real.cli import harness

pytestmark = pytest.mark.real




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
    result = harness("boot", "--variant", "base", "--", "sh", "-c", "uname -r; cat /proc/swaps; exit 7", timeout=300,
                     check=False)
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
    process = subprocess.Popen([sys.executable, "-m", "harness", "-v", "boot", "--variant", "base", "--", "sleep",
                                "120"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    boots = cache / "boots"
    assert wait_for_line(process.stderr, "guest$ sleep 120", timeout=180), "the guest command never started"
    assert qemu_processes(str(boots)), "QEMU is running"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert qemu_processes(str(boots)) == []
    assert not list(boots.glob("boot-*")), "the boot's temporary files are gone"


@pytest.fixture(scope="module")
def base_build_and_image():
    cache = Path("~/.cache/harness").expanduser()
    spec = experiment.load(None)
    [built] = build.build_all(spec, spec.select(["base"]), cache)
    return built, image.build(cache), spec.guest, cache


def test_guest_session_runs_transfers_and_times_out(tmp_path, base_build_and_image):
    built, guest_image, config, cache = base_build_and_image
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 4096)
    with boot.booted(built, guest_image, config, "auto", tmp_path / "logs", cache / "boots") as guest:
        session = guest.session
        assert guest.accelerator in ("kvm", "tcg") and guest.qemu_version.startswith("QEMU emulator version")
        session.upload(payload, "/tmp/payload.bin")
        digest = session.run(["sha256sum", "/tmp/payload.bin"]).stdout.split()[0]
        assert digest == hashlib.sha256(payload.read_bytes()).hexdigest()
        session.download("/tmp/payload.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
        failed = session.run("echo out; echo err >&2; exit 3", check=False)
        assert (failed.status, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
        with pytest.raises(GuestCommandFailed, match="exited with status 3; stderr: err"):
            session.run("echo err >&2; exit 3")
        with pytest.raises(GuestTimedOut):
            session.run(["sleep", "30"], timeout=1)
        assert session.run(["cat", "/proc/sys/kernel/osrelease"]).stdout.startswith("5.10.223")
        for mounted in ("cgroup2 /sys/fs/cgroup", "tracefs /sys/kernel/tracing", "debugfs /sys/kernel/debug"):
            assert mounted in session.run(["cat", "/proc/mounts"]).stdout
    assert guest.console_log.is_file() and "Linux version 5.10.223" in guest.console_log.read_text()


def test_a_failed_boot_quotes_the_console(tmp_path, base_build_and_image):
    built, guest_image, config, cache = base_build_and_image
    with pytest.raises(BootFailed, match=r"exited before it was ready.*(Kernel panic|No working init)"):
        with boot.booted(built, guest_image, config, "auto", tmp_path / "logs", cache / "boots",
                         append="rdinit=/nonexistent init=/nonexistent"):
            pass
    assert not qemu_processes(str(cache / "boots"))
