"""boot.booted with a fake QEMU (tests/fakes/fake-qemu) and a real SSH server in the test process:
start-up, failures quoted from the console, teardown, and the sweep of stale boot folders."""

import os
import time
from pathlib import Path

import pytest

from harness.errors import BootFailed
from harness.experiment import GuestConfig
from harness.guest import boot, image, vm
from tests.fakes.sshd import LocalSshd
from tests.guest.test_vm import fake_qemu, forget_kvm_verdict  # noqa: F401  (fixtures)
from tests.test_runner import alive


class Built:
    variant, bzimage = "base", Path("/nonexistent/bzImage")


@pytest.fixture
def guest_parts(tmp_path, monkeypatch, fake_qemu):  # noqa: F811
    sshd = LocalSshd(tmp_path / "sshd")
    monkeypatch.setattr(boot, "make_keys", lambda boot_dir, keys_root: (keys_root.mkdir(), sshd.keys)[1])
    monkeypatch.setattr(boot.vm, "free_port", lambda: sshd.port)
    monkeypatch.setattr(boot, "SHUTDOWN_TIMEOUT_S", 0.2)
    monkeypatch.setattr(vm, "kvm_openable", lambda: False)
    base = tmp_path / "base.cpio"
    base.write_bytes(b"")
    yield image.Image(base, "d", ()), tmp_path / "boots"
    sshd.stop()


def qemu_pid(fake_qemu_starts: Path) -> int:
    return int(fake_qemu_starts.read_text().split()[-1])


def test_a_boot_gives_a_session_and_leaves_nothing(tmp_path, monkeypatch, guest_parts, fake_qemu):  # noqa: F811
    monkeypatch.setenv("FAKE_QEMU_SAYS", "HARNESS-GUEST-READY")
    guest_image, boots = guest_parts
    with boot.booted(Built(), guest_image, GuestConfig(swap_mb=8), "auto", tmp_path / "logs", boots) as guest:
        assert guest.session.run(["echo", "hello"]).stdout == "hello\n"
        assert guest.accelerator == "tcg" and guest.qemu_version.startswith("QEMU emulator version 0.0.0")
        [folder] = list(boots.glob("boot-*"))
        assert (folder / boot.OWNER).read_text().split()[0] == str(os.getpid())
        assert (folder / "swap.img").stat().st_size == 8 << 20 and (folder / "initrd.cpio").exists()
        pid = qemu_pid(tmp_path / "logs" / "fake-qemu.starts")
        assert guest.explain(RuntimeError("x")) == "x", "QEMU still runs: no cause to add"
    assert not alive(pid) and list(boots.glob("boot-*")) == []
    assert list((tmp_path / "logs").glob("console-base-*.log"))


def test_a_start_up_error_quotes_the_console_and_the_memory_hint(tmp_path, monkeypatch, guest_parts):
    monkeypatch.setenv("FAKE_QEMU_SAYS", "Initramfs unpacking failed: write error\\n"
                                         "HARNESS-GUEST-ERROR dropbear did not start\\nHARNESS-GUEST-READY")
    guest_image, boots = guest_parts
    with pytest.raises(BootFailed) as caught:
        with boot.booted(Built(), guest_image, GuestConfig(memory_mb=72), "tcg", tmp_path / "logs", boots):
            pass
    text = str(caught.value)
    assert text.startswith("The guest reported an error during start-up (dropbear did not start) (the initramfs "
                           "did not fit in 72 MB: raise [guest] memory_mb)"), text
    assert "Initramfs unpacking failed: write error" in text
    assert list(boots.glob("boot-*")) == []


def test_a_guest_that_dies_before_it_is_ready_quotes_the_panic(tmp_path, monkeypatch, guest_parts):
    monkeypatch.setenv("FAKE_QEMU_SAYS", "Kernel panic - not syncing: No working init found")
    monkeypatch.setenv("FAKE_QEMU_EXIT", "1")
    guest_image, boots = guest_parts
    with pytest.raises(BootFailed, match="exited before it was ready; last console lines: QEMU: fake qemu: "
                                         "exiting | Kernel panic - not syncing: No working init found"):
        with boot.booted(Built(), guest_image, GuestConfig(), "tcg", tmp_path / "logs", boots):
            pass
    assert list(boots.glob("boot-*")) == []


def test_stale_boot_folders_are_swept_and_live_ones_kept(tmp_path):
    boots = tmp_path / "boots"
    dead, mine, starting, abandoned = (boots / f"boot-{name}" for name in ("dead", "mine", "starting", "abandoned"))
    for folder in (dead, mine, starting, abandoned):
        folder.mkdir(parents=True)
    (dead / boot.OWNER).write_text("999999 12345")
    (mine / boot.OWNER).write_text(boot._me())
    old = time.time() - 2 * boot.STALE_WITHOUT_OWNER_S
    os.utime(abandoned, (old, old))
    assert sorted(p.name for p in boot.sweep(boots)) == ["boot-abandoned", "boot-dead"]
    assert sorted(p.name for p in boots.iterdir()) == ["boot-mine", "boot-starting"]
