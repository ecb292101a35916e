import json

import pytest

from harness import bench
from harness.errors import CommandFailed, KconfigOptionDropped, MissingSymbol, PatchDoesNotApply, TreeChanged
from harness.experiment import Variant
from harness.kernel import build, kconfig, source
from tests.kernel.test_patches import FORMAT_PATCH

PROBES = ("wp_page_copy", "do_wp_page", "do_swap_page")


@pytest.fixture
def fragments(tmp_path):
    path = tmp_path / "guest.config"
    path.write_text("CONFIG_SWAP=y\nCONFIG_MEMCG=y\n")
    return [kconfig.Fragment("guest", path)]


@pytest.fixture
def patch(tmp_path):
    path = tmp_path / "0001-first.patch"
    path.write_text(FORMAT_PATCH)
    return path


def run_build(fake_tree, fragments, cache, variant=Variant("base"), rebuild=False, probes=PROBES):
    return build.build_variant(variant, source.Tree(fake_tree, "fake"), fragments, probes, cache, rebuild)


def test_build_produces_kernel_map_config_and_record(tmp_path, fake_tree, fragments):
    result = run_build(fake_tree, fragments, tmp_path / "cache")
    assert result.bzimage.is_file() and result.system_map.is_file()
    assert "CONFIG_SWAP=y" in result.config.read_text()
    assert result.release == "linux-5.10.999"
    assert result.patch_hash == "none"
    assert result.directory.parent == tmp_path / "cache" / "builds"
    assert json.loads((result.directory / "build.json").read_text())["key"] == result.key
    assert "  CC      mm/memory.o" in result.log_file.read_text()


def test_cached_build_is_reused_and_rebuild_forces(tmp_path, fake_tree, fragments):
    first = run_build(fake_tree, fragments, tmp_path / "cache")
    stamp = first.bzimage.stat().st_mtime_ns
    again = run_build(fake_tree, fragments, tmp_path / "cache", variant=Variant("other-name"))
    assert again.key == first.key and again.variant == "other-name"
    assert again.bzimage.stat().st_mtime_ns == stamp, "not rebuilt"
    forced = run_build(fake_tree, fragments, tmp_path / "cache", rebuild=True)
    assert forced.bzimage.stat().st_mtime_ns != stamp


def test_patched_variant_differs_and_has_its_own_key(tmp_path, fake_tree, fragments, patch):
    base = run_build(fake_tree, fragments, tmp_path / "cache")
    patched = run_build(fake_tree, fragments, tmp_path / "cache", Variant("patched", (patch,)))
    assert patched.key != base.key
    assert patched.patches == ("0001-first.patch",) and len(patched.patch_hash) == 16
    assert "count > 1" in (patched.tree / "mm" / "memory.c").read_text()
    assert "count != 1" in (fake_tree / "mm" / "memory.c").read_text(), "the pristine tree is untouched"
    assert patched.bzimage.read_bytes() != base.bzimage.read_bytes()
    assert patched.config_hash == base.config_hash


def test_key_changes_with_fragment_content(tmp_path, fake_tree, fragments):
    before = build.build_key("fake", [], fragments, "gcc 12")
    fragments[0].path.write_text("CONFIG_SWAP=y\n")
    assert build.build_key("fake", [], fragments, "gcc 12") != before
    assert build.build_key("fake", [], fragments, "gcc 13") != build.build_key("fake", [], fragments, "gcc 12")


def test_failing_make_leaves_no_finished_build(tmp_path, fake_tree, fragments):
    (fake_tree / "fail-build").write_text("out of cheese")
    with pytest.raises(CommandFailed, match="out of cheese"):
        run_build(fake_tree, fragments, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "builds").glob("*/build.json"))
    (fake_tree / "fail-build").unlink()
    assert run_build(fake_tree, fragments, tmp_path / "cache").bzimage.is_file(), "a later build recovers"


def test_dropped_option_stops_the_build(tmp_path, fake_tree, fragments):
    (fake_tree / "drop-options").write_text("CONFIG_MEMCG\n")
    with pytest.raises(KconfigOptionDropped, match="CONFIG_MEMCG=y asked for by /.*/guest.config is not set"):
        run_build(fake_tree, fragments, tmp_path / "cache")


def test_missing_probe_symbol_stops_the_build(tmp_path, fake_tree, fragments):
    with pytest.raises(MissingSymbol, match="wp_page_reuse is not in System.map of variant base"):
        run_build(fake_tree, fragments, tmp_path / "cache", probes=PROBES + ("wp_page_reuse",))


def test_patch_that_does_not_apply_names_file_and_hunk(tmp_path, fake_tree, fragments, patch):
    (fake_tree / "mm" / "memory.c").write_text("int other;\n")
    with pytest.raises(PatchDoesNotApply, match="at mm/memory.c hunk 1: run 'harness patch check"):
        run_build(fake_tree, fragments, tmp_path / "cache", Variant("patched", (patch,)))


def test_make_command_lines():
    assert build._make(build.Path("/t"), "bzImage", cache_dir=build.Path("/c")) == [
        "make", "-C", build.Path("/t"), "ARCH=x86_64", "CC=ccache gcc", "HOSTCC=ccache gcc", "bzImage"]
    env = build._ccache_env(build.Path("/c"))
    assert env["CCACHE_BASEDIR"] == "/c/builds" and env["CCACHE_NOHASHDIR"] == "true"
    assert env["KBUILD_BUILD_TIMESTAMP"] and env["KBUILD_BUILD_USER"] and env["KBUILD_BUILD_HOST"]


def test_variant_tree_shares_unpatched_files_and_never_writes_the_pristine_ones(tmp_path, fake_tree, fragments, patch):
    pristine_memory = (fake_tree / "mm" / "memory.c").read_text()
    patched = run_build(fake_tree, fragments, tmp_path / "cache", Variant("patched", (patch,)))
    assert (fake_tree / "mm" / "memory.c").read_text() == pristine_memory
    assert (patched.tree / "mm" / "memory.c").stat().st_ino != (fake_tree / "mm" / "memory.c").stat().st_ino
    assert (patched.tree / "Makefile").stat().st_ino == (fake_tree / "Makefile").stat().st_ino


def test_rebuild_keeps_the_pristine_files_read_only(tmp_path, fake_tree, fragments):
    memory = fake_tree / "mm" / "memory.c"
    memory.chmod(0o444)
    run_build(fake_tree, fragments, tmp_path / "cache")
    run_build(fake_tree, fragments, tmp_path / "cache", rebuild=True)
    assert memory.stat().st_mode & 0o777 == 0o444


def test_concurrent_builds_of_one_key_build_once(tmp_path, fake_tree, fragments):
    import threading
    results, errors = [], []

    def build_it():
        try:
            results.append(run_build(fake_tree, fragments, tmp_path / "cache"))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=build_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results[0].bzimage.stat().st_mtime_ns == results[1].bzimage.stat().st_mtime_ns
    assert results[0].duration_s == results[1].duration_s, "the second reused the first's build"


def test_a_dir_tree_is_built_from_a_private_copy_and_again_after_an_edit(tmp_path, fake_tree, fragments):
    cache = tmp_path / "cache"
    first = build.build_variant(Variant("base"), source.state_of(fake_tree), fragments, PROBES, cache)
    memory = fake_tree / "mm" / "memory.c"
    assert (first.tree / "mm" / "memory.c").stat().st_ino != memory.stat().st_ino, "copied, not linked"
    assert first.source_state["files"] == len(source.state_of(fake_tree).files)
    assert json.loads((first.directory / "build.json").read_text())["source_state"] == first.source_state
    assert bench._build_facts(first).source_state == first.source_state, "a run's metadata says it too"
    again = build.build_variant(Variant("base"), source.state_of(fake_tree), fragments, PROBES, cache)
    assert again.key == first.key and again.duration_s == first.duration_s, "an untouched tree is a cache hit"
    memory.write_text(memory.read_text() + "int edited;\n")
    edited = build.build_variant(Variant("base"), source.state_of(fake_tree), fragments, PROBES, cache)
    assert edited.key != first.key and "int edited;" in edited.bzimage.read_text()
    assert "int edited;" not in first.bzimage.read_text(), "the first build keeps what it was built from"


def test_a_dir_tree_that_changes_before_its_copy_ends_is_not_built(tmp_path, fake_tree, fragments):
    cache = tmp_path / "cache"
    tree = source.state_of(fake_tree)
    (fake_tree / "mm" / "memory.c").write_text("int changed;\n")
    with pytest.raises(TreeChanged, match=f"The tree {fake_tree} changed between reading it and copying it"):
        build.build_variant(Variant("base"), tree, fragments, PROBES, cache)
    assert list(cache.glob("builds/*/build.json")) == []
    rebuilt = build.build_variant(Variant("base"), source.state_of(fake_tree), fragments, PROBES, cache)
    assert "int changed;" in rebuilt.bzimage.read_text()
