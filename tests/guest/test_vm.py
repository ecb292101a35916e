import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

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
        "-append", "console=ttyS0 panic=-1 oops=panic harness.swap=/dev/vda rdinit=/init",
        "-drive", "file=/b/swap.img,if=virtio,format=raw,cache=unsafe,discard=unmap",
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:10022-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-serial", f"file:{tmp_path / 'console.log'}",
        "-display", "none", "-monitor", "none", "-parallel", "none", "-nodefaults", "-no-reboot"]


def test_qemu_argv_kvm_uses_the_host_cpu(tmp_path):
    argv = vm.qemu_argv(spec(tmp_path, accel="kvm"))
    assert argv[1:5] == ["-accel", "kvm", "-cpu", "host"]


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
        "console=ttyS0 panic=-1 oops=panic harness.swap=zram harness.swap_mb=96 rdinit=/init"
