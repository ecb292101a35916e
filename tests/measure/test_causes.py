"""The cause of every copy: the classifier on crafted fields with the layout of a real 5.10 build,
and on probe output recorded from real guests (tests/data/causes/)."""

import json
import lzma

import pytest

from harness.kernel.layout import Layout
from harness.measure import causes, collectors
from tests.conftest import DATA
from tests.fakes.guest import FakeSession, collector

RECORDED = DATA / "causes"
PROBES = ("wp_page_copy", "do_wp_page", "do_swap_page")
LAYOUT = Layout(**{k: v for k, v in json.loads((RECORDED / "layout-5.10.223.json").read_text()).items()
                   if k != "version"})
ZERO_PFN = 0x2a3f
SWAPBACKED, SWAPCACHE = 1 << LAYOUT.values["PG_swapbacked"], 1 << LAYOUT.values["PG_swapcache"]
ANON = 0xffff888003a1c001        # an anon_vma pointer with PAGE_MAPPING_ANON


def fields(**changed):
    """An anonymous page mapped once, with only do_wp_page()'s reference beside the mapping's."""
    return {"page": 0xffffea00000a0000, "pte": 0x8000000002a3f025, "zero_pfn": ZERO_PFN, "flags": SWAPBACKED,
            "head": 0, "mapping": ANON, "mapcount": 0, "refcount": 2, **changed}


@pytest.mark.parametrize("changed, cause", [
    ({"page": 0}, "zero_page"),
    ({"page": 0, "pte": 0x8000000001234025}, "other"),
    ({"mapping": 0xffff888003a1c003, "mapcount": 3, "refcount": 9}, "ksm"),
    ({"mapcount": 1, "refcount": 3}, "shared"),
    ({"mapcount": 1, "refcount": 4, "flags": SWAPBACKED | SWAPCACHE}, "shared"),
    ({"flags": SWAPBACKED | SWAPCACHE, "refcount": 3}, "swapcache"),
    ({"flags": SWAPBACKED | SWAPCACHE, "refcount": 4}, "other_ref"),
    ({"flags": SWAPCACHE, "refcount": 3}, "other_ref"),
    ({"refcount": 3}, "other_ref"),
    ({}, "other"),
    ({"head": 0xffffea00000a0001, "refcount": 0}, "huge_page"),
    ({"head": 0xffffea00000a0001, "refcount": 0, "mapcount": 1}, "huge_page"),
    # 6.12 keeps a large folio's map counts in the first tail page, where mapping would be: not KSM
    ({"head": 0xffffea00000a0001, "refcount": 0, "mapping": 0xffffffff00000003}, "huge_page"),
])
def test_each_copy_gets_the_first_cause_that_holds(changed, cause):
    assert causes.classify(fields(**changed), LAYOUT) == cause


def test_the_head_of_a_huge_page_is_one_when_the_layout_knows_pg_head_and_judged_alone_when_not():
    """A layout kept before PG_head was derived serves every cause but the head's; a tail page it knows."""
    head_bit = 16        # PG_head of the 5.10 build with thp.config (cow-layout.json)
    with_head = Layout(LAYOUT.probe, {**LAYOUT.values, "PG_head": head_bit})
    head = fields(flags=SWAPBACKED | 1 << head_bit, refcount=600)
    assert causes.classify(head, with_head) == "huge_page"
    assert causes.classify(head, LAYOUT) == "other_ref", "without PG_head, the head's counts decide"
    assert causes.classify(fields(), with_head) == "other", "a small page is judged as before"


def line(task, pid, tgid, values):
    said = " ".join(f"{name}={value:#x}" if name not in ("mapcount", "refcount") else f"{name}={value}"
                    for name, value in values.items())
    return f"{task:>16}-{pid:<7} ({tgid:>7}) [001] d... 1234.567890: cow_cause: (wp_page_copy+0x0/0x5e0) {said}"


def test_records_are_counted_per_process_and_for_the_whole_guest():
    trace = "\n".join([
        "# tracer: nop", "#",
        line("swapcow", 212, 212, fields(flags=SWAPBACKED | SWAPCACHE, refcount=3)),
        line("swapcow", 212, 212, fields(flags=SWAPBACKED | SWAPCACHE, refcount=3)),
        line("redis-bio", 215, 212, fields(page=0)),
        line("sh", 300, 300, fields(mapcount=1, refcount=3)),
        "garbage that is no record",
    ])
    records, unreadable = causes.parse(trace)
    assert unreadable == 1 and [r.tgid for r in records] == [212, 212, 212, 300]
    found = causes.metrics(records, LAYOUT, 212)
    assert found["cow_copies.swapcache"] == 2 and found["cow_copies.zero_page"] == 1
    assert found["cow_copies.shared"] == 0 and found["system.cow_copies.shared"] == 1
    assert sum(found[f"system.cow_copies.{c}"] for c in causes.CAUSES) == 4
    without_tgid = trace.replace("(    212) ", "").replace("(    300) ", "")
    records, _ = causes.parse(without_tgid)
    assert causes.metrics(records, LAYOUT, 212) == {k: v for k, v in found.items() if k.startswith("system.")}, \
        "without the tgid column only the whole guest can be attributed"


def after_phase(records: str, lost: str = "overrun: 0\ndropped events: 0\n") -> dict:
    return {"cow causes lost": lost, "cow causes": records}


def test_copies_by_cause_must_add_up_to_the_counted_copies_and_lost_records_leave_them_out():
    trace = "\n".join(line("swapcow", 212, 212, fields(flags=SWAPBACKED | SWAPCACHE, refcount=3)) for _ in range(50))
    found, warnings = collectors.cause_metrics(after_phase(trace), LAYOUT, 212,
                                                  {"cow_copies": 50, "system.cow_copies": 50})
    assert found["cow_copies.swapcache"] == 50 and warnings == []
    _, warnings = collectors.cause_metrics(after_phase(trace), LAYOUT, 212,
                                              {"cow_copies": 60, "system.cow_copies": 50})
    assert warnings == ["copies by cause add up to 50, but perf counted 60 copies in the workload process"]
    _, warnings = collectors.cause_metrics(after_phase(trace), LAYOUT, 212,
                                              {"cow_copies": 53, "system.cow_copies": 53})
    assert warnings == ["copies by cause add up to 50, but perf counted 53 copies in the workload process"], \
        "the workload process is alone in its window: 2 copies apart at most"
    _, warnings = collectors.cause_metrics(after_phase(trace), LAYOUT, 212,
                                              {"cow_copies": 50, "system.cow_copies": 58})
    assert warnings == [], "the whole guest: another process may copy a few pages at the window edges"
    _, warnings = collectors.cause_metrics(after_phase(trace), LAYOUT, 212,
                                              {"cow_copies": 50, "system.cow_copies": 59})
    assert warnings == ["copies by cause add up to 50, but perf counted 59 copies in the whole guest"]
    found, warnings = collectors.cause_metrics(after_phase(trace, "overrun: 7\ndropped events: 0\n"), LAYOUT, 212,
                                                  {"cow_copies": 57})
    assert found == {} and "lost 7 cause records" in warnings[0] and "absent" in warnings[0]
    found, warnings = collectors.cause_metrics({}, LAYOUT, 212, {"cow_copies": 5})
    assert found == {} and warnings == ["no cause records from the guest: the cause metrics are absent"]


def test_raw_keeps_the_first_records_and_says_how_many_more():
    records = "\n".join(f"record {n}" for n in range(100))
    kept = collectors.shortened("== vmstat\npgfault 1\n== cow causes\n# tracer: nop\n" + records)
    assert kept.startswith("== vmstat\npgfault 1\n== cow causes\nrecord 0\n")
    assert kept.endswith(f"record {collectors.RAW_RECORDS - 1}\n... {100 - collectors.RAW_RECORDS} more records")
    perf = "== perf system\n16384,,kprobes:wp_page_copy,,100.00,,"
    assert collectors.shortened("== cow causes\n" + records + "\n" + perf).endswith("more records\n" + perf), \
        "a section after the records is kept whole"


def recorded_phase(name: str) -> tuple[str, str]:
    """(begin output, end output) of a phase recorded from a real guest (5.10.223, base, size_mb=4)."""
    text = lzma.decompress((RECORDED / f"{name}.txt.xz").read_bytes()).decode()
    before, after = text.split("\n== AFTER\n", 1)
    return before.removeprefix("== BEFORE\n"), after.split("\n== workload\n", 1)[0]


@pytest.mark.parametrize("name, pid, expected", [
    ("swapcow-base-rep1-counted-04-write", 66, {"swapcache": 1024}),
    ("forkcow-base-rep1-counted-01-shared", 66, {"shared": 512}),
    ("forkcow-base-rep1-counted-03-reuse", 66, {}),
    ("forkcow-base-rep1-counted-05-zerowrite", 66, {"zero_page": 1024}),
    ("forkcow-base-rep1-counted-07-ksmwrite", 66, {"ksm": 1024}),
])
def test_recorded_probe_output_gives_the_cause_each_phase_was_built_for(name, pid, expected):
    before, after = recorded_phase(name)
    counted, warnings, problems = collectors.phase_metrics(before, after, PROBES, "wp_page_copy", True, "do_wp_page")
    assert problems == [] and warnings == []
    found, warnings = collectors.cause_metrics(collectors.sections(after), LAYOUT, pid, counted)
    assert warnings == [], "the causes add up to perf's counts, in the process and in the whole guest"
    process = {cause: found[f"cow_copies.{cause}"] for cause in causes.CAUSES if found[f"cow_copies.{cause}"]}
    assert process == expected and sum(process.values()) == counted["cow_copies"]
    system = sum(found[f"system.cow_copies.{cause}"] for cause in causes.CAUSES)
    assert system == counted["system.cow_copies"] > counted["cow_copies"], "init, sshd and the shell copy too"


def refusing() -> collectors.Collector:
    """A guest whose kprobe_events takes the counting probes but not the cause event."""
    def cause(fields):
        raise ValueError(f"kprobe_events refused: {fields[0][:11]} ...")
    answers = {"setup": lambda probes: "", "cause": cause, "count": lambda events: "", "warm": lambda fields: ""}
    return collectors.Collector(FakeSession(programs={"harness-collect": collector(answers)}))


def test_a_guest_that_refuses_the_cause_probe_leaves_the_causes_out_and_says_why():
    guest = refusing()
    said, unseen = collectors.start(guest, PROBES, LAYOUT)
    assert said == ("the guest refused the cause probe (kprobe_events refused: p:cow_cause ...): the cause "
                    "metrics are absent") and unseen == []
    assert [line.split("\t")[0] for line in guest.process.sent] == ["setup", "cause", "count", "warm"]
    assert collectors.start(refusing(), PROBES, Layout("wp_page_copy", unavailable="no zero_pfn")) == ("", [])


def no_run_time(after: str) -> str:
    """after, with the run time of every count of perf's process section 0, as a guest keeping time in
    jiffies gives a process that ran for less than a tick."""
    process = after.split("== perf process\n")[1].split("== profile")[0]
    def zeroed(line):
        fields = line.split(",")
        return ",".join(fields[:3] + ["0"] + fields[4:]) if len(fields) > 4 and not line.startswith("#") else line
    return after.replace(process, "".join(zeroed(line) + "\n" for line in process.splitlines()))


def test_a_process_counted_for_no_time_keeps_its_counts_and_its_causes():
    before, after = recorded_phase("swapcow-base-rep1-counted-04-write")
    metrics, warnings, problems = collectors.counted_phase(before, no_run_time(after), PROBES, "wp_page_copy", 66,
                                                           LAYOUT, "do_wp_page")
    assert problems == [] and warnings == [], warnings
    assert metrics["cow_copies"] == metrics["cow_copies.swapcache"] == 1024 and metrics["wp_faults"] >= 1024


def test_copies_of_the_thread_group_that_perf_missed_are_said():
    """A count of the process that the cause records of its thread group refute is said beside the figures."""
    before, after = recorded_phase("swapcow-base-rep1-counted-04-write")
    missed = after.replace("1024,,kprobes:wp_page_copy", "0,,kprobes:wp_page_copy", 1)
    assert missed != after
    metrics, warnings, _ = collectors.counted_phase(before, missed, PROBES, "wp_page_copy", 66, LAYOUT, "do_wp_page")
    assert metrics["cow_copies"] == 0 and metrics["cow_copies.swapcache"] == 1024
    assert warnings == ["copies by cause add up to 1024, but perf counted 0 copies in the workload process"], warnings


