import fcntl
import os

from click.testing import CliRunner

from harness import cache
from harness.cli import main


def make_cache(root):
    for number, key in enumerate(["old", "mid", "new"]):
        build = root / "builds" / key
        (build / "linux").mkdir(parents=True)
        (build / "linux" / "bzImage").write_bytes(os.urandom(300_000))
        (build / "build.json").write_text("{}")
        os.utime(build / "build.json", (1_000_000 + number, 1_000_000 + number))
    (root / "logs" / "boots").mkdir(parents=True)
    (root / "logs" / "a-run.log").write_text("x" * 50_000)
    (root / "logs" / "boots" / "console-base.log").write_text("y" * 50_000)
    (root / "images" / "programs").mkdir(parents=True)
    (root / "images" / "base-1.cpio").write_bytes(os.urandom(100_000))


def test_entries_are_most_recently_used_first_and_sizes_count_each_inode_once(tmp_path):
    make_cache(tmp_path)
    assert [p.name for p in cache.entries(tmp_path, "builds")] == ["new", "mid", "old"]
    os.link(tmp_path / "builds" / "old" / "linux" / "bzImage", tmp_path / "images" / "linked")
    usage = cache.usage(tmp_path)
    assert 900_000 <= usage["builds"] < 1_000_000 and 100_000 <= usage["images"] < 120_000


def test_clean_keeps_the_recent_ones_leaves_busy_ones_and_reports_the_space(tmp_path):
    make_cache(tmp_path)
    (tmp_path / "locks").mkdir()
    with open(tmp_path / "locks" / "builds-mid.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # another harness is building "mid"
        result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "clean", "--builds", "--logs",
                                           "--keep", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("builds: removed 1, kept 1, 1 in use by another harness; freed ")
    assert lines[1].startswith("logs: removed 2, kept 1; freed "), "the kept one is this command's own log"
    assert [p.name.split("-", 2)[-1] for p in (tmp_path / "logs").glob("*.log")] == ["clean.log"]
    assert sorted(p.name for p in (tmp_path / "builds").iterdir()) == ["mid", "new"]
    assert (tmp_path / "images" / "base-1.cpio").exists(), "only the parts asked for"
    nothing = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "clean"])
    assert "nothing removed" in nothing.output and (tmp_path / "builds" / "new").exists()
    everything = CliRunner().invoke(main, ["--cache-dir", str(tmp_path), "clean", "--all"])
    assert everything.exit_code == 0 and not list((tmp_path / "builds").iterdir())
    assert not list((tmp_path / "images").glob("*.cpio"))
