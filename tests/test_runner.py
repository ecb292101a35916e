import ast
import os
import signal
import time

import pytest

from harness import runner
from harness.errors import CommandFailed, CommandTimedOut, MissingHostTool
from harness.project import ROOT


def test_run_returns_output_and_writes_log(tmp_path):
    log_file = tmp_path / "out.log"
    lines = []
    result = runner.run(["sh", "-c", "echo one; echo two >&2"], log_file=log_file, on_line=lines.append)
    assert result.returncode == 0
    assert result.output.splitlines() == ["one", "two"]
    assert log_file.read_text().splitlines() == ["one", "two"]
    assert lines == ["one\n", "two\n"]


def test_failure_carries_status_and_tail():
    with pytest.raises(CommandFailed) as caught:
        runner.run(["sh", "-c", "echo first; echo 'last words'; exit 3"])
    assert caught.value.fields["status"] == 3
    assert "last words" in str(caught.value)
    assert "sh -c" in str(caught.value)


def test_check_false_returns_the_status():
    assert runner.run(["sh", "-c", "exit 4"], check=False).returncode == 4


def test_missing_command_is_a_user_error():
    with pytest.raises(MissingHostTool, match="no-such-tool-here"):
        runner.run(["no-such-tool-here"])


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimedOut):
        runner.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1)
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not alive(child), "the grandchild sleep must die with the group"


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stdin_text_is_fed():
    assert runner.output_of(["cat"], stdin_text="hello\n") == "hello"


def test_quote_is_shell_safe():
    assert runner.quote(["echo", "a b", "c'd"]) == "echo 'a b' 'c'\"'\"'d'"


def test_a_command_that_runs_out_of_space_names_the_file_system_of_the_file_it_wrote(tmp_path):
    from harness.errors import DiskFull
    script = ("echo 'E: Failed to fetch http://deb.example/debian/x  Write error - write (28: No space left on "
              f"device) LZ4F: {tmp_path}/lists/partial/x.lz4 Write error'; exit 100")
    with pytest.raises(DiskFull, match=f"while writing {tmp_path}/lists/partial/x.lz4"):
        runner.run(["sh", "-c", script])
    with pytest.raises(DiskFull, match=f"while writing {tmp_path}:"):
        runner.run(["sh", "-c", "echo 'write error: No space left on device'; exit 1"], cwd=tmp_path)


def test_a_fatal_line_ends_a_tool_that_would_go_on_waiting(tmp_path):
    # apt-get on a full disk: it reports the write error, then waits with its children for ever
    from harness import files
    from harness.errors import DiskFull
    pid_file = tmp_path / "child.pid"
    script = (f"sleep 60 & echo $! > {pid_file}; echo 'Get:1 http://deb.example/debian trixie InRelease'; "
              f"echo 'Err:16 Write error - write (28: No space left on device) LZ4F: {tmp_path}/lists/x.lz4'; wait")
    started = time.monotonic()
    with pytest.raises(DiskFull, match=f"while writing {tmp_path}/lists/x.lz4"):
        runner.run(["sh", "-c", script], check=False, stop_on=files.WRITE_ERROR)
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not alive(int(pid_file.read_text())), "the tool's children die with it"


def test_a_fatal_line_that_is_not_a_full_disk_is_a_failure_quoting_it():
    from harness import files
    with pytest.raises(CommandFailed, match=r"killed after this line\); last output: tar: x: Cannot write: "
                                            r"Read-only file system$"):
        runner.run(["sh", "-c", "echo 'tar: x: Cannot write: Read-only file system'; sleep 60; echo later"],
                   stop_on=files.WRITE_ERROR)
    assert runner.run(["sh", "-c", "echo fine"], stop_on=files.WRITE_ERROR).output == "fine\n"


def test_echo_false_keeps_data_out_of_the_log(caplog):
    import logging
    caplog.set_level(logging.DEBUG, "harness.output")

    def logged():
        return [record.getMessage() for record in caplog.records if record.name == "harness.output"]

    result = runner.run(["sh", "-c", "echo listed-file-name"], echo=False)
    assert result.output == "listed-file-name\n" and logged() == []
    runner.run(["sh", "-c", "echo progress-line"])
    assert logged() == ["progress-line"]


def test_a_command_writing_to_a_full_disk_is_ended_even_if_it_says_nothing(tmp_path, monkeypatch):
    # apt-get with compressed lists fills the disk, prints only "Ign:" lines and waits for ever
    from harness import files
    from harness.errors import DiskFull
    free = {"bytes": 10 << 20}
    monkeypatch.setattr(files, "_file_system_of", lambda path: (tmp_path, free["bytes"]))
    assert runner.run(["sh", "-c", "sleep 0.5; echo done"], watch_space=tmp_path).output == "done\n"
    free["bytes"] = files.FULL_BELOW - 1
    started = time.monotonic()
    with pytest.raises(DiskFull, match=f"while writing {tmp_path}:"):
        runner.run(["sh", "-c", "echo 'Ign:10 http://deb.example/debian bullseye/main amd64 Packages'; sleep 60"],
                   check=False, watch_space=tmp_path)
    assert time.monotonic() - started < 10


def test_a_tool_that_answers_before_it_has_read_all_its_input_does_not_hang():
    # cpio -p complains about each name it cannot copy while it still reads names: more than a pipe's
    # worth of complaints before the end of its input used to block both sides
    names = "".join(f"missing-file-{number:06d}\n" for number in range(40_000))
    started = time.monotonic()
    result = runner.run(["sh", "-c", "while read -r name; do echo \"cannot stat $name\" >&2; done"],
                        stdin_text=names, timeout=60, echo=False)
    assert time.monotonic() - started < 30 and result.output.count("cannot stat") == 40_000


def test_a_full_disk_named_by_a_relative_path_is_looked_for_where_the_tool_writes(tmp_path):
    from harness.errors import DiskFull
    line = "tar: ./usr/src/linux-source-5.10.tar.xz: Cannot write: No space left on device"
    with pytest.raises(DiskFull, match=f"while writing {tmp_path}:"):
        runner.run(["sh", "-c", f"echo '{line}'; exit 2"], watch_space=tmp_path)


# what starts a process, besides the subprocess module itself
STARTERS = {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp", "spawnl", "spawnlp", "spawnv",
            "spawnvp", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe"}


def test_only_the_runner_starts_processes():
    doors = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path.name == "runner.py" and path.parent.name == "harness":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(alias.name in ("subprocess", "pty") for alias in node.names) \
                    or isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "pty"):
                doors.append(f"{path.relative_to(ROOT)}:{node.lineno} imports subprocess")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                    and node.attr in STARTERS:
                doors.append(f"{path.relative_to(ROOT)}:{node.lineno} calls os.{node.attr}")
    assert not doors, "\n".join(doors)


def test_a_started_program_is_announced_runs_in_its_own_group_and_dies_with_its_group(caplog, tmp_path):
    with caplog.at_level("INFO", "harness.run"):
        process = runner.start(["sh", "-c", f"sleep 60 & echo $! > {tmp_path / 'child'}; wait"])
    assert "$ sh -c" in caplog.text, "logged before it runs"
    try:
        assert os.getpgid(process.pid) == process.pid != os.getpgid(0), "a process group of its own"
        deadline = time.monotonic() + 5
        while not (tmp_path / "child").is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.kill_group(process)
    assert process.returncode == -signal.SIGTERM and runner.exited_within(process, 0)
    time.sleep(0.2)
    assert not alive(int((tmp_path / "child").read_text())), "its child dies with the group"
    with pytest.raises(MissingHostTool, match="no-such-tool-xyz"):
        runner.start(["no-such-tool-xyz"])


def test_streamed_lines_come_as_printed_and_a_failure_carries_stderr():
    assert list(runner.lines_of(["printf", "a\\nb\\n"])) == ["a", "b"]
    with pytest.raises(MissingHostTool, match="no-such-tool-xyz"):
        list(runner.lines_of(["no-such-tool-xyz"]))
    with pytest.raises(CommandFailed, match="status 3.*bad news"):
        list(runner.lines_of(["sh", "-c", "echo out; echo bad news >&2; exit 3"]))


def test_a_reader_that_stops_early_leaves_no_process(tmp_path):
    lines = runner.lines_of(["sh", "-c", f"echo $$ > {tmp_path / 'pid'}; while :; do echo y; done"])
    assert next(lines) == "y"
    lines.close()
    time.sleep(0.2)
    assert not alive(int((tmp_path / "pid").read_text()))
