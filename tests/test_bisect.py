"""`harness bisect` without a build: which candidate each step takes, what a verdict makes of it, skips, the state
kept for --resume, the report, and the refusals before any work (the real builds and boots:
tests/real/test_real_bisect.py)."""

import csv
import json
import math
import random

import pytest
from click.testing import CliRunner

from harness import bisect, experiment
from harness.cli import main
from harness.errors import BadRow, BisectNeedsAMove, CommandFailed, DiskFull, GitRefMissing, NotAGitRepository
from tests.conftest import git, git_repo

TEMPLATE = experiment.load(None)
ROW = "swapcow/write/cow_copies"


def candidates(count: int) -> tuple:
    return tuple(bisect.Candidate(f"c{index:02d}", f"commit {index}", f"git:/repo@c{index:02d}", f"c{index:02d}")
                 for index in range(count))


def bisection(count: int) -> bisect.Bisection:
    return bisect.Bisection(ROW, candidates(count), str(TEMPLATE.path), command="harness bisect ...",
                            tree="/repo")


def measured(verdict: str, base: float = 2048.0, value: float = 2048.0, n: int = 6) -> bisect.Measured:
    change = None if base == 0 else 100 * (value - base) / base
    return bisect.Measured(verdict, n, 6, value if n else None, base, change if n else None, 0.0022 if n else None,
                           (value,) * n, (base,) * 6)


class Oracle:
    """A fake measure(): candidates from first_bad on copy no page (`better` against the good end), those before
    copy every page (`identical`); those in skipped do not build. It records what it ran."""

    def __init__(self, first_bad: int, skipped=(), stop_after: int | None = None):
        self.first_bad, self.skipped, self.stop_after, self.ran = first_bad, set(skipped), stop_after, []

    def __call__(self, found, top, where, index, name, runs):
        if self.stop_after is not None and len(self.ran) == self.stop_after:
            raise KeyboardInterrupt
        self.ran.append((where, index, name))
        if index in self.skipped:
            raise CommandFailed(command=f"make -C builds/{name}/linux bzImage", status=2, tail="error: ...")
        return measured("better", value=1.0) if index >= self.first_bad else measured("identical")


@pytest.mark.parametrize("count", [3, 4, 5, 8, 13, 33])
def test_bisection_finds_every_first_bad_within_log2_steps(count, tmp_path):
    for first_bad in range(1, count):
        oracle = Oracle(first_bad)
        done = bisect.run(bisection(count), tmp_path / f"{count}-{first_bad}", bisect.Runs(tmp_path), oracle)
        assert bisect.next_candidate(count, done.steps) is None
        assert bisect.suspects(count, done.steps) == [first_bad]
        assert len(done.steps) <= bisect.most_steps(count) == math.ceil(math.log2(count - 1))
        assert oracle.ran[0][:2] == (bisect.ENDS, count - 1), "the ends come first"


def test_skipped_candidates_are_named_with_the_first_bad_and_the_bisection_goes_around_them(tmp_path):
    rng = random.Random(7)
    for trial_number in range(40):
        count = rng.randint(3, 20)
        first_bad = rng.randint(1, count - 1)
        skipped = set(rng.sample(range(1, count - 1), rng.randint(0, min(3, count - 2))))
        done = bisect.run(bisection(count), tmp_path / str(trial_number), bisect.Runs(tmp_path),
                          Oracle(first_bad, skipped))
        found = bisect.suspects(count, done.steps)
        assert first_bad in found, (count, first_bad, skipped, found)
        assert set(found[:-1]) <= skipped and found[-1] not in skipped or found == [count - 1]
        assert all(step.why.startswith("not measured: ") and "make -C builds/" in step.why for step in done.steps
                   if step.decision == bisect.SKIP)


def test_a_full_disk_stops_the_bisection_instead_of_skipping_a_commit(tmp_path):
    def full(found, top, where, index, name, runs):
        if where != bisect.ENDS:
            raise DiskFull(mount="/", free="0 B", path=top)
        return measured("better", value=1.0)
    with pytest.raises(DiskFull):
        bisect.run(bisection(6), tmp_path / "b", bisect.Runs(tmp_path), full)
    assert bisect.Bisection.load(tmp_path / "b").steps == (), "nothing recorded: --resume measures it again"


def test_the_state_is_kept_after_each_step_and_resume_measures_only_what_is_left(tmp_path):
    folder = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        bisect.run(bisection(17), folder, bisect.Runs(tmp_path), Oracle(11, stop_after=3))
    kept = bisect.Bisection.load(folder)
    assert kept.ends is not None and len(kept.steps) == 2
    again = Oracle(11)
    done = bisect.run(kept, folder, bisect.Runs(tmp_path), again)
    assert bisect.suspects(17, done.steps) == [11]
    assert (bisect.ENDS, 16) not in [ran[:2] for ran in again.ran], "the ends are not measured again"
    assert again.ran[0][0] == f"{bisect.STEPS}/03-{kept.candidates[again.ran[0][1]].name}"
    assert bisect.Bisection.load(folder) == done, "bisect.json holds the whole bisection"


@pytest.mark.parametrize("verdict, n, expected", [
    ("better", 6, bisect.BAD), ("identical", 6, bisect.GOOD), ("equivalent", 9, bisect.GOOD),
    ("not exercised", 6, bisect.GOOD), ("inconclusive", 10, bisect.SKIP), ("worse", 6, bisect.SKIP),
    ("", 0, bisect.SKIP)])
def test_a_candidate_is_taken_by_its_verdict_against_the_good_end(verdict, n, expected):
    said, why = bisect.decision("better", measured(verdict, value=1.0, n=n))
    assert said == expected, why
    if n:
        assert why.startswith(f"{verdict}, 2,048 -> 1 (-100.0%), p = 0.0022, n = {n}")
    else:
        assert "no boot of it gave a value" in why


def test_ends_that_do_not_move_the_row_stop_before_any_step(tmp_path):
    def flat(found, top, where, index, name, runs):
        ran.append(where)
        return measured("inconclusive", value=2050.0, n=10)
    ran = []
    with pytest.raises(BisectNeedsAMove, match="does not move from c00 to c04 .inconclusive"):
        bisect.run(bisection(5), tmp_path / "b", bisect.Runs(tmp_path), flat)
    assert ran == [bisect.ENDS]


def test_the_report_names_the_first_bad_with_the_table_the_csv_and_the_plot(tmp_path):
    folder = tmp_path / "b"
    done = bisect.run(bisection(9), folder, bisect.Runs(tmp_path), Oracle(6, skipped={4}))
    report = bisect.write(done, folder)
    text = report.read_text()
    assert "The first bad commit is c06 \"commit 6\"" in text
    assert (folder / "plots" / "row.svg").is_file() and (folder / "plots" / "row.png").is_file()
    assert "![swapcow/write/cow_copies along the candidates](plots/row.svg)" in text
    rows = list(csv.DictReader((folder / "steps.csv").open()))
    assert [row["step"] for row in rows] == [str(n) for n in range(len(done.steps) + 1)]
    assert rows[0]["candidate"] == "c08" and rows[0]["decision"] == "bad" and rows[0]["verdict"] == "better"
    assert {row["candidate"]: row["decision"] for row in rows[1:]} == {
        bisect.Bisection.load(folder).candidates[step.candidate].name: step.decision for step in done.steps}
    for row in rows[1:]:
        assert f"[{row['candidate']}]({row['folder']}/report.md)" in text


def test_commits_are_the_first_parent_path_oldest_first(tmp_path):
    repo = tmp_path / "linux"
    good = git_repo(repo, {"Makefile": "VERSION = 5\n"}, "good")
    for number in (1, 2, 3):
        (repo / "mm.c").write_text(f"int x = {number};\n")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"mm: x is {number}")
    found = bisect.commits(repo, good[:8], "HEAD")
    assert [c.subject for c in found] == ["good", "mm: x is 1", "mm: x is 2", "mm: x is 3"]
    assert found[0].commit == good and all(c.source == f"git:{repo.resolve()}@{c.commit}" for c in found)
    assert [c.name for c in found] == [c.commit[:12] for c in found]
    with pytest.raises(BisectNeedsAMove, match="--good HEAD is not an ancestor of --bad HEAD~1"):
        bisect.commits(repo, "HEAD", "HEAD~1")
    with pytest.raises(GitRefMissing):
        bisect.commits(repo, "nope", "HEAD")
    with pytest.raises(NotAGitRepository):
        bisect.commits(tmp_path, "HEAD~1", "HEAD")


@pytest.mark.parametrize("row, said", [
    ("swapcow/write", "write it as WORKLOAD/PHASE/METRIC"),
    ("nosuch/write/cow_copies", "no workload nosuch"),
    ("swapcow/nophase/cow_copies", "swapcow runs the phases"),
    ("swapcow/write/wp_faults", "metric wp_faults has no direction")])
def test_a_row_that_cannot_be_bisected_is_refused_first(row, said):
    with pytest.raises(BadRow, match=said):
        bisect.check_row(row, TEMPLATE, ())


def test_the_command_refuses_before_any_work(tmp_path):
    def invoke(*args):
        return CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), "bisect", *args])
    repo = tmp_path / "linux"
    git_repo(repo, {"Makefile": "VERSION = 5\n"})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        (["--tree", repo, "--good", "HEAD"], "--row WORKLOAD/PHASE/METRIC is required"),
        (["--tree", repo, "--good", "HEAD", "--row", ROW], "pass --tree with --good and --bad"),
        (["--tree", repo, "--good", "HEAD", "--bad", "HEAD", "--row", "swapcow/write/wp_faults", "-o",
          tmp_path / "o1"], "metric wp_faults has no direction"),
        (["--tree", repo, "--good", "HEAD", "--bad", "HEAD", "--row", ROW, "-o", tmp_path / "o2"],
         "are the same commit"),
        (["--tree", repo, "--good", "HEAD", "--bad", "HEAD", "--row", ROW, "-o", tmp_path / "full"],
         "harness bisect --resume"),
        (["--resume", tmp_path / "full", "--row", ROW], "--resume finishes"),
        (["--resume", tmp_path / "full"], "holds no bisect.json"),
        (["--tree", repo, "--good", "HEAD", "--bad", "HEAD", "--row", ROW, "--guest", "swap=zrm"], "--guest swap=zrm"),
    ]
    for args, said in cases:
        result = invoke(*map(str, args))
        assert result.exit_code != 0 and said in result.output, (args, result.output)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists(), "a refusal leaves no folder"


def test_a_step_runs_an_experiment_of_the_good_end_and_the_candidate_with_the_row_declared(tmp_path):
    found = bisect.Bisection(ROW, candidates(4), str(TEMPLATE.path), {"swapcow": {"size_mb": 8}}, {"swap": "zram"})
    text = bisect.experiment_of(found, found.candidates[0], found.candidates[2], "c02")
    path = tmp_path / "bisect.toml"
    path.write_text(text)
    spec = experiment.load(str(path))
    assert spec.primary == (ROW,) and spec.headline == ROW and not spec.discovery and spec.workloads == ("swapcow",)
    assert [(v.name, spec.source_of(v)) for v in spec.variants] == [("good", "git:/repo@c00"), ("c02", "git:/repo@c02")]
    assert spec.mixed_sources and spec.guest.swap == "zram" and spec.parameters_of("swapcow") == {"size_mb": 8}
    assert json.loads(json.dumps(spec.kconfigs)) == list(TEMPLATE.kconfigs)


def test_a_series_is_bisected_by_its_prefixes_and_each_run_gets_the_patches_it_builds(tmp_path, fake_tree,
                                                                                     monkeypatch):
    from harness import bench
    from tests.kernel.test_importer import COVER, SERIES

    mbox = tmp_path / "series.mbox"
    mbox.write_text(COVER + "\n" + SERIES)
    out = tmp_path / "b"
    found = bisect.new(ROW, None, ("size_mb=8",), {}, 10, "harness bisect --series ...", tmp_path / "cache", out,
                       patch_paths=(mbox,), kernel=f"dir:{fake_tree}")
    assert [(c.name, c.subject, c.patches) for c in found.candidates] == [
        ("base", "the base kernel", ()), ("+1", "mm: first", ("0001-mm-first.patch",)),
        ("+1..2", "mm: second", ("0001-mm-first.patch", "0002-mm-second.patch"))]
    assert sorted(p.name for p in (out / "patches").iterdir()) == ["0001-mm-first.patch", "0002-mm-second.patch"]
    assert not found.tree and found.parameters == {"swapcow": {"size_mb": 8}}
    ran = []
    monkeypatch.setattr(bench, "run_and_analyse", lambda request, cache_dir: ran.append(request))
    monkeypatch.setattr(bisect, "read_row", lambda folder, row, variant: measured("identical"))
    bisect.measure(found, out, "steps/01-+1", 1, "+1", bisect.Runs(tmp_path / "cache"))
    [request] = ran
    spec = request.experiment
    assert [(v.name, [p.name for p in v.patches]) for v in request.variants] == [("good", []),
                                                                                ("+1", ["0001-mm-first.patch"])]
    assert all(p.is_file() and p.parent == out / "steps" / "01-+1" / "patches" for v in spec.variants
               for p in v.patches)
    assert request.force and request.max_reps == 10 and request.reps == bench.AUTO_FIRST_LOOK
    assert request.primary == (ROW,) and request.modes == ("counted",)
    assert not spec.mixed_sources, "a series' kernels all come from one source"


def test_a_step_interrupted_after_its_run_began_is_finished_not_started_again(tmp_path, monkeypatch):
    from harness import bench

    found = bisection(4)
    top = tmp_path / "b"
    asked = []
    monkeypatch.setattr(bench, "run_and_analyse", lambda request, cache_dir: asked.append(("run", request)))
    monkeypatch.setattr(bench, "resumed_request", lambda spec, folder, accel, placement: ("resumed", folder))
    monkeypatch.setattr(bisect, "read_row", lambda folder, row, variant: measured("identical"))
    runs = bisect.Runs(tmp_path / "cache")
    bisect.measure(found, top, "steps/01-c02", 2, "c02", runs)           # a new run: its experiment written
    assert (top / "steps/01-c02/bisect.toml").is_file() and asked[-1][1].out_dir == top / "steps/01-c02"
    (top / "steps/01-c02/metadata.json").write_text("{}")                # the run began, then was interrupted
    bisect.measure(found, top, "steps/01-c02", 2, "c02", runs)
    assert asked[-1] == ("run", ("resumed", top / "steps/01-c02"))
    (top / "steps/01-c02/report.md").write_text("# done\n")               # finished: nothing runs again
    bisect.measure(found, top, "steps/01-c02", 2, "c02", runs)
    assert len(asked) == 2
    (top / "steps/02-c01").mkdir(parents=True)                            # interrupted before its metadata
    (top / "steps/02-c01/stray").write_text("x")
    bisect.measure(found, top, "steps/02-c01", 1, "c01", runs)
    assert not (top / "steps/02-c01/stray").exists() and asked[-1][1].out_dir == top / "steps/02-c01"
