"""QEMU: the command line (a pure function), the accelerator choice, boot and teardown.

`auto` uses KVM only when it works: /dev/kvm must open, and the guest must reach the
kernel's first console line within KVM_PROGRESS_S; a guest that makes no progress (nested
virtualisation can hang right after the firmware) is killed and booted again under TCG.
QEMU always goes away: on success, on error, on Ctrl-C and on SIGTERM (the CLI turns it
into SystemExit), and with PR_SET_PDEATHSIG even when the harness is killed outright.
"""

import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from harness import runner
from harness.errors import BootFailed

log = logging.getLogger("harness.vm")

KVM_PROGRESS_S = 5.0
# A killed QEMU closes its sockets (the SSH EOF that makes the harness ask why) a moment before the
# kernel lets it be reaped: a cause is looked for after waiting this long for the exit.
EXIT_SETTLE_S = 2.0
KERNEL_STARTED = "Linux version"
_ALARM = re.compile(r"Kernel panic|BUG:|Oops|Unable to|No working init|Initramfs unpacking failed|"
                    r"Killed process|HARNESS-GUEST-ERROR")
_OOM_KILLED = re.compile(r"Killed process \d+ \(([^)]+)\)")
# What the kernel says when it finds itself wrong: a BUG_ON, an oops, a WARN_ON, a bad page or rss state.
_KERNEL_FAULT = re.compile(r"(kernel BUG at \S+?)(?::\d+)?!|(BUG: .*)|"
                           r"(general protection fault)|(Oops)\b|(WARNING): CPU: \d+ PID: \d+ at (\S+?)(?::\d+)? ")
_RIP = re.compile(r"RIP: \S+:([\w.]+)\+0x")
# The watchdogs' complaints are about time, which an emulated CPU on a loaded host does not keep: a soft
# lockup names whatever function the stalled CPU was in. They are not the kernel finding itself wrong.
_TIMING = re.compile(r"lockup|stall|hung task|blocked for more than", re.I)


def kernel_faults(console: str) -> list[tuple[str, str]]:
    """(what, as said) of each time the guest kernel found itself wrong on its console: 'kernel BUG at
    mm/memory.c in do_swap_page' and the line it printed. The name leaves out line numbers and offsets, which
    a patch moves, so that the same fault on two kernels has the same name; the watchdogs' complaints about
    time (_TIMING) are left out."""
    lines = console.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = _KERNEL_FAULT.search(line)
        if not match or "HARNESS-GUEST-ERROR" in line or _TIMING.search(line):
            continue
        what = next(group for group in match.groups()[:5] if group)
        if match.group(2):      # 'BUG: Bad page state in process x pfn:1f' -> its words up to the first field
            words = match.group(2).split(" in process")[0].split()
            what = " ".join(words[:next((k for k, w in enumerate(words) if k and re.search(r"[:\d]", w)), None)])
            what = what.rstrip(",;.")
        if match.group(5):
            what = f"WARNING at {match.group(6)}"
        after = lines[index + 1:index + 30]
        end = next((k for k, later in enumerate(after) if _KERNEL_FAULT.search(later)), len(after))
        rip = next((m.group(1) for m in map(_RIP.search, [line, *after[:end]]) if m), "")
        name = f"{what.strip()} in {rip}" if rip else what.strip()
        if name not in (known for known, _ in found):
            found.append((name, line.strip()))
    return found


@dataclass(frozen=True)
class VmSpec:
    kernel: Path
    initrd: Path
    swap_disk: Path
    console_log: Path
    ssh_port: int
    memory_mb: int = 1024
    cpus: int = 2
    accel: str = "tcg"         # kvm | tcg (auto is resolved before a spec is made)
    append: str = ""
    swap: str = "virtio-blk"   # virtio-blk: swap_disk is the guest's /dev/vda | zram: swap_mb of guest memory
    swap_mb: int = 0           # | zswap: a compressed cache in front of the swap disk
    thp: str = ""              # transparent_hugepage= (never | madvise | always); "" the kernel's default
    zswap_compressor: str = "lzo"
    zswap_pool_pct: int = 20
    data_disk: Path | None = None   # a second virtio disk, the guest's /dev/harness-data


def kernel_command_line(spec: VmSpec) -> str:
    swap = ["harness.swap=zram", f"harness.swap_mb={spec.swap_mb}"] if spec.swap == "zram" else \
        ["harness.swap=/dev/vda"]
    if spec.swap == "zswap":
        swap += ["zswap.enabled=1", f"zswap.compressor={spec.zswap_compressor}", "zswap.zpool=zsmalloc",
                 f"zswap.max_pool_percent={spec.zswap_pool_pct}"]
    if spec.data_disk is not None:     # virtio disks take vda, vdb in the order of the command line
        swap.append(f"harness.data=/dev/{'vda' if spec.swap == 'zram' else 'vdb'}")
    thp = [f"transparent_hugepage={spec.thp}"] if spec.thp else []
    # Under TCG the guest's TSC follows the host's clock, the same on every vCPU; the kernel's watchdog checks it
    # against jiffies, which fall behind whenever the emulator waits for a core, and then switches the guest to
    # jiffies: with two guests sharing 2 cores it did in 54 of 57 boots (4 of 57 one at a time), and one boot of
    # 96 hung right after the switch
    tsc = ["tsc=reliable"] if spec.accel == "tcg" else []
    words = ["console=ttyS0", "panic=-1", "oops=panic", *swap, *thp, *tsc, "rdinit=/init"]
    return " ".join(words + ([spec.append] if spec.append else []))


def qemu_argv(spec: VmSpec) -> list[str]:
    """The exact QEMU command line for spec."""
    cpu = "host" if spec.accel == "kvm" else "max"
    return [
        "qemu-system-x86_64",
        "-accel", spec.accel, "-cpu", cpu, "-m", str(spec.memory_mb), "-smp", str(spec.cpus),
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd),
        "-append", kernel_command_line(spec),
        *(["-drive", f"file={spec.swap_disk},if=virtio,format=raw,cache=unsafe,discard=unmap"]
          if spec.swap != "zram" else []),
        *(["-drive", f"file={spec.data_disk},if=virtio,format=raw,cache=unsafe"] if spec.data_disk is not None else []),
        "-netdev", f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", f"file:{spec.console_log}",
        "-display", "none", "-monitor", "none", "-parallel", "none", "-nodefaults",
        "-no-reboot",
    ]


def kvm_openable(device: str = "/dev/kvm") -> bool:
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


def kvm_boots(kernel: Path | None, scratch: Path) -> tuple[bool | None, str]:
    """(whether a Linux guest makes progress under KVM on this host, why): kernel (a bzImage) is booted with no
    root until its first console line, as `auto` does before every boot; None when there is no kernel to try."""
    if not kvm_openable():
        return False, "/dev/kvm cannot be opened"
    if kernel is None:
        return None, "/dev/kvm opens; no kernel is built yet to try a guest (the first boot tries, as auto does)"
    console = scratch / "kvm-probe.console"
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-kernel", str(kernel), "-append",
            "console=ttyS0 panic=-1", "-serial", f"file:{console}", "-display", "none", "-monitor", "none",
            "-nodefaults", "-no-reboot"]
    started = time.monotonic()
    qemu = runner.start(argv, stderr=runner.PIPE, text=True)
    try:
        while time.monotonic() - started < KVM_PROGRESS_S and qemu.poll() is None:
            if console.is_file() and KERNEL_STARTED in console.read_text(errors="replace"):
                return True, f"a guest printed its first line in {time.monotonic() - started:.1f} s"
            time.sleep(0.1)
        if qemu.poll() is not None:
            return False, "QEMU exited: " + (qemu.stderr.read().strip().splitlines() or ["?"])[-1]
        return False, f"the guest printed no kernel output in {KVM_PROGRESS_S:g} s (nested virtualisation?)"
    finally:
        runner.kill_group(qemu)
        qemu.stderr.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def qemu_version() -> str:
    return runner.output_of(["qemu-system-x86_64", "--version"]).splitlines()[0]


def make_swap_disk(path: Path, size_mb: int) -> None:
    """A fresh sparse raw file (the guest formats a swap disk; a data disk reads as zeros)."""
    with open(path, "wb") as disk:
        disk.truncate(size_mb * 1024 * 1024)


_running: set = set()     # the Qemu objects of this process that may still run: stop_all() ends them


def stop_all() -> int:
    """Stop every QEMU this process started and has not stopped yet (a worker told to stop); how many."""
    stopped = 0
    for qemu in list(_running):
        stopped += qemu.running()
        qemu.stop()
    return stopped


class Qemu:
    """A running QEMU process; a context manager that always stops it."""

    def __init__(self, spec: VmSpec, qemu_log: Path):
        self.spec = spec
        self.qemu_log = qemu_log
        self.process: runner.Process | None = None
        self.started = 0.0

    def __enter__(self):
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        self.spec.console_log.write_text("")
        with open(self.qemu_log, "ab") as sink:
            self.process = runner.start(qemu_argv(self.spec), stdout=sink)
        _running.add(self)
        self.started = time.monotonic()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def console(self) -> str:
        try:
            return self.spec.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, marker: str, timeout: float) -> bool:
        """True when marker appears on the console within timeout; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.console():
                return True
            if not self.running():
                return marker in self.console()
            time.sleep(0.05)
        return False

    def wait_exit(self, timeout: float) -> bool:
        return runner.exited_within(self.process, timeout)

    def stop(self) -> None:
        if self.process is not None:
            runner.kill_group(self.process)
            if self.process.returncode is None:
                self.process.wait()
        _running.discard(self)

    def qemu_said(self) -> str:
        """The last lines QEMU itself printed (errors), or '(nothing)'."""
        try:
            lines = [line.strip() for line in self.qemu_log.read_text(errors="replace").splitlines() if line.strip()]
        except FileNotFoundError:
            lines = []
        return " | ".join(lines[-2:]) or "(nothing)"

    def causes(self) -> list[str]:
        """What QEMU and the console say went wrong: QEMU gone, the OOM killer, a panic; [] if nothing."""
        found = []
        if self.process is not None and self.wait_exit(EXIT_SETTLE_S):
            said = self.qemu_said()
            found.append(f"QEMU exited (status {self.process.returncode}"
                         + (f", it said: {said})" if said != "(nothing)" else ")"))
        console = self.console()
        killed = list(dict.fromkeys(_OOM_KILLED.findall(console)))
        if killed:
            found.append(f"the guest's OOM killer killed {', '.join(killed)}")
        found += [line.strip() for line in console.splitlines() if "Kernel panic" in line][:1]
        return found

    def failure(self, what: str) -> BootFailed:
        """A BootFailed quoting what matters: QEMU's own error, the panic line, the last lines."""
        lines = [line.strip() for line in self.console().splitlines() if line.strip()]
        said = [] if self.running() or self.qemu_said() == "(nothing)" else [f"QEMU: {self.qemu_said()}"]
        alarming = [line for line in lines if _ALARM.search(line) and not line.startswith("HARNESS-GUEST-ERROR")][:2]
        tail = " | ".join(said + alarming + [line for line in lines[-3:] if line not in alarming])
        tail = tail or "(nothing on the console)"
        # the kernel runs out of memory unpacking it, or QEMU refuses to load it at all ("initrd is too large")
        if any("Initramfs unpacking failed" in line for line in lines) or "initrd is too large" in self.qemu_said():
            what += f" (the initramfs did not fit in {self.spec.memory_mb} MB: raise [guest] memory_mb)"
        return BootFailed(what=what, tail=tail, log=self.spec.console_log)


_kvm_failed: str = ""   # why KVM did not work, remembered for the rest of this process


def kvm_works(kernel: Path) -> tuple[bool, str]:
    """(whether guests get KVM here, why not), as `auto` finds before its first boot: kernel booted under
    KVM until its first console line; a failure is remembered, so that boots go straight to TCG."""
    global _kvm_failed
    if not _kvm_failed:
        with tempfile.TemporaryDirectory(prefix="harness-kvm-") as scratch:
            works, why = kvm_boots(kernel, Path(scratch))
        if works:
            return True, ""
        _kvm_failed = why
    return False, _kvm_failed


def start_with_fallback(spec: VmSpec, accel: str, qemu_log: Path) -> Qemu:
    """Start QEMU with accel (auto | kvm | tcg); under auto, fall back to TCG when KVM fails."""
    global _kvm_failed
    if accel == "auto" and not _kvm_failed and not kvm_openable():
        _kvm_failed = "/dev/kvm cannot be opened"
        log.info("accelerator: TCG, because %s", _kvm_failed)
    if accel == "tcg" or (accel == "auto" and _kvm_failed):
        if accel == "auto":
            log.debug("accelerator: TCG (KVM: %s)", _kvm_failed)
        return _started(replace(spec, accel="tcg"), qemu_log)
    qemu = _started(replace(spec, accel="kvm"), qemu_log)
    try:
        if accel == "kvm" or qemu.wait_for(KERNEL_STARTED, KVM_PROGRESS_S):
            return qemu
    except BaseException:       # Ctrl-C or SIGTERM while KVM is tried: the caller never got this QEMU to stop
        qemu.stop()
        raise
    if qemu.running():
        _kvm_failed = f"the guest printed no kernel output in {KVM_PROGRESS_S:g} s (nested virtualisation?)"
    else:
        _kvm_failed = "QEMU exited: " + qemu.qemu_said()
    qemu.stop()
    log.warning("accelerator: KVM does not work here (%s); falling back to TCG", _kvm_failed)
    return _started(replace(spec, accel="tcg"), qemu_log)


def _started(spec: VmSpec, qemu_log: Path) -> Qemu:
    qemu = Qemu(spec, qemu_log.with_suffix(f".{spec.accel}.log"))   # one log per attempt
    qemu.start()
    return qemu
