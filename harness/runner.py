"""The one door for host commands: run() for a command the harness waits for, lines_of() for one whose output
is streamed to the caller, start() for a program that runs beside it (QEMU). No other module of the harness
starts a process itself (tests/test_runner.py checks it); Dask's LocalCluster starts its worker processes.

argv is a list from start to finish; the shell-quoted command line is logged before it runs;
output goes to the log (and, at -v, the console); a timeout kills the whole process group, and
so do an output line that the caller names as fatal and a full disk under a folder the caller
names (a tool that could not write may go on waiting: apt-get on a full disk waits for ever,
with or without a word); a failure raises an error carrying the exit code and the tail of the
output.
"""

import collections
import ctypes
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import files
from harness.errors import CommandFailed, CommandTimedOut, MissingHostTool

log = logging.getLogger("harness.run")
output_log = logging.getLogger("harness.output")

TAIL_LINES = 20
KILL_GRACE_S = 3.0
SPACE_POLL_S = 0.25
_PR_SET_PDEATHSIG = 1       # prctl(2)
PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
Process = subprocess.Popen


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_s: float


def quote(argv) -> str:
    return shlex.join(str(part) for part in argv)


def run(argv, *, cwd=None, env=None, timeout=None, check=True, log_file: Path | None = None,
        on_line: Callable[[str], None] | None = None, stdin_text: str | None = None,
        stop_on: re.Pattern | None = None, watch_space: Path | None = None, echo: bool = True) -> Result:
    """Run argv, stream its merged stdout/stderr, and return a Result.

    env is added to the current environment. log_file, if given, receives the output too.
    on_line is called with every output line (for progress displays). A line that stop_on matches
    ends the command at once, whatever check says: DiskFull when the line says the disk is full,
    else CommandFailed quoting it. When the file system of watch_space (a folder the command writes
    into) has less than files.FULL_BELOW bytes free, the command is ended and DiskFull raised.
    echo=False keeps the output (data, such as a file listing) out of the log.
    """
    argv = [str(part) for part in argv]
    announce(argv, cwd)
    full_env = {**os.environ, **(env or {})}
    started = time.monotonic()
    process = _launched(argv, cwd, full_env, stdin_text)
    timer = None
    lines: list[str] = []
    fatal: list[str] = []
    try:       # from here on, any way out of this function leaves no process of the group behind
        timer = _kill_timer(process, timeout)
        full = _space_watch(process, watch_space)
        _read_all(process, stdin_text, lines, log_file, _stopper(process, stop_on, fatal, on_line), echo)
    except BaseException:
        kill_group(process)
        raise
    finally:
        if timer:
            timer.cancel()
    _raise_if_killed(argv, process, lines, timer, timeout, full, watch_space)
    _raise_if_failed(argv, process, lines, fatal, check, watch_space or cwd)
    return Result(tuple(argv), process.returncode, "".join(lines), time.monotonic() - started)


def _launched(argv: list[str], cwd, env: dict, stdin_text: str | None) -> subprocess.Popen:
    """argv started in a process group of its own, stdout and stderr merged into one pipe."""
    try:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            start_new_session=True, text=True, errors="replace")
    except FileNotFoundError:
        raise _missing(argv) from None


def _missing(argv: list[str]) -> MissingHostTool:
    return MissingHostTool(what=f"Command '{argv[0]}'", fix="run 'harness doctor' to see how to install it")


def _read_all(process, stdin_text: str | None, lines: list[str], log_file, on_line, echo: bool) -> None:
    """Read the process's output to its end into lines, then wait for it to exit."""
    if stdin_text is not None:     # fed beside the reading: a tool that answers before it has read all waits
        threading.Thread(target=_feed_stdin, args=(process, stdin_text), daemon=True).start()
    _pump(process, lines, log_file, on_line, echo)
    process.wait()


def _raise_if_killed(argv: list[str], process, lines: list[str], timer, timeout, full, watch_space) -> None:
    """Raise CommandTimedOut when the timeout ended the command, DiskFull when a full disk did and it failed."""
    if timer and timer.fired:
        raise CommandTimedOut(command=quote(argv), timeout=timeout, tail=_tail(lines))
    if full and full.fired and process.returncode != 0:
        raise files.disk_full(watch_space)


def _raise_if_failed(argv: list[str], process, lines: list[str], fatal: list[str], check: bool, where) -> None:
    """Raise, for a command that printed a fatal line or (when checked) exited non-zero, DiskFull when its
    output says the disk is full (where: the folder it writes into, or its working directory), else
    CommandFailed."""
    if fatal:
        if files.says_disk_full(fatal[0]):
            raise files.disk_full(_full_path(fatal[0], where))
        raise CommandFailed(command=quote(argv), status=f"{process.returncode} (killed after this line)",
                            tail=fatal[0].strip())
    if check and process.returncode != 0:
        output = "".join(lines)
        if files.says_disk_full(output):
            raise files.disk_full(_full_path(output, where)) from None
        raise CommandFailed(command=quote(argv), status=process.returncode, tail=_tail(lines))


def _full_path(output: str, where) -> Path:
    """The file a command says it could not write for lack of space (the first absolute path on a line
    that says so: 'cpio: /x/y: No space left on device'; URLs and ./relative names are not), else where
    (the folder it writes into, or its working directory)."""
    for line in output.splitlines():
        if files.says_disk_full(line):
            match = re.search(r"(?<![:/\w.])(/[^\s:'\"()]+)", line)
            if match:
                return Path(match.group(1))
    return Path(where or os.getcwd())


def announce(argv, cwd=None) -> None:
    """Log the shell-quoted command line before it runs (for commands started elsewhere too)."""
    log.info("$ %s%s", quote(argv), f"  (in {cwd})" if cwd else "")


def output_of(argv, **kwargs) -> str:
    """Run argv and return its output, stripped."""
    return run(argv, **kwargs).output.strip()


def start(argv, *, stdout=DEVNULL, stderr=STDOUT, text: bool = False) -> Process:
    """argv started beside the harness, announced, in a process group of its own that gets SIGKILL when the
    harness dies, whatever kills it; the caller stops it with kill_group()."""
    argv = [str(part) for part in argv]
    announce(argv)
    try:
        return subprocess.Popen(argv, stdin=DEVNULL, stdout=stdout, stderr=stderr, text=text, start_new_session=True,
                                preexec_fn=_die_with_parent)
    except FileNotFoundError:
        raise _missing(argv) from None


def lines_of(argv):
    """The output lines of argv, streamed to the caller and kept out of the log (a disassembly has millions);
    the process group is killed when the caller stops reading, CommandFailed with stderr's tail on failure."""
    argv = [str(part) for part in argv]
    announce(argv)
    try:
        started = subprocess.Popen(argv, stdout=PIPE, stderr=PIPE, text=True, errors="replace", start_new_session=True)
    except FileNotFoundError:
        raise _missing(argv) from None
    with started as process:
        try:
            yield from (line.rstrip("\n") for line in process.stdout)
            process.wait()
        finally:
            kill_group(process)
        if process.returncode != 0:
            raise CommandFailed(command=quote(argv), status=process.returncode,
                                tail=process.stderr.read()[-500:].strip())


def exited_within(process: Process, seconds: float | None) -> bool:
    """Whether process exits within seconds (None: waits for it)."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the harness dies, whatever kills it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        if exited_within(process, wait):
            return


class _Timer(threading.Timer):
    fired = False


def _kill_timer(process, timeout):
    if timeout is None:
        return None

    def fire():
        timer.fired = True
        kill_group(process)

    timer = _Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    return timer


class _Watch(threading.Thread):
    fired = False


def _space_watch(process, folder: Path | None) -> _Watch | None:
    """A thread that kills the process group once folder's file system is full; ends with the process."""
    if folder is None:
        return None

    def watch():
        while process.poll() is None:
            if files.free_bytes(folder) < files.FULL_BELOW and process.poll() is None:
                watcher.fired = True
                kill_group(process)
                return
            time.sleep(SPACE_POLL_S)

    watcher = _Watch(target=watch, daemon=True)
    watcher.start()
    return watcher


def _stopper(process, stop_on, fatal: list[str], on_line):
    """on_line, plus: the first line stop_on matches is kept in fatal and the process group killed."""
    if stop_on is None:
        return on_line

    def check(line: str) -> None:
        if on_line:
            on_line(line)
        if not fatal and stop_on.search(line):
            fatal.append(line)
            kill_group(process)

    return check


def _feed_stdin(process, text):
    try:
        process.stdin.write(text)
        process.stdin.close()
    except (BrokenPipeError, ValueError):       # the tool ended (or was ended) before it read everything
        pass


def _pump(process, lines, log_file, on_line, echo=True):
    sink = open(log_file, "a", encoding="utf-8") if log_file else None
    try:
        for line in process.stdout:
            lines.append(line)
            if echo:
                output_log.debug(line.rstrip("\n"))
            if sink:
                sink.write(line)
            if on_line:
                on_line(line)
    finally:
        if sink:
            sink.close()


def _tail(lines) -> str:
    kept = [line.rstrip() for line in collections.deque(lines, maxlen=TAIL_LINES) if line.strip()]
    return " | ".join(kept[-5:]) if kept else "(no output)"
