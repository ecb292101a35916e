"""The huge-page, reclaim and stress-ng workloads, zswap and the THP mode through the real driver,
collector, metric, experiment and VM code, with a strict fake guest. What they do in a real guest is
tests/real/test_real_mm.py."""

import pytest

from harness import experiment, metrics, workloads
from harness.errors import BadExperiment, BadWorkload, CellFailed
from harness.guest import vm
from harness.kernel import kconfig
from harness.measure import cell, collectors, drivers
from tests.fakes.guest import Answer, FakeSession, Program, Reply

# What stress-ng 0.15.06 (Debian 12) writes with --yaml, cut to the part the driver reads.
STRESS_NG_YAML = """---
system-info:
      stress-ng-version: 0.15.06
      pagesize: 4096

metrics:
    - stressor: pageswap
      bogo-ops: 200
      bogo-ops-per-second-usr-sys-time: 28677.946659
      bogo-ops-per-second-real-time: 19264.670219
      wall-clock-time: 0.010382
      max-rss: 2392

...
"""


def test_the_new_workloads_are_listed_with_their_phases():
    found = workloads.discover()
    assert found["thpcow"].phases[:4] == ("idle", "fault", "collapse", "fork")
    assert found["reclaim"].phases == ("idle", "fill", "refault", "stream")
    assert found["stressng"].driver == "stress-ng" and "pageswap" in found["stressng"].phases


def test_thpcow_runs_nothing_but_idle_on_a_kernel_without_thp_and_says_so():
    thpcow = workloads.load("thpcow")
    driver = drivers.driver(thpcow, thpcow.params(), None)
    plan, said = cell.kernel_phases(driver, {"CONFIG_SWAP": "y"}, lambda path: False)
    assert plan == ["idle"]
    assert said[0].startswith("phases skipped, the kernel lacks what they need: fault (CONFIG_TRANSPARENT_HUGEPAGE)")
    assert "mthpcow (/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc)" in said[0]


def test_multi_size_thp_phases_run_where_the_guest_has_their_sysfs_folder():
    thpcow = workloads.load("thpcow")
    driver = drivers.driver(thpcow, thpcow.params(), None)
    options = {"CONFIG_TRANSPARENT_HUGEPAGE": "y"}
    asked = []
    plan, said = cell.kernel_phases(driver, options, lambda path: asked.append(path) or True)
    assert plan == list(thpcow.phases) and said == []
    assert set(asked) == {"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc"}
    plan, said = cell.kernel_phases(driver, options, lambda path: False)
    assert plan[-1] == "swapin" and "mthpfault" in said[0]


def test_thpcow_gates_its_huge_pages_and_expects_copies_of_huge_pages():
    thpcow = workloads.load("thpcow")
    gates = drivers.driver(thpcow, thpcow.params(), None).gates()
    good = {"fault": {"program.huge": 8, "program.hugepages": 8, "vmstat.thp_fault_alloc": 8},
            "collapse": {"program.huge": 8, "program.hugepages": 8},
            "cow": {"pages": 2048, "cow_copies.huge_page": 2048},
            "swapout": {"pages": 4096, "process.swapped_out_pages": 4096},
            "swapin": {"process.swapped_in_pages": 4093}}
    assert cell.gate(gates, good) == []
    split = {**good, "cow": {"pages": 2048, "cow_copies.huge_page": 0, "cow_copies.shared": 2048}}
    assert cell.gate(gates, split) == ["cow: cow_copies.huge_page is 0, below 0.9 x cow.pages (2,048)"]
    never = {**good, "fault": {"program.huge": 0, "program.hugepages": 8, "vmstat.thp_fault_alloc": 0}}
    assert [problem.split(":")[1].strip() for problem in cell.gate(gates, never)] == \
        ["program.huge is 0, below 0.9 x fault.program.hugepages (8)",
         "vmstat.thp_fault_alloc is 0, below 0.9 x fault.program.hugepages (8)"]


def test_a_phased_program_with_a_memory_limit_starts_in_its_cgroup_and_reports_its_own_figures():
    reclaim = workloads.load("reclaim")
    params = reclaim.params({"limit_mb": 24})
    session = FakeSession(
        answers={f"echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p {drivers.CGROUP}": "",
                 f"echo 24M > {drivers.CGROUP}/memory.max": ""},
        programs={f"sh -c 'echo $$ > {drivers.CGROUP}/cgroup.procs && exec reclaim 40 32 /dev/harness-data'": Program(
            ("ready pid=77 pages=18432",),
            lambda line: Reply(("done fill pages=18432 seconds=0.5 anon_pages=10240 file_pages=8192",)))})
    driver = drivers.driver(reclaim, params, session)
    driver.start()
    assert (driver.pid, driver.cgroup) == (77, drivers.CGROUP)
    outcome = driver.run_phase("fill")
    assert outcome.figures() == {"pages": 18432, "duration_s": 0.5, "program.anon_pages": 10240.0,
                                 "program.file_pages": 8192.0}
    assert cell.guest_of(_job(reclaim, params)).data_mb == 32, "the disk is as large as the file read"


def _job(workload, params):
    spec = experiment.load("mm-four-kernels")
    return cell.Job(cell.Cell(workload, params, 1), cell.Kernel("base", None), None, spec, spec.guest)


def test_a_stress_ng_phase_runs_its_stressor_in_the_cgroup_and_reads_its_yaml():
    stressng = workloads.load("stressng")
    params = stressng.params({"vm_mb": 8})
    command = (f"rm -f /tmp/stress-ng.yaml; sh -c 'echo $$ > {drivers.CGROUP}/cgroup.procs && exec stress-ng --vm 1 "
               "--vm-ops 16000 --vm-bytes 8M --vm-keep --timeout 60s --verify --metrics-brief "
               "--yaml /tmp/stress-ng.yaml' 2>&1; status=$?; cat /tmp/stress-ng.yaml 2>/dev/null; exit $status")
    yaml = STRESS_NG_YAML.replace("pageswap", "vm")
    session = FakeSession({f"echo +memory > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p {drivers.CGROUP}": "",
                           command: Answer("stress-ng: info: [51] dispatching hogs: 1 vm\n" + yaml)})
    driver = drivers.driver(stressng, params, session)
    driver.start()
    outcome = driver.run_phase("vm")
    assert dict(outcome.client) == {"bogo_ops": 200.0, "bogo_ops_per_s": 19264.670219, "tests_passed": 1,
                                    "tests_failed": 0}, "the stressor's --verify is one case, and it passed"
    assert driver.pid is None, "no one process to follow: the phase's figures are the guest's and the cgroup's"
    assert outcome.found("vm") == (), "--verify said nothing: nothing wrong"


def test_a_stressor_whose_verification_fails_is_a_failed_test_with_what_stress_ng_said():
    stressng = workloads.load("stressng")
    said = ("stress-ng: info:  [51] dispatching hogs: 1 vm\n"
            "stress-ng: fail:  [52] vm: detected 3 bit errors while stressing memory\n"
            "stress-ng: fail:  [51] vm instance 0 corrupted bogo-ops counter\n")
    session = FakeSession({"*stress-ng --vm 1*--verify*": Answer(said + STRESS_NG_YAML.replace("pageswap", "vm"),
                                                                  status=2)})
    outcome = drivers.driver(stressng, stressng.params(), session).run_phase("vm")
    [finding] = outcome.found("vm")
    assert (finding.kind, finding.where, finding.found) == ("failed_test", "stress-ng --vm --verify",
                                                            "vm: detected 3 bit errors while stressing memory")
    assert finding.said() == "test 'stress-ng --vm --verify' failed"
    assert dict(outcome.client)["bogo_ops"] == 200.0, "the phase's figures stay: a wrong page is no lost boot"
    assert dict(outcome.client)["tests_failed"] == 1


def test_the_stressors_parameter_chooses_the_phases_in_the_workloads_order():
    stressng = workloads.load("stressng")
    plan = drivers.driver(stressng, stressng.params({"stressors": "pageswap, vm"}), None).phase_plan()
    assert plan == ["idle", "vm", "pageswap"]
    with pytest.raises(BadWorkload) as caught:
        drivers.driver(stressng, stressng.params({"stressors": "vm,ksm"}), None).phase_plan()
    assert "stressors=vm,ksm: choose from vm, fork, mmap, fault, madvise, pageswap" in str(caught.value)


def test_a_stressor_that_gives_no_metrics_fails_its_phase_with_what_stress_ng_said():
    stressng = workloads.load("stressng")
    session = FakeSession({"*stress-ng --fault 1*": Answer("stress-ng: error: [9] fault: mmap failed\n", status=2)})
    driver = drivers.driver(stressng, stressng.params(), session)
    with pytest.raises(BadWorkload) as caught:
        driver.run_phase("fault")
    assert "stress-ng --fault gave no metrics (exit status 2): stress-ng: error: [9] fault: mmap failed" in \
        str(caught.value)


def test_stress_ng_yaml_gives_the_bogo_ops_of_the_stressor_asked_for_only():
    assert drivers.stress_ng_metrics(STRESS_NG_YAML, "pageswap") == (200.0, 19264.670219)
    assert drivers.stress_ng_metrics(STRESS_NG_YAML, "vm") == (None, None)
    assert drivers.stress_ng_metrics("", "vm") == (None, None)


def test_a_zswap_boot_fails_when_its_kernel_did_not_take_the_compressor_asked_for():
    guest = experiment.GuestConfig(swap="zswap", zswap_compressor="lz4")
    session = FakeSession({"cat /sys/module/zswap/parameters/enabled": "Y\n",
                           "cat /sys/module/zswap/parameters/compressor": "lzo\n"})
    with pytest.raises(CellFailed) as caught:
        cell.compressor(session, guest)
    assert str(caught.value).startswith("zswap compresses with lzo, not lz4: the kernel lacks that compressor")
    assert cell.compressor(session, experiment.GuestConfig(swap="zswap")) == "lzo"
    off = FakeSession({"cat /sys/module/zswap/parameters/enabled": Answer("", "No such file", 1)})
    with pytest.raises(CellFailed, match="zswap is not on in the guest"):
        cell.compressor(off, guest)


def _snapshot(zswap: str, vmstat: str = "pswpout 0\n") -> str:
    return f"== vmstat\n{vmstat}== swap\nSwapTotal 1048572\nSwapFree 1048572\n== zswap\n{zswap}"


def test_zswap_counters_are_levels_at_the_end_and_changes_over_the_phase():
    before = _snapshot("/sys/kernel/debug/zswap/stored_pages:10\n/sys/kernel/debug/zswap/pool_total_size:40960\n"
                       "/sys/kernel/debug/zswap/written_back_pages:3\n/sys/kernel/debug/zswap/reject_compress_poor:1\n")
    after = _snapshot("/sys/kernel/debug/zswap/stored_pages:16394\n/sys/kernel/debug/zswap/pool_total_size:1044480\n"
                      "/sys/kernel/debug/zswap/written_back_pages:3\n/sys/kernel/debug/zswap/reject_compress_poor:5\n")
    found, _, _ = collectors.phase_metrics(before, after, (), "", has_process=False)
    assert {name: value for name, value in found.items() if name.startswith("zswap.")} == {
        "zswap.stored_pages": 16394, "zswap.pool_kb": 1020, "zswap.written_back_pages": 0,
        "zswap.reject_compress_poor": 4}
    plain, _, _ = collectors.phase_metrics(_snapshot("").replace("== zswap\n", ""),
                                           _snapshot("").replace("== zswap\n", ""), (), "", has_process=False)
    assert not any(name.startswith("zswap.") for name in plain), "a disk or zram boot has no zswap figures"
    assert metrics.meaning("zswap.stored_pages").kind == "level" and metrics.known("zswap.reject_alloc_fail")


def test_reclaim_rates_divide_by_the_pages_reclaimed_in_the_same_phase():
    phases = {"fill": {"vmstat.pgsteal_anon": 100, "vmstat.pgsteal_file": 300, "vmstat.pgscan_anon": 200,
                       "vmstat.pgscan_file": 600, "vmstat.workingset_refault_anon": 10,
                       "vmstat.workingset_refault_file": 30, "vmstat.pgactivate": 4},
              "idle": {"vmstat.pgsteal_anon": 0, "vmstat.pgsteal_file": 0, "vmstat.pgscan_anon": 0,
                       "vmstat.pgscan_file": 0}}
    metrics.derive(phases, "")
    assert (phases["fill"]["scan_per_reclaim"], phases["fill"]["refaults_per_reclaim"],
            phases["fill"]["activations_per_reclaim"]) == (2.0, 0.1, 0.01)
    assert "scan_per_reclaim" not in phases["idle"], "nothing reclaimed: no rate, not 0"
    assert metrics.meaning("refaults_per_reclaim").direction == "lower"


def _spec(tmp_path, **changed) -> vm.VmSpec:
    return vm.VmSpec(tmp_path / "bzImage", tmp_path / "initrd", tmp_path / "swap.img", tmp_path / "console.log",
                     10022, **changed)


def test_zswap_the_thp_mode_and_a_data_disk_are_on_the_kernel_and_qemu_command_lines(tmp_path):
    line = vm.kernel_command_line(_spec(tmp_path, swap="zswap", zswap_compressor="zstd", zswap_pool_pct=30,
                                        thp="always", data_disk=tmp_path / "data.img"))
    assert "harness.swap=/dev/vda zswap.enabled=1 zswap.compressor=zstd zswap.zpool=zsmalloc " \
           "zswap.max_pool_percent=30 harness.data=/dev/vdb transparent_hugepage=always" in line
    argv = vm.qemu_argv(_spec(tmp_path, swap="zswap", data_disk=tmp_path / "data.img"))
    drives = [argv[i + 1] for i, word in enumerate(argv) if word == "-drive"]
    assert [drive.split(",")[0] for drive in drives] == [f"file={tmp_path}/swap.img", f"file={tmp_path}/data.img"]
    on_zram = vm.kernel_command_line(_spec(tmp_path, swap="zram", swap_mb=64, data_disk=tmp_path / "data.img"))
    assert "harness.data=/dev/vda" in on_zram and "zswap" not in on_zram and "transparent_hugepage" not in on_zram


def _experiment(tmp_path, guest: str):
    path = tmp_path / "exp.toml"
    path.write_text(f'kconfigs = ["qemu-guest"]\n[[variants]]\nname = "base"\n[guest]\n{guest}')
    return experiment.load(str(path))


def test_a_zswap_guest_brings_the_zswap_fragment_and_bad_settings_are_refused(tmp_path):
    assert _experiment(tmp_path, 'swap = "zswap"\n').kconfigs == ("qemu-guest", "zswap")
    assert _experiment(tmp_path, 'swap = "zram"\n').kconfigs == ("qemu-guest",), "qemu-guest.config has zram"
    assert _experiment(tmp_path, 'thp = "always"\n').guest.thp == "always"
    for guest, why in (('thp = "sometimes"\n', "[guest] thp must be one of never, madvise, always, not 'sometimes'"),
                       ("zswap_pool_pct = 0\n", "[guest] zswap_pool_pct must be a whole number of percent from 1 to "
                                                "100, not 0"),
                       ('zswap_compressor = "lz5"\n', "[guest] zswap_compressor must be one of lzo, lzo-rle, lz4, "
                                                      "zstd, deflate, not 'lz5'")):
        with pytest.raises(BadExperiment) as caught:
            _experiment(tmp_path, guest)
        assert why in str(caught.value)


def test_a_later_fragment_overrides_an_earlier_one_and_only_the_last_word_is_checked(tmp_path):
    guest, thp = tmp_path / "guest.config", tmp_path / "thp.config"
    guest.write_text("CONFIG_SWAP=y\n# CONFIG_TRANSPARENT_HUGEPAGE is not set\n")
    thp.write_text("CONFIG_TRANSPARENT_HUGEPAGE=y\n")
    final = tmp_path / ".config"
    final.write_text("CONFIG_SWAP=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n")
    fragments = [kconfig.Fragment("guest", guest), kconfig.Fragment("thp", thp)]
    kconfig.check_survival(fragments, final)
    final.write_text("CONFIG_SWAP=y\n")
    with pytest.raises(Exception) as caught:
        kconfig.check_survival(fragments, final)
    assert "CONFIG_TRANSPARENT_HUGEPAGE=y asked for by" in str(caught.value) and "1 kconfig option" in str(caught.value)
