"""Which workload phases run a function, on a built kernel: `harness workloads --covers`, and the
map a patch's workloads can be chosen from. The answer comes from the counted boots of a run that
counted the function (calls.FUNCTION, harness/analysis/coverage.py), or from one short counted boot
per workload, whose counts are kept in the build's folder: a later question about the same build,
workload and parameters boots nothing for the functions it already counted.

A function the profiler cannot count is named with the reason the build's object code gives: not in
this kernel (inlined everywhere, or never built), in an init section (it ran at boot, before any
phase), or without a __fentry__ call (notrace).
"""

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from harness import files, results
from harness.analysis import coverage
from harness.errors import CoverageUnknown, NoProfiler, ProfilingBootFailed
from harness.experiment import Experiment
from harness.guest import image as guest_image
from harness.kernel import build, objdiff
from harness.measure import cell, drivers

log = logging.getLogger("harness.covers")
FOLDER = "covers"
SECONDS = "(seconds)"       # the key of the phases' durations among the functions of a kept boot (no function's name)


@dataclass(frozen=True)
class Map:
    """function -> {(workload, phase): median calls}; and why a function has no counts; (workload, phase) ->
    the phase's seconds (median), where known."""
    calls: dict = field(default_factory=dict)
    uncounted: dict = field(default_factory=dict)       # function -> why
    source: str = ""                                     # where the counts come from
    seconds: dict = field(default_factory=dict)

    def phases(self, function: str) -> list[tuple[str, str]]:
        """(workload, phase) of the workload phases (not idle) that called function."""
        return [key for key, value in self.calls.get(function, {}).items() if value > 0 and key[1] != coverage.IDLE]

    def rate(self, function: str, workload: str, phase: str) -> float | None:
        """Calls of function per second of the phase; None when the phase's seconds are unknown."""
        seconds = self.seconds.get((workload, phase))
        calls = self.calls.get(function, {}).get((workload, phase))
        return None if not seconds or calls is None else calls / seconds

    def lines(self) -> list[str]:
        """What `harness workloads --covers` prints: per function, the calls in every phase of each workload."""
        out = [f"(calls in the whole guest per phase, median over counted boots; {self.source})"]
        for function, found in self.calls.items():
            ran = self.phases(function)
            out.append(f"{function}: " + ("run by " + ", ".join(f"{w}/{p}" for w, p in ran) if ran else
                                          "no workload phase calls it"))
            for workload in dict.fromkeys(w for w, _ in found):
                counts = ", ".join(f"{phase} {value:,.0f}" for (w, phase), value in found.items() if w == workload)
                out.append(f"  {workload}: {counts}")
        out += [f"{function}: not counted: {why}" for function, why in self.uncounted.items()]
        return out


def why_uncounted(function: str, facts: dict) -> str:
    """Why the profiler of a kernel cannot count function, from the build's object-code facts ('' if it can)."""
    if function not in facts["functions"]:
        return "this kernel's vmlinux has no such function (inlined everywhere, misspelt, or not built)"
    if function in facts.get("init", ()):
        return "in an init section: it runs at boot, before any phase, and is freed after it"
    if function in facts.get("untraced", ()):
        return "no __fentry__ call, so the function profiler cannot see it (notrace, as every inline function's " \
               "out-of-line copy is)"
    return ""


def from_run(run_dir: Path, functions, variant: str | None = None) -> Map:
    """The counts of a run's valid counted boots of variant's kernel (the baseline's by default); CoverageUnknown
    when it counted none of them there."""
    samples, runs, metadata = results.read(run_dir)
    baseline = metadata.baseline
    chosen = variant or baseline
    cover = coverage.of(samples, runs, metadata, baseline)
    found = {}
    for (kernel, workload, point, phase), counted in cover.medians.items():
        for function in functions:
            if kernel == chosen and function in counted:
                where = f"{workload} at {point}" if point else workload
                found.setdefault(function, {})[(where, phase)] = counted[function]
    missing = [function for function in functions if function not in found]
    if missing:
        raise CoverageUnknown(functions=", ".join(missing), where=f"the boots of {chosen} in {run_dir}",
                              counted=", ".join(metadata.calls) or "none")
    return Map(found, {}, f"from the boots of {chosen} in {run_dir}", _seconds(samples, runs, chosen))


def _seconds(samples, runs, variant: str) -> dict:
    """(workload, phase) -> the median seconds of the phase over variant's valid counted boots (one point)."""
    valid = runs[(runs["variant"] == variant) & runs["valid"] & (runs["mode"] == "counted")]
    keys = ["variant", "workload", "rep", "mode", "point"]
    timed = samples[samples["metric"] == "duration_s"].merge(valid[keys], on=keys)
    return {(workload, phase): float(value) for (workload, phase), value in
            timed.groupby(["workload", "phase"])["value"].median().items()}


def profile(spec: Experiment, variant: str, functions, chosen, cache_dir: Path, accel: str = "auto") -> Map:
    """The counts of one counted boot per workload of variant's kernel, kept in the build's folder; chosen:
    (Workload, parameters) pairs, as workloads.choose() gives them."""
    if not spec.probes:
        raise NoProfiler(experiment=spec.name, functions=", ".join(functions))
    [built] = build.build_all(spec, spec.select([variant]), cache_dir)
    facts = objdiff.facts(built.vmlinux, built.directory)
    uncounted = {function: why for function in functions if (why := why_uncounted(function, facts))}
    wanted = [function for function in functions if function not in uncounted]
    found: dict = {function: {} for function in wanted}
    seconds: dict = {}
    source = f"one counted boot per workload of {variant} ({built.release}, build {built.key})"
    if not wanted:
        return Map({}, uncounted, source)
    image = guest_image.build(cache_dir)
    for workload, params in chosen:
        kept = _kept(built.directory, workload.name, params, spec, image)
        known = json.loads(kept.read_text()) if kept.is_file() else {}
        # kept before the phases' seconds were: counted again, every function
        missing = [function for function in wanted if function not in known] if SECONDS in known else wanted
        if missing:
            counts, valid = _boot(spec, built, image, workload, params, missing, cache_dir, accel)
            known.update(counts)
            if valid:       # a boot the workload's gates refused answers now, and is not kept
                kept.parent.mkdir(exist_ok=True)
                files.write_atomic(kept, json.dumps(known, indent=1, sort_keys=True) + "\n")
        for function in wanted:
            if known.get(function) is None:
                uncounted[function] = "the guest's profiler refused it (not in available_filter_functions)"
                continue
            plan = drivers.driver(workload, params, None).phase_plan()      # in the order the phases ran
            ordered = sorted(known[function].items(), key=lambda item: plan.index(item[0]) if item[0] in plan
                             else len(plan))
            found[function].update({(workload.name, phase): value for phase, value in ordered})
        seconds.update({(workload.name, phase): value for phase, value in known[SECONDS].items()})
    return Map({f: counts for f, counts in found.items() if f not in uncounted}, uncounted, source, seconds)


def _kept(directory: Path, workload: str, params: dict, spec: Experiment, image) -> Path:
    """Where the counts of a workload's boot are kept: by its parameters, the guest and the guest image."""
    asked = {"parameters": params, "guest": vars(spec.guest), "image": image.digest}
    digest = hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return directory / FOLDER / f"{workload}-{digest}.json"


def _boot(spec: Experiment, built, image, workload, params, functions, cache_dir: Path,
          accel: str) -> tuple[dict, bool]:
    """(function -> {phase: calls}, None where the guest could not profile it, and SECONDS -> {phase: its
    seconds}; whether the boot was valid), from one counted boot."""
    log.info("profiling %s on %s for %s", workload.name, built.variant, ", ".join(functions))
    job = cell.Job(cell.Cell(workload, params, 1, "counted"), cell.Kernel.of(built, None), image,
                   replace(spec, cow_causes=False), spec.guest, accel, calls=tuple(functions))
    with tempfile.TemporaryDirectory(prefix="harness-covers-") as raw:
        run, samples = cell.run_cell(job, Path(raw), cache_dir)
    if not samples:
        raise ProfilingBootFailed(workload=workload.name, variant=built.variant, reason=run.reason)
    if not run.valid:
        log.warning("the profiling boot of %s on %s was invalid (%s): its counts answer now, and are not kept",
                    workload.name, built.variant, run.reason)
    counts: dict = {function: None for function in functions}
    counts[SECONDS] = {sample.phase: round(sample.value, 3) for sample in samples if sample.metric == "duration_s"}
    for sample in samples:
        if sample.metric.startswith(coverage.METRIC):
            function = sample.metric[len(coverage.METRIC):]
            counts[function] = {**(counts[function] or {}), sample.phase: float(np.round(sample.value))}
    return counts, run.valid
