"""Debian packages through a private apt state: the newest version of a package from the signed index,
and the download's failures (apt-get and apt-cache faked on PATH, as in tests/kernel/test_source.py)."""

import time

import pytest

from harness.errors import DiskFull, DownloadFailed, NoSuchPackage
from harness.kernel import debian
from tests.kernel.test_source import FAKE_APT, fake_apt

DIGEST = "5f2b0c4ed8e8dcd35ac32a6f6b2ae68d0bd5c2abf4bc3c2fb7e9c1aa4e3b2d10"

# a fake apt-cache over the fake index: policy gives the candidate of FAKE_CANDIDATE, show its SHA256 (none when
# FAKE_SHA256 is empty)
FAKE_POLICY = """#!/bin/sh
for word in "$@"; do last=$word; done
echo "$*" >> "$APT_LOG"
case " $* " in
*" policy "*) printf '%s:\\n  Installed: (none)\\n  Candidate: %s\\n  Version table:\\n' "$last" "$FAKE_CANDIDATE" ;;
*" show "*) printf 'Package: %s\\nVersion: %s\\n' "${last%%=*}" "${last#*=}"
            [ -n "$FAKE_SHA256" ] && printf 'SHA256: %s\\n' "$FAKE_SHA256"; true ;;
esac
"""


@pytest.fixture
def index(tmp_path, monkeypatch):
    fake_apt(tmp_path, monkeypatch, apt_cache=FAKE_POLICY)
    monkeypatch.setenv("FAKE_CANDIDATE", "6.1.119-1")
    monkeypatch.setenv("FAKE_SHA256", DIGEST)
    return tmp_path / "cache" / "downloads"


def test_the_newest_package_is_read_from_the_signed_index_without_a_download(tmp_path, index):
    assert debian.newest("linux-source-6.1", index) == ("6.1.119-1", DIGEST)
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls[0].endswith(" update") and calls[1].endswith(" policy linux-source-6.1")
    assert calls[2].endswith(" show linux-source-6.1=6.1.119-1") and len(calls) == 3
    assert "-oDir::State::Lists=" + str(index / ".apt-any" / "lists") in calls[1], "the private state, not the host's"
    assert not list(index.glob("*.deb")) and not (index / ".apt-any" / "cache").exists()


def test_a_package_no_suite_holds_is_named_with_the_suites_searched(index, monkeypatch):
    monkeypatch.setenv("FAKE_CANDIDATE", "(none)")
    with pytest.raises(NoSuchPackage, match=r"^Debian has no package linux-source-9.9 in the suites searched "
                       r"\(bullseye, bullseye-updates, bullseye-security, bookworm, .*trixie-security\): --kernel "
                       "takes a series Debian packages"):
        debian.newest("linux-source-9.9", index)


def test_an_index_without_the_packages_digest_is_a_download_error(index, monkeypatch):
    monkeypatch.setenv("FAKE_SHA256", "")
    with pytest.raises(DownloadFailed, match=r"^Download of linux-source-6.1=6.1.119-1 failed \(the package index "
                                             r"gives no SHA256 for it\): check the network or the mirror, then retry$"):
        debian.newest("linux-source-6.1", index)


FAILS_HALF_WAY = FAKE_APT.replace(
    '''*" download "*) printf 'deb' > "${last%%=*}_${last#*=}_all.deb"; echo download >> "$APT_LOG" ;;''',
    '''*" download "*) printf 'de' > "${last%%=*}_${last#*=}_all.deb.FAILED"
                echo "E: Failed to fetch http://mirror.example/debian/pool/h/hello.deb  404  Not Found" >&2
                exit 100 ;;''')
SAYS_NOTHING = FAKE_APT.replace('''printf 'deb' > "${last%%=*}_${last#*=}_all.deb"; ''', "")


def test_a_download_apt_get_refuses_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    assert FAILS_HALF_WAY != FAKE_APT
    fake_apt(tmp_path, monkeypatch, apt_get=FAILS_HALF_WAY)
    downloads = tmp_path / "cache" / "downloads"
    with pytest.raises(DownloadFailed, match=r"^Download of hello=2.10-2 failed \(apt-get: .*E: Failed to fetch "
                                             r"http://mirror.example/debian/pool/h/hello.deb  404  Not Found\)"):
        debian.download("hello=2.10-2", downloads)
    assert not list((downloads / ".apt-any").glob("*.deb*")), "apt-get's half-written package is gone"


def test_an_apt_get_that_downloads_nothing_is_a_download_error(tmp_path, monkeypatch):
    assert SAYS_NOTHING != FAKE_APT
    fake_apt(tmp_path, monkeypatch, apt_get=SAYS_NOTHING)
    with pytest.raises(DownloadFailed, match=r"^Download of hello=2.10-2 failed \(apt-get download produced no "
                                             r"\.deb\)"):
        debian.download("hello=2.10-2", tmp_path / "cache" / "downloads")


# apt-get update on a disk that was full for a moment: like apt 2.6, it prints the reason under an "Ign:" line
# only when Acquire::Progress::Ignore::ShowErrorText is set, then waits (for ever, here a minute)
IGNORES_A_FULL_DISK = """#!/bin/sh
echo 'Get:16 http://mirror.example/debian trixie/main amd64 Packages [13.3 MB]'
echo 'Ign:16 http://mirror.example/debian trixie/main amd64 Packages'
case " $* " in *" -oAcquire::Progress::Ignore::ShowErrorText=true "*)
    echo '  Error writing to file - write (28: No space left on device) [IP: 192.0.2.1 80]' ;;
esac
sleep 60
"""


def test_an_index_ignored_for_a_write_error_stops_apt_get_as_a_full_disk(tmp_path, monkeypatch):
    # the space watcher alone can miss the moment the disk was full: apt removes the partial list at once
    fake_apt(tmp_path, monkeypatch, apt_get=IGNORES_A_FULL_DISK)
    downloads = tmp_path / "cache" / "downloads"
    started = time.monotonic()
    with pytest.raises(DiskFull, match=f"while writing {downloads}/.apt-any/lists:"):
        debian.download("hello=2.10-2", downloads)
    assert time.monotonic() - started < 30
    assert not (downloads / ".apt-any").exists()
