"""The drivers that run a workload (harness/workloads.py) phase by phase in a booted guest. A Python
class exists only where behaviour differs: `phased-program` (a static program that takes phase names
on stdin, e.g. swapcow; in a memory cgroup when the workload sets memory_max_mb), `redis`
(redis-server in a memory cgroup, driven by redisdrive), `stress-ng` (one stressor per phase, with
its --verify) and `selftests` (the kernel tree's own mm selftests, one program per phase)."""

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BadWorkload, GuestConnectionLost
from harness.guest.session import GuestResult
from harness.results import FAILED_TEST, Finding
from harness.workloads import Gate, Workload, expectation_gates

PHASE_TIMEOUT_S = 1800
IDLE_S = 0.5     # the guest does nothing in it but the workload is not started: benchmarks/idle_background.py
CGROUP = "/sys/fs/cgroup/harness-workload"
PUSH_OUT = ("swapout", "reswap")     # redis's phases that squeeze the server's memory out to swap
# Freeze the workload's cgroup and wait until every task in it is frozen (cgroup v2, Linux 5.2 and later): at
# most FREEZE_S seconds, then the command fails (a kernel without cgroup.freeze fails at once).
FREEZE_S = 10
FREEZE = (f"echo 1 > {CGROUP}/cgroup.freeze && for i in $(seq {FREEZE_S * 100}); do grep -qx 'frozen 1' "
          f"{CGROUP}/cgroup.events && break; sleep 0.01; done && grep -qx 'frozen 1' {CGROUP}/cgroup.events")
THAW = f"echo 0 > {CGROUP}/cgroup.freeze"
REDIS_PORT = 6379
STRESS_NG_YAML = "/tmp/stress-ng.yaml"
PAGE = 4096


@dataclass(frozen=True)
class Checked:
    """What a phase checked of the data it read back: `checked` pages (or values) of which `wrong` were not
    what was written, and the first wrong one (`first`: where, `expected`, `found`), as the program said."""
    unit: str                   # pages | values
    checked: int
    wrong: int
    first: str = ""
    expected: str = ""
    found: str = ""

    def figures(self) -> dict[str, float]:
        return {f"checked_{self.unit}": self.checked, f"wrong_{self.unit}": self.wrong}

    def finding(self, phase: str) -> Finding | None:
        if not self.wrong:
            return None
        return Finding(phase, f"wrong_{self.unit}", self.wrong, self.checked, self.first, self.expected, self.found)


def checked_of(fields: dict[str, str], phase: str, unit: str = "pages") -> Checked | None:
    """The data check of a 'done' line (checked=N wrong=M [first=W expected=X found=Y]); None when the line
    has none. A count that is not a whole number is an error of the phase."""
    if "checked" not in fields and "wrong" not in fields:
        return None
    try:
        checked, wrong = int(fields.get("checked", "0")), int(fields.get("wrong", "0"))
    except ValueError:
        raise BadWorkload(name=phase, why=f"checked={fields.get('checked')} wrong={fields.get('wrong')}: "
                                          "not whole numbers") from None
    return Checked(unit, checked, wrong, fields.get("first", ""), fields.get("expected", ""), fields.get("found", ""))


CHECK_FIELDS = ("pages", "seconds", "checked", "wrong", "first", "expected", "found")


@dataclass(frozen=True)
class PhaseOutcome:
    """What the workload itself says about a phase."""
    pages: int                  # pages the workload touched (or meant to move, for swap-out phases)
    duration_s: float
    client: tuple[tuple[str, float], ...] = ()   # ops_per_s, latency_p50_ms, latency_p99_ms
    said: str = ""              # the workload's own words, kept in raw/
    checked: Checked | None = None               # what it checked of the data it read back
    findings: tuple[Finding, ...] = ()           # what it found wrong besides (a failed test of the kernel's own)

    def figures(self) -> dict[str, float]:
        checks = self.checked.figures() if self.checked is not None else {}
        return {"pages": self.pages, "duration_s": self.duration_s, **dict(self.client), **checks}

    def found(self, phase: str) -> tuple[Finding, ...]:
        """Everything the phase found wrong."""
        wrong = self.checked.finding(phase) if self.checked is not None else None
        return ((wrong,) if wrong else ()) + self.findings

    def raw(self) -> str:
        """The figures as harness-collect style lines, for raw/: every figure of a sample is there."""
        lines = [f"{name} {value!r}" for name, value in self.figures().items()]
        return "\n".join(["== workload", *lines] + (["== workload said", self.said] if self.said else []))


def parse_done(line: str, phase: str, unit: str = "pages") -> dict[str, str]:
    """'done PHASE key=value ...' -> {key: value}; anything else is an error of the phase, which keeps what the
    line says was read back wrong ('error PHASE why checked=N wrong=M first=...': the error's `found`)."""
    words = line.split()
    if len(words) < 2 or words[0] != "done" or words[1] != phase:
        error = BadWorkload(name=phase, why=f"unexpected answer '{line}'")
        fields = dict(word.split("=", 1) for word in words[2:] if "=" in word)
        try:
            checked = checked_of(fields, phase, unit)
        except BadWorkload:
            checked = None
        wrong = checked.finding(phase) if checked is not None else None
        error.found = [wrong] if wrong else []
        raise error
    return dict(word.split("=", 1) for word in words[2:] if "=" in word)


class Driver:
    """Runs one workload in one guest. Subclasses: start, run_phase, problems, stop."""

    def __init__(self, workload: Workload, params: dict, session):
        self.workload, self.params, self.session = workload, params, session
        self.pid: int | None = None
        self.cgroup = ""
        self.final_checks: dict[str, Checked] = {}    # what problems()' last check read back, by its phase name

    def phase_plan(self) -> list[str]:
        return list(self.workload.phases)

    def prepare(self, kernel) -> list[str]:
        """Put into the booted guest what this workload needs of the kernel's own build (its selftests), before
        the phases are planned; returns warnings to keep with the run."""
        return []

    def before(self, phase: str) -> None:
        """What the workload does before a phase's counting window opens (nothing, unless a driver says)."""

    def idle(self) -> PhaseOutcome:
        started = time.monotonic()
        time.sleep(IDLE_S)
        return PhaseOutcome(0, time.monotonic() - started)

    def problems(self) -> list[str]:
        """Reasons the run is invalid that only the workload can see (lost data); what its last check read back
        goes into self.final_checks (wrong data is a finding, not a reason: the boot stays valid)."""
        return []

    def gates(self) -> list[Gate]:
        texts = self.workload.setting("gates", []) + expectation_gates(self.workload.setting("expects", {}))
        return [Gate.parse(text, self.workload.name) for text in texts]

    @staticmethod
    def in_cgroup(argv) -> str:
        """A shell command that runs argv inside the workload's cgroup (it joins, then execs)."""
        return "sh -c " + shlex.quote(f"echo $$ > {CGROUP}/cgroup.procs && exec {shlex.join(argv)}")

    def make_cgroup(self, memory_max: str = "") -> None:
        """The workload's cgroup v2 group (memory.max when given): its memcg counters are the workload's."""
        self.session.run(f"echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p {CGROUP}")
        if memory_max:
            self.session.run(f"echo {memory_max} > {CGROUP}/memory.max")
        self.cgroup = CGROUP


def program_figures(fields: dict[str, str]) -> tuple[tuple[str, float], ...]:
    """The numbers a program's 'done' line gives besides pages and seconds, as program.KEY figures."""
    return tuple((f"program.{key}", float(value)) for key, value in fields.items()
                 if key not in CHECK_FIELDS and re.fullmatch(r"-?\d+(\.\d+)?", value))


class PhasedProgram(Driver):
    """A static program from the workload's folder: 'ready pid=P pages=N', then one phase per line. With
    memory_max_mb set, the program runs in its own memory cgroup limited to that many MiB."""

    def start(self) -> None:
        program = self.workload.setting("program")
        args = [str(arg).format(**self.params) for arg in self.workload.setting("args", [])]
        limit = self.workload.setting("memory_max_mb")
        if limit:
            self.make_cgroup(f"{int(str(limit).format(**self.params))}M")
            self.process = self.session.start(self.in_cgroup([program, *args]))
        else:
            self.process = self.session.start([program, *args])
        ready = self.process.read_line(timeout=120)
        fields = dict(word.split("=", 1) for word in ready.split()[1:] if "=" in word)
        if not ready.startswith("ready") or "pid" not in fields:
            raise BadWorkload(name=self.workload.name, why=f"program said '{ready}' instead of 'ready pid=...'")
        self.pid, self.pages = int(fields["pid"]), int(fields.get("pages", 0))

    def phase_plan(self) -> list[str]:
        repeated = self.workload.setting("repeat", [])
        once = [phase for phase in self.workload.phases if phase not in repeated]
        return once + repeated * int(self.params.get("cycles", 1))

    def run_phase(self, phase: str) -> PhaseOutcome:
        self.process.send(phase)
        line = self.process.read_line(timeout=PHASE_TIMEOUT_S)
        fields = parse_done(line, phase)
        return PhaseOutcome(int(fields.get("pages", 0)), float(fields["seconds"]), program_figures(fields), said=line,
                            checked=checked_of(fields, phase))

    def stop(self) -> None:
        try:
            self.process.send("quit")
            self.process.wait(timeout=30)
        finally:
            self.process.close()


class Redis(Driver):
    """redis-server in its own cgroup v2 group; redisdrive does the client side of each phase."""

    def phase_plan(self) -> list[str]:
        if self.params["mode"] == "limit":
            return list(self.workload.setting("limit_phases"))
        return list(self.workload.phases)

    def gates(self) -> list[Gate]:
        key = "limit_gates" if self.params["mode"] == "limit" else "gates"
        return [Gate.parse(text, self.workload.name) for text in self.workload.setting(key, [])]

    def start(self) -> None:
        run = self.session.run
        self.make_cgroup(f"{self.params['limit_mb']}M" if self.params["mode"] == "limit" else "")
        run(f"setsid sh -c 'echo $$ > {CGROUP}/cgroup.procs && exec redis-server --port {REDIS_PORT} --save \"\" "
            f"--appendonly no --protected-mode no' </dev/null >/tmp/redis.log 2>&1 &")
        for _ in range(200):
            if run(f"redis-cli -p {REDIS_PORT} ping", check=False).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        self.pid = int(run(f"cat {CGROUP}/cgroup.procs").stdout.split()[0])

    frozen = False
    held_bytes = 0

    def before(self, phase: str) -> None:
        """Before a phase's window: thaw the server if a push-out froze it, and freeze it before the next push-out
        (memory.current read while it is frozen), so that neither the freeze, its wait nor the thaw is counted."""
        self._thaw()
        if phase in PUSH_OUT:
            self.frozen = True          # before the command: a freeze that fails half-way is thawed all the same
            self.held_bytes = int(self.session.run(f"{FREEZE} && cat {CGROUP}/memory.current").stdout)

    def run_phase(self, phase: str) -> PhaseOutcome:
        if phase in PUSH_OUT:
            return self._push_out()
        line = self._drive(phase)
        fields = parse_done(line, phase)
        pages = -(-self.params["keys"] * self.params["value_bytes"] // PAGE)
        client = (("ops_per_s", int(fields["ops"]) / max(float(fields["seconds"]), 1e-9)),
                  ("latency_p50_ms", float(fields["p50_ms"])), ("latency_p99_ms", float(fields["p99_ms"])))
        return PhaseOutcome(pages, float(fields["seconds"]), client, said=line,
                            checked=checked_of(fields, phase, "values"))

    def _drive(self, phase: str) -> str:
        """redisdrive's 'done PHASE ...' line; the measured mixed phase runs duration_s seconds when set (the
        settle phase before it is one pass of random operations, so the working set reaches its steady state)."""
        seconds = self.params.get("duration_s", 0) if phase == "mixed" else 0
        argv = ["redisdrive", phase, self.params["keys"],
                self.params["value_bytes"], self.params["pipeline"], REDIS_PORT, seconds]
        result = self.session.run([str(arg) for arg in argv], timeout=PHASE_TIMEOUT_S)
        lines = result.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def _push_out(self) -> PhaseOutcome:
        """Move the server's memory to swap; pages = what should have moved. The server was frozen (cgroup.freeze)
        before the window opened (before()), and stays so until the next phase's: its own timer (serverCron, ten
        times a second) no longer touches pages inside the window, so the phase counts the kernel's reclaim alone.
        Left running, the server faulted 0, 33, 99 or 132 times in a reswap window, as its timer happened to fall,
        and a calibration failed on it."""
        run = self.session.run
        before = self.held_bytes
        started = time.monotonic()
        if self.params["mode"] == "madvise":
            run(["pageout", str(self.pid)], timeout=PHASE_TIMEOUT_S)
            target = 0
        else:
            target = self.params["squeeze_mb"] << 20
            run(f"echo {target} > {CGROUP}/memory.max && echo max > {CGROUP}/memory.max", timeout=PHASE_TIMEOUT_S)
        return PhaseOutcome(max(0, before - target) // PAGE, time.monotonic() - started,
                            said=f"memory.current {before} bytes before, target {target} bytes")

    def _thaw(self) -> None:
        if self.frozen:
            self.session.run(THAW)
            self.frozen = False

    def problems(self) -> list[str]:
        """redisdrive check: every key there, with a value of its length (else the run is invalid) and the content
        that was written (a wrong value is a finding of phase `check`)."""
        self._thaw()
        fields = parse_done(self._drive("check"), "check")
        checked = checked_of(fields, "check", "values")
        if checked is not None:
            self.final_checks["check"] = checked
        lost = self.params["keys"] - int(fields["keys"])
        short = int(fields["short"])
        if lost or short:
            return [f"redis lost {lost} keys and {short} values are short"]
        return []

    def stop(self) -> None:
        if self.frozen:
            self.session.run(THAW, check=False)
        self.session.run(f"redis-cli -p {REDIS_PORT} shutdown nosave", check=False)


class StressNg(Driver):
    """stress-ng, one stressor per phase (the phase's name), in the workload's memory cgroup: `instances`
    workers for STRESSOR_ops bogo operations (or `timeout_s`, whichever ends first), with the options of
    the workload's [stressors] table. A phase is the whole stress-ng run: there is no one process to
    follow, so its figures are the guest's and the cgroup's (system.cow_copies, vmstat, memcg)."""

    def phase_plan(self) -> list[str]:
        """idle, then the stressors the `stressors` parameter chooses (a comma-separated subset of the phases)."""
        known = [phase for phase in self.workload.phases if phase != "idle"]
        asked = str(self.params.get("stressors", ",".join(known)))
        chosen = [name.strip() for name in asked.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            raise BadWorkload(name=self.workload.name, why=f"stressors={','.join(chosen)}: choose from "
                                                           f"{', '.join(known)}")
        return ["idle", *[phase for phase in known if phase in chosen]]

    def start(self) -> None:
        self.make_cgroup()
        self.pid = None

    def run_phase(self, phase: str) -> PhaseOutcome:
        options = dict(self.workload.setting("stressors", {})).get(phase, [])
        ops = self.params.get(f"{phase}_ops")
        limit = [f"--{phase}-ops", str(ops)] if ops else []
        argv = ["stress-ng", f"--{phase}", str(self.params["instances"]), *limit,
                *[str(option).format(**self.params) for option in options],
                "--timeout", f"{self.params['timeout_s']}s", "--verify", "--metrics-brief", "--yaml", STRESS_NG_YAML]
        started = time.monotonic()
        # a fresh YAML file per phase, and stress-ng's own exit status as the command's
        result = self.session.run(f"rm -f {STRESS_NG_YAML}; {self.in_cgroup(argv)} 2>&1; status=$?; "
                                  f"cat {STRESS_NG_YAML} 2>/dev/null; exit $status", timeout=PHASE_TIMEOUT_S,
                                  check=False)
        seconds = time.monotonic() - started
        ops, rate = stress_ng_metrics(result.stdout, phase)
        if ops is None:
            tail = " / ".join(result.stdout.strip().splitlines()[-3:])
            raise BadWorkload(name=self.workload.name, why=f"stress-ng --{phase} gave no metrics (exit status "
                                                           f"{result.status}): {tail}")
        failed = stress_ng_failures(result.stdout)
        said = (Finding(phase, FAILED_TEST, where=f"stress-ng --{phase} --verify", found=failed[0]),) if failed else ()
        verified = (("tests_passed", 0 if failed else 1), ("tests_failed", 1 if failed else 0))     # one case each
        return PhaseOutcome(0, seconds, (("bogo_ops", ops), ("bogo_ops_per_s", rate), *verified),
                            said=result.stdout[-4000:], findings=said)

    def stop(self) -> None:
        self.session.run("pkill -x stress-ng", check=False)


def stress_ng_failures(text: str) -> list[str]:
    """What stress-ng's `fail:` lines say (its --verify found memory that does not hold what was written, or a
    stressor failed), without the process id: 'vm: detected 3 bit errors while stressing memory'."""
    return [match.group(1).strip() for match in re.finditer(r"^stress-ng: fail:\s+\[\d+\]\s+(.*)$", text, re.M)]


def stress_ng_metrics(text: str, stressor: str) -> tuple[float | None, float | None]:
    """(bogo ops, bogo ops per second of wall time) of stressor in stress-ng's --yaml metrics, or (None, None)."""
    block = re.search(rf"^\s+- stressor: {re.escape(stressor)}\n((?:\s{{6,}}\S.*\n?)*)", text, re.M)
    if not block:
        return None, None
    values = dict(re.findall(r"^\s+([\w-]+): (\S+)", block.group(1), re.M))
    try:
        return float(values["bogo-ops"]), float(values["bogo-ops-per-second-real-time"])
    except (KeyError, ValueError):
        return None, None


SELFTESTS_DIR = "/tmp/harness-selftests"
KSFT_SKIP = 4           # a kselftest's exit status when it skipped
TIMED_OUT = 124         # timeout(1)'s
LOST = -1               # a test during which the connection to the guest went
TAP_CASE = re.compile(r"^(not )?ok (\d+)\b\s*-?\s*(.*)$")


class Selftests(Driver):
    """The kernel tree's own mm selftests, built from the variant's tree (harness/kernel/selftests.py) and
    copied into the guest: one test program per phase, at most timeout_s each. Its cases are the phase's
    tests_passed, tests_failed and tests_skipped; each failed case is a finding (harness/analysis/integrity.py
    makes it `broken` when the baseline kernel passes it)."""

    def __init__(self, workload: Workload, params: dict, session):
        super().__init__(workload, params, session)
        self.unbuilt: dict[str, str] = {}

    def tests(self) -> dict[str, dict]:
        """phase -> its [tests.NAME] table; every phase but idle must have one, and every table a phase."""
        tables = dict(self.workload.setting("tests", {}))
        phases = [phase for phase in self.workload.phases if phase != "idle"]
        if set(tables) != set(phases):
            odd = sorted(set(tables) ^ set(phases))
            raise BadWorkload(name=self.workload.name, why=f"[tests.NAME] and phases differ in {', '.join(odd)}")
        return tables

    def phase_plan(self) -> list[str]:
        """idle, then the tests the `tests` parameter chooses (all by default) that the tree could build."""
        known = list(self.tests())
        asked = str(self.params.get("tests", "all"))
        chosen = known if asked == "all" else [name.strip() for name in asked.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            raise BadWorkload(name=self.workload.name, why=f"tests={asked}: choose from all, {', '.join(known)}")
        return ["idle", *[name for name in known if name in chosen and name not in self.unbuilt]]

    def prepare(self, kernel) -> list[str]:
        """Copy the kernel's selftests into the guest; the tests its tree could not build are left out, and said."""
        built = getattr(kernel, "selftests", None)
        if built is None or built.tarball is None or not Path(built.tarball).is_file():
            why = built.said() if built is not None and (not built.folder or built.tarball is None) else \
                "no selftests were built for this kernel here (a worker on another host gets none)"
            self.unbuilt = {name: why for name in self.tests()}
            return [why]
        self.session.upload(Path(built.tarball), f"{SELFTESTS_DIR}.tar")
        self.session.run(f"mkdir -p {SELFTESTS_DIR} && tar -x -f {SELFTESTS_DIR}.tar -C {SELFTESTS_DIR}")
        self.unbuilt = dict(built.unbuilt)
        chosen = set(self.phase_plan()) | set(self.unbuilt)
        said = built.said() if any(name in chosen for name in self.unbuilt) else ""
        return [said] if said else []

    def start(self) -> None:
        self.pid = None

    def run_phase(self, phase: str) -> PhaseOutcome:
        test = self.tests()[phase]
        program = Path(test["sources"][0]).stem
        argv = [f"./{program}", *[str(arg) for arg in test.get("args", [])]]
        limit = int(self.params["timeout_s"])
        started = time.monotonic()
        try:
            result = self.session.run(f"cd {SELFTESTS_DIR} && timeout {limit} {shlex.join(argv)} 2>&1",
                                      timeout=limit + 60, check=False)
        except GuestConnectionLost as lost:
            # the guest went during the test (a kernel that died in it, most likely): the test failed, with the
            # cases it printed before; the next command fails the cell with the cause
            result = GuestResult(lost.fields["command"], LOST, lost.output, "", time.monotonic() - started)
        seconds = time.monotonic() - started
        passed, failed, skipped = selftest_cases(result.stdout, result.status, shlex.join(argv), limit)
        figures = (("tests_passed", len(passed)), ("tests_failed", len(failed)), ("tests_skipped", len(skipped)))
        found = tuple(Finding(phase, FAILED_TEST, where=name) for name in dict.fromkeys(failed))
        return PhaseOutcome(0, seconds, figures, said=result.stdout[-8000:], findings=found)

    def stop(self) -> None:
        pass


def selftest_cases(text: str, status: int, command: str, limit: int) -> tuple[list[str], list[str], list[str]]:
    """(passed, failed, skipped) case names of a selftest's output: kselftest's TAP lines ('ok N name', 'not ok N
    name', 'ok N # SKIP why'), else the program as one case by its exit status (0 passes, KSFT_SKIP skips). A
    case is named after the '# [RUN] ...' line before it where there is one (cow, gup_longterm, ksm: there the
    TAP line says only the outcome, 'No leak from parent into child'), so that a case has one name whether it
    passes or fails. A program killed by the timeout, or one that failed without a failed case to show for it (a
    crash after its last case), fails as a case of its own."""
    passed, failed, skipped = [], [], []
    running = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# [RUN] "):
            running = line.removeprefix("# [RUN] ").strip()
            continue
        match = TAP_CASE.match(line)
        if not match:
            continue
        not_ok, number, rest = match.groups()
        if rest.startswith("#"):
            description, directive = "", rest[1:].strip()
        else:
            description, _, directive = (part.strip() for part in rest.partition(" # "))
        name = running or description or directive or f"case {number}"
        running = ""
        if directive.upper().startswith(("SKIP", "XFAIL")):
            skipped.append(name)
        else:
            (failed if not_ok else passed).append(name)
    if status == TIMED_OUT:
        failed.append(f"{command}: killed after {limit} s")
    elif status == LOST:
        failed.append(f"{command}: the guest went away during it")
    elif not (passed or failed or skipped):
        if status in (0, KSFT_SKIP):
            (passed if status == 0 else skipped).append(command)
        else:
            failed.append(f"{command}: exit status {status}")
    elif status not in (0, KSFT_SKIP) and not failed:
        failed.append(f"{command}: exit status {status}")
    return passed, failed, skipped


DRIVERS = {"phased-program": PhasedProgram, "redis": Redis, "stress-ng": StressNg, "selftests": Selftests}


def driver(workload: Workload, params: dict, session) -> Driver:
    return DRIVERS[workload.driver](workload, params, session)
