"""Experiment files (TOML) -> frozen Experiment and Variant specs.

An experiment names the kernel source SPEC, the kconfig fragments merged over tinyconfig,
the functions the collectors will probe, and the variants: either explicit
([[variants]] with a name and an ordered list of patches; no patches = the base kernel) or
a patch series ([series] patches = [...]) that gives cumulative variants base, +1, +1..2, ...

A variant may name its own `source` (another kernel); comparing variants built from different
sources is allowed only when the experiment says `mixed_sources = true`, and such rows are
marked in tables and reports: their difference is everything between the two kernels.

`[guest]` is the machine (memory, CPUs, swap size, the swap backend: a virtio disk, zram, which
qemu-guest.config builds in, or zswap in front of the disk; kconfigs/zram.config or zswap.config is
merged when no fragment builds the backend in; and the THP mode set at boot);
`[parameters.WORKLOAD]` sets workload parameters (-p on the command line wins); `[sweep]` names
axes whose points become a cell dimension (harness/sweep.py). Cells that ran on different machines
(a cluster run, --cluster) are compared only when the host is a sweep axis (`host.name`) or the
experiment says `mixed_hosts = true`.
"""

import re
import tomllib
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from harness import metrics, project, workloads
from harness import sweep as sweeps
from harness.errors import (
    BadExperiment,
    BadSourceSpec,
    HarnessError,
    MissingPatchFile,
    UnknownExperiment,
    UnknownVariant,
)

DEFAULT_SPEC = ("debian:linux-source-5.10=5.10.223-1"
                "#sha256=f733d27d239d65598d96d7a72f71ac50f49f2380192a1b3b4ca2f5ad5144dd63")


@dataclass(frozen=True)
class SourceSpec:
    kind: str          # debian | tarball | git | dir
    location: str      # package=version, URL, repository path, or tree path
    ref: str = ""      # git ref, or the Debian suite
    sha256: str = ""   # expected checksum of the downloaded file

    def __str__(self):
        text = f"{self.kind}:{self.location}" + (f"@{self.ref}" if self.ref else "")
        return text + (f"#sha256={self.sha256}" if self.sha256 else "")


def parse_spec(text: str) -> SourceSpec:
    """Parse a SPEC string; raise BadSourceSpec naming what is wrong."""
    kind, _, rest = text.partition(":")
    if not rest:
        raise BadSourceSpec(spec=text, why="no KIND: prefix")
    rest, _, fragment = rest.partition("#")
    sha256 = ""
    if fragment:
        match = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
        if not match:
            raise BadSourceSpec(spec=text, why="the part after # must be sha256=<64 hex digits>")
        sha256 = match.group(1).lower()
    if kind not in _SPEC_KINDS:
        raise BadSourceSpec(spec=text, why=f"unknown kind '{kind}'")
    return _SPEC_KINDS[kind](text, rest, sha256)


def _debian_spec(text: str, rest: str, sha256: str) -> SourceSpec:
    match = re.fullmatch(r"([a-z0-9][a-z0-9.+-]*=[A-Za-z0-9.+~:-]+)(?:@([a-z]+(?:-[a-z]+)?))?", rest)
    if not match:
        raise BadSourceSpec(spec=text, why="debian: needs PACKAGE=VERSION or PACKAGE=VERSION@SUITE")
    return SourceSpec("debian", match.group(1), ref=match.group(2) or "", sha256=sha256)


def _tarball_spec(text: str, rest: str, sha256: str) -> SourceSpec:
    if not sha256:
        raise BadSourceSpec(spec=text, why="tarball: needs #sha256=HEX")
    if urllib.parse.urlparse(rest).scheme not in ("http", "https", "file"):
        raise BadSourceSpec(spec=text, why="tarball: needs an http, https or file URL")
    return SourceSpec("tarball", rest, sha256=sha256)


def _git_spec(text: str, rest: str, sha256: str) -> SourceSpec:
    path, at, ref = rest.rpartition("@")
    if not at or not path or not ref:
        raise BadSourceSpec(spec=text, why="git: needs PATH@REF")
    return SourceSpec("git", path, ref=ref)


_SPEC_KINDS = {"debian": _debian_spec, "tarball": _tarball_spec, "git": _git_spec,
               "dir": lambda text, rest, sha256: SourceSpec("dir", rest)}


VARIANT_NAME = re.compile(r"[A-Za-z0-9+][A-Za-z0-9._+-]{0,63}")


@dataclass(frozen=True)
class Variant:
    name: str
    patches: tuple[Path, ...] = ()
    source: str = ""                  # its own kernel source SPEC; "" = the experiment's


@dataclass(frozen=True)
class GuestConfig:
    """The machine each variant boots in. Swap is sized so that workloads keep swap use
    below 50%: above it, 5.10 frees the swap slot on swap-in (vm_swap_full()). The swap
    device is a virtio disk, zram (compressed guest memory, swap_mb its size), or zswap (a
    compressed cache of zswap_pool_pct % of guest memory, zswap_compressor, in front of the
    disk). thp is the transparent huge page mode set at boot ("": the kernel's default; a
    kernel without THP ignores it). data_mb: a second virtio disk of that size whose page cache
    a workload reads (the workload asks for it; 0: none)."""
    memory_mb: int = 1024
    cpus: int = 2
    swap_mb: int = 1024
    swap: str = "virtio-blk"
    thp: str = ""
    zswap_compressor: str = "lzo"
    zswap_pool_pct: int = 20
    data_mb: int = 0


# The fragment merged when a boot swaps to a backend that no fragment of the experiment builds in, and the
# option that says a fragment does: kconfigs/zram.config, kconfigs/zswap.config.
BACKEND_FRAGMENTS = {"zram": ("zram", "CONFIG_ZRAM"), "zswap": ("zswap", "CONFIG_ZSWAP")}


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path
    description: str
    source: str
    kconfigs: tuple[str, ...]
    probes: tuple[str, ...]
    variants: tuple[Variant, ...]
    guest: GuestConfig = GuestConfig()
    cow_probe: str = "wp_page_copy"   # the probe whose count is the metric cow_copies
    fault_probe: str = "do_wp_page"   # the probe whose count is wp_faults (copy_share, reuse_share), if probed
    cow_causes: bool = True           # record why each copy happened (harness/measure/causes.py)
    coverage: bool = True             # count the functions the variants changed (harness/analysis/coverage.py)
    workloads: tuple[str, ...] = ()   # workloads/ names run by default; empty = all of them
    headline: str = ""                # WORKLOAD/PHASE/METRIC of the report's first sentence
    primary: tuple[str, ...] = ()     # WORKLOAD/PHASE/METRIC rows whose verdicts are the experiment's claims
    margin_pct: float = 5.0           # a primary row is `equivalent` when its change stays within +-margin_pct
    discovery: bool = False           # no declared rows: every row exploratory, verdicts by false-discovery rate
    mixed_sources: bool = False       # variants may be built from different kernel sources
    mixed_hosts: bool = False         # a row may pool cells that ran on different machines (a cluster)
    sweep: sweeps.Sweep = sweeps.Sweep()   # [sweep]: axes whose points are a cell dimension
    parameters: tuple[tuple[str, tuple], ...] = ()   # [parameters.WORKLOAD]: the experiment's settings (-p wins)

    def parameters_of(self, workload: str) -> dict:
        return dict(dict(self.parameters).get(workload, ()))

    @property
    def baseline(self) -> str:
        return self.variants[0].name

    def source_of(self, variant: Variant) -> str:
        return variant.source or self.source

    def select(self, names=()) -> list[Variant]:
        """The variants called names, in the order given; all of them when names is empty."""
        if not names:
            return list(self.variants)
        by_name = {variant.name: variant for variant in self.variants}
        for name in names:
            if name not in by_name:
                raise UnknownVariant(name=name, experiment=self.name, known=", ".join(by_name))
        return [by_name[name] for name in dict.fromkeys(names)]


def locate(name_or_path: str | None) -> Path:
    """An experiment name from experiments/, or a path to a .toml file."""
    text = name_or_path or project.DEFAULT_EXPERIMENT
    candidate = Path(text).expanduser()
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate.resolve()
    named = project.EXPERIMENTS / f"{text}.toml"
    if named.is_file():
        return named
    raise UnknownExperiment(name=text, folder=project.EXPERIMENTS,
                            known=", ".join(project.names(project.EXPERIMENTS, ".toml")))


def load(name_or_path: str | None = None) -> Experiment:
    path = locate(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise BadExperiment(path=path, why=str(error)) from None
    return from_dict(data, path)


KEYS = {"description", "source", "kconfigs", "probes", "variants", "series", "guest", "cow_probe", "workloads",
        "headline", "primary", "margin_pct", "mixed_sources", "mixed_hosts", "fault_probe", "cow_causes", "coverage",
        "sweep", "parameters", "discovery"}
SWITCHES = ("mixed_sources", "mixed_hosts", "cow_causes", "coverage", "discovery")


def from_dict(data: dict, path: Path) -> Experiment:
    """An experiment file's table, checked (BadExperiment names the key and the fix)."""
    def fail(why):
        raise BadExperiment(path=path, why=why)

    experiment = _read(data, path, fail)
    for backend, (fragment, option) in BACKEND_FRAGMENTS.items():
        if uses_backend(experiment, backend) and not any(_turns_on(name, option) for name in experiment.kconfigs):
            experiment = replace(experiment, kconfigs=(*experiment.kconfigs, fragment))
    _check_switches(experiment, fail)
    _check_sources(experiment, fail)
    _check_rows(experiment, fail)
    _check_probes(experiment, "fault_probe" in data, fail)
    return experiment


def _read(data: dict, path: Path, fail) -> Experiment:
    """The Experiment a table gives, each key of its type; the checks across keys come after."""
    unknown = set(data) - KEYS
    if unknown:
        fail(f"unknown key(s) {', '.join(sorted(unknown))}")
    spec = data.get("source", DEFAULT_SPEC)
    parse_spec(spec)
    if ("variants" in data) == ("series" in data):
        fail("give either [[variants]] or [series], exactly one of them")
    variants = _series(data["series"], path, fail) if "series" in data else _variants(data["variants"], path, fail)
    known = workloads.discover() if "sweep" in data or "parameters" in data else {}
    return Experiment(
        name=path.stem, path=path, description=str(data.get("description", "")), source=spec,
        kconfigs=tuple(_strings(data, "kconfigs", fail)), probes=tuple(_strings(data, "probes", fail)),
        variants=tuple(variants), guest=_guest(data.get("guest", {}), fail),
        cow_probe=str(data.get("cow_probe", "wp_page_copy")), workloads=tuple(_strings(data, "workloads", fail)),
        headline=str(data.get("headline", "")), primary=tuple(_strings(data, "primary", fail)),
        margin_pct=_margin(data.get("margin_pct", 5.0), fail), mixed_sources=data.get("mixed_sources", False),
        mixed_hosts=data.get("mixed_hosts", False),
        fault_probe=str(data.get("fault_probe", "do_wp_page")), cow_causes=data.get("cow_causes", True),
        coverage=data.get("coverage", True), discovery=data.get("discovery", False), sweep=_sweep(data, fail, known),
        parameters=_parameters(data.get("parameters", {}), fail, known))


def _check_switches(experiment: Experiment, fail) -> None:
    for key in SWITCHES:
        if not isinstance(getattr(experiment, key), bool):
            fail(f"{key} must be true or false, not {getattr(experiment, key)!r}")


def _check_sources(experiment: Experiment, fail) -> None:
    """Variants of different kernels only when the experiment says it compares kernels."""
    sources = {variant.name: experiment.source_of(variant) for variant in experiment.variants}
    if len(set(sources.values())) > 1 and not experiment.mixed_sources:
        others = ", ".join(name for name, spec in sources.items() if spec != experiment.source)
        fail(f"variant(s) {others} name another kernel source than the experiment's: set mixed_sources = true to "
             "compare different kernels (their rows are then marked as such)")


def _check_rows(experiment: Experiment, fail) -> None:
    """The declared rows: none in a discovery, each WORKLOAD/PHASE/METRIC of a metric with a direction."""
    if experiment.discovery and experiment.primary:
        fail("discovery = true tests every row as exploratory: drop it, or drop the primary rows")
    if experiment.headline and len(experiment.headline.split("/")) != 3:
        fail("headline must be WORKLOAD/PHASE/METRIC")
    for row in experiment.primary:
        _check_primary(row, experiment, fail)


def _check_probes(experiment: Experiment, fault_probe_given: bool, fail) -> None:
    if experiment.probes and experiment.cow_probe not in experiment.probes:
        fail(f"cow_probe '{experiment.cow_probe}' is not one of the probes")
    if fault_probe_given and experiment.probes and experiment.fault_probe not in experiment.probes:
        fail(f"fault_probe '{experiment.fault_probe}' is not one of the probes")


def _margin(value, fail) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 100:
        fail(f"margin_pct must be a number of percent between 0 and 100, not {value!r}")
    return float(value)


def _check_primary(row: str, experiment: Experiment, fail) -> None:
    parts = row.split("/")
    if len(parts) != 3 or not all(parts):
        fail(f"primary row '{row}' must be WORKLOAD/PHASE/METRIC")
    if experiment.workloads and parts[0] not in experiment.workloads:
        fail(f"primary row '{row}' names workload {parts[0]}, which the experiment does not run "
             f"({', '.join(experiment.workloads)})")
    if metrics.meaning(parts[2]).direction == "none":
        fail(f"primary row '{row}': metric {parts[2]} has no direction in harness/metrics.py, so it can "
             "never be better or worse; pick a metric with one")


def _guest(table, fail) -> GuestConfig:
    known = set(GuestConfig.__dataclass_fields__)
    if not isinstance(table, dict) or set(table) - known:
        fail(f"[guest] takes only {', '.join(sorted(known))}")
    for key, value in table.items():
        sweeps.check_guest_value(key, value, fail, f"[guest] {key}")
    return GuestConfig(**table)


def _sweep(data: dict, fail, known: dict) -> sweeps.Sweep:
    """known: the workloads of workloads/, by name."""
    if "sweep" not in data:
        return sweeps.Sweep()
    parameters = {name: dict(workload.parameters) for name, workload in known.items()}
    found = sweeps.from_table(data["sweep"], tuple(GuestConfig.__dataclass_fields__), parameters, fail)
    listed = _strings(data, "workloads", fail)
    for axis in found.axes:
        if axis.owner in (sweeps.GUEST, sweeps.HOST):
            continue
        if listed and axis.owner not in listed:
            fail(f"[sweep] {axis.name}: the experiment does not run {axis.owner} ({', '.join(listed)})")
        for value in axis.values:
            try:
                known[axis.owner].params({axis.key: value})
            except HarnessError as error:
                fail(f"[sweep] {axis.name} = {value!r}: {error}")
    return found


def _parameters(table, fail, known: dict) -> tuple:
    """[parameters.WORKLOAD] NAME = VALUE: each checked against the workload's own parameters."""
    if not isinstance(table, dict) or not all(isinstance(values, dict) for values in table.values()):
        fail("[parameters] must hold one table per workload: [parameters.swapcow] size_mb = 32")
    for name, values in table.items():
        if name not in known:
            fail(f"[parameters.{name}]: no workload {name} (known: {', '.join(known)})")
        try:
            known[name].params(values)
        except HarnessError as error:
            fail(f"[parameters.{name}]: {error}")
    return tuple((name, tuple(values.items())) for name, values in table.items())


def _turns_on(fragment: str, option: str) -> bool:
    """Whether the fragment called so sets option=y (kconfigs/qemu-guest.config sets CONFIG_ZRAM: one guest
    configuration serves a disk and zram alike, so a zram boot needs no build of its own)."""
    path = project.fragment_path(fragment)
    return path is not None and re.search(rf"^{option}=y\s*$", path.read_text(errors="replace"), re.M) is not None


def uses_backend(experiment: "Experiment", backend: str) -> bool:
    """True when some boot of the experiment swaps to backend (its guest, or a point of its sweep)."""
    swept = [value for axis in experiment.sweep.axes if axis.name == "guest.swap" for value in axis.values]
    return experiment.guest.swap == backend or backend in swept



def _strings(data, key, fail) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        fail(f"'{key}' must be a list of strings")
    return value


def _variants(entries, path, fail) -> list[Variant]:
    variants = []
    for entry in entries:
        if not isinstance(entry, dict) or "name" not in entry:
            fail("every [[variants]] entry needs a name")
        if not isinstance(entry["name"], str) or not VARIANT_NAME.fullmatch(entry["name"]):
            fail(f"variant name {entry['name']!r} must be letters, digits and . _ + - (it names files and "
                 "folders), starting with a letter, digit or +")
        if set(entry) - {"name", "patches", "source"}:
            unknown = ", ".join(sorted(set(entry) - {"name", "patches", "source"}))
            fail(f"[[variants]] {entry['name']} has unknown key(s) {unknown}")
        own_source = entry.get("source", "")
        if not isinstance(own_source, str):
            fail(f"[[variants]] {entry['name']}: source must be a SPEC string")
        if own_source:
            parse_spec(own_source)
        variants.append(Variant(entry["name"], tuple(resolve_patch(p, path) for p in _strings(entry, "patches", fail)),
                                own_source))
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        fail(f"variant names repeat: {', '.join(names)}")
    return variants


def _series(table, path, fail) -> list[Variant]:
    """base, then either every prefix of the series (+1, +1..2, ...) or the whole series."""
    patches = tuple(resolve_patch(p, path) for p in _strings(table, "patches", fail))
    if not patches:
        fail("[series] patches is empty")
    if table.get("cumulative", True):
        prefixes = range(1, len(patches) + 1)
    else:
        prefixes = [len(patches)]
    return [Variant("base")] + [Variant(series_name(n), patches[:n]) for n in prefixes]


def series_name(count: int) -> str:
    return "+1" if count == 1 else f"+1..{count}"


def resolve_patch(name: str, experiment_path: Path) -> Path:
    """A patch named in an experiment: absolute, or relative to patches/ or to the experiment's
    folder. Existence is checked when a variant is used (require_patches), not at load time."""
    given = Path(name).expanduser()
    candidates = [given] if given.is_absolute() else [project.PATCHES / name, experiment_path.parent / name]
    return next((c.resolve() for c in candidates if c.is_file()), candidates[0])


def require_patches(variants) -> None:
    for variant in variants:
        for patch in variant.patches:
            if not patch.is_file():
                raise MissingPatchFile(path=patch)
