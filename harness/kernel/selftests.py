"""The kernel tree's own mm selftests, built statically from the same tree as the kernel, for the
`selftests` workload (workloads/selftests/workload.toml names the tests and their sources).

Linux 6.1 keeps them in tools/testing/selftests/vm, later trees in tools/testing/selftests/mm. Each
test is compiled the way its Makefile would (the tree's exported uapi headers first, the selftests'
own headers, the libraries it links) but with -static, since the guest has no C library of its own
beyond what the image carries. A test whose source the tree lacks, or that does not compile, is not
built, and says why; a tree without the folder says so in one line. The programs go into one tar
file beside the build, which the workload's driver copies into each guest.
"""

import json
import logging
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import files, runner

log = logging.getLogger("harness.build")

FOLDERS = ("tools/testing/selftests/mm", "tools/testing/selftests/vm")
RECORD = "selftests.json"
VERSION = 3         # bump when the way they are built changes
COMPILE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Test:
    """One test as workload.toml declares it: the program built from `sources` (relative to the tree's mm
    selftests folder; the program is named after the first), run with `args`, linked with `libs`, and with
    the `helpers` (vm_util.c, thp_settings.c: what the folder's Makefile links into every test) the tree has."""
    name: str
    sources: tuple[str, ...]
    args: tuple[str, ...] = ()
    libs: tuple[str, ...] = ()
    helpers: tuple[str, ...] = ()

    @property
    def program(self) -> str:
        return Path(self.sources[0]).stem

    @classmethod
    def of(cls, name: str, table: dict, helpers=()) -> "Test":
        return cls(name, tuple(table["sources"]), tuple(str(a) for a in table.get("args", ())),
                   tuple(table.get("libs", ())), tuple(helpers))


@dataclass(frozen=True)
class Built:
    """What a tree's selftests gave: the folder they came from ('' when the tree has none), the tar file of the
    programs (None when none was built), and for each test that was not built, why."""
    folder: str = ""
    tarball: Path | None = None
    programs: tuple[str, ...] = ()
    unbuilt: dict = field(default_factory=dict)       # test name -> why

    def said(self) -> str:
        """One line on what this tree could not run ('' when every test was built)."""
        if not self.folder:
            return f"the kernel tree has no mm selftests ({' or '.join(FOLDERS)}): no selftest runs on it"
        if not self.unbuilt:
            return ""
        absent = [name for name, why in self.unbuilt.items() if why.startswith("no ")]
        failed = [f"{name} ({why})" for name, why in self.unbuilt.items() if not why.startswith("no ")]
        return "; ".join(([f"selftests {self.folder} lacks: {', '.join(absent)}"] if absent else [])
                         + ([f"selftests that do not build: {'; '.join(failed)}"] if failed else []))


def build(tree: Path, out: Path, tests: list[Test]) -> Built:
    """The tests of tree, built into out (kept there: a second call reads what the first made)."""
    record = out / RECORD
    wanted = {"version": VERSION, "tests": [asdict(test) for test in tests]}
    if record.is_file():
        stored = json.loads(record.read_text())
        if stored.get("made_for") == wanted:
            return _built(stored, out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    folder = next((name for name in FOLDERS if (tree / name).is_dir()), "")
    if not folder:
        found = Built("", None, (), {test.name: "no mm selftests in the tree" for test in tests})
    else:
        found = _compile_all(tree, folder, out, tests)
    stored = {"made_for": wanted, "folder": found.folder, "programs": list(found.programs), "unbuilt": found.unbuilt}
    files.write_atomic(record, json.dumps(stored, indent=2) + "\n")
    return found


def _built(stored: dict, out: Path) -> Built:
    tarball = out / "selftests.tar"
    return Built(stored["folder"], tarball if tarball.is_file() else None, tuple(stored["programs"]),
                 dict(stored["unbuilt"]))


def _compile_all(tree: Path, folder: str, out: Path, tests: list[Test]) -> Built:
    """Export the tree's uapi headers (`make headers`: into the build tree's usr/include, as the selftests'
    Makefiles take them), compile each program once, and tar them."""
    log.info("selftests: building %s from %s", ", ".join(dict.fromkeys(t.program for t in tests)), tree / folder)
    runner.run(["make", "-C", tree, "ARCH=x86_64", "headers"], log_file=out / "build.log", timeout=COMPILE_TIMEOUT_S)
    (out / "config").mkdir()
    (out / "config" / "local_config.h").write_text("/* built by harness: no liburing */\n")
    programs, unbuilt = {}, {}
    for test in tests:
        missing = [source for source in test.sources if not (tree / folder / source).is_file()]
        if missing:
            unbuilt[test.name] = f"no {folder}/{missing[0]}"
            continue
        if test.program not in programs:
            programs[test.program] = _compile(tree, folder, out, test)
        if programs[test.program]:
            unbuilt[test.name] = programs[test.program]
    built = tuple(program for program, why in programs.items() if not why)
    tarball = None
    if built:
        tarball = out / "selftests.tar"
        with tarfile.open(tarball, "w") as archive:
            for program in built:
                archive.add(out / "bin" / program, arcname=program)
    return Built(folder, tarball, built, unbuilt)


def compile_argv(tree: Path, folder: str, out: Path, test: Test, helpers=()) -> list[str]:
    """gcc, statically, as the selftests' Makefile compiles the test (the tree's exported headers first), with
    the helper sources given; to be run in the tree's selftests folder, the sources named relative to it as
    there, since a test may name a file after its own __FILE__ (gup_longterm's local tmpfile)."""
    sources = [*test.sources, *[helper for helper in helpers if helper not in test.sources]]
    return ["gcc", "-static", "-O2", "-w", "-D_GNU_SOURCE", "-isystem", str(tree / "usr" / "include"),
            "-I", str(tree / folder), "-I", str(tree / "tools" / "testing" / "selftests"),
            "-I", str(tree / "tools" / "include"), "-I", str(tree), "-I", str(out / "config"),
            "-o", str(out / "bin" / test.program), *sources, *test.libs, "-lrt", "-lpthread", "-lm"]


def _compile(tree: Path, folder: str, out: Path, test: Test) -> str:
    """'' when the program was built, else why not (the compiler's first error line). It is linked with the
    helpers the tree has, as its Makefile does on later trees; on earlier ones, where a test may define what a
    helper does, without them when that fails."""
    (out / "bin").mkdir(exist_ok=True)
    helpers = [helper for helper in test.helpers if (tree / folder / helper).is_file()]
    for given in ([helpers, []] if helpers else [[]]):
        result = runner.run(compile_argv(tree, folder, out, test, given), cwd=tree / folder, check=False,
                            log_file=out / "build.log", timeout=COMPILE_TIMEOUT_S)
        if result.returncode == 0:
            return ""
    errors = [line for line in result.output.splitlines() if "error" in line] or result.output.splitlines()[-1:]
    why = errors[0].strip().replace(f"{tree / folder}/", "") if errors else f"gcc exit status {result.returncode}"
    log.warning("selftests: %s not built: %s", test.program, why)
    return f"does not build: {why[:200]}"
