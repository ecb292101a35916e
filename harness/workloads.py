"""Workload definitions, discovered in workloads/*/workload.toml: phases, parameters with their
defaults and limits, gates and expectations. What the experiment, the checks and the analysis
read; the drivers that run a workload in a booted guest are harness/measure/drivers.py."""

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness import metrics, project
from harness.errors import BadWorkload, HarnessError, UnknownWorkload

EXPECTED_SHARE = 0.9     # of a phase's pages that must show the cause it expects
REUSE = "reuse"          # an expectation that is no copy cause: write faults that keep their page
DRIVERS = ("phased-program", "redis", "stress-ng", "selftests")   # the classes of harness/measure/drivers.py
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

    @property
    def most_reps(self) -> int | None:
        """`most_reps` of workload.toml: the repetitions a run gives this workload at most, whatever --reps says
        (a workload whose rows are counts that must be 0 needs no test of significance); None: as many as the
        run's."""
        return self.setting("most_reps")

    @property
    def correctness(self) -> bool:
        """`correctness = true` in workload.toml: it checks that the kernel is right (what the pages hold), not
        what it does: `harness try` runs it whatever the coverage chose."""
        return bool(self.setting("correctness", False))


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


@functools.cache
def by_rule(name: str) -> bool:
    """Whether a shipped workload's rows are judged by a rule, not by statistics (`most_reps`: the integrity
    checks, the selftests): its must-be-zero rows decide, and its other rows, at one boot a variant, are there
    to read; a statistic over them would only dilute the others'. False for a workload no longer shipped."""
    try:
        return load(name).most_reps is not None
    except HarnessError:
        return False


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
    most = workload.setting("most_reps")
    if most is not None and (not isinstance(most, int) or isinstance(most, bool) or most < 1):
        raise BadWorkload(name=workload.name, why=f"most_reps = {most!r}: a whole number of at least 1")
    return workload


def _check_phase_tables(data: dict, phases, workload: str) -> None:
    """[expects] names phases and causes (or "reuse"); [requires] names phases and CONFIG_ options or
    absolute paths in the guest (a sysfs file of a kernel feature without an option of its own)."""
    known = (*metrics.CAUSES, REUSE)
    for table in ("expects", "requires"):
        for phase, value in data.get(table, {}).items():
            if phase not in phases:
                raise BadWorkload(name=workload, why=f"[{table}] names phase '{phase}', not one of {', '.join(phases)}")
            if table == "expects" and value not in known:
                raise BadWorkload(name=workload, why=f"[expects] {phase} = '{value}' is not one of {', '.join(known)}")
            if table == "requires" and not re.fullmatch(r"CONFIG_\w+|/\S+", str(value)):
                raise BadWorkload(name=workload, why=f"[requires] {phase} = '{value}' is neither a CONFIG_ option "
                                                     "nor a path in the guest")

def expectation_gates(expects: dict) -> list[str]:
    """The gates of a workload's [expects]: a copy cause must make up most of the phase's copies; a
    reuse phase must have had its write faults (whether they reused is what is measured)."""
    return [f"{phase}.wp_faults >= {EXPECTED_SHARE} * {phase}.pages" if expected == REUSE else
            f"{phase}.cow_copies.{expected} >= {EXPECTED_SHARE} * {phase}.pages" for phase, expected in expects.items()]
