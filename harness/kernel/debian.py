"""Debian packages from the archive without touching the host's apt configuration.

A private apt state (sources list, lists, cache, empty status) points at the host's own
Debian mirror with another suite; apt-get checks the signature chain with the host's
archive keyring as usual.
"""

import os
import re
import shutil
from pathlib import Path

from harness import files, runner
from harness.errors import CommandFailed, DownloadFailed, MirrorNotFound

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCE_PARTS = Path("/etc/apt/sources.list.d")
ARCHIVE_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SUITE = "bullseye"
APT_RETRIES = 3


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


def download(package_version: str, downloads: Path, suite: str = SUITE) -> Path:
    """Download PACKAGE=VERSION into downloads (once) and return the .deb path."""
    package, _, version = package_version.partition("=")
    with files.locked(downloads.parent, f"apt-{suite}", f"the download of {package_version}"):
        existing = sorted(downloads.glob(f"{package}_{version.split(':')[-1]}_*.deb"))
        if existing:
            return existing[0]
        state = downloads / f".apt-{suite}"
        try:
            return _fetch(package_version, package, downloads, state, suite)
        finally:
            shutil.rmtree(state / "cache", ignore_errors=True)
            for partial in [*state.glob("*.deb"), *state.glob("*.deb.*"), *state.glob("lists/partial/*")]:
                partial.unlink()        # apt-get's half-written package or index


def _fetch(package_version: str, package: str, downloads: Path, state: Path, suite: str) -> Path:
    uri = mirror_uri()
    _write_private_state(state, uri, suite)
    options = _apt_options(state)
    try:
        update = runner.run(["apt-get", *options, "update"], timeout=600)
        if files.says_disk_full(update.output):
            raise files.disk_full(state / "lists")
        if not list((state / "lists").glob("*_Packages*")):
            problems = [line for line in update.output.splitlines() if line.startswith(("W:", "E:"))]
            raise DownloadFailed(what=f"the {suite} package index from {uri}",
                                 why=problems[0] if problems else "apt-get update fetched no index")
        runner.run(["apt-get", *options, "download", package_version], cwd=state, timeout=1800)
    except CommandFailed as error:
        raise DownloadFailed(what=package_version, why=f"apt-get: {error.fields['tail']}") from None
    fetched = sorted(state.glob(f"{package}_*.deb"))
    if not fetched:
        raise DownloadFailed(what=package_version, why="apt-get download produced no .deb")
    target = downloads / fetched[0].name
    fetched[0].rename(target)
    return target


def _write_private_state(state: Path, uri: str, suite: str) -> None:
    for sub in ("lists/partial", "cache/archives/partial", "parts"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    (state / "sources.list").write_text(f"deb [signed-by={ARCHIVE_KEYRING}] {uri} {suite} main\n")


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
    }
    if os.geteuid() == 0:
        settings["APT::Sandbox::User"] = "root"  # the private folders are not the _apt user's
    return [f"-o{name}={value}" for name, value in settings.items()]
