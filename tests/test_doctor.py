from pathlib import Path

from harness import doctor


def test_every_prerequisite_names_a_debian_package():
    names = {item.name for item in doctor.PREREQUISITES}
    for needed in ("C compiler", "make", "flex", "bison", "bc", "libelf headers", "libssl headers", "ccache",
                   "qemu-system-x86_64", "cpio", "static busybox", "redis-server", "dropbear", "perf"):
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
    assert len(lines) == len(doctor.PREREQUISITES)
    assert all(line.startswith(("ok", "MISSING")) for line in lines)


def test_install_command_is_apt_get():
    assert doctor.install_command(["cpio", "ccache"]) == [
        "apt-get", "install", "-y", "--no-install-recommends", "cpio", "ccache"]
