"""The SSH session into a booted guest: commands with exit status and timeouts, file transfer.

Workloads and collectors talk to the guest only through GuestSession. Keys are made per
boot: the client key with cryptography (paramiko cannot generate ed25519 keys), the guest's
host key with dropbearkey; the session accepts only that host key.
"""

import io
import logging
import os
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness import runner
from harness.errors import (
    BootFailed,
    GuestCommandFailed,
    GuestConnectionLost,
    GuestTimedOut,
)

log = logging.getLogger("harness.guest")
output_log = logging.getLogger("harness.output")

CHANNEL_ATTEMPTS = 5
HOST_KEY_IN_GUEST = "etc/dropbear/dropbear_ed25519_host_key"
AUTHORIZED_KEYS_IN_GUEST = "root/.ssh/authorized_keys"


@dataclass(frozen=True)
class Keys:
    client_private: Path     # OpenSSH format, for paramiko
    host_public: str         # "ssh-ed25519 AAAA..." of the guest's host key


def make_keys(boot_dir: Path, keys_root: Path) -> Keys:
    """Fresh ed25519 keys for one boot; the guest's halves go under keys_root (a cpio root)."""
    client = Ed25519PrivateKey.generate()
    client_path = boot_dir / "client_ed25519"
    client_path.write_bytes(client.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                 serialization.NoEncryption()))
    client_path.chmod(0o600)
    public = client.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    authorized = keys_root / AUTHORIZED_KEYS_IN_GUEST
    authorized.parent.mkdir(parents=True, exist_ok=True)
    authorized.write_bytes(public + b"\n")
    host_key = keys_root / HOST_KEY_IN_GUEST
    host_key.parent.mkdir(parents=True, exist_ok=True)
    runner.run(["dropbearkey", "-t", "ed25519", "-f", host_key])
    host_public = next(line for line in runner.output_of(["dropbearkey", "-y", "-f", host_key]).splitlines()
                       if line.startswith("ssh-ed25519 "))
    return Keys(client_path, " ".join(host_public.split()[:2]))


@dataclass(frozen=True)
class GuestResult:
    command: str
    status: int
    stdout: str
    stderr: str
    duration_s: float


class _ExpectedHostKey(paramiko.MissingHostKeyPolicy):
    def __init__(self, expected: str):
        self.expected = expected

    def missing_host_key(self, client, hostname, key):
        offered = f"{key.get_name()} {key.get_base64()}"
        if offered != self.expected:
            raise paramiko.SSHException(f"guest host key {offered[:40]}... is not this boot's key")


class GuestSession:
    """One SSH connection to the guest."""

    def __init__(self, port: int, keys: Keys, host: str = "127.0.0.1"):
        self.port, self.keys, self.host = port, keys, host
        self.client: paramiko.SSHClient | None = None

    def connect(self, timeout: float) -> None:
        """Connect, retrying until timeout (dropbear may still be starting)."""
        deadline = time.monotonic() + timeout
        key = paramiko.Ed25519Key.from_private_key_file(str(self.keys.client_private))
        while True:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(_ExpectedHostKey(self.keys.host_public))
            try:
                client.connect(self.host, self.port, username="root", pkey=key, timeout=5, banner_timeout=5,
                               auth_timeout=5, allow_agent=False, look_for_keys=False)
                self.client = client
                return
            except (OSError, paramiko.SSHException) as error:
                client.close()
                if "not this boot's key" in str(error):
                    raise BootFailed(what="offered a host key that is not this boot's", tail=str(error), log="-")
                if time.monotonic() > deadline:
                    raise BootFailed(what=f"did not accept SSH on 127.0.0.1:{self.port} within {timeout:g} s",
                                     tail=str(error), log="-") from None
                time.sleep(0.2)

    def close(self) -> None:
        if self.client:
            self.client.close()
            self.client = None

    def run(self, command, timeout: float = 600, check: bool = True, stdin: bytes | None = None) -> GuestResult:
        """Run command (an argv list, quoted for the remote shell, or a shell string) in the guest."""
        text, status, stdout, stderr, duration = self._exec(command, timeout, stdin)
        result = GuestResult(text, status, stdout.decode(errors="replace"), stderr.decode(errors="replace"), duration)
        for line in (result.stdout + result.stderr).splitlines():
            output_log.debug(line)
        if check and status != 0:
            raise _failed(text, status, result.stderr)
        return result

    def _exec(self, command, timeout: float, stdin: bytes | None = None):
        """(command text, exit status, stdout bytes, stderr bytes, seconds) of one remote command."""
        text = shlex.join(command) if isinstance(command, (list, tuple)) else command
        log.debug("guest$ %s", text)
        started = time.monotonic()
        channel = self._channel(text)
        channel.settimeout(timeout)
        try:
            channel.exec_command(text)
            if stdin is not None:
                channel.sendall(stdin)
                channel.shutdown_write()
            stdout, stderr = _drain(channel, started + timeout)
            status = channel.recv_exit_status()
            if status == -1 and _gone(channel):
                lost = GuestConnectionLost(command=text, why="it went before the command's exit status came")
                lost.output = (stdout + stderr).decode(errors="replace")
                raise lost
        except socket.timeout:
            raise GuestTimedOut(command=text, timeout=timeout) from None
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise GuestConnectionLost(command=text, why=str(error) or type(error).__name__) from None
        finally:
            channel.close()
        return text, status, stdout, stderr, time.monotonic() - started

    def start(self, command) -> "GuestProcess":
        """Start a long-running command whose stdin and stdout the caller talks to line by line."""
        text = shlex.join(command) if isinstance(command, (list, tuple)) else command
        log.debug("guest$ %s &", text)
        channel = self._channel(text)
        try:
            channel.exec_command(text)
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise GuestConnectionLost(command=text, why=str(error) or type(error).__name__) from None
        return GuestProcess(text, channel)

    def _channel(self, text: str):
        transport = self.client.get_transport() if self.client else None
        if transport is None or not transport.is_active():
            raise GuestConnectionLost(command=text, why="the connection is closed")
        for attempt in range(CHANNEL_ATTEMPTS):
            try:
                return transport.open_session(timeout=30)
            except paramiko.ChannelException as refused:
                # dropbear sometimes refuses a channel while it still tears down the last one
                log.debug("guest refused a channel (%s), attempt %d", refused, attempt + 1)
                time.sleep(0.2 * (attempt + 1))
            except (paramiko.SSHException, EOFError, OSError) as error:
                raise GuestConnectionLost(command=text, why=str(error) or type(error).__name__) from None
        raise GuestConnectionLost(command=text, why=f"the guest refused {CHANNEL_ATTEMPTS} channel openings")

    def interactive_shell(self) -> None:
        """A login shell on the guest, the local terminal in raw mode until the shell exits."""
        import select
        import sys
        import termios
        import tty
        channel = self.client.invoke_shell(term="xterm", width=120, height=40)
        saved = termios.tcgetattr(sys.stdin)
        try:
            tty.setraw(sys.stdin.fileno())
            while not channel.exit_status_ready() or channel.recv_ready():
                readable, _, _ = select.select([channel, sys.stdin], [], [], 0.5)
                if channel in readable:
                    data = channel.recv(4096)
                    if not data:
                        break
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
                if sys.stdin in readable:
                    channel.send(os.read(sys.stdin.fileno(), 1024))
        finally:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
            channel.close()

    def upload(self, local: Path, remote: str) -> None:
        self.run(["sh", "-c", 'cat > "$1"', "upload", remote], stdin=Path(local).read_bytes())

    def download(self, remote: str, local: Path, timeout: float = 600) -> None:
        """Copy a guest file to the host, byte for byte (run() would decode it as text)."""
        text, status, stdout, stderr, _ = self._exec(["cat", remote], timeout)
        if status != 0:
            raise _failed(text, status, stderr.decode(errors="replace"))
        Path(local).write_bytes(stdout)


def _failed(command: str, status: int, stderr: str) -> GuestCommandFailed:
    tail = " | ".join(stderr.strip().splitlines()[-3:]) or "(none)"
    return GuestCommandFailed(command=command, status=status, tail=tail)


class GuestProcess:
    """A command running in the guest, spoken to line by line."""

    def __init__(self, command: str, channel):
        self.command, self.channel = command, channel
        self.stdin = channel.makefile_stdin("wb")
        self.stdout = channel.makefile("rb")
        self.closed = False     # closed here: its end is ours, not the guest's

    def send(self, line: str) -> None:
        """Write a line to the program; as read_line fails at its end (GuestCommandFailed or GuestConnectionLost)
        once the program has exited or its channel is closed or lost (paramiko's "Socket is closed" says none of
        that)."""
        try:
            self.stdin.write((line + "\n").encode())
            self.stdin.flush()
        except (OSError, EOFError, paramiko.SSHException):
            raise self._ended() from None

    def read_line(self, timeout: float) -> str:
        """The next line of output; GuestTimedOut if none comes in time; at EOF GuestCommandFailed with the
        program's exit status (-1 when its channel was closed here first), or GuestConnectionLost when the
        connection went before the program exited."""
        self.channel.settimeout(timeout)
        try:
            line = self.stdout.readline()
        except socket.timeout:
            raise GuestTimedOut(command=self.command, timeout=timeout) from None
        if not line:
            raise self._ended()
        text = line.decode(errors="replace").rstrip("\n")
        output_log.debug(text)
        return text

    def _ended(self) -> GuestCommandFailed | GuestConnectionLost:
        """The program is gone: its exit status (-1 when its channel closed before it exited) and stderr, or
        the connection is."""
        status = self.channel.recv_exit_status() if self.channel.exit_status_ready() else -1
        if status == -1 and not self.closed and _gone(self.channel):
            return GuestConnectionLost(command=self.command, why="it went before the program exited")
        ready = self.channel.recv_stderr_ready()
        stderr = self.channel.recv_stderr(65536).decode(errors="replace") if ready else ""
        return GuestCommandFailed(command=self.command, status=status, tail=stderr.strip() or "(none)")

    def wait(self, timeout: float) -> int | None:
        """The exit status once the command has exited (None if it has not within timeout)."""
        deadline = time.monotonic() + timeout
        while not self.channel.exit_status_ready():
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        return self.channel.recv_exit_status()

    def close(self) -> None:
        self.closed = True
        self.channel.close()


def _gone(channel) -> bool:
    """Whether a channel that gave no exit status went with its connection: the guest sent no end of file on it,
    or the connection is down. A program the guest killed by a signal ends with an end of file and no exit
    status (dropbear says `exit-signal`, which paramiko does not keep): that is the program's end, not the
    connection's."""
    transport = channel.get_transport()
    return not channel.eof_received or transport is None or not transport.is_active()


def _drain(channel, deadline: float) -> tuple[bytes, bytes]:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    while True:
        if channel.recv_ready():
            stdout.write(channel.recv(65536))
        elif channel.recv_stderr_ready():
            stderr.write(channel.recv_stderr(65536))
        elif channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        else:
            if time.monotonic() > deadline:
                raise socket.timeout()
            time.sleep(0.01)
    return stdout.getvalue(), stderr.getvalue()
