"""A real SSH server in the test process (paramiko's server side) that runs each exec request
with sh on this host: GuestSession is tested over real SSH without booting a guest.

It accepts only the client key it was made with and offers its own ed25519 host key; the
keys are written like guest.make_keys writes them (a Keys for GuestSession).
"""

import socket
import subprocess
import threading
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.guest.session import Keys


def _key_file(path: Path) -> paramiko.Ed25519Key:
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class _Server(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey, sshd: "LocalSshd"):
        self.client_key, self.sshd = client_key, sshd

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = username == "root" and key.get_base64() == self.client_key.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if self.sshd.refuse_channels > 0:       # as dropbear does while it tears down the last channel
            self.sshd.refuse_channels -= 1
            return paramiko.OPEN_FAILED_RESOURCE_SHORTAGE
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, channel, term, width, height, pixelwidth, pixelheight, modes):
        return True

    def check_channel_shell_request(self, channel):
        # a login shell without a terminal of its own: sh reading the channel, enough for a scripted session
        threading.Thread(target=_execute, args=(channel, "sh"), daemon=True).start()
        return True

    def check_channel_exec_request(self, channel, command):
        if self.sshd.refuse_exec:
            return False
        threading.Thread(target=_execute, args=(channel, command.decode()), daemon=True).start()
        return True


NOT_HERE = ("reboot", "poweroff", "halt", "shutdown")     # meant for a guest, never run on this host


def _execute(channel, command: str) -> None:
    if command.split()[0] in NOT_HERE:
        channel.send_exit_status(0)
        channel.close()
        return
    process = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)

    def feed():
        try:
            while data := channel.recv(65536):
                process.stdin.write(data)
                process.stdin.flush()
            process.stdin.close()
        except (OSError, EOFError):
            pass

    def pump(stream, send):
        try:
            while chunk := stream.read1(65536):
                send(chunk)
        except (OSError, EOFError):
            pass

    threads = [threading.Thread(target=feed, daemon=True),
               threading.Thread(target=pump, args=(process.stdout, channel.sendall), daemon=True),
               threading.Thread(target=pump, args=(process.stderr, channel.sendall_stderr), daemon=True)]
    for thread in threads:
        thread.start()
    process.wait()
    threads[1].join(5)
    threads[2].join(5)
    try:
        channel.send_exit_status(process.returncode)
        channel.close()
    except (OSError, EOFError):
        pass


class LocalSshd:
    """`with LocalSshd(folder) as server:` server.port, server.keys; stop() drops every connection.
    refuse_channels: how many of the next channel requests it refuses; refuse_exec: it refuses commands."""

    def __init__(self, folder: Path, port: int = 0):
        folder.mkdir(parents=True, exist_ok=True)
        self.client_key = _key_file(folder / "client_ed25519")
        self.host_key = _key_file(folder / "host_ed25519")
        self.keys = Keys(folder / "client_ed25519", f"ssh-ed25519 {self.host_key.get_base64()}")
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.transports: list[paramiko.Transport] = []
        self.running = True
        self.refuse_channels, self.refuse_exec = 0, False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(connection)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=_Server(self.client_key, self))
            except (paramiko.SSHException, OSError, EOFError):     # a client that hung up (a refused host key)
                transport.close()

    def stop(self) -> None:
        self.running = False
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # wakes the accepting thread; close alone would not
        except OSError:
            pass
        self.listener.close()
        for transport in self.transports:
            transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
