"""Files written whole, cache entries shared safely, and a full disk named as such.

A file is written to a temporary name of its own beside the target, then renamed over it:
a killed harness leaves the old file or the new one, never half of one, and two harnesses
writing the same entry never share a temporary name. A cache entry that two harnesses may
make at once is made under `locked()`. Any write that runs out of space raises DiskFull
naming the file system, with the partial file removed.
"""

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from harness.errors import DiskFull, NotEnoughSpace

log = logging.getLogger("harness.files")

FULL = (errno.ENOSPC, errno.EDQUOT)
FULL_TEXT = ("No space left on device", "Disk quota exceeded")
FULL_BELOW = 1 << 20        # bytes free under which a file system is full for a tool writing to it
# A tool's line that says it could not write: the tool has failed, even if it goes on (apt-get
# waits for ever after one, tar tries every file left), so runner.run(stop_on=WRITE_ERROR) ends it.
WRITE_ERROR = re.compile("|".join([*FULL_TEXT, "Write error", "Cannot write", "Read-only file system"]))


def sha256_of(path: Path) -> str:
    """The sha256 of a file's content, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str, errors: str = "strict") -> None:
    write_bytes_atomic(path, text.encode(errors=errors))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with partial_file(path) as partial:
        partial.write_bytes(data)


@contextmanager
def space_for(path: Path):
    """Running out of space in the block (ENOSPC, EDQUOT) becomes DiskFull for a write to path."""
    try:
        yield
    except OSError as error:
        if error.errno in FULL:
            raise disk_full(path) from None
        raise


@contextmanager
def partial_file(path: Path, mode: int = 0o644):
    """A unique temporary path beside path, given mode and renamed to path when the block ends
    normally, removed when it does not; running out of space becomes DiskFull."""
    with space_for(path):
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(handle)
        partial = Path(name)
        try:
            yield partial
            os.chmod(partial, mode)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def disk_full(path: Path) -> DiskFull:
    """DiskFull for a write to path, naming the mount point and what is left on it."""
    mount, free = _file_system_of(path)
    return DiskFull(path=Path(path), mount=mount, free=mib(free))


def require_space(path: Path, needed: int, what: str) -> None:
    """NotEnoughSpace, naming path and the shortfall, when path's file system has less than needed bytes
    free: said before a download or an unpack starts, not when it fails half-way."""
    mount, free = _file_system_of(path)
    if free < needed:
        raise NotEnoughSpace(path=Path(path), what=what, needed=mib(needed), mount=mount, free=mib(free),
                             missing=mib(needed - free))


def free_bytes(path: Path) -> int:
    """The bytes free on the file system that holds path (or its nearest existing parent)."""
    return _file_system_of(path)[1]


def _file_system_of(path: Path) -> tuple[Path, int]:
    """The mount point that holds path (or its nearest existing parent) and the bytes free there."""
    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    mount = existing.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return mount, shutil.disk_usage(existing).free


def mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


def says_disk_full(text: str) -> bool:
    """True when a command's output says it ran out of space."""
    return any(phrase in text for phrase in FULL_TEXT)


@contextmanager
def locked(cache_dir: Path, entry: str, what: str):
    """One harness at a time makes the cache entry (e.g. 'builds/KEY'); the others wait, then find it made.
    The lock files live in <cache>/locks/, out of the entries' folders."""
    path = cache_dir / "locks" / (entry.replace("/", "-") + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another harness that is making %s", what)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
