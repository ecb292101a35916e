"""A guest that answers from recorded output, so that cells, phases, gates and failure paths
run in milliseconds through the real cell, workload, collector and metric code.

A recording is a cell's raw/ files from a real run (tests/data/cells/WORKLOAD-VARIANT-repN-
MODE-NN-PHASE.txt): harness-collect's output before and after each phase, and what the
workload said. FakeSession replays them in phase order: `harness-collect begin` answers the
BEFORE part of the next phase, `end` its AFTER part; the workload's own answers (swapcow's
'done' lines, redisdrive's, redis' memory.current) come from the same file.
"""

import re
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestCommandFailed, GuestConnectionLost
from harness.guest.session import GuestResult
from tests.conftest import DATA

CELLS = DATA / "cells"


@dataclass
class Recording:
    before: str
    after: str
    said: str


def recordings(workload: str, variant: str = "base", rep: int = 1,
               mode: str = "counted") -> list[tuple[str, Recording]]:
    """(phase, Recording) of one recorded cell, in phase order."""
    found = []
    for path in sorted(CELLS.glob(f"{workload}-{variant}-rep{rep}-{mode}-*.txt")):
        text = path.read_text()
        phase = path.stem.rsplit("-", 1)[1]
        before = text.split("== BEFORE\n", 1)[1].split("\n== AFTER\n", 1)[0]
        after = text.split("\n== AFTER\n", 1)[1].split("\n== workload\n", 1)[0]
        said = text.split("== workload said\n", 1)[1].strip() if "== workload said\n" in text else ""
        found.append((phase, Recording(before, after, said)))
    return found


@dataclass
class FakeSession:
    """GuestSession's interface, answered from recordings. die_in: the phase during which the guest
    goes away (every later command fails as a lost connection would)."""
    phases: list[tuple[str, Recording]]
    die_in: str = ""
    pid: int = 4242
    commands: list[str] = field(default_factory=list)
    dead: bool = False
    _next: int = 0

    def current(self) -> Recording:
        return self.phases[self._next][1]

    def run(self, command, timeout: float = 600, check: bool = True, stdin: bytes | None = None) -> GuestResult:
        text = shlex.join(command) if isinstance(command, (list, tuple)) else command
        self.commands.append(text)
        if self.dead:
            raise GuestConnectionLost(command=text, why="EOFError")
        return GuestResult(text, 0, self._answer(text), "", 0.01)

    def _answer(self, text: str) -> str:
        if text.startswith("harness-collect begin"):
            return self.current().before
        if text.startswith("harness-collect end"):
            answer = self.current().after
            self._next += 1
            return answer
        if text == "uname -r":
            return "5.10.223\n"
        if text.startswith("redis-cli -p 6379 ping"):
            return "PONG\n"
        if text.endswith("/cgroup.procs"):
            return f"{self.pid}\n"
        if text.endswith("/memory.current"):
            return re.search(r"memory.current (\d+)", self.current().said).group(1) + "\n"
        if text.startswith("redisdrive check"):
            keys = int(text.split()[2])
            return f"done check keys={keys} short=0\n"
        if text.startswith("redisdrive "):
            self._maybe_die(text.split()[1], text)
            return self.current().said + "\n"
        return ""

    def _maybe_die(self, phase: str, text: str) -> None:
        if phase == self.die_in:
            self.dead = True
            raise GuestConnectionLost(command=text, why="EOFError")

    def start(self, command) -> "FakeProcess":
        text = shlex.join(command) if isinstance(command, (list, tuple)) else command
        self.commands.append(text + " &")
        if self.dead:
            raise GuestConnectionLost(command=text, why="the connection is closed")
        return FakeProcess(self, text, int(command[1]) * 256 if isinstance(command, list) else 0)


class FakeProcess:
    """A phased program (swapcow): 'ready', then one 'done' line per phase name sent."""

    def __init__(self, session: FakeSession, command: str, pages: int):
        self.session, self.command, self.pages = session, command, pages
        self.sent: list[str] = []
        self.said_ready = False

    def send(self, line: str) -> None:
        if self.session.dead:
            raise OSError("Socket is closed")       # what paramiko raises on a closed channel
        self.sent.append(line)

    def read_line(self, timeout: float) -> str:
        if not self.said_ready:
            self.said_ready = True
            return f"ready pid={self.session.pid} pages={self.pages}"
        phase = self.sent[-1]
        if phase == self.session.die_in:
            self.session.dead = True
            raise GuestCommandFailed(command=self.command, status=-1, tail="(none)")
        return self.session.current().said

    def wait(self, timeout: float) -> int | None:
        return 0

    def close(self) -> None:
        pass


@dataclass
class FakeBooted:
    """boot.Booted's interface: the session, and what 'QEMU and the console' say went wrong."""
    session: FakeSession
    causes: list[str] = field(default_factory=list)
    accelerator: str = "tcg"
    qemu_version: str = "QEMU emulator version 0.0.0 (fake)"
    ready_s: float = 1.5

    def explain(self, error: Exception) -> str:
        return "; ".join(self.causes + [f"then: {error}" if self.causes else str(error)])


def booting(booted: FakeBooted):
    """A stand-in for boot.booted that yields booted."""
    @contextmanager
    def fake(build, image, config, accel, log_dir, work_dir, timeout=None, append=""):
        booted.session.booted_with = append     # the kernel command line's words beyond the harness's own
        yield booted
    return fake


class FakeBuild:
    def __init__(self, name: str):
        self.variant, self.key, self.release, self.patches = name, name, "linux-5.10.223", ()
        self.patch_hash, self.config_hash, self.compiler = "none", "c", "gcc"
        self.source, self.source_state, self.directory = "", {}, Path("/nonexistent/fake-build")
        self.tree = self.directory / "linux"
        self.vmlinux = self.tree / "vmlinux"
        self.bzimage = self.directory / "bzImage"


def raw_phases(path: Path) -> list[str]:
    """The phase names of the raw/ files a cell wrote, in order."""
    return [p.stem.rsplit("-", 1)[1] for p in sorted(path.glob("*.txt"))]
