"""Where the project's data folders are: experiments/, kconfigs/, patches/, workloads/."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
KCONFIGS = ROOT / "kconfigs"
PATCHES = ROOT / "patches"
WORKLOADS = ROOT / "workloads"
DEFAULT_EXPERIMENT = "do-wp-page-swapcache"


def names(folder: Path, suffix: str) -> list[str]:
    """The names (without suffix) of the data files in folder, sorted."""
    return sorted(path.name[: -len(suffix)] for path in folder.glob(f"*{suffix}"))
