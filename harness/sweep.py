"""Sweeps: an experiment's `[sweep]` axes, the points they make, and the reference lines its plots draw.

An axis is a guest setting (`guest.swap_mb`, `guest.memory_mb`, `guest.swap`), a workload
parameter (`swapcow.size_mb`, `redis.limit_mb`), or the machine (`host.name`: the worker hosts of
a cluster, harness/measure/dispatch.py), with a list of values; one or two axes. A
point is one value of every axis that applies to a workload: the guest axes, and the axes of
that workload's own parameters (a `swapcow.size_mb` axis does not multiply redis's cells). A
point's label, `guest.swap_mb=24,swapcow.size_mb=16`, is the `point` column of runs.csv and
samples.csv; "" is the one point of a run without a sweep.

    [sweep]
    guest.swap_mb = [24, 48, 96]
    plots = ["swapcow/write/cow_copies"]          # WORKLOAD/PHASE/METRIC drawn against the axis
    [[sweep.reference]]
    label = "half the swap: vm_swap_full()"
    y = "guest.swap_mb * 256 / 2"                 # a line over the axis, in the metric's unit
    metric = "cow_copies"                         # the plots it belongs on ("" = every plot)
    [[sweep.reference]]
    label = "the workload is half the swap"
    x = "swapcow.size_mb * 2"                     # a vertical line at this axis value

Reference expressions are arithmetic (+ - * / //, parentheses, min, max) over numbers and the
point's names: `guest.memory_mb`, `guest.swap_mb`, `guest.cpus` and WORKLOAD.PARAMETER.
"""

import ast
import itertools
import math
import operator
from dataclasses import dataclass, fields, replace

GUEST = "guest"
HOST = "host"          # host.name: the machine a cell runs on (a cluster's worker host)
MAX_AXES = 2
SWAP_BACKENDS = ("virtio-blk", "zram", "zswap")
THP_MODES = ("", "never", "madvise", "always")   # "" leaves the kernel's own default
ZSWAP_COMPRESSORS = ("lzo", "lzo-rle", "lz4", "zstd", "deflate")   # what a fragment may build in; lzo by default


UNIT_SUFFIXES = (("_mb", "MiB"), ("_kb", "KiB"), ("_pct", "%"), ("_ms", "ms"), ("_s", "s"))


@dataclass(frozen=True)
class Axis:
    name: str                  # OWNER.KEY: guest.swap_mb, swapcow.size_mb
    values: tuple

    @property
    def owner(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def words(self) -> str:
        """The axis as a plot labels it: 'redis limit (MiB)' for redis.limit_mb, 'guest swap' for guest.swap."""
        found = next(((suffix, unit) for suffix, unit in UNIT_SUFFIXES if self.key.endswith(suffix)), ("", ""))
        words = self.key.removesuffix(found[0]).replace("_", " ")
        return f"{self.owner} {words}" + (f" ({found[1]})" if found[1] else "")

    def applies_to(self, workload: str) -> bool:
        return self.owner in (GUEST, HOST, workload)


@dataclass(frozen=True)
class Point:
    """One value of each axis that applies to a workload, in the axes' order."""
    values: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return ",".join(f"{name}={value}" for name, value in self.values)

    def guest(self, base):
        """base (a GuestConfig) with this point's guest settings."""
        chosen = {name.split(".", 1)[1]: value for name, value in self.values if name.startswith(GUEST + ".")}
        return replace(base, **chosen) if chosen else base

    @property
    def host(self) -> str:
        """The worker host this point's cells run on ("" = any)."""
        return str(dict(self.values).get(f"{HOST}.name", ""))

    def parameters(self, workload: str) -> dict:
        """This point's values of the workload's own parameters."""
        return {name.split(".", 1)[1]: value for name, value in self.values if name.split(".", 1)[0] == workload}


@dataclass(frozen=True)
class Reference:
    label: str
    x: str = ""        # expression: a vertical line at this axis value
    y: str = ""        # expression: a line across the axis, evaluated at every point
    metric: str = ""   # METRIC or WORKLOAD/PHASE/METRIC whose plots carry it; "" = every plot

    def belongs_to(self, row: str) -> bool:
        return not self.metric or self.metric in (row, row.split("/")[-1])


@dataclass(frozen=True)
class Sweep:
    axes: tuple[Axis, ...] = ()
    plots: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.axes)

    def axes_of(self, workload: str) -> tuple[Axis, ...]:
        return tuple(axis for axis in self.axes if axis.applies_to(workload))

    def points(self, workload: str) -> list[Point]:
        """Every point of workload's cells, in the axes' value order; [Point()] without a sweep."""
        axes = self.axes_of(workload)
        return [Point(tuple(zip((axis.name for axis in axes), combination)))
                for combination in itertools.product(*(axis.values for axis in axes))]

    def as_dict(self) -> dict:
        return {"axes": {axis.name: list(axis.values) for axis in self.axes}, "plots": list(self.plots),
                "references": [vars(reference) for reference in self.references]}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Sweep":
        """The inverse of as_dict (metadata.json)."""
        if not data:
            return cls()
        return cls(tuple(Axis(name, tuple(values)) for name, values in data.get("axes", {}).items()),
                   tuple(data.get("plots", ())), tuple(Reference(**ref) for ref in data.get("references", ())))


def parse_label(label: str) -> dict[str, object]:
    """'guest.swap_mb=24,guest.swap=zram' -> {'guest.swap_mb': 24, 'guest.swap': 'zram'}."""
    values = {}
    for part in filter(None, label.split(",")):
        name, _, text = part.partition("=")
        values[name] = number(text)
    return values


def order(label: str) -> tuple:
    """A point's place among a sweep's points: by its axes' values, numbers by size."""
    return tuple((0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))
                 for value in parse_label(label).values())


def number(text: str):
    """A setting's text as it means: '24' -> 24, '0.5' -> 0.5, 'zram' -> 'zram'."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def from_table(table, guest_keys, workload_parameters, fail) -> Sweep:
    """The [sweep] table of an experiment. guest_keys: the [guest] settings; workload_parameters:
    workload name -> {parameter: default} of every workload known; fail(why) raises."""
    if not isinstance(table, dict):
        fail("[sweep] must be a table of axes (guest.swap_mb = [24, 48, 96])")
    table = dict(table)
    plots = table.pop("plots", [])
    references = table.pop("reference", [])
    axes = []
    for owner, entries in table.items():
        if "." in owner and isinstance(entries, list):      # a quoted key: "guest.swap_mb" = [...]
            axes.append(_axis(owner, entries, guest_keys, workload_parameters, fail))
            continue
        if not isinstance(entries, dict):
            fail(f"[sweep] {owner}: an axis is OWNER.KEY = [values], e.g. guest.swap_mb = [24, 48, 96]")
        for key, values in entries.items():
            axes.append(_axis(f"{owner}.{key}", values, guest_keys, workload_parameters, fail))
    if len({axis.name for axis in axes}) != len(axes):
        fail("[sweep] names an axis twice")
    if not 1 <= len(axes) <= MAX_AXES:
        fail(f"[sweep] names {len(axes)} axes: give one or two")
    if not isinstance(plots, list) or not all(isinstance(p, str) and len(p.split("/")) == 3 for p in plots):
        fail("[sweep] plots must be a list of WORKLOAD/PHASE/METRIC")
    if not isinstance(references, list):
        fail("[[sweep.reference]] must be an array of tables")
    return Sweep(tuple(axes), tuple(plots), tuple(_reference(entry, axes, fail) for entry in references))


def _axis(name, values, guest_keys, workload_parameters, fail) -> Axis:
    owner, key = name.split(".", 1)
    if not isinstance(values, list) or not values:
        fail(f"[sweep] {name} must be a non-empty list of values")
    if len(set(map(str, values))) != len(values):
        fail(f"[sweep] {name} repeats a value")
    if any(isinstance(value, str) and ("," in value or "=" in value) for value in values):
        fail(f"[sweep] {name}: a value may not hold ',' or '=' (they separate a point's label)")
    if owner == HOST:
        if key != "name" or not all(isinstance(value, str) and value for value in values):
            fail(f"[sweep] {name}: the host axis is host.name = [\"HOST1\", \"HOST2\"] (worker host names)")
    elif owner == GUEST:
        if key not in guest_keys:
            fail(f"[sweep] {name}: the guest has no setting '{key}' (known: {', '.join(guest_keys)})")
        for value in values:
            check_guest_value(key, value, fail, f"[sweep] {name}")
    elif owner in workload_parameters:
        if key not in workload_parameters[owner]:
            fail(f"[sweep] {name}: workload {owner} has no parameter '{key}' "
                 f"(known: {', '.join(workload_parameters[owner])})")
    else:
        fail(f"[sweep] {name}: '{owner}' is neither 'guest', 'host' nor a workload (known: "
             f"{', '.join(sorted(workload_parameters))})")
    return Axis(name, tuple(values))


def check_guest_value(key: str, value, fail, where: str) -> None:
    """where names the setting in the message: '[guest] swap_mb', '[sweep] guest.swap_mb'."""
    if key == "swap":
        if value not in SWAP_BACKENDS:
            fail(f"{where} must be one of {', '.join(SWAP_BACKENDS)}, not {value!r}")
    elif key == "thp":
        if value not in THP_MODES:
            fail(f"{where} must be one of {', '.join(m for m in THP_MODES if m)}, not {value!r}")
    elif key == "zswap_compressor":
        if value not in ZSWAP_COMPRESSORS:
            fail(f"{where} must be one of {', '.join(ZSWAP_COMPRESSORS)}, not {value!r}")
    elif key == "zswap_pool_pct":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 100:
            fail(f"{where} must be a whole number of percent from 1 to 100, not {value!r}")
    elif key == "data_mb":      # set by a workload that reads a disk; 0: none
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(f"{where} must be a whole number of MiB, 0 for no data disk, not {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        fail(f"{where} must be a positive whole number, not {value!r}")


def _reference(entry, axes, fail) -> Reference:
    known = {f.name for f in fields(Reference)}
    if not isinstance(entry, dict) or set(entry) - known or not entry.get("label"):
        fail(f"[[sweep.reference]] takes label and x or y (and metric), not {entry!r}")
    reference = Reference(**{key: str(value) for key, value in entry.items()})
    if bool(reference.x) == bool(reference.y):
        fail(f"[[sweep.reference]] '{reference.label}': give exactly one of x (a vertical line) or y (a line over "
             "the axis)")
    for expression in (reference.x, reference.y):
        if expression:
            try:
                names(expression)
            except ValueError as error:
                fail(f"[[sweep.reference]] '{reference.label}': {error}")
    return reference


# --- reference expressions: arithmetic over a point's names ------------------------------

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS = {"min": min, "max": max}


def names(expression: str) -> set[str]:
    """The names an expression uses; ValueError for anything but arithmetic, min and max."""
    found: set[str] = set()
    _walk(_parse(expression), lambda name: found.add(name) or 1.0)
    return found


def evaluate(expression: str, values: dict[str, float]) -> float:
    """The expression's value with values for its names; KeyError naming a name without one."""
    def lookup(name):
        if name not in values:
            raise KeyError(name)
        return float(values[name])
    return float(_walk(_parse(expression), lookup))


def _parse(expression: str) -> ast.expr:
    try:
        return ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise ValueError(f"'{expression}' is not an arithmetic expression") from None


def _walk(node, lookup):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_walk(node.left, lookup), _walk(node.right, lookup))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_walk(node.operand, lookup))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
            and node.args and not node.keywords:
        return _FUNCTIONS[node.func.id](*(_walk(arg, lookup) for arg in node.args))
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return lookup(f"{node.value.id}.{node.attr}")
    raise ValueError(f"'{ast.unparse(node)}' is not allowed: use numbers, OWNER.NAME, + - * / // ( ) min max")


def point_names(label: str, guest: dict, workloads: dict[str, dict]) -> dict[str, float]:
    """The names a reference expression may use at the point `label`: the guest settings and every
    workload parameter, with the point's values over the run's."""
    values = {f"{GUEST}.{key}": value for key, value in guest.items()}
    values |= {f"{workload}.{key}": value for workload, params in workloads.items() for key, value in params.items()}
    values |= parse_label(label)
    return {name: value for name, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
