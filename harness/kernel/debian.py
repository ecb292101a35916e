"""Debian packages from the archive without touching the host's apt configuration.

A private apt state (sources list, lists, cache, empty status) points at the host's own
Debian mirror with the suites to search (every suite of SUITES with its -updates and
-security pockets, or the one suite a spec names); apt-get checks the signature chain with
the host's archive keyring as usual, and `apt-cache madison` says which suite holds the
version asked for. The space that the lists and the package need is checked before each is
fetched, and apt-get is stopped at its first write error or when the disk fills (on a full disk
it may wait for ever, after a write error or after only "Ign:" lines: so apt-get is told to print
the reason under each "Ign:" line, and a write error there stops it as well).
"""

import logging
import os
import re
import shutil
from pathlib import Path

from harness import files, runner
from harness.errors import CommandFailed, DiskFull, DownloadFailed, MirrorNotFound, NoSuchPackage, PackageNotFound

log = logging.getLogger("harness.debian")

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCE_PARTS = Path("/etc/apt/sources.list.d")
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SUITES = ("bullseye", "bookworm", "trixie")   # searched, each with its -updates and -security pockets
POCKETS = ("", "-updates", "-security")
APT_RETRIES = 3
# The lists of one suite's main component as apt keeps them (compressed, Acquire::GzipIndexes), with
# room for the download beside the list it becomes: bullseye 17, bookworm 19, trixie 21 MB on
# 2026-12-02; an -updates or -security pocket 1 MB at most.
LIST_BYTES = {"": 32 << 20, "-updates": 2 << 20, "-security": 2 << 20}


def mirror_uri(sources: Path = APT_SOURCES, parts: Path = APT_SOURCE_PARTS) -> str:
    """The URI of the host's main Debian archive entry (not security, not a third party)."""
    texts = []
    for path in [sources, *sorted(parts.glob("*.list")), *sorted(parts.glob("*.sources"))]:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    for uri in _uris("\n".join(texts)):
        if re.search(r"/debian/?$", uri):
            return uri.rstrip("/")
    raise MirrorNotFound(where=f"{sources} and {parts}")


def _uris(text: str):
    """URIs of enabled deb entries, one-line and deb822 styles."""
    for line in text.splitlines():
        line = line.strip()
        one_line = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
        if one_line:
            yield one_line.group(1)
        deb822 = re.match(r"URIs:\s*(.+)", line)
        if deb822:
            yield from deb822.group(1).split()


def download(package_version: str, downloads: Path, suite: str = "", room=lambda size, installed: size) -> Path:
    """Download PACKAGE=VERSION into downloads (once) and return the .deb path. The version is
    looked for in suite, or in every suite of SUITES the mirror serves when suite is empty.
    room(size, installed size) is the space the download and what follows it need in downloads;
    NotEnoughSpace before the download when it is not free."""
    package, _, version = package_version.partition("=")
    state_name = f"apt-{suite or 'any'}"
    with files.locked(downloads.parent, state_name, f"the download of {package_version}"):
        existing = sorted(downloads.glob(f"{package}_{version.split(':')[-1]}_*.deb"))
        if existing:
            return existing[0]
        state = downloads / f".{state_name}"
        try:
            return _fetch(package, version, downloads, state, [suite] if suite else searched_suites(), room)
        except DiskFull:
            shutil.rmtree(state, ignore_errors=True)    # lists are fetched anew; the space is the user's
            raise
        finally:
            shutil.rmtree(state / "cache", ignore_errors=True)
            for partial in [*state.glob("*.deb"), *state.glob("*.deb.*"), *state.glob("lists/partial/*")]:
                partial.unlink()        # apt-get's half-written package or index


def newest(package: str, downloads: Path) -> tuple[str, str]:
    """(version, sha256 of its .deb) of the newest package of that name in the suites searched, from the signed
    package index (nothing is downloaded but the lists); PackageNotFound when no suite holds it."""
    suites = searched_suites()
    with files.locked(downloads.parent, "apt-any", f"the package lists for {package}"):
        state = downloads / ".apt-any"
        _write_private_state(state, mirror_uri(), suites)
        options = _apt_options(state)
        try:
            _update(options, state, mirror_uri(), suites)
        finally:
            shutil.rmtree(state / "cache", ignore_errors=True)
        policy = runner.output_of(["apt-cache", *options, "policy", package], echo=False)
        candidate = re.search(r"^\s*Candidate:\s*(\S+)", policy, re.M)
        if not candidate or candidate.group(1) == "(none)":
            raise NoSuchPackage(package=package, suites=", ".join(suites))
        version = candidate.group(1)
        shown = runner.output_of(["apt-cache", *options, "show", f"{package}={version}"], echo=False)
    digest = re.search(r"^SHA256: ([0-9a-f]{64})$", shown, re.M)
    if not digest:
        raise DownloadFailed(what=f"{package}={version}", why="the package index gives no SHA256 for it")
    return version, digest.group(1)


def searched_suites() -> list[str]:
    return [suite + pocket for suite in SUITES for pocket in POCKETS]


def archive_line(uri: str, suite: str) -> str:
    """The sources.list line of suite on the mirror at uri (-security lives beside /debian, in
    /debian-security, on Debian's mirrors)."""
    if suite.endswith("-security"):
        uri = re.sub(r"/debian$", "/debian-security", uri)
    return f"deb [signed-by={ARCHIVE_KEYRING}] {uri} {suite} main"


def _fetch(package: str, version: str, downloads: Path, state: Path, suites: list[str], room) -> Path:
    uri = mirror_uri()
    _write_private_state(state, uri, suites)
    options = _apt_options(state)
    try:
        found = _update(options, state, uri, suites)
        where = _suite_of(options, package, version, found)
        size, installed = _sizes(options, package, version)
        log.info("%s=%s: found in %s (%s, %s installed)", package, version, where, files.mib(size),
                 files.mib(installed))
        files.require_space(downloads, room(size, installed), f"the download of {package}={version}")
        runner.run(["apt-get", *options, "download", f"{package}={version}"], cwd=state, timeout=1800,
                   stop_on=files.WRITE_ERROR, watch_space=state)
    except CommandFailed as error:
        raise DownloadFailed(what=f"{package}={version}", why=f"apt-get: {error.fields['tail']}") from None
    fetched = sorted(state.glob(f"{package}_*.deb"))
    if not fetched:
        raise DownloadFailed(what=f"{package}={version}", why="apt-get download produced no .deb")
    target = downloads / fetched[0].name
    fetched[0].rename(target)
    return target


def _update(options: list[str], state: Path, uri: str, suites: list[str]) -> list[str]:
    """apt-get update; the suites whose index arrived (a suite the mirror lacks is left out)."""
    held = sum(path.stat().st_size for path in (state / "lists").glob("*_Packages*"))
    needed = sum(LIST_BYTES[next((p for p in POCKETS[1:] if suite.endswith(p)), "")] for suite in suites)
    files.require_space(state / "lists", max(0, needed - held), f"the package lists of {', '.join(suites)}")
    update = runner.run(["apt-get", *options, "update"], cwd=state, timeout=600, check=False,
                        stop_on=files.WRITE_ERROR, watch_space=state / "lists")
    lists = [path.name for path in (state / "lists").glob("*_Packages*")]
    found = [suite for suite in suites if any(f"_dists_{suite}_main_" in name for name in lists)]
    if not found:
        problems = [line for line in update.output.splitlines() if line.startswith(("W:", "E:"))]
        raise DownloadFailed(what=f"the package index of {', '.join(suites)} from {uri}",
                             why=problems[0] if problems else "apt-get update fetched no index")
    return found


def _suite_of(options: list[str], package: str, version: str, searched: list[str]) -> str:
    """The suite that holds package at version, from apt-cache madison; PackageNotFound when none does."""
    rows = [[cell.strip() for cell in line.split("|")] for line in
            runner.output_of(["apt-cache", *options, "madison", package]).splitlines() if line.count("|") >= 2]
    for _, candidate, origin, *_ in rows:
        if candidate == version:
            return origin.split()[1].split("/")[0] if len(origin.split()) > 1 else origin
    versions = ", ".join(dict.fromkeys(row[1] for row in rows)) or "none"
    raise PackageNotFound(package=package, version=version, suites=", ".join(searched), versions=versions)


def _sizes(options: list[str], package: str, version: str) -> tuple[int, int]:
    """The .deb's size and its installed size in bytes, from the package index."""
    text = runner.output_of(["apt-cache", *options, "show", f"{package}={version}"], echo=False)
    fields = dict(re.findall(r"^(Size|Installed-Size): (\d+)$", text, re.M))
    return int(fields.get("Size", 0)), int(fields.get("Installed-Size", 0)) * 1024


def _write_private_state(state: Path, uri: str, suites: list[str]) -> None:
    for sub in ("lists/partial", "cache/archives/partial", "parts"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "sources.list").write_text("".join(archive_line(uri, suite) + "\n" for suite in suites))


def _apt_options(state: Path) -> list[str]:
    settings = {
        "Dir::Etc::SourceList": state / "sources.list",
        "Dir::Etc::SourceParts": state / "parts",
        "Dir::State::Lists": state / "lists",
        "Dir::State::status": state / "status",
        "Dir::Cache": state / "cache",
        "Debug::NoLocking": "1",
        "Acquire::Languages": "none",
        "Acquire::Retries": str(APT_RETRIES),
        "Acquire::GzipIndexes": "true",             # lists kept compressed: a third of the space
        # the reason under an "Ign:" line: a list that could not be written is ignored, with no other
        # sign that the disk was full but for a moment (apt removes the partial file) a poll may miss
        "Acquire::Progress::Ignore::ShowErrorText": "true",
    }
    if os.geteuid() == 0:
        settings["APT::Sandbox::User"] = "root"  # the private folders are not the _apt user's
    return [f"-o{name}={value}" for name, value in settings.items()]
