"""The guest's initramfs, assembled from the host's own binaries, and per-boot additions.

The base image (busybox, dropbear, redis, stress-ng, the workloads' static programs, every shared
library they need, and /init) is cached by a hash of its contents. Each boot appends a small
second cpio archive with that boot's SSH keys: the kernel unpacks concatenated archives in
order, so the cached part never changes.
"""

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import doctor, files, project, runner
from harness.errors import MissingHostTool

RECIPE_VERSION = 1
READY_MARKER = "HARNESS-GUEST-READY"
GUEST_PROGRAMS = {           # host binary -> path in the guest
    "/bin/busybox": "/bin/busybox",
    "dropbear": "/usr/sbin/dropbear",
    "redis-server": "/usr/bin/redis-server",
    "redis-cli": "/usr/bin/redis-cli",
    "stress-ng": "/usr/bin/stress-ng",
}
FILES = {
    "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "/etc/group": "root:x:0:\n",
    "/etc/shells": "/bin/sh\n",
    "/etc/hosts": "127.0.0.1 localhost guest\n",
}
DIRECTORIES = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/dropbear", "root/.ssh", "proc", "sys", "dev",
               "tmp", "run", "var/run", "var/log", "mnt")


@dataclass(frozen=True)
class Image:
    path: Path            # the base initramfs (uncompressed newc cpio)
    digest: str
    files: tuple[str, ...]  # every path in the image, sorted


def init_script() -> str:
    return (Path(__file__).parent / "guest_init.sh").read_text().replace("@READY_MARKER@", READY_MARKER)


def host_path(command: str) -> Path:
    found = command if os.path.isabs(command) else shutil.which(command, path=doctor.SEARCH_PATH)
    if not found or not os.path.exists(found):
        raise MissingHostTool(what=f"Guest program {command}", fix="run 'harness doctor --install' (as root)")
    return Path(found).resolve()


def shared_libraries(binaries) -> list[Path]:
    """Every shared library (and the dynamic loader) the binaries need, as ldd resolves them."""
    found = set()
    for binary in binaries:
        result = runner.run(["ldd", binary], check=False)
        for line in result.output.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match:
                found.add(match.group(1))
    return sorted(Path(path) for path in found)


GUEST_TOOLS = Path(__file__).parent / "guest_tools"


def workload_programs() -> dict[Path, str]:
    """Static programs of workloads/*/*.c and of the harness's own guest tools (guest_tools/*.c), compiled
    into the cache: source -> guest path."""
    sources = sorted(project.WORKLOADS.glob("*/*.c")) + sorted(GUEST_TOOLS.glob("*.c"))
    return {source: f"/usr/bin/{source.stem}" for source in sources}


def _compile_static(source: Path, output_dir: Path) -> Path:
    """gcc -static, once per content of the source file."""
    output = output_dir / f"{source.stem}-{hashlib.sha256(source.read_bytes()).hexdigest()[:12]}"
    with files.locked(output_dir.parent.parent, f"programs/{output.name}", f"the guest program {output.name}"):
        if not output.exists():
            with files.partial_file(output, mode=0o755) as partial:
                runner.run(["gcc", "-static", "-O2", "-Wall", "-o", partial, source], cwd=output.parent)
    return output


def contents(cache_dir: Path) -> dict[str, Path | str]:
    """guest path -> host file (Path) or literal text (str): everything that goes into the base image."""
    entries: dict[str, Path | str] = {}
    programs = {guest: host_path(command) for command, guest in GUEST_PROGRAMS.items()}
    compiled_dir = cache_dir / "images" / "programs"
    compiled_dir.mkdir(parents=True, exist_ok=True)
    for source, guest in workload_programs().items():
        programs[guest] = _compile_static(source, compiled_dir)
    entries.update(programs)
    for library in shared_libraries(programs.values()):
        entries[str(library)] = library.resolve()
    entries.update(FILES)
    entries["/init"] = init_script()
    for tool in sorted(GUEST_TOOLS.iterdir()):
        if tool.suffix != ".c":
            entries[f"/usr/bin/{tool.name}"] = tool
    return entries


def digest_of(entries: dict[str, Path | str]) -> str:
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\n".encode())
    for guest in sorted(entries):
        value = entries[guest]
        data = value.read_bytes() if isinstance(value, Path) else value.encode()
        digest.update(f"{guest}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:16]


def build(cache_dir: Path) -> Image:
    """The base image for the current host binaries and workloads, built once per content hash."""
    entries = contents(cache_dir)
    digest = digest_of(entries)
    path = cache_dir / "images" / f"base-{digest}.cpio"
    with files.locked(cache_dir, f"images/{path.name}", f"the guest image {path.name}"):
        if not path.exists():
            with tempfile.TemporaryDirectory(dir=path.parent) as staging, files.partial_file(path) as partial:
                root = Path(staging) / "root"
                with files.space_for(root):
                    _populate(root, entries)
                write_cpio(root, partial)
    return Image(path, digest, tuple(sorted(set(entries) | {"/" + d for d in DIRECTORIES})))


def _populate(root: Path, entries) -> None:
    for directory in DIRECTORIES:
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    (root / "root/.ssh").chmod(0o700)
    (root / "tmp").chmod(0o1777)
    for guest, value in entries.items():
        target = root / guest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, Path):
            shutil.copy2(value, target)
        else:
            target.write_text(value)
    (root / "init").chmod(0o755)


def write_cpio(root: Path, output: Path) -> None:
    """A newc cpio archive of root, owned by root, in a stable order."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    runner.run(["cpio", "--create", "--format=newc", "--owner=0:0", "--reproducible", "--quiet",
                f"--file={output}"], cwd=root, stdin_text="\n".join(names) + "\n")


def boot_initrd(image: Image, keys_root: Path, output: Path) -> Path:
    """image followed by a cpio archive of keys_root (this boot's keys): one initrd file."""
    extra = output.with_suffix(".keys.cpio")
    write_cpio(keys_root, extra)
    with open(output, "wb") as out:
        for part in (image.path, extra):
            with open(part, "rb") as stream:
                shutil.copyfileobj(stream, out, 1 << 20)
    extra.unlink()
    return output
