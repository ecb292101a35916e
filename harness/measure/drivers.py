"""The drivers that run a workload (harness/workloads.py) phase by phase in a booted guest. A Python
class exists only where behaviour differs: `phased-program` (a static program that takes phase names
on stdin, e.g. swapcow; in a memory cgroup when the workload sets memory_max_mb), `redis`
(redis-server in a memory cgroup, driven by redisdrive) and `stress-ng` (one stressor per phase)."""

import re
import shlex
import time
from dataclasses import dataclass

from harness.errors import BadWorkload
from harness.workloads import Gate, Workload, expectation_gates

PHASE_TIMEOUT_S = 1800
IDLE_S = 2.0
CGROUP = "/sys/fs/cgroup/harness-workload"
REDIS_PORT = 6379
STRESS_NG_YAML = "/tmp/stress-ng.yaml"
PAGE = 4096


@dataclass(frozen=True)
class PhaseOutcome:
    """What the workload itself says about a phase."""
    pages: int                  # pages the workload touched (or meant to move, for swap-out phases)
    duration_s: float
    client: tuple[tuple[str, float], ...] = ()   # ops_per_s, latency_p50_ms, latency_p99_ms
    said: str = ""              # the workload's own words, kept in raw/

    def figures(self) -> dict[str, float]:
        return {"pages": self.pages, "duration_s": self.duration_s, **dict(self.client)}

    def raw(self) -> str:
        """The figures as harness-collect style lines, for raw/: every figure of a sample is there."""
        lines = [f"{name} {value!r}" for name, value in self.figures().items()]
        return "\n".join(["== workload", *lines] + (["== workload said", self.said] if self.said else []))


def parse_done(line: str, phase: str) -> dict[str, str]:
    """'done PHASE key=value ...' -> {key: value}; anything else is an error of the phase."""
    words = line.split()
    if len(words) < 2 or words[0] != "done" or words[1] != phase:
        raise BadWorkload(name=phase, why=f"unexpected answer '{line}'")
    return dict(word.split("=", 1) for word in words[2:] if "=" in word)


class Driver:
    """Runs one workload in one guest. Subclasses: start, run_phase, problems, stop."""

    def __init__(self, workload: Workload, params: dict, session):
        self.workload, self.params, self.session = workload, params, session
        self.pid: int | None = None
        self.cgroup = ""

    def phase_plan(self) -> list[str]:
        return list(self.workload.phases)

    def idle(self) -> PhaseOutcome:
        started = time.monotonic()
        time.sleep(IDLE_S)
        return PhaseOutcome(0, time.monotonic() - started)

    def problems(self) -> list[str]:
        """Reasons the run is invalid that only the workload can see (lost data)."""
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
                 if key not in ("pages", "seconds") and re.fullmatch(r"-?\d+(\.\d+)?", value))


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
        return PhaseOutcome(int(fields.get("pages", 0)), float(fields["seconds"]), program_figures(fields), said=line)

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

    def run_phase(self, phase: str) -> PhaseOutcome:
        if phase in ("swapout", "reswap"):
            return self._push_out()
        line = self._drive(phase)
        fields = parse_done(line, phase)
        pages = -(-self.params["keys"] * self.params["value_bytes"] // PAGE)
        client = (("ops_per_s", int(fields["ops"]) / max(float(fields["seconds"]), 1e-9)),
                  ("latency_p50_ms", float(fields["p50_ms"])), ("latency_p99_ms", float(fields["p99_ms"])))
        return PhaseOutcome(pages, float(fields["seconds"]), client, said=line)

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
        """Move the server's memory to swap; pages = what should have moved."""
        run = self.session.run
        before = int(run(f"cat {CGROUP}/memory.current").stdout)
        started = time.monotonic()
        if self.params["mode"] == "madvise":
            run(["pageout", str(self.pid)], timeout=PHASE_TIMEOUT_S)
            target = 0
        else:
            target = self.params["squeeze_mb"] << 20
            run(f"echo {target} > {CGROUP}/memory.max && echo max > {CGROUP}/memory.max", timeout=PHASE_TIMEOUT_S)
        return PhaseOutcome(max(0, before - target) // PAGE, time.monotonic() - started,
                            said=f"memory.current {before} bytes before, target {target} bytes")

    def problems(self) -> list[str]:
        fields = parse_done(self._drive("check"), "check")
        lost = self.params["keys"] - int(fields["keys"])
        short = int(fields["short"])
        if lost or short:
            return [f"redis lost {lost} keys and {short} values are short"]
        return []

    def stop(self) -> None:
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
                "--timeout", f"{self.params['timeout_s']}s", "--metrics-brief", "--yaml", STRESS_NG_YAML]
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
        return PhaseOutcome(0, seconds, (("bogo_ops", ops), ("bogo_ops_per_s", rate)),
                            said=result.stdout[-4000:])

    def stop(self) -> None:
        self.session.run("pkill -x stress-ng", check=False)


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


DRIVERS = {"phased-program": PhasedProgram, "redis": Redis, "stress-ng": StressNg}


def driver(workload: Workload, params: dict, session) -> Driver:
    return DRIVERS[workload.driver](workload, params, session)
