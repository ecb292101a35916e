"""Where the project's data folders are: experiments/, kconfigs/, patches/, workloads/."""

import hashlib
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


def fragment_path(name: str, folder: Path = KCONFIGS) -> Path | None:
    """The kconfig fragment file a name gives: folder/NAME.config for a bare name, else the path (with or
    without .config); None when there is none."""
    given = Path(name).expanduser()
    if "/" in name or name.endswith(".config"):
        candidates = [given, given.with_name(given.name + ".config")]
    else:
        candidates = [folder / f"{name}.config"]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def code_digest() -> str:
    """A hash of the harness package's files: a worker must run the same code as the submitting machine."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(f"{path.relative_to(package)}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]
