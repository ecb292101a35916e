import pytest

from harness import experiment, project
from harness.errors import HarnessError, MissingPatchFile, UnknownExperiment, UnknownVariant


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_experiment_is_the_seed_patch_on_5_10():
    spec = experiment.load(None)
    assert spec.name == project.DEFAULT_EXPERIMENT
    assert spec.source.startswith("debian:linux-source-5.10=5.10.223-1#sha256=")
    assert [v.name for v in spec.variants] == ["base", "patched"]
    assert spec.variants[0].patches == ()
    assert spec.variants[1].patches[0].parent == project.PATCHES
    assert spec.variants[1].patches[0].is_file()
    assert set(spec.probes) == {"wp_page_copy", "do_wp_page", "do_swap_page"}
    experiment.require_patches(spec.variants)


def test_series_gives_cumulative_variants(tmp_path):
    for name in ("a.patch", "b.patch", "c.patch"):
        (tmp_path / name).write_text("")
    spec = experiment.load(str(write(tmp_path, 'kconfigs = ["qemu-guest"]\n[series]\n'
                                               'patches = ["a.patch", "b.patch", "c.patch"]\n')))
    assert [(v.name, [p.name for p in v.patches]) for v in spec.variants] == [
        ("base", []), ("+1", ["a.patch"]), ("+1..2", ["a.patch", "b.patch"]),
        ("+1..3", ["a.patch", "b.patch", "c.patch"])]
    whole = experiment.load(str(write(tmp_path, '[series]\npatches = ["a.patch", "b.patch"]\ncumulative = false\n')))
    assert [v.name for v in whole.variants] == ["base", "+1..2"]


def test_select_keeps_the_order_given_and_refuses_unknown_names():
    spec = experiment.load(None)
    assert [v.name for v in spec.select(["patched", "base"])] == ["patched", "base"]
    assert [v.name for v in spec.select([])] == ["base", "patched"]
    with pytest.raises(UnknownVariant, match="Variant 'pached' is not in experiment .*: pick one of base, patched"):
        spec.select(["pached"])


@pytest.mark.parametrize("text, why", [
    ('source = "x"\n[[variants]]\nname = "base"\n', "not understood"),
    ('[[variants]]\nname = "a"\n[[variants]]\nname = "a"\n', "repeat"),
    ('colour = "red"\n[[variants]]\nname = "a"\n', "unknown key"),
    ('kconfigs = "qemu-guest"\n[[variants]]\nname = "a"\n', "list of strings"),
    ('kconfigs = []\n', "exactly one"),
    ('[[variants]\n', "Expected"),
    ('[[variants]]\nname = 42\n', "variant name 42 must be letters"),
    ('[[variants]]\nname = "../../x y"\n', "variant name '../../x y' must be letters"),
    ('[[variants]]\nname = "a"\n[guest]\nmemory_mb = true\n', "memory_mb must be a positive whole number, not True"),
    ('[[variants]]\nname = "a"\n[guest]\nswap_mb = 0\n', "swap_mb must be a positive whole number, not 0"),
    ('[[variants]]\nname = "a"\n[[variants]]\nname = "b"\nsource = "dir:/x"\n',
     "variant.s. b name another kernel source than the experiment's: set mixed_sources = true"),
    ('[[variants]]\nname = "a"\nsource = "debian:nope"\n', "not understood"),
    ('mixed_sources = "yes"\n[[variants]]\nname = "a"\n', "mixed_sources must be true or false"),
])
def test_bad_experiment_files_are_refused(tmp_path, text, why):
    with pytest.raises(HarnessError, match=why):
        experiment.load(str(write(tmp_path, text)))


def test_unknown_experiment_lists_the_known_ones():
    with pytest.raises(UnknownExperiment, match=project.DEFAULT_EXPERIMENT):
        experiment.load("no-such-experiment")


def test_missing_patch_is_reported_when_used(tmp_path):
    spec = experiment.load(str(write(tmp_path, '[[variants]]\nname = "p"\npatches = ["gone.patch"]\n')))
    with pytest.raises(MissingPatchFile, match="gone.patch does not exist"):
        experiment.require_patches(spec.variants)


def test_a_variant_may_name_its_own_source_when_the_experiment_allows_mixing(tmp_path):
    spec = experiment.load(str(write(tmp_path, 'source = "dir:/a"\nmixed_sources = true\n[[variants]]\nname = "old"\n'
                                               '[[variants]]\nname = "new"\nsource = "debian:linux-source-6.1='
                                               '6.1.192-2@bookworm-security"\n')))
    assert spec.mixed_sources
    assert [spec.source_of(v) for v in spec.variants] == [
        "dir:/a", "debian:linux-source-6.1=6.1.192-2@bookworm-security"]


def test_the_shipped_6_1_experiment_puts_three_kernels_side_by_side():
    spec = experiment.load("do-wp-page-swapcache-6.1")
    assert spec.mixed_sources and [v.name for v in spec.variants] == ["base", "patched", "v6.1"]
    assert spec.source_of(spec.variants[0]) == spec.source_of(spec.variants[1]) == experiment.load(None).source
    assert spec.source_of(spec.variants[2]).startswith("debian:linux-source-6.1=6.1.192-2")
    experiment.require_patches(spec.variants)
