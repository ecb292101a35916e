"""The guest side of the tests: FakeSession, as strict as GuestSession, and a session that
replays recorded cells on it, so that cells, phases, gates and failure paths run in milliseconds
through the real cell, workload, collector and metric code.

FakeSession answers only what a test told it: a command's stdout, stderr, exit status and the
seconds it takes, and the programs it may start. As GuestSession does, it raises
GuestCommandFailed on a non-zero status unless check=False, GuestTimedOut when a command takes
longer than its timeout, and GuestConnectionLost once the connection is gone, or when it goes while a
command runs (lose_connection(after=SECONDS): after that many seconds of the commands' told time). A
started program fails a read with its exit status and stderr once it has exited, with status -1 once
its channel is closed here, and with GuestConnectionLost once the connection went before it exited;
from then on it refuses lines the same way. A command it was
not told about raises NotTold, a GuestCommandFailed with status 127 (a shell's "not found"),
even under check=False: what a real guest would answer is unknown, and "" would let a test pass
that a real guest fails. tests/guest/test_session_contract.py holds it to GuestSession.

A recording is a cell's raw/ files from a real run (tests/data/cells/WORKLOAD-VARIANT-repN-
MODE-NN-PHASE.txt): harness-collect's output before and after each phase, and what the
workload said. ReplayedSession replays them in phase order: harness-collect's `begin` request
answers the BEFORE part of the next phase, `end` its AFTER part; the workload's own answers
(swapcow's 'done' lines, redisdrive's, redis' memory.current) come from the same file.
"""

import fnmatch
import re
import shlex
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import GuestCommandFailed, GuestConnectionLost, GuestTimedOut
from harness.guest.session import GuestResult, _failed
from harness.measure.drivers import CGROUP, FREEZE, REDIS_PORT, THAW
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


@dataclass(frozen=True)
class Answer:
    """What a command answers in the guest, and the seconds it takes there."""
    stdout: str = ""
    stderr: str = ""
    status: int = 0
    seconds: float = 0.01


@dataclass(frozen=True)
class Reply:
    """What a started program prints when sent a line, and its exit status and stderr if it then exits."""
    lines: tuple[str, ...] = ()
    exits: int | None = None
    stderr: str = ""


@dataclass(frozen=True)
class Program:
    """A program FakeSession.start runs: the lines it prints first, then its Reply to each line sent."""
    first: tuple[str, ...] = ()
    reply: Callable[[str], Reply] = lambda line: Reply()


class NotTold(GuestCommandFailed):
    """A command the fake guest was not told about: GuestCommandFailed's fields, status 127."""
    template = ("The fake guest was not told about guest command {command} (status {status}, {tail}): tell "
                "FakeSession what a real guest answers")


def _command_text(command) -> str:
    """The text GuestSession sends for command: an argv list quoted for the shell, a string as it is."""
    return shlex.join(command) if isinstance(command, (list, tuple)) else command


def _told(table: dict, text: str):
    """table's entry for text: its exact key, else the first key with a * that matches it (fnmatch)."""
    if text in table:
        return table[text]
    for key, value in table.items():
        if "*" in key and fnmatch.fnmatchcase(text, key):
            return value
    raise NotTold(command=text, status=127, tail="not found")


class FakeSession:
    """GuestSession's contract, answered from what a test told it.

    answers: command text, or a pattern with *, -> an Answer, its stdout alone, or a function
    (text, stdin) -> Answer. programs: the same -> a Program, or a function (text) -> Program.
    """

    def __init__(self, answers: dict | None = None, programs: dict | None = None):
        self.answers, self.programs = dict(answers or {}), dict(programs or {})
        self.commands: list[str] = []       # every command in order, a started one with " &"
        self.files: dict[str, bytes] = {}   # what upload put in the guest
        self.started: list[FakeProcess] = []  # every program started, in order
        self.dead = False                   # the connection is gone: every later command fails
        self.lost_after: float | None = None   # the connection goes after this many seconds of commands

    def run(self, command, timeout: float = 600, check: bool = True, stdin: bytes | None = None) -> GuestResult:
        """As GuestSession.run: the GuestResult; GuestCommandFailed on a non-zero status when check."""
        text = self._sent(command)
        answer = self._answer(text, stdin)
        if self.lost_after is not None and self.lost_after < min(answer.seconds, timeout):
            self.lose_connection()
            lost = GuestConnectionLost(command=text, why="it went before the command's exit status came")
            lost.output = answer.stdout + answer.stderr       # told as what it printed before the guest went
            raise lost
        if self.lost_after is not None:
            self.lost_after -= min(answer.seconds, timeout)
        if answer.seconds > timeout:
            raise GuestTimedOut(command=text, timeout=timeout)
        if check and answer.status != 0:
            raise _failed(text, answer.status, answer.stderr)   # the real session's error, tail and all
        return GuestResult(text, answer.status, answer.stdout, answer.stderr, answer.seconds)

    def _sent(self, command, suffix: str = "") -> str:
        text = _command_text(command)
        self.commands.append(text + suffix)
        if self.dead:
            raise GuestConnectionLost(command=text, why="the connection is closed")
        return text

    def _answer(self, text: str, stdin: bytes | None) -> Answer:
        answer = _told(self.answers, text)
        answer = answer(text, stdin) if callable(answer) else answer
        return Answer(answer) if isinstance(answer, str) else answer

    def start(self, command) -> "FakeProcess":
        """As GuestSession.start: the told program, spoken to line by line."""
        text = self._sent(command, " &")
        program = _told(self.programs, text)
        self.started.append(FakeProcess(self, text, program(text) if callable(program) else program))
        return self.started[-1]

    def requests(self, program: str) -> list[str]:
        """The lines sent to every started program whose command is program, in order."""
        return [line for process in self.started if process.command == program for line in process.sent]

    def upload(self, local: Path, remote: str) -> None:
        """As GuestSession.upload: the file's bytes at remote in the guest."""
        self._sent(["sh", "-c", 'cat > "$1"', "upload", remote])
        self.files[remote] = Path(local).read_bytes()

    def download(self, remote: str, local: Path, timeout: float = 600) -> None:
        """As GuestSession.download: an uploaded file back, byte for byte; GuestCommandFailed as cat fails."""
        text = self._sent(["cat", remote])
        if remote not in self.files:
            raise _failed(text, 1, f"cat: {remote}: No such file or directory")
        Path(local).write_bytes(self.files[remote])

    def lose_connection(self, after: float = 0) -> None:
        """The guest goes away (QEMU died), now or after `after` seconds of the commands' told time: every
        command from then on raises GuestConnectionLost, the one running then too."""
        if after:
            self.lost_after = after
        else:
            self.dead = True

    def close(self) -> None:
        self.lose_connection()


class FakeProcess:
    """GuestProcess's contract for a told Program."""

    def __init__(self, session: FakeSession, command: str, program: Program):
        self.session, self.command, self.program = session, command, program
        self.printed = deque(program.first)
        self.sent: list[str] = []
        self.status: int | None = None      # the exit status, once the program has exited
        self.stderr = ""
        self.closed = False

    def send(self, line: str) -> None:
        """As GuestProcess.send: what read_line raises at the program's end, once the channel is closed (the
        program exited, or was closed or lost)."""
        # a real guest closes the channel just after the exit status; paramiko then refuses to send
        if self.session.dead or self.closed or self.status is not None:
            self.read_line(timeout=0)
        self.sent.append(line)
        reply = self.program.reply(line)
        self.printed.extend(reply.lines)
        self.status, self.stderr = reply.exits, self.stderr + reply.stderr

    def read_line(self, timeout: float) -> str:
        """The next line; GuestTimedOut while the program says nothing, GuestCommandFailed once it is gone
        (its exit status and stderr, status -1 when its channel was closed here before it exited), or
        GuestConnectionLost when the connection went first."""
        if self.printed:
            return self.printed.popleft()
        if self.status is None and not (self.session.dead or self.closed):
            raise GuestTimedOut(command=self.command, timeout=timeout)
        if self.status is None and not self.closed:
            raise GuestConnectionLost(command=self.command, why="it went before the program exited")
        status = -1 if self.status is None else self.status
        tail, self.stderr = self.stderr.strip() or "(none)", ""      # read once, as paramiko's recv_stderr
        raise GuestCommandFailed(command=self.command, status=status, tail=tail)

    def wait(self, timeout: float) -> int | None:
        """The exit status once the program has exited, None while it runs (-1 once its channel is gone)."""
        if self.status is None and (self.session.dead or self.closed):
            return -1       # paramiko's status of a channel closed before the program exited
        return self.status

    def close(self) -> None:
        self.closed = True


def collector(answers: dict) -> Program:
    """harness-collect (guest_tools/harness-collect.c) as a Program: each request line (tab-separated fields)
    answered by answers[its first field](fields after it) -> its reply text, or an Exception whose text the
    real one says as '== error TEXT'; a request not in answers gets the real one's error for it."""
    def reply(line: str) -> Reply:
        name, *fields = line.split("\t")
        if name == "quit":
            return Reply(exits=0)
        if name not in answers:
            return Reply((f"== error unknown request {name}: setup, calls, cause, count, warm, begin, end or quit",))
        try:
            text = answers[name](fields)
        except Exception as error:      # what the real one refuses, it says
            return Reply((f"== error {error}",))
        return Reply((*text.splitlines(), "== ok"))
    return Program((), reply)


class ReplayedSession(FakeSession):
    """A FakeSession told the answers of a recorded cell (recordings()), phase by phase. die_in: the
    phase during which the guest goes away (every later command fails as a lost connection would);
    unseen: the functions the guest's function profiler cannot see (harness-collect's `calls` names them,
    as the real one does)."""

    def __init__(self, phases: list[tuple[str, Recording]], die_in: str = "", pid: int = 4242,
                 unseen: tuple[str, ...] = ()):
        self.phases, self.die_in, self.pid, self.unseen, self._next = phases, die_in, pid, unseen, 0
        requests = {"setup": lambda probes: "",     # writes kprobe_events and the profiler's filter
                    "calls": self._calls, "count": lambda events: "", "warm": lambda fields: "",
                    "begin": lambda fields: self.current().before, "end": self._end}
        super().__init__(self._recorded(), {"swapcow *": self._swapcow, "harness-collect": collector(requests)})

    def current(self) -> Recording:
        return self.phases[self._next][1]

    def _recorded(self) -> dict:
        """What the recorded guest answers to each command of a cell ("": the command prints nothing)."""
        return {
            "uname -r": "5.10.223\n",
            f"echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p {CGROUP}": "",
            f"setsid sh -c 'echo $$ > {CGROUP}/cgroup.procs && exec redis-server *": "",
            f"redis-cli -p {REDIS_PORT} ping": "PONG\n",
            f"cat {CGROUP}/cgroup.procs": f"{self.pid}\n",
            f"cat {CGROUP}/memory.current": self._memory_current,
            f"{FREEZE} && cat {CGROUP}/memory.current": self._memory_current,
            THAW: "",
            f"echo * > {CGROUP}/memory.max && echo max > {CGROUP}/memory.max": "",
            "redisdrive check *": self._check,      # before "redisdrive *": the first pattern that matches wins
            "redisdrive *": self._redisdrive,
            f"redis-cli -p {REDIS_PORT} shutdown nosave": "",   # redis-cli says nothing of the closed connection
        }

    def _calls(self, functions: list[str]) -> str:
        return "".join(f"unseen {function}\n" for function in functions if function in self.unseen)

    def _end(self, fields: list[str]) -> str:
        answer = self.current().after
        self._next += 1
        return answer

    def _memory_current(self, text: str, stdin) -> str:
        return re.search(r"memory.current (\d+)", self.current().said).group(1) + "\n"

    def _check(self, text: str, stdin) -> str:
        """redisdrive check KEYS ...: every key there, every value as written (what the real one prints then)."""
        keys = text.split()[2]
        return (f"done check ops={int(keys) + 1} seconds=0.201339 checked={keys} wrong=0 p50_ms=0 p99_ms=0 "
                f"errors=0 keys={keys} short=0\n")

    def _redisdrive(self, text: str, stdin) -> str:
        if text.split()[1] == self.die_in:
            self.lose_connection()
            raise GuestConnectionLost(command=text, why="EOFError")
        return self.current().said + "\n"

    def _swapcow(self, text: str) -> Program:
        """swapcow SIZE_MB: 'ready pid=P pages=N', then the recorded 'done' line of each phase sent."""
        pages = int(text.split()[1]) * 256
        return Program((f"ready pid={self.pid} pages={pages}",), self._phase_done)

    def _phase_done(self, phase: str) -> Reply:
        if phase == "quit":
            return Reply(exits=0)
        if phase == self.die_in:
            self.lose_connection()
            return Reply()
        return Reply((self.current().said,))


@dataclass
class FakeBooted:
    """boot.Booted's interface: the session, and what 'QEMU and the console' say went wrong."""
    session: FakeSession
    causes: list[str] = field(default_factory=list)
    accelerator: str = "tcg"
    qemu_version: str = "QEMU emulator version 0.0.0 (fake)"
    ready_s: float = 1.5
    console: Path | None = None     # the console log the boot wrote (a test puts a recorded one there)

    def explain(self, error: Exception) -> str:
        return "; ".join(self.causes + [f"then: {error}" if self.causes else str(error)])


def booting(booted: FakeBooted):
    """A stand-in for boot.booted that yields booted."""
    @contextmanager
    def fake(build, image, config, accel, log_dir, work_dir, timeout=None, append="", consoles=None):
        booted.session.booted_with = append     # the kernel command line's words beyond the harness's own
        if consoles is not None and booted.console is not None:
            consoles.append(booted.console)     # a recorded console, as the real boot names its own
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
