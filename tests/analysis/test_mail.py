"""The summary to mail: `harness compare --format email` and report.txt (harness/analysis/mail.py)."""

import json
import re
import shlex
import shutil

import pytest
from click.testing import CliRunner

from harness.analysis import analyse as analysis
from harness.analysis import mail
from harness.cli import main
from harness.project import ROOT
from tests.analysis.test_compare import lose
from tests.conftest import DATA

REFERENCE = max(ROOT.glob("results/reference-*"))


def email(tmp_path, *run_dirs):
    return CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), "compare", "--format", "email",
                                     *map(str, run_dirs)])


def test_the_reference_run_mails_in_72_columns(tmp_path):
    result = email(tmp_path, REFERENCE)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= mail.WIDTH
    assert not any("**" in line or "`" in line or line != line.rstrip() for line in lines), "plain text"
    text = result.output
    opening = text.split("\n\n")[1].replace("\n  ", " ")
    assert opening.startswith("On Linux 5.10.223 under TCG, patched changes cow_copies_per_swapin in the write "
                              "phase of redis") and opening.endswith(": better.")
    assert text.index("Calibration passed") < text.index("Object code of patched") < text.index("Patch coverage")
    header = next(line for line in lines if line.split() == ["base", "patched", "control"])
    assert header.index("patched") < header.index("control"), "the kernels are the columns"
    primary = [line for line in lines if re.match(r"  \S+ \(P\)", line)]
    assert len(primary) == 4, "every primary row, whatever its verdict"
    at = lines.index("redis write")
    named = next(k for k in range(at, len(lines)) if "cow_copies_per_swapin (P)" in lines[k])
    values = lines[named + 1].split()   # a name too long for its column has the values on the next line
    assert len(values) == 7 and values[2:4] == ["-100%", "B"] and values[6] == "E", "patched better, control equivalent"
    medians = {r["variant"]: r["median"] for r in json.loads((REFERENCE / "comparison.json").read_text())
               if (r["workload"], r["phase"], r["metric"]) == ("redis", "write", "cow_copies_per_swapin")}
    assert [float(values[i]) for i in (0, 1, 4)] == pytest.approx([medians[v] for v in ("base", "patched", "control")],
                                                                 rel=5e-3), (values, medians)
    assert any(line.startswith("B better, W worse, E equivalent") for line in lines)
    assert lines[-1] == "Reproduce: harness bench --control --reps auto"


def test_lost_boots_open_the_mail_with_their_reasons_whatever_the_verdict(tmp_path):
    """Issue 37: with 5 of 6 boots lost the mail opened with "better" and showed the loss on line 32 as
    "1/6 (5 invalid)", without the reason; an exception that is not one of ours (paramiko's, when a guest dies)
    was a harness fault, never a lost boot. Now a harness fault counts as lost, on every side, and the loss opens
    the mail, with one repetition lost of six as with five."""
    copy = lose(REFERENCE, tmp_path / "five", "swapcow", "patched", range(2, 7),
                "failed: harness fault: OSError: Socket is closed")
    opening = email(tmp_path, copy).output.split("\n\n")[1].replace("\n  ", " ").replace("\n", " ")
    assert opening.startswith("Lost boots: a variant lost more repetitions than base: patched in swapcow: 5 of 6 "
                              "repetitions lost a boot (baseline: 0 of 6): 5 x failed: harness fault: OSError: Socket "
                              "is closed ("), opening
    one = lose(REFERENCE, tmp_path / "one", "forkcow", "patched", [6], "reuse: wp_faults is 0")
    opening = email(tmp_path, one).output.split("\n\n")[1].replace("\n  ", " ").replace("\n", " ")
    assert opening.startswith("Lost boots: a variant lost more repetitions than base: patched in forkcow: 1 of 6 "
                              "repetitions lost a boot (baseline: 0 of 6): 1 x reuse: wp_faults is 0 (inconclusive)"), \
        opening
    both = lose(one, tmp_path / "both", "forkcow", "base", [6], "failed: harness fault: OSError: Socket is closed")
    both = lose(both, tmp_path / "both2", "forkcow", "patched", [6], "failed: harness fault: OSError: Socket is closed")
    text = email(tmp_path, both).output
    assert "Lost boots" not in text, "a harness fault the baseline shows as often says nothing of the variant"


def test_report_txt_is_written_beside_report_md(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(DATA / "run-small", copy)
    analysis.analyse(copy, analysis.recorded_experiment(copy))
    text = (copy / "report.txt").read_text()
    assert max(map(len, text.splitlines())) <= mail.WIDTH
    assert "inconclusive" in text.split("\n\n")[1] and "Reproduce: harness" in text


def test_a_long_command_is_continued_with_backslashes_the_shell_joins():
    command = "harness bench -e " + "/very/long/" * 12 + "experiment.toml --control -p size_mb=64"
    lines = mail.reproduce(command)
    assert len(lines) > 1 and max(map(len, lines)) <= mail.WIDTH
    joined = "\n".join(lines).removeprefix("Reproduce:").replace("\\\n", "")
    assert shlex.split(joined) == shlex.split(command)


def test_compare_with_one_variant_says_so_and_fails(tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(DATA / "run-small", copy)
    runs = (copy / "runs.csv").read_text().splitlines()
    (copy / "runs.csv").write_text("\n".join([runs[0]] + [line for line in runs[1:]
                                                          if not line.startswith("patched,")]) + "\n")
    result = CliRunner().invoke(main, ["--cache-dir", str(tmp_path / "cache"), "compare", str(copy)])
    assert result.exit_code == 1
    assert "valid boots of one variant only (base): there is nothing to compare it with" in result.output


def test_no_quoted_line_contradicts_the_medians(tmp_path):
    """A row of the reference run where the median of the pairwise ratios and the medians moved opposite
    ways (redis/read/vmstat.pgreuse of control in reference-20261206-113802: +1.0%, the medians -0.5%).
    The table, the headline sentence and the mail each say both. The sentence leaves controls out, so the row
    is given to it as an exploratory row of a patched variant."""
    import dataclasses

    from harness.analysis import report, tables
    result = analysis.comparison([REFERENCE])
    bases = {r.key: r for r in result.rows if r.variant == r.baseline}
    opposite = [(r, tables.medians_against(r, bases[r.key].median)) for r in result.rows
                if r.variant != r.baseline and r.change_pct and r.key in bases and bases[r.key].median]
    opposite = [(r, moved) for r, moved in opposite if moved and (r.change_pct > 0) != (moved > 0)]
    assert opposite, "the reference run has such a row"
    row, moved = opposite[0]
    base = bases[row.key]
    assert f"(medians {moved:+.1f}%)" in tables.change_text(row, base.median)
    patched = dataclasses.replace(row, role="exploratory")
    rows = [patched if r is row else r for r in result.rows if r.key == row.key]
    sentence = report.headline_sentence(rows, row.key, "5.10.223", "tcg")
    assert f"{row.change_pct:+.1f}%" in sentence and f"though the medians moved {moved:+.1f}%" in sentence
    cell, note = mail._cell(row, base)
    assert "%^" in cell and f"the medians moved {mail._pct(moved)}" in note
