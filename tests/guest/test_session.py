import threading

import paramiko
import pytest

from harness.errors import BootFailed, GuestConnectionLost
from harness.guest import session as guest
from tests.fakes.sshd import LocalSshd


def test_keys_are_fresh_ed25519_pairs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = guest.make_keys(tmp_path / "a", tmp_path / "a-root")
    second = guest.make_keys(tmp_path / "b", tmp_path / "b-root")
    assert first.host_public.startswith("ssh-ed25519 ") and first.host_public != second.host_public
    assert first.client_private.stat().st_mode & 0o777 == 0o600
    authorized = (tmp_path / "a-root" / guest.AUTHORIZED_KEYS_IN_GUEST).read_text()
    client = paramiko.Ed25519Key.from_private_key_file(str(first.client_private))
    assert authorized.split()[1] == client.get_base64()
    assert (tmp_path / "a-root" / guest.HOST_KEY_IN_GUEST).stat().st_size > 0


def test_only_this_boots_host_key_is_accepted(tmp_path):
    (tmp_path / "k").mkdir()
    keys = guest.make_keys(tmp_path / "k", tmp_path / "root")
    policy = guest._ExpectedHostKey(keys.host_public)
    stranger = paramiko.Ed25519Key.from_private_key_file(str(keys.client_private))
    with pytest.raises(paramiko.SSHException, match="not this boot's key"):
        policy.missing_host_key(None, "127.0.0.1", stranger)
    same = guest._ExpectedHostKey(f"{stranger.get_name()} {stranger.get_base64()}")
    same.missing_host_key(None, "127.0.0.1", stranger)


# --- GuestSession over real SSH to an in-process server that runs commands here ----------------

@pytest.fixture
def sshd(tmp_path):
    with LocalSshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def session(sshd):
    connected = guest.GuestSession(sshd.port, sshd.keys)
    connected.connect(timeout=10)
    yield connected
    connected.close()










def test_a_refused_channel_is_asked_again_as_dropbear_needs(sshd, session):
    sshd.refuse_channels = guest.CHANNEL_ATTEMPTS - 1
    assert session.run("echo after the refusals").stdout == "after the refusals\n"
    sshd.refuse_channels = guest.CHANNEL_ATTEMPTS
    with pytest.raises(GuestConnectionLost, match=f"the guest refused {guest.CHANNEL_ATTEMPTS} channel openings"):
        session.run("true")


def test_a_command_the_server_will_not_start_is_a_lost_connection(sshd, session):
    sshd.refuse_exec = True
    with pytest.raises(GuestConnectionLost, match="lost during swapcow 64"):
        session.start("swapcow 64")


def test_the_interactive_shell_carries_the_terminal_both_ways_and_restores_it(session, monkeypatch):
    import io
    import os
    import pty
    import termios
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "rb", buffering=0)
    before = termios.tcgetattr(terminal)
    shown = io.BytesIO()
    monkeypatch.setattr("sys.stdin", terminal)
    monkeypatch.setattr("sys.stdout", type("Out", (), {"buffer": shown, "flush": lambda self: None})())
    # typed once the terminal is raw: going raw flushes what was typed before (TCSAFLUSH)
    typist = threading.Timer(0.5, os.write, (master, b"echo typed in the guest; exit 3\n"))
    typist.start()
    session.interactive_shell()
    typist.join()
    assert b"typed in the guest" in shown.getvalue()
    assert termios.tcgetattr(terminal) == before, "the local terminal leaves raw mode"
    terminal.close()
    os.close(master)


def test_connect_refuses_another_host_key_and_gives_up_in_time(sshd, tmp_path):
    impostor = guest.Keys(sshd.keys.client_private, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOther")
    with pytest.raises(BootFailed, match="offered a host key that is not this boot's"):
        guest.GuestSession(sshd.port, impostor).connect(timeout=5)
    port = sshd.port
    sshd.stop()
    with pytest.raises(BootFailed, match=f"did not accept SSH on 127.0.0.1:{port} within 1 s"):
        guest.GuestSession(port, sshd.keys).connect(timeout=1)
