import pytest

from harness import matrix, workloads
from harness.errors import BadWorkload, UnknownWorkload


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


def test_cycles_repeat_the_swap_phases():
    driver = workloads.driver(workloads.load("swapcow"), {"size_mb": 4, "cycles": 2}, session=None)
    assert driver.phase_plan() == ["idle", "fill", "swapout", "read", "write", "swapout", "read", "write"]


def test_redis_limit_mode_has_its_own_phases():
    redis = workloads.load("redis")
    assert workloads.driver(redis, redis.params({"mode": "limit"}), None).phase_plan() == ["idle", "fill", "mixed"]


def test_done_lines_are_parsed_and_checked():
    assert workloads.parse_done("done write pages=4096 seconds=0.036676", "write") == {
        "pages": "4096", "seconds": "0.036676"}
    with pytest.raises(BadWorkload, match="unexpected answer 'error write madvise'"):
        workloads.parse_done("error write madvise", "write")


SWAPCOW = workloads.load("swapcow")


def phases(pswpout=4096, pswpin=4096, oom=0):
    return {"idle": {"cow_copies": 25, "vmstat.oom_kill": 0},
            "swapout": {"pages": 4096, "vmstat.pswpout": pswpout, "vmstat.oom_kill": oom},
            "read": {"pages": 4096, "vmstat.pswpin": pswpin},
            "write": {"pages": 4096, "cow_copies": 4096}}


def test_a_good_run_passes_the_gates():
    assert matrix.gate(SWAPCOW, phases()) == []


@pytest.mark.parametrize("crafted, reason", [
    (phases(pswpout=3000), "swapout moved 3000 of 4096 pages to swap (< 90%)"),
    (phases(pswpin=0), "read swapped in nothing"),
    (phases(oom=1), "the OOM killer ran 1 times"),
])
def test_gates_name_the_reason(crafted, reason):
    assert matrix.gate(SWAPCOW, crafted) == [reason]


def test_a_kernel_without_vm_event_counters_is_refused():
    crafted = phases()
    del crafted["swapout"]["vmstat.pswpout"]
    assert matrix.gate(SWAPCOW, crafted) == [
        "swapout has no swap-out count (no vmstat.pswpout: a kernel without CONFIG_VM_EVENT_COUNTERS?)"]


def test_swap_ins_from_the_swap_cache_count_through_the_process():
    crafted = phases(pswpin=0)
    crafted["swapout"]["process.swapped_out_pages"] = 4096
    crafted["read"]["process.swapped_in_pages"] = 4096
    assert matrix.gate(SWAPCOW, crafted) == []
    crafted["swapout"]["process.swapped_out_pages"] = 100
    assert matrix.gate(SWAPCOW, crafted) == ["swapout moved 100 of 4096 pages to swap (< 90%)"]


def test_cycles_add_up_and_levels_do_not():
    totals = {}
    for _ in range(2):
        matrix._accumulate(totals, {"cow_copies": 10, "memcg.swap_current_kb": 500},
                           workloads.PhaseOutcome(100, 1.5, (("ops_per_s", 200.0),)))
    assert totals == {"cow_copies": 20, "memcg.swap_current_kb": 500, "pages": 200, "duration_s": 3.0,
                      "ops_per_s": 200.0}


class FakeSession:
    """Answers redisdrive with a line recorded from a real redisdrive run."""

    def __init__(self, answer):
        self.answer, self.commands = answer, []

    def run(self, command, **_):
        self.commands.append(command)
        return type("Result", (), {"stdout": self.answer + "\n"})()


def test_redis_client_output_becomes_ops_and_latency():
    redis = workloads.load("redis")
    session = FakeSession("done read ops=2000 seconds=0.002107 p50_ms=0.064 p99_ms=0.145 errors=0")
    driver = workloads.driver(redis, redis.params({"keys": 2000}), session)
    outcome = driver.run_phase("read")
    assert session.commands == [["redisdrive", "read", "2000", "2048", "64"]]
    client = dict(outcome.client)
    assert round(client["ops_per_s"]) == round(2000 / 0.002107)
    assert (client["latency_p50_ms"], client["latency_p99_ms"]) == (0.064, 0.145)
    assert outcome.pages == 1000 and outcome.duration_s == 0.002107


def test_redis_lost_keys_make_the_run_invalid():
    redis = workloads.load("redis")
    session = FakeSession("done check ops=2001 seconds=0.03 p50_ms=0 p99_ms=0 errors=0 keys=1990 short=0")
    assert workloads.driver(redis, redis.params({"keys": 2000}), session).problems() == [
        "redis lost 10 keys and 0 values are short"]
