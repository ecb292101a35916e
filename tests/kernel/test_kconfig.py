import pytest

from harness import project
from harness.errors import KconfigOptionDropped, UnknownFragment
from harness.kernel import kconfig


def test_parse_values_and_unset_lines():
    assert kconfig.parse('CONFIG_A=y\nCONFIG_B="x y"\n# CONFIG_C is not set\n# comment\nCONFIG_D=8\n') == {
        "CONFIG_A": "y", "CONFIG_B": '"x y"', "CONFIG_C": "n", "CONFIG_D": "8"}


def test_project_fragments_ask_for_what_the_collectors_need():
    fragments = {f.name: f.options() for f in kconfig.find(["qemu-guest", "instrumentation"])}
    assert fragments["instrumentation"]["CONFIG_KPROBE_EVENTS"] == "y"
    assert fragments["instrumentation"]["CONFIG_MODULES"] == "y", "KPROBES needs MODULES on 5.10"
    assert fragments["qemu-guest"]["CONFIG_SWAP"] == "y"
    assert fragments["qemu-guest"]["CONFIG_TRANSPARENT_HUGEPAGE"] == "n"


def test_unknown_fragment_lists_the_known_ones():
    with pytest.raises(UnknownFragment, match="instrumentation, out-of-line, qemu-guest, thp"):
        kconfig.find(["nope"], project.KCONFIGS)


def test_every_dropped_option_is_named_and_a_symbol_the_kernel_lacks_is_said_so(tmp_path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "Kconfig").write_text("config SWAP\n\tbool \"Swap\"\nmenuconfig MEMCG\n\tbool\n")
    fragment = tmp_path / "guest.config"
    fragment.write_text("CONFIG_SWAP=y\nCONFIG_MEMCG=y\nCONFIG_MEMCG_SWAP=y\n")
    final = tmp_path / ".config"
    final.write_text("# CONFIG_SWAP is not set\n")
    with pytest.raises(KconfigOptionDropped) as caught:
        kconfig.check_survival([kconfig.Fragment("guest", fragment)], final, tree)
    text = str(caught.value)
    assert text.startswith("3 kconfig option(s) did not survive")
    assert f"CONFIG_SWAP=y asked for by {fragment} is not set after olddefconfig: add the options" in text
    assert f"CONFIG_MEMCG_SWAP=y asked for by {fragment} is not in this kernel: drop it or mark it optional" in text
    assert "CONFIG_MEMCG=y" in text and "\n" not in text


def test_optional_options_may_be_missing_and_the_rest_are_all_reported_at_once(tmp_path, caplog):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "Kconfig").write_text("config SWAP\n\tbool\nconfig MEMCG\n\tbool\nconfig NUMA\n\tbool\n")
    fragment = tmp_path / "guest.config"
    fragment.write_text("CONFIG_SWAP=y\n# optional: gone in 6.1\nCONFIG_MEMCG_SWAP=y\nCONFIG_ARCH_RANDOM=y\n"
                        "# Optional\n# CONFIG_NUMA is not set\nCONFIG_MEMCG=y\n")
    assert kconfig.Fragment("guest", fragment).optional() == {"CONFIG_MEMCG_SWAP", "CONFIG_NUMA"}
    final = tmp_path / ".config"
    final.write_text("CONFIG_SWAP=y\nCONFIG_NUMA=y\n")
    caplog.set_level("INFO", "harness.kconfig")
    with pytest.raises(KconfigOptionDropped) as caught:
        kconfig.check_survival([kconfig.Fragment("guest", fragment)], final, tree)
    text = str(caught.value)
    assert text.startswith("2 kconfig option(s) did not survive"), text
    assert "CONFIG_ARCH_RANDOM=y asked for by" in text and "is not in this kernel" in text
    assert "CONFIG_MEMCG=y asked for by" in text and "is not set after olddefconfig" in text
    assert "MEMCG_SWAP" not in text and "NUMA" not in text
    assert "optional CONFIG_MEMCG_SWAP=y" in caplog.text and "optional CONFIG_NUMA=n" in caplog.text
    final.write_text("CONFIG_SWAP=y\nCONFIG_MEMCG=y\nCONFIG_ARCH_RANDOM=y\n")
    kconfig.check_survival([kconfig.Fragment("guest", fragment)], final, tree)


def test_a_fragment_given_by_path_is_reported_by_its_path(tmp_path):
    (tmp_path / "mine.config").write_text("CONFIG_SWAP=y\n")
    for name in (str(tmp_path / "mine"), str(tmp_path / "mine.config")):
        [fragment] = kconfig.find([name])
        assert fragment.path == tmp_path / "mine.config" and fragment.shown == str(tmp_path / "mine.config")
    [shipped] = kconfig.find(["qemu-guest"])
    assert shipped.shown == "kconfigs/qemu-guest.config"


def test_dropped_option_names_option_and_fragment(tmp_path):
    fragment = tmp_path / "guest.config"
    fragment.write_text("CONFIG_SWAP=y\n# CONFIG_TRANSPARENT_HUGEPAGE is not set\nCONFIG_NR_CPUS=8\n")
    final = tmp_path / ".config"
    final.write_text("CONFIG_SWAP=y\nCONFIG_NR_CPUS=8\n")
    kconfig.check_survival([kconfig.Fragment("guest", fragment)], final)
    final.write_text("# CONFIG_SWAP is not set\nCONFIG_NR_CPUS=8\n")
    with pytest.raises(KconfigOptionDropped, match=rf"CONFIG_SWAP=y asked for by {fragment} is not set"):
        kconfig.check_survival([kconfig.Fragment("guest", fragment)], final)
    final.write_text("CONFIG_SWAP=y\nCONFIG_NR_CPUS=64\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    with pytest.raises(KconfigOptionDropped, match="CONFIG_TRANSPARENT_HUGEPAGE=n .* is =y"):
        kconfig.check_survival([kconfig.Fragment("guest", fragment)], final)
