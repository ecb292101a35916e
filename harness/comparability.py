"""May these runs be compared? The one list of what must agree, and the checks that read it.

Folders pool (results.read_many) only when their metadata agree on what was measured and how it was judged
(FOLDER_FIELDS), and a variant's name means the same patches in each. The boots of a row are compared
(compare.compare) only when their runs.csv fields agree (RUN_FIELDS): anything but the patches may not differ,
within each sweep point; an experiment may let the kernel differ between variants (mixed_sources) or the machine
between cells (mixed_hosts), and pooled folders allow what their experiments allow (allowances). Each refusal
names the field and its values.
"""

import json
from dataclasses import asdict
from pathlib import Path

from harness.errors import NotComparable

# format: from format 5 on, the workloads check what they read back, which changes what their phases do and
# take (redis values by content, stress-ng --verify): a folder of another format measured other programs
FOLDER_FIELDS = ("format", "workloads", "primary", "margin_pct", "probes", "guest", "sweep", "discovery")
RUN_FIELDS = ("source", "config_hash", "accelerator", "guest_memory_mb", "swap_mb", "swap", "swap_compressor",
              "cpus", "host", "qemu_version", "image", "host_kernel")
PER_HOST_FIELDS = ("host", "qemu_version", "host_kernel")    # what mixed_hosts lets differ between cells
PER_KERNEL_FIELDS = ("source", "config_hash")     # what mixed_sources lets differ between variants


def _folder_value(metadata, name: str) -> str:
    """A metadata field as pooling compares it."""
    value = getattr(metadata, name)
    return json.dumps(asdict(value) if hasattr(value, "__dataclass_fields__") else value, sort_keys=True)


def check_folders(paths: list[Path], metadata: list) -> None:
    """Refuse folders whose metadata (results.RunMetadata, one per path) differ in a FOLDER_FIELDS field."""
    for name in FOLDER_FIELDS:
        if len({_folder_value(of_folder, name) for of_folder in metadata}) > 1:
            raise NotComparable(field=name, values=" vs ".join(
                f"{_folder_value(of_folder, name)} in {path}" for path, of_folder in zip(paths, metadata)))


def check_patches(runs) -> None:
    """Refuse pooled runs (a frame with `run_dir`) in which one variant name stands for different patches."""
    for variant, part in runs.groupby("variant"):
        hashes = sorted(set(part["patch_hash"].astype(str)))
        if len(hashes) > 1:
            raise NotComparable(field=f"patch_hash of variant {variant}", values=" vs ".join(
                f"{h} in {', '.join(sorted(set(part[part['patch_hash'].astype(str) == h]['run_dir'])))}"
                for h in hashes))


def check_runs(valid, mixed_sources: bool = False, mixed_hosts: bool = False) -> None:
    """Refuse valid runs (results.valid_runs) whose RUN_FIELDS differ, within each sweep point. With mixed_sources
    the kernel source and config may differ between variants, not within one; with mixed_hosts the cells may come
    from several machines (a host sweep axis is a point of its own)."""
    if mixed_hosts:
        valid = valid.drop(columns=list(PER_HOST_FIELDS), errors="ignore")
    if "point" in valid and valid["point"].nunique() > 1:
        for _, part in valid.groupby("point"):
            check_runs(part.drop(columns="point"), mixed_sources)
        return
    pooled = "run_dir" in valid and valid["run_dir"].nunique() > 1
    for name in RUN_FIELDS:
        if name not in valid:
            continue
        if mixed_sources and name in PER_KERNEL_FIELDS:
            for _, part in valid.groupby("variant"):
                check_runs(part.drop(columns=[f for f in RUN_FIELDS if f != name], errors="ignore"))
            continue
        recorded = valid[name].astype(object).where(valid[name].notna(), "unrecorded").astype(str)
        values = sorted(set(recorded))
        if len(values) > 1:
            if pooled:
                values = [f"{value} in {', '.join(sorted(set(valid[recorded == value]['run_dir'])))}"
                          for value in values]
            hint = " (or, for a cluster's hosts, sweep host.name or set mixed_hosts = true)" if name == "host" else ""
            raise NotComparable(field=name, values=" vs ".join(values), hint=hint)


def allowances(metadata: list) -> tuple[bool, bool]:
    """(mixed_sources, mixed_hosts) of pooled folders: variants may come from other kernel sources when any folder's
    experiment let them (a folder of one source pooled with one of several is still a run of several), cells from
    several machines only when every folder's did (one folder that ran on one host promised nothing else)."""
    return any(of_folder.mixed_sources for of_folder in metadata), all(of_folder.mixed_hosts for of_folder in metadata)
