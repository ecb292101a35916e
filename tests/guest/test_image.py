import subprocess

import pytest

from harness.guest import image


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return image.build(tmp_path_factory.mktemp("cache"))


def listing(path) -> set[str]:
    names = subprocess.run(["cpio", "-it", "--quiet", "-F", str(path)], capture_output=True, text=True, check=True)
    return {"/" + name for name in names.stdout.split()}


def test_image_holds_the_guest_programs_and_init(built):
    names = listing(built.path)
    for program in ("/init", "/bin/busybox", "/usr/sbin/dropbear", "/usr/bin/redis-server", "/usr/bin/redis-cli",
                    "/usr/bin/stress-ng", "/etc/passwd", "/root/.ssh", "/proc", "/sys", "/dev"):
        assert program in names
    assert names == set(built.files) | {"/" + part for f in built.files for part in _parents(f)}


def test_programs_in_the_image_are_executable(built):
    verbose = subprocess.run(["cpio", "-itv", "--quiet", "-F", str(built.path)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    modes = {line.split()[-1]: line.split()[0] for line in verbose}
    for program in ("init", "usr/bin/swapcow", "usr/bin/redisdrive", "usr/bin/harness-collect", "usr/bin/stress-ng"):
        assert modes[program].startswith("-rwx"), (program, modes[program])


def _parents(path: str):
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_every_shared_library_the_programs_need_is_inside(built):
    names = listing(built.path)
    for program in ("stress-ng", "dropbear", "redis-server"):
        needed = image.shared_libraries([image.host_path(program)])
        assert needed, program
        assert {str(lib) for lib in needed} <= names, program
    assert len(image.shared_libraries([image.host_path("stress-ng")])) >= 10, "stress-ng 0.15 needs some 17"
    assert "/usr/bin/perf" not in names, "the guest counts with harness-collect, perf_event_open(2) itself"


def test_init_reports_readiness_and_sets_up_swap_and_ssh():
    script = image.init_script()
    assert script.startswith("#!/bin/busybox sh")
    assert image.READY_MARKER in script
    for needed in ("mkswap", "swapon", "dropbear", "cgroup2", "tracefs", "ip link set eth0 up"):
        assert needed in script


def test_image_is_cached_by_content(tmp_path_factory, built):
    stamp = built.path.stat().st_mtime_ns
    again = image.build(built.path.parent.parent)
    assert again.digest == built.digest and again.path.stat().st_mtime_ns == stamp
    assert image.digest_of({"/a": "x"}) != image.digest_of({"/a": "y"})


def test_boot_initrd_appends_this_boots_files(tmp_path, built):
    keys_root = tmp_path / "keys"
    (keys_root / "etc").mkdir(parents=True)
    (keys_root / "etc" / "boot-secret").write_text("s")
    initrd = image.boot_initrd(built, keys_root, tmp_path / "initrd.cpio")
    assert initrd.read_bytes().startswith(built.path.read_bytes())
    appended = tmp_path / "appended.cpio"
    appended.write_bytes(initrd.read_bytes()[built.path.stat().st_size:])
    assert "/etc/boot-secret" in listing(appended)
