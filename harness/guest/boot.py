"""Boot a built variant: this boot's keys, initrd and swap disk, QEMU, and an SSH session.

`booted()` is the one way to get a guest; on leaving it (normally, on error, on Ctrl-C or
SIGTERM) the guest is rebooted out of (QEMU exits with -no-reboot), QEMU is killed if it
lingers, and the boot's temporary files (keys, initrd, swap disk) are removed. The serial
console log stays in log_dir.
"""

import logging
import os
import shlex
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.experiment import GuestConfig
from harness.guest import image as guest_image
from harness.guest import vm
from harness.guest.session import GuestSession, make_keys
from harness.kernel.build import Build

log = logging.getLogger("harness.boot")

OWNER = "owner"                 # in each boot folder: 'PID START' of the harness that made it
STALE_WITHOUT_OWNER_S = 60.0
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
    qemu: vm.Qemu

    def explain(self, error: Exception) -> str:
        """error, after the cause QEMU and the guest's console give for it (QEMU exited, the OOM killer)."""
        text = str(error) or type(error).__name__
        causes = self.qemu.causes()
        return "; ".join(causes + [f"then: {text}" if causes else text])


def plan(build: Build, config: GuestConfig, boot_dir: Path, console_log: Path, accel: str, port: int,
         append: str = "") -> vm.VmSpec:
    """The VmSpec a boot will use (accel 'auto' is shown as the first attempt)."""
    first = "kvm" if accel == "kvm" or (accel == "auto" and vm.kvm_openable()) else "tcg"
    return vm.VmSpec(kernel=build.bzimage, initrd=boot_dir / "initrd.cpio", swap_disk=boot_dir / "swap.img",
                     console_log=console_log, ssh_port=port, memory_mb=config.memory_mb, cpus=config.cpus,
                     accel=first, append=append, swap=config.swap, swap_mb=config.swap_mb, thp=config.thp,
                     zswap_compressor=config.zswap_compressor, zswap_pool_pct=config.zswap_pool_pct,
                     data_disk=boot_dir / "data.img" if config.data_mb else None)


def dry_run(build: Build, config: GuestConfig, accel: str, cache_dir: Path) -> list[str]:
    """The QEMU command line a boot would use (with placeholder boot folder and port), and what auto would do."""
    planned = plan(build, config, cache_dir / "boots" / "boot-XXXXXX", cache_dir / "logs" / "console.log", accel,
                   10022)
    lines = [" ".join(shlex.quote(part) for part in vm.qemu_argv(planned))]
    if accel == "auto" and planned.accel == "kvm":
        lines.append(f"# auto: rerun with -accel tcg -cpu max if the guest prints nothing in {vm.KVM_PROGRESS_S:g} s")
    return lines


@contextmanager
def booted(build: Build, image: guest_image.Image, config: GuestConfig, accel: str, log_dir: Path,
           work_dir: Path, timeout: float = BOOT_TIMEOUT_S, append: str = "", consoles: list | None = None):
    """Boot build in a fresh guest and yield a Booted; extra kernel parameters in append. consoles, when given,
    gets the path of this boot's console log before QEMU starts: it is there even when the boot fails."""
    log_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    sweep(work_dir)
    boot_dir = Path(tempfile.mkdtemp(prefix="boot-", dir=work_dir))
    (boot_dir / OWNER).write_text(_me())
    console_log = log_dir / f"console-{build.variant}-{time.strftime('%Y%m%d-%H%M%S')}-{boot_dir.name[5:]}.log"
    if consoles is not None:
        consoles.append(console_log)
    qemu = session = None
    try:
        keys_root = boot_dir / "keys-root"
        keys = make_keys(boot_dir, keys_root)
        guest_image.boot_initrd(image, keys_root, boot_dir / "initrd.cpio")
        if config.swap != "zram":
            vm.make_swap_disk(boot_dir / "swap.img", config.swap_mb)
        if config.data_mb:
            vm.make_swap_disk(boot_dir / "data.img", config.data_mb)
        spec = plan(build, config, boot_dir, console_log, accel, vm.free_port(), append)
        qemu = vm.start_with_fallback(spec, accel, boot_dir / "qemu.log")
        _wait_ready(qemu, timeout)
        session = GuestSession(spec.ssh_port, keys)
        session.connect(timeout=max(5.0, timeout - (time.monotonic() - qemu.started)))
        ready = time.monotonic() - qemu.started
        log.info("guest %s ready in %.1f s (%s)", build.variant, ready, qemu.spec.accel.upper())
        yield Booted(session, qemu.spec.accel, vm.qemu_version(), ready, console_log, qemu.spec, qemu)
    finally:
        _shutdown(qemu, session)
        shutil.rmtree(boot_dir, ignore_errors=True)


def _me() -> str:
    """This process as 'PID START': the start time tells a live owner from a reused PID."""
    return f"{os.getpid()} {_started(os.getpid())}"


def _started(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def sweep(work_dir: Path) -> list[Path]:
    """Remove the boot folders (initrd, swap image) of harnesses that died without cleaning up (kill -9)."""
    removed = []
    for folder in work_dir.glob("boot-*"):
        try:
            pid, started = (folder / OWNER).read_text().split()
            alive = _started(int(pid)) == started
        except FileNotFoundError:       # no owner yet: a boot starting this instant, unless it is old
            alive = time.time() - folder.stat().st_mtime < STALE_WITHOUT_OWNER_S
        except (OSError, ValueError):
            alive = False
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d boot folder(s) left by harnesses that were killed: %s", len(removed),
                 ", ".join(folder.name for folder in removed))
    return removed


def _wait_ready(qemu: vm.Qemu, timeout: float) -> None:
    remaining = timeout - (time.monotonic() - qemu.started)
    if not qemu.wait_for(guest_image.READY_MARKER, remaining):
        what = "exited before it was ready" if not qemu.running() else f"was not ready within {timeout:g} s"
        raise qemu.failure(what)
    errors = [line for line in qemu.console().splitlines() if line.startswith(GUEST_ERROR)]
    if errors:
        raise qemu.failure(f"reported an error during start-up ({errors[0].removeprefix(GUEST_ERROR).strip()})")


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
