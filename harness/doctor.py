"""Host prerequisites: what the harness needs from the host, how to check it, which Debian
package brings it. `make setup` installs the missing ones through `harness doctor --install`.

Three sets: the submitting machine's (HOST: everything that builds and boots), a worker's (WORKER:
what a machine that only boots the kernels it is sent needs, `harness doctor --worker`), and what
only the tests need (TESTS: an sshd the cluster test starts on loopback, a browser for the history page)."""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness import runner

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass(frozen=True)
class Prerequisite:
    name: str
    package: str
    purpose: str
    command: str = ""        # found on PATH (or at this absolute path)
    file: str = ""           # a header or library that must exist
    static: bool = False     # the command must be a statically linked ELF (it goes into the guest)
    worker: bool = False     # a worker host needs it too
    tests: bool = False      # only the tests need it

    def problem(self) -> str:
        """'' when present, else what is wrong."""
        if self.command:
            found = self.command if os.path.isabs(self.command) and os.access(self.command, os.X_OK) \
                else shutil.which(self.command, path=SEARCH_PATH)
            if not found:
                return f"command {self.command} not found"
            if self.static and is_dynamic_elf(Path(found)):
                return f"{found} is dynamically linked; the guest needs the static build"
        if self.file and not Path(self.file).exists():
            return f"{self.file} not found"
        return ""


PREREQUISITES = (
    Prerequisite("C compiler", "gcc", "kernel build", command="gcc"),
    Prerequisite("make", "make", "kernel build", command="make"),
    Prerequisite("flex", "flex", "kernel build (kconfig)", command="flex"),
    Prerequisite("bison", "bison", "kernel build (kconfig)", command="bison"),
    Prerequisite("bc", "bc", "kernel build", command="bc"),
    Prerequisite("libelf headers", "libelf-dev", "kernel build (objtool)", file="/usr/include/libelf.h"),
    Prerequisite("libssl headers", "libssl-dev", "kernel build (sign-file, certs)", file="/usr/include/openssl/ssl.h"),
    Prerequisite("ccache", "ccache", "shared objects between variant builds", command="ccache"),
    Prerequisite("xz", "xz-utils", "kernel source unpacking", command="xz"),
    Prerequisite("git", "git", "patch apply and check", command="git"),
    Prerequisite("perl", "perl", "the tree's scripts/checkpatch.pl on imported patches", command="perl"),
    Prerequisite("objdump", "binutils", "object-code diff of the variants (with readelf, nm)", command="objdump"),
    Prerequisite("apt-get download", "apt", "Debian kernel source packages", command="apt-get"),
    Prerequisite("dpkg-deb", "dpkg", "Debian kernel source packages", command="dpkg-deb"),
    Prerequisite("qemu-system-x86_64", "qemu-system-x86", "booting the kernels", command="qemu-system-x86_64",
                 worker=True),
    Prerequisite("cpio", "cpio", "guest initramfs", command="cpio", worker=True),
    Prerequisite("static busybox", "busybox-static", "guest userland", command="/bin/busybox", static=True),
    Prerequisite("redis-server", "redis-server", "redis workload (guest)", command="redis-server"),
    Prerequisite("redis-cli", "redis-tools", "redis workload (guest)", command="redis-cli"),
    Prerequisite("stress-ng", "stress-ng", "stressng workload (guest)", command="stress-ng"),
    Prerequisite("libnuma (static)", "libnuma-dev", "the tree's KSM selftests (ksm_tests), linked statically",
                 file="/usr/lib/x86_64-linux-gnu/libnuma.a"),
    Prerequisite("dropbear", "dropbear-bin", "SSH server in the guest", command="dropbear"),
    Prerequisite("sshd", "openssh-server", "the test of --cluster ssh:// (an sshd on loopback)",
                 command="/usr/sbin/sshd", tests=True),
    Prerequisite("chromium", "chromium", "the test that loads `harness history`'s page in a real browser",
                 command="chromium", tests=True),
)
HOST = tuple(item for item in PREREQUISITES if not item.tests)
WORKER = tuple(item for item in PREREQUISITES if item.worker)
TESTS = PREREQUISITES


def problems(items=HOST) -> list[tuple[Prerequisite, str]]:
    return [(item, problem) for item in items if (problem := item.problem())]


def report(items=HOST) -> list[str]:
    """One line per prerequisite: ok, or what is missing and how to get it."""
    lines = []
    for item in items:
        problem = item.problem()
        status = "ok     " if not problem else "MISSING"
        fix = f": {problem}; install with 'apt-get install {item.package}'" if problem else ""
        lines.append(f"{status} {item.name:<20} ({item.purpose}){fix}")
    return lines


def install_command(packages) -> list[str]:
    return ["apt-get", "install", "-y", "--no-install-recommends", *packages]


def missing_packages(items=HOST) -> list[str]:
    return sorted({item.package for item, _ in problems(items)})


def install_missing(items=HOST) -> list[str]:
    """Install the Debian packages of the missing prerequisites (as root). Returns the packages."""
    packages = missing_packages(items)
    if packages:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        runner.run(["apt-get", "update"], env=env, timeout=900)
        runner.run(install_command(packages), env=env, timeout=3600)
    return packages


def is_dynamic_elf(path: Path) -> bool:
    """True when path is an ELF file with a PT_INTERP program header (needs a dynamic loader)."""
    with open(path, "rb") as stream:
        header = stream.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:   # 64-bit ELF only
            return False
        order = "little" if header[5] == 1 else "big"
        phoff = int.from_bytes(header[32:40], order)
        phentsize = int.from_bytes(header[54:56], order)
        phnum = int.from_bytes(header[56:58], order)
        stream.seek(phoff)
        table = stream.read(phentsize * phnum)
    return any(int.from_bytes(table[i * phentsize:i * phentsize + 4], order) == 3 for i in range(phnum))


def kvm_line(works: bool | None, why: str) -> str:
    """What doctor says about KVM, and what it means for the timings."""
    if works:
        return (f"kvm        works ({why}): guests run at hardware speed, and bench times each cell on boots of "
                "its own")
    if works is None:
        return f"kvm        untested: {why}"
    return (f"kvm        does not work here ({why}): every guest runs under TCG, emulated, several times slower; "
            "counts are exact, but timings are not hardware figures (reports say so)")


def worker_lines(facts: dict) -> list[str]:
    """What `doctor --worker` says beyond the prerequisites: KVM, the versions a cluster checks, the
    install line for what is missing (facts: harness.measure.worker.facts())."""
    kvm = ("/dev/kvm can be opened: guests use KVM when one makes progress under it" if facts["kvm"] else
           "/dev/kvm cannot be opened: guests run under TCG, slower, and their timings are not comparable with "
           "a KVM host's")
    lines = [f"host       {facts['host']}: {facts['cores']} cores, {facts['memory_mb']} MiB",
             f"KVM        {kvm}",
             f"versions   harness code {facts['code']}, Python {facts['python']}, distributed "
             f"{facts['distributed'] or 'MISSING'}, {facts['qemu'] or 'no QEMU'}",
             f"python     {facts['executable']} (a cluster starts workers with the submitting machine's path: "
             "install the harness at the same path)",
             f"cache      {facts['cache']} (the kernels and images this worker is sent)"]
    if facts["install"]:
        lines.append(f"install    {facts['install']}")
    return lines
