"""The renderings of a comparison (harness/analysis/tables.py): the table, the words of a change and a verdict."""

from harness.analysis import analyse as analysis
from harness.analysis import records, tables
from tests.conftest import DATA

RUN = DATA / "run-small"   # a real 2-rep run of the default experiment (swapcow 16 MiB, redis 4000 keys)


def test_headline_table_fits_100_columns():
    rows = analysis.comparison([RUN]).rows
    assert max(len(line) for line in tables.render_table(rows).splitlines()) <= 100


def a_row(**fields) -> records.Row:
    values = {"workload": "w", "phase": "write", "metric": "cow_copies", "variant": "patched", "baseline": "base",
              "n": 6, "median": 1.0, "mean": 1.0, "stddev": 0.0, "ci_low": None, "ci_high": None, "change_pct": 0.0,
              "change_ci_low": -1.0, "change_ci_high": 1.0, "p_value": 0.5, "verdict": "inconclusive"}
    return records.Row(**(values | fields))


def test_the_tables_say_what_an_interval_and_a_verdict_are():
    assert tables.change_text(a_row(change_pct=-100.0, change_ci_low=-100.0, change_ci_high=-100.0), 4096) == \
        "-100.0% (tied pairs)", "a zero-width interval of discrete values is no 95% interval"
    assert tables.change_text(a_row(change_pct=0.3, change_ci_low=-1.0, change_ci_high=0.9, median=0.98), 0.985) \
        == "+0.3% [-1.0,+0.9] (medians -0.5%)", "the pairwise change and the medians disagree: both shown"
    assert tables.change_text(a_row(change_pct=0.3, median=0.99), 0.985) == "+0.3% [-1.0,+1.0]"
    explored = a_row(verdict="better", role="exploratory")
    assert tables.verdict_text(explored) == "better (FDR)" and explored.as_json()["verdict"] == "better"
    assert tables.verdict_text(a_row(verdict="better", role="primary", margin_pct=5.0)) == "better"
    assert tables.verdict_text(a_row(verdict="identical", role="exploratory")) == "identical"


def test_the_change_words_survive_odd_medians():
    assert tables.change_text(a_row(change_pct=5.0, median=float("nan")), 1.0) == "+5.0% [-1.0,+1.0]"
    assert tables.change_text(a_row(change_pct=5.0, median=-2.0), -1.0) == "+5.0% [-1.0,+1.0]"
    assert tables.verdict_text(a_row(verdict="worse", role="control")) == "worse (FDR)", \
        "a control's exploratory row is exploratory too"
    assert tables.verdict_text(a_row(verdict="worse", role="control", margin_pct=5.0)) == "worse"
