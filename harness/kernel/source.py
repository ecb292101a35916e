"""Kernel source specs -> an unpacked, read-only tree in the cache, fetched once.

SPEC forms:
  debian:PKG=VERSION[@SUITE][#sha256=HEX]
                                    a Debian linux-source package, fetched with apt-get download through
                                    a private sources list on the host's mirror: from SUITE, or from
                                    whichever of bullseye, bookworm, trixie (and their -updates and
                                    -security) holds VERSION
  tarball:URL#sha256=HEX            a kernel.org style .tar.xz
  git:PATH@REF                      an archive of a local git repository at REF
  dir:PATH                          an existing tree, in place (keyed by what it holds now)
Every fetch unpacks into a temporary folder that is renamed into place only when complete, after
checking that its file system has room for it; a tool that says it cannot write is stopped.

A tree's key stands for its content in build cache keys. A fetched tree is read-only and named by
what it was fetched from. A dir: tree is the user's to edit, so its key is made from what is in it
now: for a git work tree, its folder's tree in HEAD, `git diff HEAD` and the untracked files that are
not ignored (files git ignores, or that a nested repository holds, are not the tree's);
for any other tree, the path, size, mode and mtime of every file. A build copies those files (not
links: the tree may be edited during and after the build) and refuses a tree whose key changed
while it was copied.
"""

import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness import files, runner
from harness.errors import (
    ChecksumMismatch,
    CommandFailed,
    DownloadFailed,
    GitRefMissing,
    NotAKernelArchive,
    NotAKernelTree,
    TreeChanged,
)
from harness.experiment import DEFAULT_SPEC, SourceSpec, parse_spec  # noqa: F401  (the input model's)
from harness.kernel import debian

log = logging.getLogger("harness.source")

# A kernel tree takes at least this many times its .tar.xz on disk (linux-source-5.10.223: 121 MB
# of .tar.xz, 1,022 MB of tar, 1,153 MB in 70,614 files): a floor, so that a disk far too small is
# refused before the download and none that can hold the tree is; the unpack checks the exact size.
UNPACKED_PER_PACKED_BYTE = 6


def fetch(spec: SourceSpec, cache_dir: Path) -> Path:
    """Return the path of the unpacked tree for spec, fetching it into the cache once."""
    if spec.kind == "dir":
        tree = Path(spec.location).expanduser().resolve()
        check_tree(tree)
        return tree
    if spec.kind == "git":
        commit = _resolve_git_ref(spec)
        target = cache_dir / "sources" / f"git-{commit[:16]}"
        fill = functools.partial(_unpack_git, spec, commit)
    elif spec.kind == "tarball":
        target = cache_dir / "sources" / f"tarball-{spec.sha256[:16]}"
        fill = functools.partial(_unpack_tarball, spec, cache_dir)
    else:
        target = cache_dir / "sources" / ("debian-" + spec.location.replace("=", "_"))
        fill = functools.partial(_unpack_debian, spec, cache_dir)
    with files.locked(cache_dir, f"sources/{target.name}", f"the source tree {target.name}"):
        if not target.exists():
            with _staging(target) as tmp:
                fill(tmp)
                _make_read_only(tmp)
    return target


@dataclass(frozen=True)
class Tree:
    """A source tree as a build sees it: where it is, the key that stands for its content, what the
    key was made from (for a run's metadata) and, for a dir: tree, the files a build copies."""
    path: Path
    key: str
    made_from: dict = field(default_factory=dict)
    files: tuple[str, ...] = ()     # empty: a read-only fetched tree, which builds hard-link whole

    @property
    def private(self) -> bool:
        """True when a build must copy the tree's files rather than link them."""
        return bool(self.files)


def open_tree(spec: SourceSpec, cache_dir: Path) -> Tree:
    """The tree of spec, fetched once, with its key as it is now."""
    path = fetch(spec, cache_dir)
    if spec.kind != "dir":
        return Tree(path, path.name, {"tree": path.name})
    return state_of(path)


def state_of(path: Path) -> Tree:
    """A dir: tree's key, made from what it holds now (see the module's docstring)."""
    return _git_state(path) or _walked_state(path)


def copy_private(tree: Tree, destination: Path, variant: str) -> None:
    """Copy a dir: tree's files to destination (made here); TreeChanged when the tree's key is not the
    same after the copy as it was when the tree was read. On any failure destination is removed."""
    destination.mkdir(parents=True)
    try:
        copied = runner.run(["cpio", "-0", "-p", "-d", "-m", "--quiet", destination], cwd=tree.path,
                            stdin_text="\0".join(tree.files) + "\0", stop_on=files.WRITE_ERROR,
                            watch_space=destination, check=False)
        after = state_of(tree.path)
        if after.key != tree.key:
            raise TreeChanged(path=tree.path, variant=variant, before=tree.key, after=after.key)
        if copied.returncode != 0:
            raise CommandFailed(command=runner.quote(copied.argv), status=copied.returncode,
                                tail=copied.output.strip()[-300:])
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def _git(path: Path, *args: str, **options) -> runner.Result:
    # The harness runs the tree's own Makefile as whoever it is, so it trusts the tree's repository
    # too: without this, root reading a user's work tree gets git's "dubious ownership" refusal.
    return runner.run(["git", "-c", "safe.directory=*", *args], cwd=path, **options)


def _git_state(path: Path) -> Tree | None:
    """The state of a git work tree at path; None (and the reason logged) when path is in no work tree
    with a commit, or git does not list its top Makefile (a tree that its repository ignores)."""
    head = _git(path, "rev-parse", "HEAD", "HEAD:./", check=False)
    if head.returncode != 0:
        said = head.output.strip().splitlines()
        log.info("dir:%s: no git commit here (%s): keyed by every file's path, size, mode and mtime", path,
                 said[0] if said else "not a git work tree")
        return None
    commit, subtree = head.output.split()[:2]
    listed = _git_files(path, "--cached", "--others")
    if "Makefile" not in listed:
        log.info("dir:%s: git does not list its Makefile: keyed by every file's path, size, mode and mtime", path)
        return None
    untracked = _git_files(path, "--others")
    diff_sha256, changed = _diff_of(path)
    untracked_sha256, untracked_bytes = _untracked_of(path, untracked)
    made_from = {"path": str(path), "git_commit": commit, "git_tree": subtree, "diff_sha256": diff_sha256,
                 "changed_files": changed, "untracked_files": len(untracked), "untracked_bytes": untracked_bytes,
                 "untracked_sha256": untracked_sha256}
    log.info("dir:%s: git tree %s at %s, %d changed file(s), %d untracked (%s)", path, subtree[:12], commit[:12],
             changed, len(untracked), files.mib(untracked_bytes))
    return Tree(path, _dir_key(made_from, "git_tree", "diff_sha256", "untracked_sha256"), made_from,
                tuple(name for name in listed if os.path.lexists(path / name)))


def _diff_of(path: Path) -> tuple[str, int]:
    """(sha256 of `git diff HEAD`, files it changes) of the work tree at path."""
    _git(path, "update-index", "-q", "--refresh", check=False)     # stat data, as git status refreshes it
    with tempfile.NamedTemporaryFile(prefix="harness-diff.") as diff:
        _git(path, "diff", "HEAD", "--binary", "--no-ext-diff", "--no-textconv", "--no-color",
             f"--output={diff.name}", "--", ".")
        return files.sha256_of(Path(diff.name)), sum(line.startswith(b"diff --git ") for line in open(diff.name, "rb"))


def _untracked_of(path: Path, untracked: list[str]) -> tuple[str, int]:
    """(sha256 over the untracked files' names and contents, their bytes)."""
    digest, total = hashlib.sha256(), 0
    for name in untracked:
        content, size = _content_of(path / name)
        digest.update(f"{name}\0{content}\n".encode())
        total += size
    return digest.hexdigest(), total


def _git_files(path: Path, *which: str) -> list[str]:
    """The files git lists under path (a repository nested in it, listed as 'name/', is not the tree's)."""
    listing = _git(path, "ls-files", "-z", *which, "--exclude-standard", echo=False).output
    return sorted(name for name in listing.split("\0") if name and not name.endswith("/"))


def _content_of(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of a file, of a symbolic link's target name, or of nothing for a file gone since
    it was listed (the key then differs from the one taken after it went, and the copy is refused)."""
    try:
        if path.is_symlink():
            return hashlib.sha256(os.readlink(path).encode()).hexdigest(), 0
        return files.sha256_of(path), path.stat().st_size
    except FileNotFoundError:
        return "gone", 0


def _walked_state(path: Path) -> Tree:
    """The state of any other tree: the path, size, mode and mtime of every file and symbolic link
    (but a .git, which git commands write to)."""
    digest = hashlib.sha256()
    names = []
    for folder, folders, found in os.walk(path):
        folders[:] = sorted(name for name in folders if name != ".git")
        links = [name for name in folders if os.path.islink(os.path.join(folder, name))]
        for name in sorted(name for name in [*found, *links] if name != ".git"):
            try:
                status = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:       # gone since the folder was listed (an editor's probe file)
                continue
            names.append(os.path.relpath(os.path.join(folder, name), path))
            digest.update(f"{names[-1]}\0{status.st_size}\0{status.st_mode:o}\0{status.st_mtime_ns}\n".encode())
    made_from = {"path": str(path), "files": len(names), "listing_sha256": digest.hexdigest()}
    return Tree(path, _dir_key(made_from, "listing_sha256"), made_from, tuple(names))


def _dir_key(made_from: dict, *fields: str) -> str:
    text = "".join(f"{name} {made_from[name]}\n" for name in fields)
    return "dir-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def release(tree: Path) -> str:
    """'linux-5.10.223' from the tree's top Makefile."""
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = (\d+)",
                             (tree / "Makefile").read_text(errors="replace"), re.M))
    return "linux-" + ".".join(fields[name] for name in ("VERSION", "PATCHLEVEL", "SUBLEVEL")
                               if name in fields)


def check_tree(tree: Path) -> None:
    makefile = tree / "Makefile"
    if not makefile.is_file() or "VERSION =" not in makefile.read_text(errors="replace")[:2000]:
        raise NotAKernelTree(path=tree)


def verify(path: Path, expected: str, what: str) -> None:
    """The download at path has the expected sha256; if not, it is removed and ChecksumMismatch raised."""
    actual = files.sha256_of(path)
    if expected and actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(what=what, actual=actual, expected=expected)


@contextmanager
def _staging(target: Path):
    """A temporary folder beside target, renamed to target on success, removed on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        tmp.rename(target)
    finally:
        if tmp.exists():
            _make_writable(tmp)
            shutil.rmtree(tmp)


def _resolve_git_ref(spec: SourceSpec) -> str:
    repo = Path(spec.location).expanduser().resolve()
    result = runner.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{spec.ref}^{{commit}}"],
                        check=False)
    if result.returncode != 0:
        raise GitRefMissing(ref=spec.ref, repo=repo)
    return result.output.strip()


def _unpack_git(spec: SourceSpec, commit: str, tmp: Path) -> None:
    repo = Path(spec.location).expanduser().resolve()
    listing = runner.output_of(["git", "-C", repo, "ls-tree", "-r", "-l", "--full-tree", commit], echo=False)
    size = sum(int(fields[3]) for fields in map(str.split, listing.splitlines()) if fields[3].isdigit())
    files.require_space(tmp, 2 * size, f"the tree of {spec} (an archive, then its files)")
    archive = tmp.with_suffix(".tar")
    try:
        runner.run(["git", "-C", repo, "archive", "--format=tar", "-o", archive, commit], stop_on=files.WRITE_ERROR,
                   watch_space=tmp)
        runner.run(["tar", "-xf", archive, "-C", tmp], stop_on=files.WRITE_ERROR, watch_space=tmp)
    finally:
        archive.unlink(missing_ok=True)
    check_tree(tmp)


def _unpack_tarball(spec: SourceSpec, cache_dir: Path, tmp: Path) -> None:
    name = Path(urllib.parse.urlparse(spec.location).path).name or "linux.tar.xz"
    archive = cache_dir / "downloads" / name
    if not archive.exists() or files.sha256_of(archive) != spec.sha256:
        _download(spec.location, archive)
    verify(archive, spec.sha256, archive.name)
    _untar_single_top(archive, tmp)


def _unpack_debian(spec: SourceSpec, cache_dir: Path, tmp: Path) -> None:
    deb = debian.download(spec.location, cache_dir / "downloads", spec.ref, room=_room_for_package)
    verify(deb, spec.sha256, deb.name)
    payload = tmp.with_name(tmp.name + ".deb-contents")
    payload.mkdir()
    try:
        installed = int(runner.output_of(["dpkg-deb", "-f", deb, "Installed-Size"]) or 0) * 1024
        files.require_space(payload, installed, f"the contents of {deb.name}")
        runner.run(["dpkg-deb", "-x", deb, payload], stop_on=files.WRITE_ERROR, watch_space=payload)
        tarballs = sorted(payload.glob("usr/src/linux-source-*.tar.*"))
        if not tarballs:
            raise DownloadFailed(what=deb.name, why="no usr/src/linux-source-*.tar.* inside")
        _untar_single_top(tarballs[0], tmp)
    finally:
        shutil.rmtree(payload, ignore_errors=True)


def _room_for_package(size: int, installed: int) -> int:
    """A linux-source .deb, its contents (one compressed tarball) and the tree it unpacks to."""
    return size + installed + installed * UNPACKED_PER_PACKED_BYTE


def _untar_single_top(archive: Path, tmp: Path) -> None:
    """Unpack archive into tmp, dropping its single top-level folder."""
    files.require_space(tmp, unpacked_size(archive), f"the tree of {archive.name}")
    runner.run(["tar", "-xf", archive, "-C", tmp, "--strip-components=1", "--no-same-owner"],
               stop_on=files.WRITE_ERROR, watch_space=tmp)
    try:
        check_tree(tmp)
    except NotAKernelTree:
        raise NotAKernelArchive(archive=archive) from None


def unpacked_size(archive: Path) -> int:
    """The bytes archive unpacks to: exact for .xz (from its index), else its own size (a floor)."""
    if archive.name.endswith(".xz"):
        totals = [line.split("\t") for line in runner.output_of(["xz", "--robot", "--list", archive]).splitlines()
                  if line.startswith("totals\t")]
        if totals and totals[0][4].isdigit():
            return int(totals[0][4])
    return archive.stat().st_size


def _download(url: str, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with files.partial_file(destination) as partial:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                length = int(response.headers.get("Content-Length") or 0)
                files.require_space(destination, length + length * UNPACKED_PER_PACKED_BYTE,
                                    f"{destination.name} and the tree it unpacks to")
                shutil.copyfileobj(response, out, 1 << 20)
        except OSError as error:
            if error.errno in files.FULL:
                raise
            raise DownloadFailed(what=url, why=str(error)) from None


def _make_read_only(tree: Path) -> None:
    runner.run(["chmod", "-R", "a-w", tree])
    tree.chmod(0o755)  # the top stays writable so that the staging rename and removal work


def _make_writable(tree: Path) -> None:
    runner.run(["chmod", "-R", "u+w", tree], check=False)
