"""Workloads: definitions discovered in workloads/*/workload.toml, and the drivers that run
them phase by phase in a booted guest. A Python class exists only where behaviour differs:
`phased-program` (a static program that takes phase names on stdin, e.g. swapcow) and
`redis` (redis-server in a memory cgroup, driven by redisdrive)."""

import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness import project
from harness.errors import BadWorkload, UnknownWorkload
from harness.measure import causes, metrics

PHASE_TIMEOUT_S = 1800
IDLE_S = 2.0
CGROUP = "/sys/fs/cgroup/harness-workload"
REDIS_PORT = 6379
PAGE = 4096


EXPECTED_SHARE = 0.9     # of a phase's pages that must show the cause it expects
REUSE = "reuse"          # an expectation that is no copy cause: write faults that keep their page
GATE = re.compile(r"^\s*(\w+)\.(\S+)\s*>=\s*([0-9]*\.?[0-9]+)\s*\*\s*(\w+)\.(\S+)\s*$")


@dataclass(frozen=True)
class Gate:
    """'PHASE.METRIC >= SHARE * PHASE.METRIC': a run that does not do what the workload meant
    (swap out most of its pages, bring them back, push them out again) is invalid."""
    phase: str
    metric: str
    share: float
    of_phase: str
    of_metric: str

    @classmethod
    def parse(cls, text: str, workload: str) -> "Gate":
        match = GATE.match(text)
        if not match:
            raise BadWorkload(name=workload, why=f"gate '{text}' is not 'PHASE.METRIC >= SHARE * PHASE.METRIC'")
        phase, metric, share, of_phase, of_metric = match.groups()
        return cls(phase, metric, float(share), of_phase, of_metric)

    def problem(self, phases: dict[str, dict]) -> str | None:
        """Why the run fails this gate, or None (also when a phase of the gate did not run)."""
        if self.phase not in phases or self.of_phase not in phases:
            return None
        value, reference = phases[self.phase].get(self.metric), phases[self.of_phase].get(self.of_metric)
        if value is None and metrics.meaning(self.metric).probed:
            return None      # a boot without probes, or a kernel without cause metrics (the run says so)
        if value is None or reference is None:
            missing = self.metric if value is None else self.of_metric
            hint = ": a kernel without CONFIG_VM_EVENT_COUNTERS?" if missing.startswith("vmstat.") else ""
            return f"{self.phase if value is None else self.of_phase} has no {missing}{hint}"
        if reference <= 0:
            return f"{self.of_phase}.{self.of_metric} is {reference:g}: the phase had nothing to move"
        if value < self.share * reference:
            return (f"{self.phase}: {self.metric} is {value:,.0f}, below {self.share:g} x "
                    f"{self.of_phase}.{self.of_metric} ({reference:,.0f})")
        return None


@dataclass(frozen=True)
class Workload:
    name: str
    folder: Path
    description: str
    driver: str
    phases: tuple[str, ...]
    parameters: tuple[tuple[str, object], ...]     # defaults, in file order
    swapout_phase: str
    read_phase: str
    settings: tuple[tuple[str, object], ...] = ()  # the rest of the file, for the driver
    minimum: tuple[tuple[str, float], ...] = ()    # [minimum]: lowest value of a numeric parameter (default 1)
    choices: tuple[tuple[str, tuple], ...] = ()    # [choices]: the values a parameter may take

    def params(self, overrides: dict | None = None) -> dict:
        """Defaults with overrides applied (text from the command line is converted to the default's type);
        an unknown name, a value of the wrong type or out of range is refused, naming the parameter."""
        values = dict(self.parameters)
        for name, value in (overrides or {}).items():
            if name not in values:
                raise BadWorkload(name=self.name, why=f"no parameter '{name}' (known: {', '.join(values)})")
            values[name] = _converted(value, values[name], self.name, name)
        for name, value in values.items():
            self.check(name, value)
        return values

    def check(self, name: str, value) -> None:
        """A number below the parameter's minimum (1 unless [minimum] says otherwise) or a value not in its
        [choices] is refused."""
        minimum = dict(self.minimum).get(name, 1)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < minimum:
            raise BadWorkload(name=self.name, why=f"parameter {name} must be at least {minimum:g}, not {value:g}")
        choices = dict(self.choices).get(name)
        if choices and value not in choices:
            raise BadWorkload(name=self.name, why=f"parameter {name} must be one of {', '.join(map(str, choices))}, "
                                                  f"not {value!r}")

    def setting(self, name, default=None):
        return dict(self.settings).get(name, default)


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _converted(value, default, workload: str, name: str):
    """value (text from -p, or a TOML value) as the type of the parameter's default."""
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError
        if kind is int:
            return int(text)
        return kind(text)
    except ValueError:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, kind.__name__)
        raise BadWorkload(name=workload, why=f"parameter {name} must be {wanted}, not {text!r}") from None


def choose(names, settings, preset=None) -> tuple:
    """(Workload, parameters) for each name; NAME=VALUE settings (from -p) go to the workloads that have NAME,
    WORKLOAD.NAME=VALUE (the sweep's form) to that workload only, over the experiment's preset ({workload:
    {name: value}})."""
    chosen = [load(name) for name in names]
    bad = [setting for setting in settings if "=" not in setting]
    if bad:
        raise BadWorkload(name=", ".join(names), why=f"--param takes [WORKLOAD.]NAME=VALUE, not '{bad[0]}'")
    known = "; ".join(f"{w.name}: {', '.join(dict(w.parameters))}" for w in chosen)
    overrides: dict[str, dict] = {w.name: {} for w in chosen}
    for setting in settings:
        name, value = setting.split("=", 1)
        owner, _, key = name.rpartition(".")
        if owner and owner not in overrides:
            raise BadWorkload(name=owner, why=f"-p {setting} names a workload that does not run here "
                                              f"({', '.join(names)})")
        takers = [w for w in chosen if (not owner or w.name == owner) and key in dict(w.parameters)]
        if not takers:
            raise BadWorkload(name=owner or ", ".join(names), why=f"no parameter '{key}' (the parameters: {known})")
        for workload in takers:
            overrides[workload.name][key] = value
    return tuple((w, w.params({**(preset or {}).get(w.name, {}), **overrides[w.name]})) for w in chosen)


def discover(folder: Path = project.WORKLOADS) -> dict[str, Workload]:
    return {path.parent.name: _load(path) for path in sorted(folder.glob("*/workload.toml"))}


def load(name: str, folder: Path = project.WORKLOADS) -> Workload:
    known = discover(folder)
    if name not in known:
        raise UnknownWorkload(name=name, folder=folder, known=", ".join(known))
    return known[name]


def _load(path: Path) -> Workload:
    data = tomllib.loads(path.read_text())
    try:
        core = {key: data.pop(key) for key in ("description", "driver", "phases", "swapout_phase", "read_phase")}
    except KeyError as missing:
        raise BadWorkload(name=path.parent.name, why=f"workload.toml lacks {missing}") from None
    if core["driver"] not in DRIVERS:
        raise BadWorkload(name=path.parent.name, why=f"unknown driver '{core['driver']}' (known: {', '.join(DRIVERS)})")
    parameters = tuple(data.pop("parameters", {}).items())
    minimum = tuple(data.pop("minimum", {}).items())
    choices = tuple((name, tuple(values)) for name, values in data.pop("choices", {}).items())
    for key in [key for key in data if key == "gates" or key.endswith("_gates")]:
        for text in data[key]:
            Gate.parse(text, path.parent.name)
    _check_phase_tables(data, core["phases"], path.parent.name)
    workload = Workload(path.parent.name, path.parent, core["description"], core["driver"], tuple(core["phases"]),
                        parameters, core["swapout_phase"], core["read_phase"], tuple(data.items()), minimum, choices)
    for name in dict(minimum) | dict(choices):
        if name not in dict(parameters):
            raise BadWorkload(name=workload.name, why=f"[minimum] or [choices] names '{name}', not a parameter")
    workload.params()      # the defaults themselves must pass
    return workload


def _check_phase_tables(data: dict, phases, workload: str) -> None:
    """[expects] names phases and causes (or "reuse"); [requires] names phases and CONFIG_ options."""
    known = (*causes.CAUSES, REUSE)
    for table in ("expects", "requires"):
        for phase, value in data.get(table, {}).items():
            if phase not in phases:
                raise BadWorkload(name=workload, why=f"[{table}] names phase '{phase}', not one of {', '.join(phases)}")
            if table == "expects" and value not in known:
                raise BadWorkload(name=workload, why=f"[expects] {phase} = '{value}' is not one of {', '.join(known)}")
            if table == "requires" and not re.fullmatch(r"CONFIG_\w+", str(value)):
                raise BadWorkload(name=workload, why=f"[requires] {phase} = '{value}' is not a CONFIG_ option")


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


def expectation_gates(expects: dict) -> list[str]:
    """The gates of a workload's [expects]: a copy cause must make up most of the phase's copies; a
    reuse phase must have had its write faults (whether they reused is what is measured)."""
    return [f"{phase}.wp_faults >= {EXPECTED_SHARE} * {phase}.pages" if expected == REUSE else
            f"{phase}.cow_copies.{expected} >= {EXPECTED_SHARE} * {phase}.pages" for phase, expected in expects.items()]


class PhasedProgram(Driver):
    """A static program from the workload's folder: 'ready pid=P pages=N', then one phase per line."""

    def start(self) -> None:
        program = self.workload.setting("program")
        args = [str(arg).format(**self.params) for arg in self.workload.setting("args", [])]
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
        return PhaseOutcome(int(fields.get("pages", 0)), float(fields["seconds"]), said=line)

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
        run(f"echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p {CGROUP}")
        if self.params["mode"] == "limit":
            run(f"echo {self.params['limit_mb']}M > {CGROUP}/memory.max")
        run(f"setsid sh -c 'echo $$ > {CGROUP}/cgroup.procs && exec redis-server --port {REDIS_PORT} --save \"\" "
            f"--appendonly no --protected-mode no' </dev/null >/tmp/redis.log 2>&1 &")
        for _ in range(200):
            if run(f"redis-cli -p {REDIS_PORT} ping", check=False).stdout.strip() == "PONG":
                break
            time.sleep(0.1)
        self.pid = int(run(f"cat {CGROUP}/cgroup.procs").stdout.split()[0])
        self.cgroup = CGROUP

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


DRIVERS = {"phased-program": PhasedProgram, "redis": Redis}


def driver(workload: Workload, params: dict, session) -> Driver:
    return DRIVERS[workload.driver](workload, params, session)
