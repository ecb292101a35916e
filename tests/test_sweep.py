"""Sweeps: the [sweep] table, the points of each workload, labels and reference expressions."""

import pytest

from harness import experiment
from harness import sweep as sweeps
from harness.errors import HarnessError

AXES = """
[[variants]]
name = "base"
[sweep]
guest.swap_mb = [24, 48]
swapcow.size_mb = [8, 16, 32]
[[sweep.reference]]
label = "half the swap"
y = "guest.swap_mb * 128"
metric = "cow_copies"
"""


def load(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return experiment.load(str(path))


def test_two_axes_make_points_only_for_the_workloads_they_name(tmp_path):
    spec = load(tmp_path, AXES)
    swapcow = spec.sweep.points("swapcow")
    assert [point.label for point in swapcow] == [
        "guest.swap_mb=24,swapcow.size_mb=8", "guest.swap_mb=24,swapcow.size_mb=16",
        "guest.swap_mb=24,swapcow.size_mb=32", "guest.swap_mb=48,swapcow.size_mb=8",
        "guest.swap_mb=48,swapcow.size_mb=16", "guest.swap_mb=48,swapcow.size_mb=32"]
    assert [point.label for point in spec.sweep.points("redis")] == ["guest.swap_mb=24", "guest.swap_mb=48"], \
        "a swapcow parameter does not multiply redis's cells"
    point = swapcow[4]
    assert point.guest(spec.guest) == experiment.GuestConfig(memory_mb=1024, cpus=2, swap_mb=48)
    assert point.parameters("swapcow") == {"size_mb": 16} and point.parameters("redis") == {}
    assert sweeps.parse_label(point.label) == {"guest.swap_mb": 48, "swapcow.size_mb": 16}
    assert [p.label for p in sweeps.Sweep().points("swapcow")] == [""], "no sweep: one point"


def test_a_quoted_axis_name_is_the_same_axis(tmp_path):
    quoted = load(tmp_path, '[[variants]]\nname = "base"\n[sweep]\n"guest.swap_mb" = [24, 48]\n')
    assert [axis.name for axis in quoted.sweep.axes] == ["guest.swap_mb"]


def test_the_sweep_survives_the_metadata_round_trip(tmp_path):
    spec = load(tmp_path, AXES)
    again = sweeps.Sweep.from_dict(spec.sweep.as_dict())
    assert again == spec.sweep and not sweeps.Sweep.from_dict(None)


def test_a_zram_point_brings_the_zram_fragment(tmp_path):
    spec = load(tmp_path, '[[variants]]\nname = "base"\n[sweep]\nguest.swap = ["virtio-blk", "zram"]\n')
    assert spec.kconfigs[-1] == "zram"
    assert [p.guest(spec.guest).swap for p in spec.sweep.points("swapcow")] == ["virtio-blk", "zram"]
    plain = load(tmp_path, '[[variants]]\nname = "base"\n[guest]\nswap = "zram"\nswap_mb = 64\n')
    assert plain.kconfigs == ("zram",) and plain.guest.swap == "zram"


@pytest.mark.parametrize("table, why", [
    ("[sweep]\n", "names 0 axes"),
    ("[sweep]\nguest.swap_mb = [1]\nguest.memory_mb = [2]\nguest.cpus = [1]\n", "names 3 axes"),
    ("[sweep]\nguest.swap_size = [24]\n", "the guest has no setting 'swap_size'"),
    ("[sweep]\nguest.swap_mb = [24, 0]\n", "swap_mb must be a positive whole number"),
    ("[sweep]\nguest.swap_mb = [24, 24]\n", "repeats a value"),
    ("[sweep]\nguest.swap = [\"nvme\"]\n", "swap must be one of virtio-blk, zram"),
    ("[sweep]\nswapcow.pages = [1]\n", "workload swapcow has no parameter 'pages'"),
    ("[sweep]\nswapcow.size_mb = [0]\n", "size_mb must be at least 1"),
    ("[sweep]\nnosuch.size_mb = [1]\n", "'nosuch' is neither 'guest', 'host' nor a workload"),
    ("workloads = [\"redis\"]\n[sweep]\nswapcow.size_mb = [8]\n", "does not run swapcow"),
    ("[sweep]\nguest.swap_mb = [24]\n[[sweep.reference]]\nlabel = \"x\"\ny = \"__import__('os')\"\n",
     "is not allowed"),
    ("[sweep]\nguest.swap_mb = [24]\n[[sweep.reference]]\nlabel = \"x\"\n", "exactly one of x"),
    ("[parameters.swapcow]\nsize_mb = \"big\"\n", "size_mb must be a whole number"),
])
def test_bad_sweeps_are_refused_naming_the_axis(tmp_path, table, why):
    text = table.split("[sweep]")[0] + '[[variants]]\nname = "base"\n' + \
        ("[sweep]" + table.split("[sweep]", 1)[1] if "[sweep]" in table else "")
    with pytest.raises(HarnessError, match=why):
        load(tmp_path, text)


def test_reference_expressions_are_arithmetic_over_the_points_names():
    names = sweeps.point_names("guest.swap_mb=40", {"swap_mb": 1024, "memory_mb": 1024, "swap": "virtio-blk"},
                               {"swapcow": {"size_mb": 32, "cycles": 1}})
    assert sweeps.evaluate("(guest.swap_mb * 256 - 1) / 2", names) == 5119.5
    assert sweeps.evaluate("min(swapcow.size_mb * 256, guest.swap_mb * 128)", names) == 5120
    assert sweeps.names("max(a.b, 2) // -c.d") == {"a.b", "c.d"}
    with pytest.raises(KeyError, match="redis.keys"):
        sweeps.evaluate("redis.keys", names)
    for bad in ("open('x')", "guest.swap_mb ** 2", "(lambda: 1)()", "'text'", "a.b.c"):
        with pytest.raises(ValueError):
            sweeps.names(bad)


def test_a_host_axis_pins_each_point_to_a_worker_host(tmp_path):
    path = tmp_path / "hosts.toml"
    path.write_text('[[variants]]\nname = "base"\n[sweep]\nhost.name = ["epyc1", "xeon2"]\n')
    spec = experiment.load(str(path))
    points = spec.sweep.points("swapcow")
    assert [point.host for point in points] == ["epyc1", "xeon2"]
    assert points[0].label == "host.name=epyc1" and points[0].parameters("swapcow") == {}
    assert points[0].guest(spec.guest) == spec.guest, "the host is no guest setting"
    path.write_text('[[variants]]\nname = "base"\n[sweep]\nhost.cpu = ["x"]\n')
    with pytest.raises(HarnessError, match=r"the host axis is host.name = \["):
        experiment.load(str(path))


def test_axes_are_labelled_in_words_with_units():
    assert sweeps.Axis("redis.limit_mb", (8,)).words == "redis limit (MiB)"
    assert sweeps.Axis("guest.swap", ("zram",)).words == "guest swap"
    assert sweeps.Axis("redis.duration_s", (1,)).words == "redis duration (s)"


def test_a_zram_point_builds_nothing_more_where_a_fragment_has_zram_already(tmp_path):
    # one guest configuration serves the disk and zram alike: no second build for the zram points
    sweep = '[[variants]]\nname = "base"\n[sweep]\nguest.swap = ["virtio-blk", "zram"]\n'
    shipped = load(tmp_path, 'kconfigs = ["qemu-guest", "instrumentation"]\n' + sweep)
    assert shipped.kconfigs == ("qemu-guest", "instrumentation")
    own = tmp_path / "own.config"
    own.write_text("CONFIG_SWAP=y\n# CONFIG_ZRAM=y would be a comment\n")
    assert load(tmp_path, f'kconfigs = ["{own}"]\n' + sweep).kconfigs == (str(own), "zram")
    own.write_text("CONFIG_SWAP=y\nCONFIG_ZRAM=y\n")
    assert load(tmp_path, f'kconfigs = ["{own}"]\n' + sweep).kconfigs == (str(own),)
