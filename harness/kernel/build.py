"""Variant builds: copy the pristine tree, apply the patches, configure, build bzImage with ccache.

A build is cached by a key over (source, patches, fragments, compiler, recipe) in
<cache>/builds/<key>/, next to the other builds so that ccache (base_dir = builds/,
hash_dir off) shares objects between variants: a variant that differs by a one-file patch
recompiles that file and relinks.
"""

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import files, runner
from harness.errors import MissingSymbol, PatchDoesNotApply
from harness.experiment import Experiment, Variant, require_patches
from harness.files import write_atomic
from harness.kernel import kconfig, patches, source
from harness.progress import Progress, Stopwatch

log = logging.getLogger("harness.build")

RECIPE_VERSION = 1  # bump when the build steps change in a way that changes the output
ARCH = "x86_64"
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "harness",
    "KBUILD_BUILD_HOST": "harness",
    "KBUILD_BUILD_VERSION": "1",
}
PROGRESS_EVERY_S = 15.0
BUILD_TIMEOUT_S = 3 * 3600


@dataclass(frozen=True)
class Build:
    """A finished build of one variant: where its kernel is and what went into it."""
    variant: str
    key: str
    directory: Path
    release: str
    patches: tuple[str, ...]
    patch_hash: str
    config_hash: str
    compiler: str
    duration_s: float
    ccache_hits: int
    ccache_misses: int
    stage_seconds: dict = field(default_factory=dict, compare=False)
    source: str = ""            # the source SPEC the tree came from
    source_state: dict = field(default_factory=dict)   # what the source's key was made from (source.Tree)

    @property
    def bzimage(self) -> Path:
        return self.directory / "bzImage"

    @property
    def vmlinux(self) -> Path:
        return self.tree / "vmlinux"

    @property
    def system_map(self) -> Path:
        return self.directory / "System.map"

    @property
    def config(self) -> Path:
        return self.directory / "config"

    @property
    def tree(self) -> Path:
        return self.directory / "linux"

    @property
    def log_file(self) -> Path:
        return self.directory / "build.log"


def build_all(experiment: Experiment, variants: list[Variant], cache_dir: Path, rebuild=False) -> list[Build]:
    """Build (or reuse) every variant, each from its source; returns the builds in the order of variants."""
    require_patches(variants)
    fragments = kconfig.find(experiment.kconfigs)
    trees = {text: source.open_tree(source.parse_spec(text), cache_dir)
             for text in dict.fromkeys(experiment.source_of(variant) for variant in variants)}
    return [build_variant(variant, trees[experiment.source_of(variant)], fragments, experiment.probes,
                          cache_dir, rebuild, experiment.source_of(variant)) for variant in variants]


def build_key(source_key: str, patch_files, fragments, compiler: str) -> str:
    digest = hashlib.sha256(f"recipe {RECIPE_VERSION}\nsource {source_key}\ncompiler {compiler}\n".encode())
    for path in patch_files:
        digest.update(b"patch\n" + Path(path).read_bytes())
    for fragment in fragments:
        digest.update(f"fragment {fragment.name}\n".encode() + fragment.path.read_bytes())
    return digest.hexdigest()[:16]


def patch_hash(patch_files) -> str:
    digest = hashlib.sha256()
    for path in patch_files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16] if patch_files else "none"


def compiler_version() -> str:
    return runner.output_of(["gcc", "--version"]).splitlines()[0]


def build_variant(variant: Variant, pristine: source.Tree, fragments, probes,
                  cache_dir: Path, rebuild=False, spec: str = "") -> Build:
    compiler = compiler_version()
    key = build_key(pristine.key, variant.patches, fragments, compiler)
    directory = cache_dir / "builds" / key
    with files.locked(cache_dir, f"builds/{key}", f"the build of {variant.name}"):
        if not rebuild and (cached := load(directory)):
            log.info("build %s: cached in %s", variant.name, directory)
            os.utime(directory / "build.json")      # last used: `harness clean --keep` keeps the recent ones
            return _as_variant(cached, variant.name, spec, pristine.made_from)
        return _build(variant, directory, key, pristine, fragments, probes, cache_dir, compiler, spec)


def _build(variant, directory, key, pristine: source.Tree, fragments, probes, cache_dir, compiler, spec) -> Build:
    if directory.exists():
        remove_tree(directory)
    directory.mkdir(parents=True)
    tree = directory / "linux"
    log.info("build %s: preparing %s", variant.name, tree)
    stages = Stopwatch()
    with stages("copy"):
        if pristine.private:
            source.copy_private(pristine, tree, variant.name)
        else:
            _copy_tree(pristine.path, tree)
    with stages("patch"):
        _apply_patches(variant.patches, tree)
    with stages("configure"):
        _configure(tree, fragments, directory / "build.log", cache_dir)
    with stages("compile"):
        hits, misses = _compile(tree, directory / "build.log", cache_dir, variant.name)
    for name, target in (("arch/x86/boot/bzImage", "bzImage"), ("System.map", "System.map"), (".config", "config")):
        shutil.copyfile(tree / name, directory / target)
    check_symbols(directory / "System.map", probes, variant.name)
    result = Build(variant.name, key, directory, source.release(pristine.path),
                   tuple(Path(p).name for p in variant.patches), patch_hash(variant.patches),
                   hashlib.sha256((directory / "config").read_bytes()).hexdigest()[:16], compiler,
                   stages.total, hits, misses, stages.seconds, spec, pristine.made_from)
    _save(result)
    log.info("build %s: done in %.0f s (ccache %d hits, %d misses)", variant.name, result.duration_s, hits, misses)
    return result


def load(directory: Path) -> Build | None:
    """The finished build in directory, or None when there is none (or it is incomplete)."""
    record = directory / "build.json"
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    data["directory"] = directory
    data["patches"] = tuple(data["patches"])
    return Build(**data)


def check_symbols(system_map: Path, symbols, variant: str) -> None:
    present = set(re.findall(r"^[0-9a-f]+ [tTwW] (\S+)$", system_map.read_text(), re.M))
    for symbol in symbols:
        if symbol not in present:
            raise MissingSymbol(symbol=symbol, variant=variant)


def _as_variant(build: Build, name: str, spec: str, made_from: dict) -> Build:
    """A cached build under the variant name asking for it (and the source spec it gave, which may
    differ from the recorded one only in spelling, such as @SUITE: the cache key is the tree's; and
    what the key was made from this time, such as another path to a tree of the same content)."""
    fields = asdict(build)
    fields.update(variant=name, source=spec or build.source, source_state=made_from or build.source_state)
    return Build(**fields)


def _save(build: Build) -> None:
    fields = asdict(build)
    fields["directory"] = str(build.directory)
    write_atomic(build.directory / "build.json", json.dumps(fields, indent=2) + "\n")


def remove_tree(directory: Path) -> None:
    """Remove a build or source tree. Only directories need write permission for removal; the files
    may be hard links to the pristine tree, whose read-only modes must stay."""
    runner.run(["find", directory, "-type", "d", "-exec", "chmod", "u+w", "{}", "+"], check=False)
    shutil.rmtree(directory)


def _copy_tree(pristine: Path, tree: Path) -> None:
    """A hard-link farm of the pristine tree (a full copy across file systems).

    kbuild only creates files in an in-tree build, and every file a patch touches is
    replaced by a private copy first (_unshare), so the pristine files are never written.
    Directories are new and made writable; shared files stay read-only.
    """
    if runner.run(["cp", "-al", pristine, tree], check=False).returncode != 0:
        shutil.rmtree(tree, ignore_errors=True)
        runner.run(["cp", "-a", pristine, tree])
    runner.run(["find", tree, "-type", "d", "-exec", "chmod", "u+w", "{}", "+"])


def _unshare(path: Path) -> None:
    """Replace a hard link by a private, writable copy of the file."""
    if path.is_file() and path.stat().st_nlink > 1:
        private = path.with_name(path.name + ".harness-copy")
        shutil.copy2(path, private)
        private.chmod(private.stat().st_mode | 0o200)
        os.replace(private, path)


def _apply_patches(patch_files, tree: Path) -> None:
    for patch in patch_files:
        for touched in patches.touched_files(patch):
            _unshare(tree / touched)
        result = runner.run(patches.git_apply_argv(patch), cwd=tree, env=patches.git_env(tree), check=False)
        if result.returncode != 0:
            raise PatchDoesNotApply(patch=patch, tree=tree, where=patches.first_failure(patch, tree))


def _make(tree: Path, *targets, cache_dir: Path | None = None) -> list[str]:
    compiler = "ccache gcc" if cache_dir else "gcc"
    return ["make", "-C", tree, f"ARCH={ARCH}", f"CC={compiler}", f"HOSTCC={compiler}", *targets]


def _ccache_env(cache_dir: Path) -> dict[str, str]:
    return {"CCACHE_DIR": str(cache_dir / "ccache"), "CCACHE_BASEDIR": str(cache_dir / "builds"),
            "CCACHE_NOHASHDIR": "true", "CCACHE_MAXSIZE": "5G", **REPRODUCIBLE_ENV}


def _configure(tree: Path, fragments, log_file: Path, cache_dir: Path) -> None:
    env = _ccache_env(cache_dir)
    runner.run(_make(tree, kconfig.BASE_TARGET, cache_dir=cache_dir), env=env, log_file=log_file)
    runner.run(kconfig.merge_argv(tree, fragments), cwd=tree, env=env, log_file=log_file)
    runner.run(_make(tree, "olddefconfig", cache_dir=cache_dir), env=env, log_file=log_file)
    kconfig.check_survival(fragments, tree / ".config", tree)


def _compile(tree: Path, log_file: Path, cache_dir: Path, name: str) -> tuple[int, int]:
    env = _ccache_env(cache_dir)
    runner.run(["ccache", "--zero-stats"], env=env)
    progress = Progress(f"build {name}", every_s=PROGRESS_EVERY_S, logger=log, unit="files compiled")
    runner.run(_make(tree, f"-j{os.cpu_count() or 1}", "bzImage", cache_dir=cache_dir), env=env,
               log_file=log_file, on_line=lambda line: progress.tick(line.strip(), line.startswith("  CC ")),
               timeout=BUILD_TIMEOUT_S)
    stats = dict(line.split("\t", 1) for line in
                 runner.output_of(["ccache", "--print-stats"], env=env).splitlines() if "\t" in line)
    hits = int(stats.get("direct_cache_hit", 0)) + int(stats.get("preprocessed_cache_hit", 0))
    return hits, int(stats.get("cache_miss", 0))
