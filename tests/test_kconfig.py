import pytest

from harness import kconfig, project
from harness.errors import KconfigOptionDropped, UnknownFragment


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
    with pytest.raises(UnknownFragment, match="instrumentation, qemu-guest"):
        kconfig.find(["nope"], project.KCONFIGS)


def test_dropped_option_names_option_and_fragment(tmp_path):
    fragment = tmp_path / "guest.config"
    fragment.write_text("CONFIG_SWAP=y\n# CONFIG_TRANSPARENT_HUGEPAGE is not set\nCONFIG_NR_CPUS=8\n")
    final = tmp_path / ".config"
    final.write_text("CONFIG_SWAP=y\nCONFIG_NR_CPUS=8\n")
    kconfig.check_survival([kconfig.Fragment("guest", fragment)], final)
    final.write_text("# CONFIG_SWAP is not set\nCONFIG_NR_CPUS=8\n")
    with pytest.raises(KconfigOptionDropped, match=r"CONFIG_SWAP=y asked for by kconfigs/guest.config is not set"):
        kconfig.check_survival([kconfig.Fragment("guest", fragment)], final)
    final.write_text("CONFIG_SWAP=y\nCONFIG_NR_CPUS=64\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    with pytest.raises(KconfigOptionDropped, match="CONFIG_TRANSPARENT_HUGEPAGE=n .* is =y"):
        kconfig.check_survival([kconfig.Fragment("guest", fragment)], final)
