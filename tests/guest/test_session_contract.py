"""GuestSession's contract, held on both sides: the real session over SSH to the test sshd (sh runs
each command on this host), and FakeSession told what those commands answer there. The same
assertions hold on each side, so a test that passes on the fake passes on a real guest.

Where the fake differs it is stricter, by design: a command it was not told about raises NotTold
(a GuestCommandFailed with status 127, a shell's "not found") even under check=False, where a real
guest returns status 127, and start() raises it where a real guest fails at the first read.
"""

import threading
import time

import pytest

from harness.errors import GuestCommandFailed, GuestConnectionLost, GuestTimedOut
from harness.guest.session import GuestSession
from tests.fakes.guest import Answer, FakeSession, NotTold, Program, Reply
from tests.fakes.sshd import LocalSshd

SAYS_AND_EXITS_3 = ["sh", "-c", "echo out; echo err >&2; exit 3"]
ECHOER = "while read line; do echo got $line; [ $line = quit ] && exit 4; done"
CRASHER = "read line; echo bye $line; echo crashed >&2; exit 6"
MISSING = "no-such-command-xyz"

# What these commands answer on a real guest; the real side checks that they do.
TOLD = {
    "sh -c 'echo out; echo err >&2; exit 3'": Answer("out\n", "err\n", 3),
    "echo still here": "still here\n",
    "tr a-z A-Z": lambda text, stdin: Answer(stdin.decode().upper()),
    "sleep 5": Answer(seconds=5),
}
PROGRAMS = {
    ECHOER: Program(reply=lambda line: Reply((f"got {line}",), 4 if line == "quit" else None)),
    CRASHER: Program(reply=lambda line: Reply((f"bye {line}",), 6, "crashed\n")),
    "sleep 5": Program(),
    "sleep 30": Program(),
}


@pytest.fixture(params=["fake", "real"])
def side(request, tmp_path):
    """(session, lose_connection) of one side: a connected session, and what makes its guest go away (now, or
    `after` seconds from now)."""
    if request.param == "fake":
        fake = FakeSession(TOLD, PROGRAMS)
        yield fake, fake.lose_connection
        return
    with LocalSshd(tmp_path / "sshd") as server:
        real = GuestSession(server.port, server.keys)
        real.connect(timeout=10)
        yield real, lambda after=0: threading.Timer(after, server.stop).start() if after else server.stop()
        real.close()


@pytest.fixture
def guest(side):
    return side[0]


def test_a_command_gives_its_output_and_exit_status(guest):
    result = guest.run(SAYS_AND_EXITS_3, check=False)
    assert (result.command, result.status, result.stdout, result.stderr) == (
        "sh -c 'echo out; echo err >&2; exit 3'", 3, "out\n", "err\n")
    assert (guest.run("echo still here").status, guest.run("echo still here").stdout) == (0, "still here\n")


def test_check_raises_on_a_non_zero_status_with_the_command_status_and_stderr(guest):
    with pytest.raises(GuestCommandFailed) as raised:
        guest.run(SAYS_AND_EXITS_3)
    assert type(raised.value) is GuestCommandFailed
    assert raised.value.fields == {"command": "sh -c 'echo out; echo err >&2; exit 3'", "status": 3, "tail": "err"}


def test_stdin_reaches_the_command(guest):
    assert guest.run("tr a-z A-Z", stdin=b"shout\n").stdout == "SHOUT\n"


def test_a_slow_command_times_out_and_the_session_survives(guest):
    with pytest.raises(GuestTimedOut) as raised:
        guest.run(["sleep", "5"], timeout=0.5)
    assert raised.value.fields == {"command": "sleep 5", "timeout": 0.5}
    assert guest.run("echo still here").stdout == "still here\n"


def test_an_unknown_command_fails_with_status_127(guest):
    with pytest.raises(GuestCommandFailed) as raised:
        guest.run(MISSING)
    assert (raised.value.fields["command"], raised.value.fields["status"]) == (MISSING, 127)
    assert MISSING in str(raised.value)


def test_an_unknown_command_never_succeeds(guest):
    """Unchecked, a real guest returns status 127; the fake raises NotTold even so, as it cannot know
    whether a real guest has the command."""
    try:
        status = guest.run(MISSING, check=False).status
    except NotTold as error:
        assert isinstance(guest, FakeSession), "only the fake refuses a command it was not told about"
        status = error.fields["status"]
    assert status == 127


def test_an_unknown_program_fails_with_status_127(guest):
    """A real guest starts it and fails at the first read; the fake refuses to start it."""
    with pytest.raises(GuestCommandFailed) as raised:
        guest.start(MISSING).read_line(timeout=10)
    assert (raised.value.fields["command"], raised.value.fields["status"]) == (MISSING, 127)


def test_a_started_program_is_spoken_to_line_by_line(guest):
    process = guest.start(ECHOER)
    process.send("one")
    assert process.read_line(timeout=10) == "got one"
    with pytest.raises(GuestTimedOut):
        process.read_line(timeout=0.3)
    process.send("quit")
    assert process.read_line(timeout=10) == "got quit"
    assert process.wait(timeout=10) == 4
    with pytest.raises(GuestCommandFailed) as raised:
        process.read_line(timeout=5)
    assert raised.value.fields == {"command": ECHOER, "status": 4, "tail": "(none)"}
    process.close()
    slow = guest.start(["sleep", "5"])
    assert slow.wait(timeout=0.2) is None
    slow.close()


def test_files_go_to_the_guest_and_come_back_byte_for_byte(guest, tmp_path):
    payload = tmp_path / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 1000)
    guest.upload(payload, str(tmp_path / "uploaded.bin"))
    guest.download(str(tmp_path / "uploaded.bin"), tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
    missing = str(tmp_path / "missing")
    with pytest.raises(GuestCommandFailed) as raised:
        guest.download(missing, tmp_path / "never")
    assert raised.value.fields == {"command": f"cat {missing}", "status": 1,
                                   "tail": f"cat: {missing}: No such file or directory"}


def test_a_lost_connection_fails_the_program_and_every_later_command(side):
    guest, lose_connection = side
    process = guest.start(["sleep", "30"])
    lose_connection()
    with pytest.raises(GuestConnectionLost, match="during sleep 30 .it went before the program exited"):
        process.read_line(timeout=10)
    assert process.wait(timeout=1) == -1, "no exit status came"
    with pytest.raises(GuestConnectionLost, match="during sleep 30"):
        process.send("more")
    with pytest.raises(GuestConnectionLost):
        guest.run("echo still here")
    with pytest.raises(GuestConnectionLost, match="the connection is closed"):
        guest.start(ECHOER)


def test_a_connection_lost_while_a_command_runs_fails_it_whatever_check_says(side):
    guest, lose_connection = side
    lose_connection(after=0.5)
    with pytest.raises(GuestConnectionLost, match="during sleep 5 .it went before the command's exit status came"):
        guest.run(["sleep", "5"], check=False)
    with pytest.raises(GuestConnectionLost, match="the connection is closed"):
        guest.run("echo still here", check=False)


def test_a_closed_session_refuses_commands(guest):
    guest.close()
    with pytest.raises(GuestConnectionLost, match="the connection is closed"):
        guest.run("echo still here")


def refuses_lines(process, seconds: float = 5) -> dict | None:
    """What process says when it refuses a line within seconds (GuestCommandFailed's fields; None when it
    takes them all): a real guest closes the channel a few milliseconds after it sends the exit status,
    and paramiko sends on an open channel."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            process.send("more")
        except GuestCommandFailed as refused:
            return refused.fields
        time.sleep(0.02)
    return None


def test_a_program_that_exits_fails_the_next_read_with_its_status_and_stderr(guest):
    process = guest.start(CRASHER)
    process.send("now")
    assert process.read_line(timeout=10) == "bye now"
    assert process.wait(timeout=10) == 6
    with pytest.raises(GuestCommandFailed) as raised:
        process.read_line(timeout=5)
    assert raised.value.fields == {"command": CRASHER, "status": 6, "tail": "crashed"}
    assert refuses_lines(process) == {"command": CRASHER, "status": 6, "tail": "(none)"}, \
        "an exited program takes no more lines, and says why as a read does (its stderr was read)"
    process.close()


def test_a_closed_program_fails_as_one_without_an_exit_status(guest):
    process = guest.start(["sleep", "30"])
    process.close()
    with pytest.raises(GuestCommandFailed) as raised:
        process.read_line(timeout=5)
    assert raised.value.fields == {"command": "sleep 30", "status": -1, "tail": "(none)"}
    assert process.wait(timeout=1) == -1
    with pytest.raises(GuestCommandFailed) as raised:
        process.send("more")
    assert raised.value.fields == {"command": "sleep 30", "status": -1, "tail": "(none)"}
