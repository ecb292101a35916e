import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from harness import files
from harness.errors import (
    BadSourceSpec,
    ChecksumMismatch,
    CommandFailed,
    DiskFull,
    DownloadFailed,
    GitRefMissing,
    MirrorNotFound,
    NotAKernelArchive,
    NotAKernelTree,
    NotEnoughSpace,
    PackageNotFound,
    TreeChanged,
)
from harness.kernel import debian, source
from tests.conftest import git

SHA = "f733d27d239d65598d96d7a72f71ac50f49f2380192a1b3b4ca2f5ad5144dd63"


def test_parse_every_form():
    assert source.parse_spec(source.DEFAULT_SPEC) == source.SourceSpec(
        "debian", "linux-source-5.10=5.10.223-1", sha256=SHA)
    assert source.parse_spec(f"tarball:https://example.org/linux-5.10.tar.xz#sha256={SHA}") == \
        source.SourceSpec("tarball", "https://example.org/linux-5.10.tar.xz", sha256=SHA)
    assert source.parse_spec("git:/src/linux@v5.10") == source.SourceSpec("git", "/src/linux", ref="v5.10")
    assert source.parse_spec("dir:/src/linux") == source.SourceSpec("dir", "/src/linux")
    assert str(source.parse_spec(source.DEFAULT_SPEC)) == source.DEFAULT_SPEC


@pytest.mark.parametrize("text, why", [
    ("linux-5.10", "no KIND"),
    ("svn:/x", "unknown kind"),
    ("tarball:https://example.org/l.tar.xz", "needs #sha256"),
    ("tarball:ftp://example.org/l.tar.xz#sha256=" + SHA, "http, https or file"),
    ("debian:linux-source-5.10", "PACKAGE=VERSION"),
    ("git:/src/linux", "PATH@REF"),
    ("dir:/x#sha256=123", "64 hex"),
])
def test_bad_specs_say_what_is_wrong(text, why):
    with pytest.raises(BadSourceSpec, match=why):
        source.parse_spec(text)


def make_tarball(tmp_path, version="5.10.999"):
    top = tmp_path / "src" / "linux-x"
    top.mkdir(parents=True)
    major, minor, sub = version.split(".")
    (top / "Makefile").write_text(f"VERSION = {major}\nPATCHLEVEL = {minor}\nSUBLEVEL = {sub}\n")
    (top / "mm").mkdir()
    (top / "mm" / "memory.c").write_text("int x;\n")
    archive = tmp_path / "linux-x.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(top, arcname="linux-x")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_tarball_fetch_verifies_and_unpacks_once(tmp_path):
    archive, digest = make_tarball(tmp_path)
    spec = source.parse_spec(f"tarball:file://{archive}#sha256={digest}")
    tree = source.fetch(spec, tmp_path / "cache")
    assert (tree / "mm" / "memory.c").read_text() == "int x;\n"
    assert source.release(tree) == "linux-5.10.999"
    assert not (tree / "mm" / "memory.c").stat().st_mode & 0o222, "the pristine tree is read-only"
    archive.unlink()
    assert source.fetch(spec, tmp_path / "cache") == tree, "second fetch reuses the cache"


def test_tarball_with_wrong_checksum_leaves_nothing_behind(tmp_path):
    archive, _ = make_tarball(tmp_path)
    spec = source.parse_spec(f"tarball:file://{archive}#sha256={'0' * 64}")
    with pytest.raises(ChecksumMismatch, match="expected 0000.*it was removed"):
        source.fetch(spec, tmp_path / "cache")
    assert list((tmp_path / "cache" / "sources").iterdir()) == []
    assert list((tmp_path / "cache" / "downloads").iterdir()) == [], "the download with the wrong checksum is gone"


def test_an_archive_without_a_kernel_tree_is_named(tmp_path):
    archive = tmp_path / "notes.tar.gz"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README").write_text("not a kernel\n")
    subprocess.run(["tar", "-czf", str(archive), "-C", str(tmp_path), "notes"], check=True)
    spec = source.parse_spec(f"tarball:file://{archive}#sha256={files.sha256_of(archive)}")
    with pytest.raises(NotAKernelArchive, match=f"{archive.name} does not hold a kernel tree"):
        source.fetch(spec, tmp_path / "cache")
    assert list((tmp_path / "cache" / "sources").iterdir()) == []




def test_git_spec_archives_the_ref(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "Makefile").write_text("VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 1\n")
    git(repo, "add", "Makefile")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    git(repo, "tag", "v1")
    (repo / "Makefile").write_text("VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 2\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    tree = source.fetch(source.parse_spec(f"git:{repo}@v1"), tmp_path / "cache")
    assert source.release(tree) == "linux-5.10.1"
    with pytest.raises(GitRefMissing, match="no-such-ref"):
        source.fetch(source.parse_spec(f"git:{repo}@no-such-ref"), tmp_path / "cache")


def test_dir_spec_is_used_as_is_but_must_be_a_kernel_tree(tmp_path, fake_tree):
    assert source.fetch(source.parse_spec(f"dir:{fake_tree}"), tmp_path) == fake_tree
    with pytest.raises(NotAKernelTree):
        source.fetch(source.parse_spec(f"dir:{tmp_path}"), tmp_path)


def commit_all(repo, message="base"):
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


@pytest.fixture
def git_tree(fake_tree):
    """The fake kernel tree as a git work tree with one commit, build outputs ignored."""
    (fake_tree / ".gitignore").write_text("*.o\n/build-output/\n")
    git(fake_tree, "init", "-q")
    commit_all(fake_tree)
    return fake_tree


def key_of(tree):
    return source.open_tree(source.parse_spec(f"dir:{tree}"), tree.parent / "cache").key


def test_a_git_tree_key_follows_its_content_not_its_makefile(git_tree):
    first = source.open_tree(source.parse_spec(f"dir:{git_tree}"), git_tree.parent / "cache")
    assert first.key.startswith("dir-") and first.private and "mm/memory.c" in first.files
    assert first.made_from["git_commit"] == subprocess.run(["git", "-C", git_tree, "rev-parse", "HEAD"],
                                                           capture_output=True, text=True).stdout.strip()
    assert first.made_from["changed_files"] == 0 and first.made_from["untracked_files"] == 0
    assert key_of(git_tree) == first.key, "an untouched tree keeps its key"
    memory = git_tree / "mm" / "memory.c"
    stamp = (git_tree / "Makefile").stat().st_mtime_ns
    memory.write_text(memory.read_text() + "int edited;\n")
    edited = source.state_of(git_tree)
    assert edited.key != first.key and edited.made_from["changed_files"] == 1
    assert (git_tree / "Makefile").stat().st_mtime_ns == stamp
    (git_tree / "mm" / "new.c").write_text("int added;\n")
    untracked = source.state_of(git_tree)
    assert untracked.key not in (first.key, edited.key) and untracked.made_from["untracked_files"] == 1
    assert "mm/new.c" in untracked.files
    (git_tree / "mm" / "new.c").write_text("int added_too;\n")
    assert source.state_of(git_tree).key != untracked.key, "an untracked file counts by its content"
    (git_tree / "mm" / "new.c").unlink()
    (git_tree / "nested").mkdir()
    git(git_tree / "nested", "init", "-q")
    (git_tree / "mm" / "memory.o").write_text("object")
    (git_tree / "build-output").mkdir()
    (git_tree / "build-output" / "x").write_text("ignored")
    ignored = source.state_of(git_tree)
    assert ignored.key == edited.key, "ignored files are not the tree's content"
    assert "mm/memory.o" not in ignored.files and "build-output/x" not in ignored.files


def test_a_branch_switch_changes_the_key_and_switching_back_restores_it(git_tree):
    master = key_of(git_tree)
    git(git_tree, "checkout", "-q", "-b", "other")
    assert key_of(git_tree) == master, "the same commit on another branch is the same tree"
    (git_tree / "mm" / "memory.c").write_text("int other;\n")
    commit_all(git_tree, "other")
    other = key_of(git_tree)
    assert other != master
    git(git_tree, "checkout", "-q", "-")
    assert key_of(git_tree) == master
    (git_tree / "mm" / "memory.c").write_text("int stashed;\n")
    assert key_of(git_tree) != master
    git(git_tree, "stash", "-q")
    assert key_of(git_tree) == master, "git stash takes the tree back to its commit"


def test_a_tree_outside_git_is_keyed_by_its_files(fake_tree):
    first = source.state_of(fake_tree)
    assert "listing_sha256" in first.made_from and first.made_from["files"] == len(first.files)
    assert source.state_of(fake_tree).key == first.key
    memory = fake_tree / "mm" / "memory.c"
    memory.write_text(memory.read_text().replace("count != 1", "count >= 2"))    # the same size
    os.utime(memory, ns=(memory.stat().st_atime_ns, memory.stat().st_mtime_ns + 1_000_000))
    assert source.state_of(fake_tree).key != first.key
    (fake_tree / "mm" / "link").symlink_to("memory.c")
    assert "mm/link" in source.state_of(fake_tree).files


def test_a_tree_in_a_repository_that_ignores_it_is_keyed_by_its_files(tmp_path, fake_tree):
    # Debian's linux-source tree ignores everything at its top (/*) in its own .gitignore
    (fake_tree / ".gitignore").write_text("/*\n!/debian/\n")
    git(fake_tree, "init", "-q")
    git(fake_tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    state = source.state_of(fake_tree)
    assert "listing_sha256" in state.made_from and "mm/memory.c" in state.files
    assert not [name for name in state.files if name.startswith(".git/")], "git's own files are not the tree"
    git(fake_tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "again")
    assert source.state_of(fake_tree).key == state.key


def test_a_private_copy_holds_the_listed_files_and_refuses_a_tree_that_changed(tmp_path, git_tree):
    (git_tree / "mm" / "memory.o").write_text("stale object")
    tree = source.state_of(git_tree)
    copy = tmp_path / "copy"
    source.copy_private(tree, copy, "base")
    assert (copy / "mm" / "memory.c").read_text() == (git_tree / "mm" / "memory.c").read_text()
    assert (copy / "mm" / "memory.c").stat().st_ino != (git_tree / "mm" / "memory.c").stat().st_ino
    assert not (copy / "mm" / "memory.o").exists() and not (copy / ".git").exists()
    (git_tree / "mm" / "memory.c").write_text("int changed_meanwhile;\n")
    with pytest.raises(TreeChanged, match=f"The tree {git_tree} changed between reading it and copying it for the "
                                          f"build of base \\(its key went from {tree.key} to dir-"):
        source.copy_private(tree, tmp_path / "second", "base")
    assert not (tmp_path / "second").exists()
    unreadable = source.Tree(tree.path, source.state_of(git_tree).key, {}, (*tree.files, "mm/not-there.c"))
    with pytest.raises(CommandFailed, match="cpio"):
        source.copy_private(unreadable, tmp_path / "third", "base")
    assert not (tmp_path / "third").exists(), "a failed copy leaves nothing behind"


def test_two_trees_in_one_repository_have_their_own_keys(tmp_path, fake_tree):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(fake_tree, repo / "linux-a")
    shutil.copytree(fake_tree, repo / "linux-b")
    (repo / "linux-b" / "mm" / "memory.c").write_text("int b;\n")
    git(repo, "init", "-q")
    commit_all(repo)
    first, second = source.state_of(repo / "linux-a"), source.state_of(repo / "linux-b")
    assert first.key != second.key and first.made_from["git_commit"] == second.made_from["git_commit"]
    assert "mm/memory.c" in first.files and not [name for name in first.files if "linux-b" in name]
    (repo / "NOTES").write_text("a commit elsewhere in the repository\n")
    commit_all(repo, "notes")
    assert source.state_of(repo / "linux-a").key == first.key, "only the tree's own folder counts"


def test_a_file_gone_since_it_was_listed_is_hashed_as_gone(tmp_path):
    assert source._content_of(tmp_path / "vanished") == ("gone", 0)


def test_a_fetched_tree_is_keyed_by_its_name_and_linked_whole(tmp_path):
    archive, digest = make_tarball(tmp_path)
    tree = source.open_tree(source.parse_spec(f"tarball:file://{archive}#sha256={digest}"), tmp_path / "cache")
    assert tree.key == tree.path.name == f"tarball-{digest[:16]}" and not tree.private


def small_disk(monkeypatch, free: int):
    monkeypatch.setattr(files, "_file_system_of", lambda path: (Path("/small"), free))


def test_a_tarball_too_big_for_the_disk_is_refused_before_it_is_written(tmp_path, monkeypatch):
    archive, digest = make_tarball(tmp_path)
    spec = source.parse_spec(f"tarball:file://{archive}#sha256={digest}")
    small_disk(monkeypatch, archive.stat().st_size)      # the archive fits, the tree it unpacks to does not
    with pytest.raises(NotEnoughSpace, match=rf"^No space left on the file system at /small for {archive.name} and "
                                             rf"the tree it unpacks to: it needs .* in {tmp_path}/cache/downloads/"):
        source.fetch(spec, tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*.part")) == [] and list((tmp_path / "cache" / "sources").iterdir()) == []
    assert not list((tmp_path / "cache" / "downloads").iterdir())


def test_an_archive_is_not_unpacked_onto_a_disk_without_room_for_its_tree(tmp_path, monkeypatch):
    archive, _ = make_tarball(tmp_path)
    unpacked = source.unpacked_size(archive)
    assert unpacked > archive.stat().st_size, "xz's index gives the size of the tar"
    small_disk(monkeypatch, unpacked - 1)
    with pytest.raises(NotEnoughSpace, match=r"for the tree of linux-x.tar.xz: it needs 0 MiB in .*\(0 MiB missing\)"):
        source._untar_single_top(archive, tmp_path / "tree")


def test_mirror_uri_from_deb822_and_one_line_sources(tmp_path):
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian.mirror_uri(tmp_path / "none.list", parts) == "http://mirror.example/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("deb [arch=amd64] https://other.example/debian bookworm main\n")
    assert debian.mirror_uri(one_line, tmp_path / "empty") == "https://other.example/debian"
    with pytest.raises(MirrorNotFound):
        debian.mirror_uri(tmp_path / "none.list", tmp_path / "empty")


def test_unreachable_mirror_is_a_one_line_download_error(tmp_path, monkeypatch):
    # A closed loopback port: apt-get fails at once, no traffic leaves the machine.
    monkeypatch.setattr(debian, "mirror_uri", lambda: "http://127.0.0.1:9/debian")
    monkeypatch.setattr(debian, "APT_RETRIES", 0)
    spec = source.parse_spec("debian:linux-source-5.10=5.10.223-1")
    expected = "Download of the package index of bullseye, bullseye-updates, .* from http://127.0.0.1:9/debian failed"
    with pytest.raises(DownloadFailed, match=expected) as caught:
        source.fetch(spec, tmp_path / "cache")
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / "cache").glob("downloads/*.deb"))
    assert not (tmp_path / "cache" / "sources").exists() or not list((tmp_path / "cache" / "sources").iterdir())


FAKE_APT = """#!/bin/sh
# a fake apt-get: 'update' writes an index into Dir::State::Lists, 'download' a .deb into the working folder
for word in "$@"; do case "$word" in -oDir::State::Lists=*) lists=${word#*=} ;; esac; done
for word in "$@"; do last=$word; done
case " $* " in
*" update "*) for suite in bullseye bookworm; do
                  echo Packages > "$lists/mirror_dists_${suite}_main_binary-amd64_Packages"
              done; echo "$*" >> "$APT_LOG" ;;
*" download "*) printf 'deb' > "${last%%=*}_${last#*=}_all.deb"; echo download >> "$APT_LOG" ;;
esac
"""
FAKE_APT_CACHE = """#!/bin/sh
# a fake apt-cache: madison lists the versions the fake index holds, show a package's sizes
for word in "$@"; do last=$word; done
case " $* " in
*" show "*) printf 'Package: %s\\nVersion: %s\\nInstalled-Size: 280\\nSize: 56132\\n' "${last%%=*}" "${last#*=}" ;;
*) echo "  $last |     2.10-2 | http://mirror.example/debian bullseye/main amd64 Packages"
   echo "  $last |     2.10-3 | http://mirror.example/debian bookworm/main amd64 Packages" ;;
esac
"""


def fake_apt(tmp_path, monkeypatch, apt_get=FAKE_APT, apt_cache=FAKE_APT_CACHE):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("apt-get", apt_get), ("apt-cache", apt_cache)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("APT_LOG", str(tmp_path / "apt.log"))
    monkeypatch.setattr(debian, "mirror_uri", lambda: "http://mirror.example/debian")


def test_a_debian_package_is_downloaded_once_with_a_private_apt_state(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch)
    downloads = tmp_path / "cache" / "downloads"
    deb = debian.download("hello=2.10-2", downloads)
    assert deb == downloads / "hello_2.10-2_all.deb" and deb.read_text() == "deb"
    state = downloads / ".apt-any"
    sources = (state / "sources.list").read_text().splitlines()
    assert sources[0] == f"deb [signed-by={debian.ARCHIVE_KEYRING}] http://mirror.example/debian bullseye main"
    assert f"[signed-by={debian.ARCHIVE_KEYRING}] http://mirror.example/debian-security bookworm-security main" \
        in sources[5] and len(sources) == 9, "every suite with its pockets, -security on debian-security"
    assert not (state / "cache").exists() and not list(state.glob("*.deb"))
    assert debian.download("hello=2.10-2", downloads) == deb, "the second call finds the download"
    log = (tmp_path / "apt.log").read_text().splitlines()
    assert log[-1] == "download" and len(log) == 2 and "-oAcquire::Retries=3" in log[0]
    # the fake mirror serves only bullseye and bookworm: the suites without an index are not said to be searched
    with pytest.raises(PackageNotFound, match=r"hello has no version 9-9 in the suites searched \(bullseye, "
                       r"bookworm\); versions there: 2.10-2, 2.10-3"):
        debian.download("hello=9-9", downloads)
    debian.download("hello=2.10-3", downloads, "bookworm")
    assert (downloads / ".apt-bookworm" / "sources.list").read_text().count("\n") == 1


def test_a_package_too_big_for_the_disk_is_refused_before_its_download(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch)
    downloads = tmp_path / "cache" / "downloads"
    needed = []
    small_disk(monkeypatch, 200 << 20)          # room for the lists, not for what room() asks
    with pytest.raises(NotEnoughSpace, match=r"at /small for the download of hello=2.10-2: it needs 1,000 MiB "
                                             rf"in {downloads}, 200 MiB are free \(800 MiB missing\)"):
        debian.download("hello=2.10-2", downloads, room=lambda size, installed: needed.append((size, installed))
                        or 1000 << 20)
    assert needed == [(56132, 280 * 1024)], "the sizes come from the package index"
    assert "download" not in (tmp_path / "apt.log").read_text().splitlines()
    assert not (downloads / ".apt-any").exists(), "nothing of the attempt is left on the full disk"


def test_no_list_is_fetched_onto_a_disk_without_room_for_the_lists(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch)
    small_disk(monkeypatch, 10 << 20)
    with pytest.raises(NotEnoughSpace, match=r"for the package lists of bullseye, bullseye-updates, .*: it needs "
                                             r"108 MiB"):
        debian.download("hello=2.10-2", tmp_path / "cache" / "downloads")
    with pytest.raises(NotEnoughSpace, match=r"for the package lists of bookworm: it needs 32 MiB"):
        debian.download("hello=2.10-2", tmp_path / "cache" / "downloads", "bookworm")
    assert not (tmp_path / "apt.log").exists(), "apt-get never ran"


WAITS_AFTER_A_WRITE_ERROR = """#!/bin/sh
# apt-get update on a full disk, as seen: the write error, then a wait that never ends
sleep 60 &
echo "Err:16 http://mirror.example/debian trixie/main amd64 Packages"
echo "  Write error - write (28: No space left on device) LZ4F: $PWD/lists/partial/trixie_Packages.lz4 Write error"
wait
"""


def test_an_apt_get_that_waits_after_a_write_error_is_stopped_at_once(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch, apt_get=WAITS_AFTER_A_WRITE_ERROR)
    downloads = tmp_path / "cache" / "downloads"
    started = time.monotonic()
    with pytest.raises(DiskFull, match="No space left on the file system at .* while writing .*trixie_Packages.lz4"):
        debian.download("hello=2.10-2", downloads)
    assert time.monotonic() - started < 10
    assert not (downloads / ".apt-any").exists() and not list(downloads.glob("*.deb"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the tree to another user")
def test_a_work_tree_of_another_user_is_still_read_as_git(git_tree):
    # git refuses a repository owned by someone else ("dubious ownership"): the harness, which runs the
    # tree's Makefile anyway, trusts it, rather than fall back to walking every build output
    subprocess.run(["chown", "-R", "nobody", str(git_tree)], check=True)
    refused = subprocess.run(["git", "-C", str(git_tree), "status"], capture_output=True, text=True)
    assert "dubious ownership" in refused.stderr
    state = source.state_of(git_tree)
    assert "git_commit" in state.made_from and "mm/memory.c" in state.files
