"""The one door for host commands.

argv is a list from start to finish; the shell-quoted command line is logged before it runs;
output goes to the log (and, at -v, the console); a timeout kills the whole process group;
a failure raises an error carrying the exit code and the tail of the output.
"""

import collections
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


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_s: float


def quote(argv) -> str:
    return shlex.join(str(part) for part in argv)


def run(argv, *, cwd=None, env=None, timeout=None, check=True, log_file: Path | None = None,
        on_line: Callable[[str], None] | None = None, stdin_text: str | None = None) -> Result:
    """Run argv, stream its merged stdout/stderr, and return a Result.

    env is added to the current environment. log_file, if given, receives the output too.
    on_line is called with every output line (for progress displays).
    """
    argv = [str(part) for part in argv]
    announce(argv, cwd)
    full_env = {**os.environ, **(env or {})}
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            start_new_session=True, text=True, errors="replace")
    except FileNotFoundError:
        raise MissingHostTool(what=f"Command '{argv[0]}'",
                              fix="run 'harness doctor' to see how to install it") from None
    timer = _kill_timer(process, timeout)
    lines: list[str] = []
    try:
        if stdin_text is not None:
            _feed_stdin(process, stdin_text)
        _pump(process, lines, log_file, on_line)
        process.wait()
    except BaseException:
        kill_group(process)
        raise
    finally:
        if timer:
            timer.cancel()
    output = "".join(lines)
    tail = _tail(lines)
    if timer and timer.fired:
        raise CommandTimedOut(command=quote(argv), timeout=timeout, tail=tail)
    if check and process.returncode != 0:
        if files.says_disk_full(output):
            raise files.disk_full(_full_path(output, cwd)) from None
        raise CommandFailed(command=quote(argv), status=process.returncode, tail=tail)
    return Result(tuple(argv), process.returncode, output, time.monotonic() - started)


def _full_path(output: str, cwd) -> Path:
    """The file a command says it could not write for lack of space (the first absolute path on a line
    that says so: 'cpio: /x/y: No space left on device'; URLs are not paths), else its working directory."""
    for line in output.splitlines():
        if files.says_disk_full(line):
            match = re.search(r"(?<![:/\w])(/[^\s:'\"()]+)", line)
            if match:
                return Path(match.group(1))
    return Path(cwd or os.getcwd())


def announce(argv, cwd=None) -> None:
    """Log the shell-quoted command line before it runs (for commands started elsewhere too)."""
    log.info("$ %s%s", quote(argv), f"  (in {cwd})" if cwd else "")


def output_of(argv, **kwargs) -> str:
    """Run argv and return its output, stripped."""
    return run(argv, **kwargs).output.strip()


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


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


def _feed_stdin(process, text):
    try:
        process.stdin.write(text)
    finally:
        process.stdin.close()


def _pump(process, lines, log_file, on_line):
    sink = open(log_file, "a", encoding="utf-8") if log_file else None
    try:
        for line in process.stdout:
            lines.append(line)
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
