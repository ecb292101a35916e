"""Boot a built variant: this boot's keys, initrd and swap disk, QEMU, and an SSH session.

`booted()` is the one way to get a guest; on leaving it (normally, on error, on Ctrl-C or
SIGTERM) the guest is rebooted out of (QEMU exits with -no-reboot), QEMU is killed if it
lingers, and the boot's temporary files (keys, initrd, swap disk) are removed. The serial
console log stays in log_dir.
"""

import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import image as guest_image
from harness import vm
from harness.build import Build
from harness.errors import BootFailed
from harness.experiment import GuestConfig
from harness.guest import GuestSession, make_keys

log = logging.getLogger("harness.boot")

BOOT_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 10.0
GUEST_ERROR = "HARNESS-GUEST-ERROR"


@dataclass(frozen=True)
class Booted:
    session: GuestSession
    accelerator: str
    qemu_version: str
    ready_s: float            # from QEMU start (of the attempt that booted) to SSH accepted
    console_log: Path
    spec: vm.VmSpec


def plan(build: Build, config: GuestConfig, boot_dir: Path, console_log: Path, accel: str, port: int,
         append: str = "") -> vm.VmSpec:
    """The VmSpec a boot will use (accel 'auto' is shown as the first attempt)."""
    first = "kvm" if accel == "kvm" or (accel == "auto" and vm.kvm_openable()) else "tcg"
    return vm.VmSpec(kernel=build.bzimage, initrd=boot_dir / "initrd.cpio", swap_disk=boot_dir / "swap.img",
                     console_log=console_log, ssh_port=port, memory_mb=config.memory_mb, cpus=config.cpus,
                     accel=first, append=append)


@contextmanager
def booted(build: Build, image: guest_image.Image, config: GuestConfig, accel: str, log_dir: Path,
           work_dir: Path, timeout: float = BOOT_TIMEOUT_S, append: str = ""):
    """Boot build in a fresh guest and yield a Booted; extra kernel parameters in append."""
    log_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    boot_dir = Path(tempfile.mkdtemp(prefix="boot-", dir=work_dir))
    console_log = log_dir / f"console-{build.variant}-{time.strftime('%Y%m%d-%H%M%S')}-{boot_dir.name[5:]}.log"
    qemu = session = None
    try:
        keys_root = boot_dir / "keys-root"
        keys = make_keys(boot_dir, keys_root)
        guest_image.boot_initrd(image, keys_root, boot_dir / "initrd.cpio")
        vm.make_swap_disk(boot_dir / "swap.img", config.swap_mb)
        spec = plan(build, config, boot_dir, console_log, accel, vm.free_port(), append)
        qemu = vm.start_with_fallback(spec, accel, boot_dir / "qemu.log")
        _wait_ready(qemu, timeout)
        session = GuestSession(spec.ssh_port, keys)
        session.connect(timeout=max(5.0, timeout - (time.monotonic() - qemu.started)))
        ready = time.monotonic() - qemu.started
        log.info("guest %s ready in %.1f s (%s)", build.variant, ready, qemu.spec.accel.upper())
        yield Booted(session, qemu.spec.accel, vm.qemu_version(), ready, console_log, qemu.spec)
    finally:
        _shutdown(qemu, session)
        shutil.rmtree(boot_dir, ignore_errors=True)


def _wait_ready(qemu: vm.Qemu, timeout: float) -> None:
    remaining = timeout - (time.monotonic() - qemu.started)
    if not qemu.wait_for(guest_image.READY_MARKER, remaining):
        what = "exited before it was ready" if not qemu.running() else f"was not ready within {timeout:g} s"
        raise qemu.failure(what)
    errors = [line for line in qemu.console().splitlines() if line.startswith(GUEST_ERROR)]
    if errors:
        raise BootFailed(what=f"reported an error during start-up ({errors[0]})", tail=errors[-1],
                         log=qemu.spec.console_log)


def _shutdown(qemu: vm.Qemu | None, session: GuestSession | None) -> None:
    if session is not None:
        try:
            session.client.exec_command("reboot -f", timeout=2)
        except Exception:   # the guest may be gone already; QEMU is killed below either way
            pass
        session.close()
    if qemu is not None:
        if qemu.running() and session is not None:
            qemu.wait_exit(SHUTDOWN_TIMEOUT_S)
        qemu.stop()
