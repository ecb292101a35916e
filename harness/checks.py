"""What a newcomer asks before a build: `harness experiment check FILE` (everything about an
experiment that can be checked without building a kernel) and `harness metrics` (every metric with
its unit, direction and kind, and the workload phases that produced it in a run)."""

from dataclasses import dataclass
from pathlib import Path

from harness import experiment, metrics, results, workloads
from harness.errors import HarnessError
from harness.kernel import kconfig, patches, source
from harness.measure import drivers


@dataclass(frozen=True)
class Check:
    what: str
    problem: str = ""        # '' when it passed

    def line(self) -> str:
        return f"{'ok  ' if not self.problem else 'FAIL'} {self.what}" + (f": {self.problem}" if self.problem else "")


def _checked(what: str, function) -> Check:
    try:
        said = function()
    except HarnessError as error:
        return Check(what, str(error))
    return Check(f"{what}{f' ({said})' if said else ''}")


def check_experiment(name_or_path: str, cache_dir: Path, fetch: bool = True) -> list[Check]:
    """Every check of an experiment short of a build: it loads (spec, checksum form, variants, primary rows,
    sweep, parameters), its fragments exist, its workloads exist and take its parameters, every patch exists
    and every variant's series applies to its kernel (the tree is fetched once unless fetch is False), and
    every primary row names a phase its workload runs and a metric the table knows."""
    try:
        spec = experiment.load(name_or_path)
    except HarnessError as error:
        return [Check(f"experiment {name_or_path} loads", str(error))]
    checks = [Check(f"experiment {spec.path} loads: {len(spec.variants)} variants, source {spec.source}")]
    checks.append(_checked("kconfig fragments " + ", ".join(spec.kconfigs),
                           lambda: f"in {kconfig.find(spec.kconfigs)[0].path.parent}" if spec.kconfigs else ""))
    names = spec.workloads or tuple(workloads.discover())
    checks.append(_checked("workloads " + ", ".join(names), lambda: _workloads(spec, names)))
    for variant in spec.variants[1:]:
        checks.append(_checked(f"variant {variant.name}: {len(variant.patches)} patch(es)",
                               lambda variant=variant: _applies(spec, variant, cache_dir, fetch)))
    for row in spec.primary:
        checks.append(_checked(f"primary row {row}", lambda row=row: _primary(spec, row, names)))
    if spec.discovery:
        checks.append(Check("discovery: every row exploratory, at a 5% false-discovery rate"))
    if spec.sweep:
        checks.append(Check("sweep axes " + ", ".join(f"{axis.name} = {list(axis.values)}"
                                                      for axis in spec.sweep.axes)))
    return checks


def _workloads(spec: experiment.Experiment, names) -> str:
    chosen = workloads.choose(names, (), {name: spec.parameters_of(name) for name in names})
    return "; ".join(f"{w.name}: {', '.join(f'{k}={v}' for k, v in params.items())}" for w, params in chosen)


def _applies(spec: experiment.Experiment, variant: experiment.Variant, cache_dir: Path, fetch: bool) -> str:
    experiment.require_patches([variant])
    if not variant.patches:
        return "the baseline's kernel"
    if not fetch:
        return "patches exist; not applied (--no-fetch)"
    tree = source.fetch(source.parse_spec(spec.source_of(variant)), cache_dir)
    ok, detail = patches.git_check_series(variant.patches, tree)
    if not ok:
        raise _NotApplying(detail=f"{detail} (tree {tree}): harness patch check shows where")
    return f"applies to {spec.source_of(variant)}"


class _NotApplying(HarnessError):
    template = "the series does not apply: {detail}"


def _primary(spec: experiment.Experiment, row: str, names) -> str:
    workload, phase, metric = row.split("/")
    if workload not in names:
        raise _BadRow(why=f"workload {workload} does not run ({', '.join(names)})")
    params = spec.parameters_of(workload)
    phases = drivers.driver(workloads.load(workload), workloads.load(workload).params(params), None).phase_plan()
    if phase not in phases:
        raise _BadRow(why=f"{workload} has no phase {phase} ({', '.join(phases)})")
    if not metrics.known(metric):
        raise _BadRow(why=f"no metric {metric} in harness/metrics.py (harness metrics lists them)")
    meaning = metrics.meaning(metric)
    return f"{meaning.kind}, {meaning.direction} is better, in {meaning.unit}"


class _BadRow(HarnessError):
    template = "{why}"


def metric_lines(run_dirs: list[Path], workload: str | None = None) -> list[str]:
    """Every entry of the metric table (name or pattern, kind, direction, unit, scope, what it is), each with
    the metric names that matched it in the runs' samples and the workload phases that produced them."""
    seen: dict[str, set] = {}
    for run_dir in run_dirs:
        samples, _, _ = results.read(run_dir)
        if workload:
            samples = samples[samples["workload"] == workload]
        for (name, where, phase) in samples[["metric", "workload", "phase"]].drop_duplicates().itertuples(index=False):
            seen.setdefault(name, set()).add(f"{where}/{phase}")
    lines = []
    for entry in metrics.TABLE:
        names = sorted(name for name in seen if metrics.meaning(name) is entry)
        if workload and not names:
            continue
        lines.append(f"{entry.pattern}: {entry.kind}, direction {entry.direction}, {entry.unit or '-'}, "
                     f"{entry.scope}" + (f"; {entry.summary}" if entry.summary else ""))
        for name in names[:12]:
            lines.append(f"  {name}: " + ", ".join(sorted(seen[name])))
        if len(names) > 12:
            lines.append(f"  ... and {len(names) - 12} more names")
    return lines
