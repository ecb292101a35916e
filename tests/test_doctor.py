import os
from pathlib import Path

from harness import doctor


def test_every_prerequisite_names_a_debian_package():
    names = {item.name for item in doctor.PREREQUISITES}
    for needed in ("C compiler", "make", "flex", "bison", "bc", "libelf headers", "libssl headers", "ccache",
                   "qemu-system-x86_64", "cpio", "static busybox", "redis-server", "dropbear", "stress-ng"):
        assert needed in names
    assert all(item.package for item in doctor.PREREQUISITES)


def test_missing_items_say_how_to_get_them():
    item = doctor.Prerequisite("frobnicator", "frob-tools", "testing", command="no-such-frobnicator")
    assert item.problem() == "command no-such-frobnicator not found"
    assert doctor.Prerequisite("header", "libx-dev", "testing", file="/no/such.h").problem() == "/no/such.h not found"


def test_static_check_reads_the_elf_program_headers(tmp_path):
    assert doctor.is_dynamic_elf(Path("/bin/sh"))
    assert not doctor.is_dynamic_elf(Path(__file__)), "not an ELF file"
    dynamic = doctor.Prerequisite("sh", "dash", "testing", command="/bin/sh", static=True)
    assert "dynamically linked" in dynamic.problem()


def test_report_has_one_line_per_item():
    lines = doctor.report()
    assert len(lines) == len(doctor.HOST) == len(doctor.PREREQUISITES) - 2, "sshd, chromium: the tests'"
    assert all(line.startswith(("ok", "MISSING")) for line in lines)


def test_a_worker_needs_only_what_boots_the_kernels_it_is_sent():
    assert [item.package for item in doctor.WORKER] == ["qemu-system-x86", "cpio"]
    facts = {"host": "w1", "cores": 8, "memory_mb": 32000, "kvm": False, "code": "abc", "python": "3.11.7",
             "distributed": "2026.8.0", "qemu": "", "executable": "/opt/venv/bin/python", "cache": "/c",
             "install": "apt-get install -y --no-install-recommends qemu-system-x86"}
    lines = doctor.worker_lines(facts)
    assert "guests run under TCG" in lines[1]
    assert lines[-1] == "install    apt-get install -y --no-install-recommends qemu-system-x86"


def test_install_command_is_apt_get():
    assert doctor.install_command(["cpio", "ccache"]) == [
        "apt-get", "install", "-y", "--no-install-recommends", "cpio", "ccache"]


FAKE_APT_GET = """#!/bin/sh
# records each call with the frontend it was given
echo "$DEBIAN_FRONTEND $*" >> "$APT_LOG"
"""


def test_install_fetches_the_lists_then_the_missing_packages_only(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT_GET)
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("APT_LOG", str(tmp_path / "apt.log"))
    items = (doctor.Prerequisite("frobnicator", "frob-tools", "testing", command="no-such-frobnicator"),
             doctor.Prerequisite("frob header", "frob-tools", "testing", file=str(tmp_path / "frob.h")),
             doctor.Prerequisite("shell", "dash", "testing", command="sh"),
             doctor.Prerequisite("widget", "libwidget-dev", "testing", file=str(tmp_path / "widget.h")))
    assert doctor.missing_packages(items) == ["frob-tools", "libwidget-dev"]
    assert doctor.install_missing(items) == ["frob-tools", "libwidget-dev"]
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "noninteractive update", "noninteractive install -y --no-install-recommends frob-tools libwidget-dev"]
    (tmp_path / "frob.h").write_text("")
    (tmp_path / "widget.h").write_text("")
    assert doctor.install_missing(items[1:]) == [], "nothing missing: apt-get is not run"
    assert len((tmp_path / "apt.log").read_text().splitlines()) == 2


def test_what_doctor_says_about_kvm_and_the_timings():
    assert doctor.kvm_line(True, "a guest printed its first line in 0.4 s") == (
        "kvm        works (a guest printed its first line in 0.4 s): guests run at hardware speed, and bench times "
        "each cell on boots of its own")
    assert doctor.kvm_line(None, "no kernel yet") == "kvm        untested: no kernel yet"
    assert doctor.kvm_line(False, "/dev/kvm cannot be opened") == (
        "kvm        does not work here (/dev/kvm cannot be opened): every guest runs under TCG, emulated, several "
        "times slower; counts are exact, but timings are not hardware figures (reports say so)")
