import re
import shlex
import socket
import subprocess
import time

import pytest

from harness import metrics, workloads
from harness.errors import BadWorkload, UnknownWorkload
from harness.guest import image
from harness.measure import cell, drivers
from harness.project import ROOT
from tests.fakes.guest import FakeSession


def test_workloads_are_discovered_from_the_folder():
    found = workloads.discover()
    assert {"swapcow", "redis"} <= set(found)
    swapcow = found["swapcow"]
    assert swapcow.driver == "phased-program" and swapcow.setting("program") == "swapcow"
    assert swapcow.phases == ("idle", "fill", "swapout", "read", "write")
    assert found["redis"].phases[-1] == "reswap"


def test_parameters_have_defaults_and_refuse_unknown_names():
    swapcow = workloads.load("swapcow")
    assert swapcow.params() == {"size_mb": 64, "cycles": 1}
    assert swapcow.params({"size_mb": "16"}) == {"size_mb": 16, "cycles": 1}
    with pytest.raises(BadWorkload, match="no parameter 'sise_mb'"):
        swapcow.params({"sise_mb": 16})
    with pytest.raises(UnknownWorkload, match="pick one of"):
        workloads.load("memcached")


@pytest.mark.parametrize("overrides, why", [
    ({"size_mb": "abc"}, "parameter size_mb must be a whole number, not 'abc'"),
    ({"size_mb": "1.5"}, "parameter size_mb must be a whole number, not '1.5'"),
    ({"size_mb": "0"}, "parameter size_mb must be at least 1, not 0"),
    ({"size_mb": "-1"}, "parameter size_mb must be at least 1, not -1"),
    ({"cycles": "0"}, "parameter cycles must be at least 1, not 0"),
    ({"size_mb": True}, "parameter size_mb must be a whole number, not 'True'"),
])
def test_parameter_values_are_checked_before_any_boot(overrides, why):
    with pytest.raises(BadWorkload, match=why):
        workloads.load("swapcow").params(overrides)


def test_choices_and_a_minimum_come_from_the_workload_file(tmp_path):
    redis = workloads.load("redis")
    with pytest.raises(BadWorkload, match="parameter mode must be one of squeeze, limit, madvise, not 'sqeeze'"):
        redis.params({"mode": "sqeeze"})
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "workload.toml").write_text(
        'description = "d"\ndriver = "phased-program"\nphases = ["idle"]\nswapout_phase = "idle"\n'
        'read_phase = "idle"\n[parameters]\ndelay = 0\nfast = false\n[minimum]\ndelay = 0\n')
    toy = workloads.load("toy", tmp_path)
    assert toy.params({"delay": "0", "fast": "yes"}) == {"delay": 0, "fast": True}
    with pytest.raises(BadWorkload, match="parameter fast must be true or false, not 'maybe'"):
        toy.params({"fast": "maybe"})


def test_cycles_repeat_the_swap_phases():
    driver = drivers.driver(workloads.load("swapcow"), {"size_mb": 4, "cycles": 2}, session=None)
    assert driver.phase_plan() == ["idle", "fill", "swapout", "read", "write", "swapout", "read", "write"]


def test_redis_limit_mode_has_its_own_phases():
    redis = workloads.load("redis")
    plan = drivers.driver(redis, redis.params({"mode": "limit"}), None).phase_plan()
    assert plan == ["idle", "fill", "settle", "mixed"]


def test_done_lines_are_parsed_and_checked():
    assert drivers.parse_done("done write pages=4096 seconds=0.036676", "write") == {
        "pages": "4096", "seconds": "0.036676"}
    with pytest.raises(BadWorkload, match="unexpected answer 'error write madvise'"):
        drivers.parse_done("error write madvise", "write")


SWAPCOW = workloads.load("swapcow")
GATES = drivers.driver(SWAPCOW, SWAPCOW.params(), None).gates()


def phases(swapped_out=4096, swapped_in=4096, oom=0, pages=4096):
    return {"idle": {"system.cow_copies": 25, "vmstat.oom_kill": 0},
            "swapout": {"pages": pages, "process.swapped_out_pages": swapped_out, "vmstat.oom_kill": oom},
            "read": {"pages": 4096, "process.swapped_in_pages": swapped_in},
            "write": {"pages": 4096, "cow_copies": 4096}}


def test_a_good_run_passes_the_gates():
    assert cell.gate(GATES, phases()) == []


@pytest.mark.parametrize("crafted, reason", [
    (phases(swapped_out=3000), "swapout: process.swapped_out_pages is 3,000, below 0.9 x swapout.pages (4,096)"),
    (phases(swapped_in=1), "read: process.swapped_in_pages is 1, below 0.9 x swapout.pages (4,096)"),
    (phases(pages=0), "swapout.pages is 0: the phase had nothing to move"),
    (phases(oom=1), "the OOM killer ran 1 times"),
])
def test_gates_name_the_reason(crafted, reason):
    assert reason in cell.gate(GATES, crafted)


def test_a_missing_figure_fails_its_gate_with_a_hint():
    crafted = phases()
    del crafted["swapout"]["process.swapped_out_pages"]
    assert cell.gate(GATES, crafted) == ["swapout has no process.swapped_out_pages"]
    gate = workloads.Gate.parse("swapout.vmstat.pswpout >= 0.9 * swapout.pages", "swapcow")
    assert gate.problem(crafted) == "swapout has no vmstat.pswpout: a kernel without CONFIG_VM_EVENT_COUNTERS?"


def test_redis_gates_the_read_share_and_the_reswap():
    redis = workloads.load("redis")
    gates = drivers.driver(redis, redis.params(), None).gates()
    good = {"swapout": {"pages": 5131, "process.swapped_out_pages": 5509},
            "read": {"process.swapped_in_pages": 4879}, "write": {"pages": 5000},
            "reswap": {"process.swapped_out_pages": 4919}}
    assert cell.gate(gates, good) == []
    good["reswap"]["process.swapped_out_pages"] = 1000
    assert cell.gate(gates, good) == ["reswap: process.swapped_out_pages is 1,000, below 0.25 x write.pages (5,000)"]
    good["read"]["process.swapped_in_pages"] = 1
    assert cell.gate(gates, good)[0] == ("read: process.swapped_in_pages is 1, below 0.5 x "
                                           "swapout.process.swapped_out_pages (5,509)")
    limit = drivers.driver(redis, redis.params({"mode": "limit"}), None).gates()
    assert [g.phase for g in limit] == ["mixed"]
    assert cell.gate(limit, {"mixed": {"pages": 5000, "vmstat.pswpin": 20}}) == [
        "mixed: vmstat.pswpin is 20, below 0.1 x mixed.pages (5,000)"]


def test_a_malformed_gate_is_refused_when_the_workload_loads(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "workload.toml").write_text(
        'description = "x"\ndriver = "phased-program"\nphases = ["idle"]\nswapout_phase = "idle"\n'
        'read_phase = "idle"\ngates = ["swapout pages > 3"]\n')
    with pytest.raises(BadWorkload, match="gate 'swapout pages > 3' is not 'PHASE.METRIC >= SHARE"):
        workloads.discover(tmp_path)


def test_cycles_add_up_and_levels_do_not():
    totals = {}
    for _ in range(2):
        cell.accumulate(totals, {"cow_copies": 10, "memcg.swap_current_kb": 500},
                           drivers.PhaseOutcome(100, 1.5, (("ops_per_s", 200.0),)))
    assert totals == {"cow_copies": 20, "memcg.swap_current_kb": 500, "pages": 200, "duration_s": 3.0,
                      "ops_per_s": 200.0}


def test_rates_divide_by_the_pages_of_the_same_boot():
    measured = {"read": {"pages": 5000, "process.swapped_in_pages": 4879, "cow_copies": 88},
                "write": {"pages": 5000, "cow_copies": 4751, "process.swapped_in_pages": 0},
                "reswap": {"pages": 9479, "cow_copies": 19}}
    metrics.derive(measured, "read")
    assert measured["write"]["cow_copies_per_swapin"] == 4751 / 4879
    assert measured["write"]["cow_copies_per_page"] == 4751 / 5000
    assert measured["read"]["swapins_per_page"] == 4879 / 5000
    assert "cow_copies_per_swapin" not in measured["read"], "copies before the swap-in have no such rate"
    assert measured["reswap"]["cow_copies_per_swapin"] == 19 / 4879


def test_phase_figures_are_kept_for_raw():
    outcome = drivers.PhaseOutcome(4096, 0.25, (("ops_per_s", 200.0),), said="done write pages=4096 seconds=0.25")
    assert outcome.raw() == ("== workload\npages 4096\nduration_s 0.25\nops_per_s 200.0\n"
                             "== workload said\ndone write pages=4096 seconds=0.25")


def test_redis_client_output_becomes_ops_and_latency():
    redis = workloads.load("redis")
    argv = ["redisdrive", "read", "2000", "2048", "64", "6379", "0"]
    # a line recorded from a real redisdrive run
    session = FakeSession({shlex.join(argv): "done read ops=2000 seconds=0.002107 p50_ms=0.064 p99_ms=0.145 "
                                             "errors=0\n"})
    driver = drivers.driver(redis, redis.params({"keys": 2000}), session)
    outcome = driver.run_phase("read")
    assert session.commands == [shlex.join(argv)]
    client = dict(outcome.client)
    assert round(client["ops_per_s"]) == round(2000 / 0.002107)
    assert (client["latency_p50_ms"], client["latency_p99_ms"]) == (0.064, 0.145)
    assert outcome.pages == 1000 and outcome.duration_s == 0.002107


def test_redis_lost_keys_make_the_run_invalid():
    redis = workloads.load("redis")
    session = FakeSession({"redisdrive check 2000 2048 64 6379 0":
                           "done check ops=2001 seconds=0.03 p50_ms=0 p99_ms=0 errors=0 keys=1990 short=0\n"})
    assert drivers.driver(redis, redis.params({"keys": 2000}), session).problems() == [
        "redis lost 10 keys and 0 values are short"]


@pytest.mark.parametrize("table, message", [
    ('[expects]\nwrite = "shared"\n', "[expects] names phase 'write', not one of idle, fill"),
    ('[expects]\nfill = "swap"\n', "[expects] fill = 'swap' is not one of zero_page, huge_page, ksm, shared, "
                                   "swapcache, other_ref, other, reuse"),
    ('[requires]\nfill = "KSM"\n', "[requires] fill = 'KSM' is neither a CONFIG_ option nor a path in the guest"),
])
def test_expectations_and_requirements_name_phases_causes_and_options(tmp_path, table, message):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "workload.toml").write_text(
        'description = "x"\ndriver = "phased-program"\nphases = ["idle", "fill"]\nswapout_phase = ""\n'
        'read_phase = ""\n' + table)
    with pytest.raises(BadWorkload, match=re.escape(message)):
        workloads.discover(tmp_path)


def test_forkcow_gates_the_cause_each_phase_expects_and_only_the_faults_of_its_reuse_phase():
    forkcow = workloads.load("forkcow")
    driver = drivers.driver(forkcow, forkcow.params(), None)
    texts = {(g.phase, g.metric, g.share, g.of_phase, g.of_metric) for g in driver.gates()}
    assert texts == {("shared", "cow_copies.shared", 0.9, "shared", "pages"),
                     ("reuse", "wp_faults", 0.9, "reuse", "pages"),
                     ("zerowrite", "cow_copies.zero_page", 0.9, "zerowrite", "pages"),
                     ("ksmwrite", "cow_copies.ksm", 0.9, "ksmwrite", "pages"),
                     ("ksmwrite", "pages", 0.9, "ksmmerge", "pages")}
    good = {"shared": {"cow_copies.shared": 2048, "pages": 2048, "cow_copies": 2048},
            "reuse": {"wp_faults": 2048, "pages": 2048, "cow_copies": 0, "cow_copies.shared": 0},
            "zerowrite": {"cow_copies.zero_page": 4096, "pages": 4096}}
    assert cell.gate(driver.gates(), good) == [], "the KSM phases did not run: their gates are not checked"
    reused_shared = {**good, "shared": {**good["shared"], "cow_copies.shared": 0}}
    assert cell.gate(driver.gates(), reused_shared) == [
        "shared: cow_copies.shared is 0, below 0.9 x shared.pages (2,048)"]
    copied_instead = {**good, "reuse": {**good["reuse"], "cow_copies": 2048}}
    assert cell.gate(driver.gates(), copied_instead) == [], "a reuse that became a copy is a finding, not a bad run"
    no_causes = {phase: {k: v for k, v in figures.items() if not k.startswith("cow_copies.")}
                 for phase, figures in reused_shared.items()}
    assert cell.gate(driver.gates(), no_causes) == [], "a kernel without cause metrics cannot check them"


def options(config):
    """The .config options as a Kernel carries them ({} without a .config)."""
    return cell.Kernel.of(type("Built", (), {"config": config, "variant": "base", "bzimage": None, "release": "",
                                             "source": "", "config_hash": "", "patch_hash": ""})(), None).options


def test_phases_that_need_an_option_the_kernel_lacks_are_skipped_and_named(tmp_path):
    forkcow = workloads.load("forkcow")
    driver = drivers.driver(forkcow, forkcow.params(), None)
    config = tmp_path / "config"
    config.write_text("CONFIG_SWAP=y\n# CONFIG_KSM is not set\n")
    plan, said = cell.kernel_phases(driver, options(config))
    assert plan == ["idle", "shared", "exit", "reuse", "zeroread", "zerowrite"]
    assert said == ["phases skipped, the kernel lacks what they need: ksmmerge (CONFIG_KSM), ksmwrite (CONFIG_KSM)"]
    config.write_text("CONFIG_KSM=y\n")
    assert cell.kernel_phases(driver, options(config)) == (driver.phase_plan(), [])
    assert cell.kernel_phases(driver, options(tmp_path / "none")) == (driver.phase_plan(), []), "no .config: all"


def test_a_boot_without_probes_skips_the_gates_on_probed_metrics_but_not_the_others():
    forkcow = workloads.load("forkcow")
    driver = drivers.driver(forkcow, forkcow.params(), None)
    timed = {"shared": {"pages": 2048, "vmstat.pgfault": 2100}, "reuse": {"pages": 2048},
             "zerowrite": {"pages": 4096}, "ksmmerge": {"pages": 4096}, "ksmwrite": {"pages": 100}}
    assert cell.gate(driver.gates(), timed) == ["ksmwrite: pages is 100, below 0.9 x ksmmerge.pages (4,096)"]
    assert metrics.meaning("wp_faults").probed and metrics.meaning("cow_copies.ksm").probed
    assert not metrics.meaning("vmstat.pgreuse").probed and not metrics.meaning("pages").probed


def test_a_setting_may_name_its_workload_and_an_unknown_one_lists_the_parameters():
    chosen = workloads.choose(("swapcow", "forkcow"), ("swapcow.size_mb=8", "cycles=2"))
    by_name = {workload.name: params for workload, params in chosen}
    assert by_name["swapcow"]["size_mb"] == 8 and by_name["swapcow"]["cycles"] == 2
    assert by_name["forkcow"]["size_mb"] != 8, "swapcow.size_mb is swapcow's alone"
    with pytest.raises(BadWorkload, match=r"no parameter 'sise_mb' \(the parameters: swapcow: size_mb, cycles; "
                                          r"forkcow: "):
        workloads.choose(("swapcow", "forkcow"), ("sise_mb=8",))
    with pytest.raises(BadWorkload, match="-p redis.size_mb=8 names a workload that does not run here"):
        workloads.choose(("swapcow",), ("redis.size_mb=8",))


def test_the_redis_check_counts_lost_keys_and_short_values_on_a_real_redis_server(tmp_path):
    """redisdrive against the host's redis-server (the one the image carries): the check pipelines its STRLENs
    in batches, and a batch that does not divide the keys, a missing key and shortened values are counted."""
    (tmp_path / "cache" / "programs").mkdir(parents=True)
    program = image._compile_static(ROOT / "workloads" / "redis" / "redisdrive.c", tmp_path / "cache" / "programs")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    server = subprocess.Popen(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def drive(*args):
            return subprocess.run([program, *args, port, "0"], capture_output=True, text=True, check=True,
                                  timeout=60).stdout
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", port, "ping"], capture_output=True, text=True).stdout == "PONG\n":
                break
            time.sleep(0.05)
        assert drive("fill", "1000", "2048", "64").startswith("done fill ops=1000 ")
        assert re.search(r" keys=1000 short=0$", drive("check", "1000", "2048", "7").strip())
        for command in (["set", "key:5", "short"], ["del", "key:999"], ["setrange", "key:130", "2048", "x"]):
            subprocess.run(["redis-cli", "-p", port, *command], capture_output=True, check=True)
        said = drive("check", "1000", "2048", "64").strip()
        assert said.startswith("done check ops=1001 ") and said.endswith(" keys=999 short=3"), said
        redis = workloads.load("redis")
        assert drivers.driver(redis, redis.params({"keys": 1000}), FakeSession({
            "redisdrive check 1000 2048 64 6379 0": said + "\n"})).problems() == [
            "redis lost 1 keys and 3 values are short"]
    finally:
        server.kill()
        server.wait()
