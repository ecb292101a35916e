"""The cache folder (~/.cache/harness): what each part holds, and cleaning it.

Parts: builds/ (one folder per build key), images/ (guest images and compiled guest programs),
logs/ (harness logs and serial consoles), sources/ (unpacked kernel trees), downloads/ (source
archives and .debs), ccache/. Entries are removed newest-last, keeping the N most recently used;
an entry another harness holds the lock of is left alone. The space freed is measured on the
file system, so hard links shared between parts are counted once, where they are freed.
"""

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.guest import boot
from harness.kernel import build

PARTS = ("builds", "images", "logs", "sources", "downloads", "ccache")
LOCKED_PARTS = {"builds": "builds", "sources": "sources"}     # part -> lock name prefix (files.locked)


def entries(cache_dir: Path, part: str) -> list[Path]:
    """The removable entries of a part, most recently used first."""
    folder = cache_dir / part
    if not folder.is_dir():
        return []
    if part == "images":
        found = [*folder.glob("base-*.cpio"), *(folder / "programs").glob("*")]
    elif part == "logs":
        found = [*folder.glob("*.log"), *(folder / "boots").glob("*.log")]
    elif part == "ccache":
        found = [folder]
    else:
        found = [path for path in folder.iterdir() if not path.name.endswith(".lock")]
    return sorted(found, key=_last_used, reverse=True)


def _last_used(path: Path) -> float:
    record = path / "build.json"        # touched whenever a cached build is used
    try:
        return (record if record.exists() else path).stat().st_mtime
    except OSError:
        return 0.0


def size(path: Path, seen: set | None = None) -> int:
    """Bytes on disk under path (each inode once, like du)."""
    seen = set() if seen is None else seen
    total = 0
    for root, dirs, names in os.walk(path) if path.is_dir() else [(str(path.parent), [], [path.name])]:
        for name in [*dirs, *names]:
            try:
                status = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_blocks * 512
    return total


def usage(cache_dir: Path) -> dict[str, int]:
    """Bytes per part (a hard link shared by two parts counts in the first)."""
    seen: set = set()
    return {part: size(cache_dir / part, seen) for part in PARTS if (cache_dir / part).exists()}


@dataclass(frozen=True)
class Cleaned:
    part: str
    removed: int
    kept: int
    busy: int           # in use by another harness, left alone
    freed: int          # bytes, measured on the file system


def clean(cache_dir: Path, parts, keep: int = 0) -> list[Cleaned]:
    """Remove all but the keep most recently used entries of each part."""
    if (cache_dir / "boots").is_dir():
        boot.sweep(cache_dir / "boots")
    report = []
    for part in parts:
        found = entries(cache_dir, part)
        before = shutil.disk_usage(cache_dir).free
        removed = busy = 0
        for entry in found[keep:]:
            if _remove_unless_busy(cache_dir, part, entry):
                removed += 1
            else:
                busy += 1
        report.append(Cleaned(part, removed, min(keep, len(found)), busy, shutil.disk_usage(cache_dir).free - before))
    return report


def _remove_unless_busy(cache_dir: Path, part: str, entry: Path) -> bool:
    prefix = LOCKED_PARTS.get(part)
    lock_path = cache_dir / "locks" / f"{prefix}-{entry.name}.lock" if prefix else None
    if lock_path is None or not lock_path.exists():
        _remove(entry)
        return True
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        _remove(entry)
        return True


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        build.remove_tree(entry)       # source and build trees are read-only
    else:
        entry.unlink(missing_ok=True)


def human(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"
