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
    assert len(lines) == len(doctor.HOST) == len(doctor.PREREQUISITES) - 1, "the sshd is for the tests only"
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
