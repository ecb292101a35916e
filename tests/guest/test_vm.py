import os
import re
import shutil
import signal
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness import runner
from harness.guest import vm
from tests.conftest import FAKES
from tests.test_runner import alive


def spec(tmp_path, accel="tcg"):
    return vm.VmSpec(kernel=Path("/k/bzImage"), initrd=Path("/b/initrd.cpio"), swap_disk=Path("/b/swap.img"),
                     console_log=tmp_path / "console.log", ssh_port=10022, memory_mb=1024, cpus=2, accel=accel)


def test_qemu_argv_tcg(tmp_path):
    assert vm.qemu_argv(spec(tmp_path)) == [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
        "-kernel", "/k/bzImage", "-initrd", "/b/initrd.cpio",
        "-append", "console=ttyS0 panic=-1 oops=panic harness.swap=/dev/vda tsc=reliable rdinit=/init",
        "-drive", "file=/b/swap.img,if=virtio,format=raw,cache=unsafe,discard=unmap",
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:10022-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", f"file:{tmp_path / 'console.log'}",
        "-display", "none", "-monitor", "none", "-parallel", "none", "-nodefaults", "-no-reboot"]


def test_qemu_argv_kvm_uses_the_host_cpu(tmp_path):
    argv = vm.qemu_argv(spec(tmp_path, accel="kvm"))
    assert argv[1:5] == ["-accel", "kvm", "-cpu", "host"]
    assert "tsc=reliable" not in argv[argv.index("-append") + 1], "KVM guests keep the kernel's own TSC checks"


def test_network_is_restricted_with_one_forward_on_loopback(tmp_path):
    netdev = vm.qemu_argv(spec(tmp_path))[vm.qemu_argv(spec(tmp_path)).index("-netdev") + 1]
    assert "restrict=on" in netdev and netdev.count("hostfwd=") == 1 and "127.0.0.1:10022" in netdev


def test_swap_disk_is_sparse_and_sized(tmp_path):
    disk = tmp_path / "swap.img"
    vm.make_swap_disk(disk, 256)
    assert disk.stat().st_size == 256 * 1024 * 1024
    assert disk.stat().st_blocks == 0


@pytest.fixture(autouse=True)
def forget_kvm_verdict(monkeypatch):
    monkeypatch.setattr(vm, "_kvm_failed", "")


@pytest.fixture
def fake_qemu(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(FAKES / "fake-qemu", bin_dir / "qemu-system-x86_64")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(vm, "KVM_PROGRESS_S", 0.5)
    return tmp_path / "fake-qemu.starts"


def starts(record: Path) -> list[tuple[str, int]]:
    return [(accel, int(pid)) for accel, pid in (line.split() for line in record.read_text().splitlines())]


def test_auto_falls_back_to_tcg_when_the_kvm_guest_makes_no_progress(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setattr(vm, "kvm_openable", lambda: True)
    qemu = vm.start_with_fallback(spec(tmp_path, accel="kvm"), "auto", tmp_path / "qemu.log")
    try:
        assert qemu.spec.accel == "tcg"
        assert qemu.wait_for(vm.KERNEL_STARTED, 5)
        (kvm, kvm_pid), (tcg, _) = starts(fake_qemu)
        assert (kvm, tcg) == ("kvm", "tcg")
        assert not alive(kvm_pid), "the stalled KVM guest is killed"
    finally:
        qemu.stop()
    assert not qemu.running()


def test_auto_without_dev_kvm_goes_straight_to_tcg(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setattr(vm, "kvm_openable", lambda: False)
    with vm.start_with_fallback(spec(tmp_path, accel="kvm"), "auto", tmp_path / "qemu.log") as qemu:
        assert qemu.spec.accel == "tcg"
        assert qemu.wait_for(vm.KERNEL_STARTED, 5)
    assert [accel for accel, _ in starts(fake_qemu)] == ["tcg"]


def test_explicit_kvm_is_not_second_guessed(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setattr(vm, "kvm_openable", lambda: True)
    with vm.start_with_fallback(spec(tmp_path), "kvm", tmp_path / "qemu.log") as qemu:
        assert qemu.spec.accel == "kvm"
        assert not qemu.wait_for(vm.KERNEL_STARTED, 0.5)
        failure = qemu.failure("was not ready")
        assert "nothing on the console" in str(failure) and str(tmp_path / "console.log") in str(failure)


def test_stop_kills_qemu(tmp_path, fake_qemu):
    qemu = vm.Qemu(spec(tmp_path), tmp_path / "qemu.log")
    qemu.start()
    pid = qemu.process.pid
    started = time.monotonic()
    qemu.stop()
    assert time.monotonic() - started < 5
    assert not alive(pid)


def test_a_qemu_that_is_still_exiting_is_named_as_the_cause(tmp_path, fake_qemu):
    # SIGKILL closes QEMU's sockets before the process can be reaped: the harness, woken by the SSH
    # EOF, may ask for the cause while QEMU is still on its way out
    qemu = vm.Qemu(spec(tmp_path), tmp_path / "qemu.log")
    qemu.start()
    try:
        assert qemu.wait_for(vm.KERNEL_STARTED, 5)
        threading.Timer(0.5, os.kill, (qemu.process.pid, signal.SIGKILL)).start()
        assert qemu.running()
        assert qemu.causes() == ["QEMU exited (status -9)"]
    finally:
        qemu.stop()


def test_a_running_qemu_is_no_cause(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setattr(vm, "EXIT_SETTLE_S", 0.2)
    with vm.Qemu(spec(tmp_path), tmp_path / "qemu.log") as qemu:
        assert qemu.wait_for(vm.KERNEL_STARTED, 5)
        assert qemu.causes() == []


def test_the_kvm_verdict_is_remembered_for_later_boots(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setattr(vm, "kvm_openable", lambda: True)
    for _ in range(2):
        with vm.start_with_fallback(spec(tmp_path), "auto", tmp_path / "qemu.log") as qemu:
            assert qemu.wait_for(vm.KERNEL_STARTED, 5)
    assert [accel for accel, _ in starts(fake_qemu)] == ["kvm", "tcg", "tcg"]
    assert "no kernel output" in vm._kvm_failed


def test_zram_swap_has_no_disk_and_tells_the_guest_its_size(tmp_path):
    argv = vm.qemu_argv(replace(spec(tmp_path), swap="zram", swap_mb=96))
    assert "-drive" not in argv
    assert argv[argv.index("-append") + 1] == \
        "console=ttyS0 panic=-1 oops=panic harness.swap=zram harness.swap_mb=96 tsc=reliable rdinit=/init"


def test_kvm_opens_only_where_the_device_can_be_opened_for_writing(tmp_path):
    device = tmp_path / "kvm"
    device.write_bytes(b"")
    assert vm.kvm_openable(str(device))
    assert not vm.kvm_openable(str(tmp_path / "absent"))
    device.chmod(0o444)
    assert vm.kvm_openable(str(device)) == (os.geteuid() == 0), "root opens a read-only file; nobody else does"


@pytest.mark.parametrize("kvm, openable, kernel, verdict, why", [
    ("", False, "bzImage", False, re.escape("/dev/kvm cannot be opened")),
    ("", True, None, None, re.escape("/dev/kvm opens; no kernel is built yet to try a guest (the first boot tries, "
                                     "as auto does)")),
    ("works", True, "bzImage", True, r"a guest printed its first line in \d+\.\d s"),
    ("", True, "bzImage", False, re.escape("the guest printed no kernel output in 0.5 s (nested virtualisation?)")),
    ("refused", True, "bzImage", False, re.escape("QEMU exited: qemu-system-x86_64: failed to initialize kvm: "
                                                  "Permission denied")),
])
def test_doctor_tries_a_guest_under_kvm(tmp_path, fake_qemu, monkeypatch, kvm, openable, kernel, verdict, why):
    monkeypatch.setenv("FAKE_KVM", kvm)
    monkeypatch.setattr(vm, "kvm_openable", lambda: openable)
    works, said = vm.kvm_boots(tmp_path / kernel if kernel else None, tmp_path)
    assert works is verdict and re.fullmatch(why, said), said
    if openable and kernel:
        [(accel, pid)] = starts(fake_qemu)
        assert accel == "kvm" and not alive(pid), "the probe's QEMU is gone"
    else:
        assert not fake_qemu.exists(), "no QEMU was started"


def test_auto_falls_back_to_tcg_when_qemu_cannot_use_kvm(tmp_path, fake_qemu, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_KVM", "refused")
    monkeypatch.setattr(vm, "kvm_openable", lambda: True)
    with vm.start_with_fallback(spec(tmp_path), "auto", tmp_path / "qemu.log") as qemu:
        assert qemu.spec.accel == "tcg" and qemu.qemu_log == tmp_path / "qemu.tcg.log"
    assert vm._kvm_failed == "QEMU exited: qemu-system-x86_64: failed to initialize kvm: Permission denied"
    assert ("accelerator: KVM does not work here (QEMU exited: qemu-system-x86_64: failed to initialize kvm: "
            "Permission denied); falling back to TCG") in caplog.messages


def test_a_free_port_is_one_nothing_listens_on(tmp_path):
    port = vm.free_port()
    assert 1024 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", port))      # free: it binds


def test_stop_all_ends_every_qemu_this_process_started(tmp_path, fake_qemu):
    qemus = [vm.Qemu(replace(spec(tmp_path), console_log=tmp_path / f"console{n}.log"), tmp_path / f"q{n}.log")
             for n in range(2)]
    for qemu in qemus:
        qemu.start()
    stopped = qemus[1]
    stopped.stop()
    assert vm.stop_all() == 1, "the one still running"
    assert not any(qemu.running() for qemu in qemus) and vm.stop_all() == 0
    assert all(not alive(qemu.process.pid) for qemu in qemus)


def test_a_qemu_that_exits_says_why_and_what_the_console_showed(tmp_path, fake_qemu, monkeypatch):
    monkeypatch.setenv("FAKE_QEMU_SAYS", "Initramfs unpacking failed: write error\\n"
                                         "Out of memory: Killed process 212 (redis-server)\\n"
                                         "Kernel panic - not syncing: Attempted to kill init!")
    monkeypatch.setenv("FAKE_QEMU_EXIT", "3")
    with vm.Qemu(spec(tmp_path), tmp_path / "qemu.log") as qemu:
        assert qemu.wait_exit(5) and not qemu.wait_for("HARNESS-GUEST-READY", 5), "an exited QEMU is not waited for"
        assert qemu.causes() == ["QEMU exited (status 3, it said: fake qemu: exiting)",
                                 "the guest's OOM killer killed redis-server",
                                 "Kernel panic - not syncing: Attempted to kill init!"]
        failure = str(qemu.failure("the guest was not ready"))
    assert "the guest was not ready (the initramfs did not fit in 1024 MB: raise [guest] memory_mb)" in failure
    assert "QEMU: fake qemu: exiting | Initramfs unpacking failed: write error | Out of memory: Killed process 212" \
        in failure


def test_a_qemu_not_started_has_no_console_and_said_nothing(tmp_path, fake_qemu):
    qemu = vm.Qemu(spec(tmp_path), tmp_path / "qemu.log")
    assert (qemu.console(), qemu.qemu_said(), qemu.causes(), qemu.running()) == ("", "(nothing)", [], False)
    with qemu:
        assert not qemu.wait_exit(0.1), "a running QEMU has not exited"


def test_a_libc_without_prctl_still_starts_qemu(tmp_path, fake_qemu, monkeypatch):
    def no_libc(*args, **kwargs):
        raise OSError("libc.so.6: cannot open shared object file")
    monkeypatch.setattr(runner.ctypes, "CDLL", no_libc)
    assert runner._die_with_parent() is None
    with vm.Qemu(spec(tmp_path), tmp_path / "qemu.log") as qemu:
        assert qemu.wait_for(vm.KERNEL_STARTED, 5)


@pytest.mark.parametrize("kvm, works, why, boots", [
    ("works", True, "", ["kvm"]),
    ("", False, "the guest printed no kernel output in 0.5 s (nested virtualisation?)", ["tcg"]),
])
def test_the_run_asks_once_whether_kvm_works_and_the_boots_take_the_answer(tmp_path, fake_qemu, monkeypatch, kvm,
                                                                          works, why, boots):
    # bench's choice of timed boots: a probe before the first boot; a failure sends the boots straight to TCG
    monkeypatch.setenv("FAKE_KVM", kvm)
    monkeypatch.setattr(vm, "kvm_openable", lambda: True)
    probes = []
    probe = vm.kvm_boots
    monkeypatch.setattr(vm, "kvm_boots", lambda kernel, scratch: probes.append(scratch) or probe(kernel, scratch))
    assert vm.kvm_works(tmp_path / "bzImage") == (works, why)
    with vm.start_with_fallback(spec(tmp_path), "auto", tmp_path / "qemu.log") as qemu:
        assert qemu.wait_for(vm.KERNEL_STARTED, 5)
    assert [accel for accel, _ in starts(fake_qemu)] == boots
    assert vm.kvm_works(tmp_path / "bzImage") == (works, why)
    assert len(probes) == 1 + works, "a failure is not probed again"
    assert not probes[0].exists(), "the probe's console file is gone with its folder"


def test_an_initramfs_larger_than_the_guest_is_refused_by_qemu_and_names_the_setting(tmp_path):
    qemu = vm.Qemu(spec(tmp_path), tmp_path / "qemu.log")
    (tmp_path / "qemu.log").write_text("qemu: initrd is too large, cannot support.(max: 75333631, need 78115840)\n")
    failure = str(qemu.failure("the guest exited before it was ready"))
    assert "(the initramfs did not fit in 1024 MB: raise [guest] memory_mb)" in failure
    assert "QEMU: qemu: initrd is too large" in failure
