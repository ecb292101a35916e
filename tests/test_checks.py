"""`harness experiment check` and `harness metrics` as functions: every check of an experiment short of a
build (its patches applied to a real tree with git apply), and the metric table against a recorded run."""

from harness import checks, results
from tests.kernel.test_patches import FORMAT_PATCH, SECOND


def write_experiment(tmp_path, fake_tree) -> str:
    (tmp_path / "first.patch").write_text(FORMAT_PATCH)
    (tmp_path / "second.patch").write_text(SECOND)     # written on top of the first: alone, it does not apply
    file = tmp_path / "mine.toml"
    file.write_text(f'source = "dir:{fake_tree}"\n'
                    'primary = ["swapcow/write/cow_copies", "nonesuch/write/cow_copies", "swapcow/squash/cow_copies"]\n'
                    '[sweep]\nguest.swap_mb = [24, 48]\n'
                    '[[variants]]\nname = "base"\n'
                    '[[variants]]\nname = "first"\npatches = ["first.patch"]\n'
                    '[[variants]]\nname = "again"\n'
                    '[[variants]]\nname = "second"\npatches = ["second.patch"]\n')
    return str(file)


def test_every_check_of_an_experiment_is_one_line(tmp_path, fake_tree):
    lines = [check.line() for check in checks.check_experiment(write_experiment(tmp_path, fake_tree), tmp_path)]
    assert lines[0] == f"ok   experiment {tmp_path / 'mine.toml'} loads: 4 variants, source dir:{fake_tree}"
    assert lines[1] == "ok   kconfig fragments "
    assert lines[2].startswith("ok   workloads forkcow, integrity, reclaim, redis, selftests, stressng, swapcow, "
                               "thpcow (forkcow: ")
    assert lines[3] == f"ok   variant first: 1 patch(es) (applies to dir:{fake_tree})"
    assert lines[4] == "ok   variant again: 0 patch(es) (the baseline's kernel)"
    assert lines[5].startswith("FAIL variant second: 1 patch(es): the series does not apply: second.patch: ")
    assert lines[5].endswith(f"(tree {fake_tree}): harness patch check shows where")
    assert lines[6] == "ok   primary row swapcow/write/cow_copies (counter, lower is better, in copies)"
    assert lines[7] == "FAIL primary row nonesuch/write/cow_copies: workload nonesuch does not run (forkcow, " \
                       "integrity, reclaim, redis, selftests, stressng, swapcow, thpcow)"
    assert lines[8] == "FAIL primary row swapcow/squash/cow_copies: swapcow has no phase squash (idle, fill, " \
                       "swapout, read, write)"
    assert lines[9:] == ["ok   sweep axes guest.swap_mb = [24, 48]"]


def test_without_fetch_the_patches_are_found_and_not_applied(tmp_path, fake_tree):
    lines = [check.line() for check in checks.check_experiment(write_experiment(tmp_path, fake_tree), tmp_path,
                                                               fetch=False)]
    assert lines[5] == "ok   variant second: 1 patch(es) (patches exist; not applied (--no-fetch))"


def test_an_experiment_that_does_not_load_is_the_one_failure(tmp_path):
    [check] = checks.check_experiment(str(tmp_path / "absent.toml"), tmp_path)
    assert check.what == f"experiment {tmp_path / 'absent.toml'} loads" and check.line().startswith("FAIL ")
    assert "absent.toml" in check.problem


def test_a_discovery_says_how_its_rows_are_tested(tmp_path):
    file = tmp_path / "find.toml"
    file.write_text('discovery = true\nworkloads = ["swapcow"]\n[[variants]]\nname = "base"\n')
    lines = [check.line() for check in checks.check_experiment(str(file), tmp_path)]
    assert lines[-1] == "ok   discovery: every row exploratory, at a 5% false-discovery rate"
    assert lines[2] == "ok   workloads swapcow (swapcow: size_mb=64, cycles=1)"


def test_metrics_name_the_phases_that_produced_them(tmp_path):
    # a run whose boots counted 14 functions: calls.* lists 12 of them and says how many more
    directory = results.RunDirectory.create(tmp_path / "run", results.RunMetadata())
    directory.add(results.Run("base", "swapcow", 1, "counted", valid=True),
                  [results.Sample("base", "swapcow", 1, "counted", phase, f"calls.f{n:02d}", n)
                   for n in range(14) for phase in ("idle", "write")]
                  + [results.Sample("base", "swapcow", 1, "counted", "write", "cow_copies", 9)])
    lines = checks.metric_lines([directory.path], "swapcow")
    assert lines[0].startswith("cow_copies: counter, direction lower, copies, process; ")
    assert lines[1] == "  cow_copies: swapcow/write"
    at = lines.index(next(line for line in lines if line.startswith("calls.*: counter, direction none, calls, system")))
    assert lines[at + 1:at + 14] == [f"  calls.f{n:02d}: swapcow/idle, swapcow/write" for n in range(12)] + [
        "  ... and 2 more names"]
    assert len(lines) == at + 14, "with --workload, only the entries the run has names of"
    everything = checks.metric_lines([directory.path])
    assert len(everything) == len(checks.metrics.TABLE) + 1 + 13, "every entry; the names of two"
