"""The real thing for `broken`: a patch of our own that lets a child read its parent's writes (do_wp_page()
reuses a page whose only other reference is the swap cache and leaves it there, while the child still holds a
swap entry of it; patches/known-bad/), given to `harness try` on Linux 5.10 and on Debian's 6.12 (built as
mm-four-kernels builds it, the configuration tests/real/test_real_mm.py uses: make test builds two). Its write
faults copy fewer pages, which counted alone reads as `better`; the integrity workload reads back in the child
what the parent wrote, and the first line of the report, of the mail and of the console says `broken`, and the
command exits non-zero. The baseline kernel, booted twice (base and control), reads back nothing wrong.

Uses the default cache (~/.cache/harness): the patched kernels build on ccache from the baseline's objects.
"""

import json

import pandas as pd
import pytest

from harness import experiment, workloads
from harness.cli import BROKEN_EXIT
from harness.project import ROOT
from tests.real.cli import harness, show

pytestmark = pytest.mark.real

KNOWN_BAD = ROOT / "patches" / "known-bad"
V6_12 = next(v for v in experiment.load("mm-four-kernels").variants if v.name == "v6.12")
TRIALS = [("5.10.", (), KNOWN_BAD / "0001-mm-reuse-a-swap-cache-page-in-do_wp_page-and-keep-it.patch"),
          ("6.12.", ("--kernel", V6_12.source, "-e", "mm-four-kernels"),
           KNOWN_BAD / "0001-mm-reuse-a-swap-cache-folio-in-wp_can_reuse_anon_fol.patch")]
LEAKING = ("swapreadwrite", "swapwrite")     # the parent writes while the child still holds its swap entries


@pytest.mark.parametrize("release, kernel, patch", TRIALS, ids=["5.10", "6.12"])
def test_try_of_a_patch_that_shows_a_child_its_parents_writes_says_broken_first_and_fails(tmp_path, release,
                                                                                           kernel, patch):
    out = tmp_path / "try"
    result = harness("try", patch, *kernel, "--workload", "integrity", "-o", out, check=False)
    assert result.returncode == BROKEN_EXIT, result.stdout[-3000:] + result.stderr[-3000:]
    said = result.stdout.splitlines()
    findings = said[said.index(f"experiment: {out / 'try.toml'}") + 1:]
    assert findings[0].startswith("BROKEN: `patched` reads back wrong data in integrity/"), findings[:2]
    assert (out / "report.txt").read_text().startswith("BROKEN: patched reads back wrong data in integrity/")
    assert (out / "report.md").read_text().startswith("**BROKEN: `patched` reads back wrong data in integrity/")

    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    integrity = runs[runs["workload"] == "integrity"]
    assert integrity["valid"].astype(str).eq("True").all(), integrity[["variant", "reason"]].to_dict("records")
    assert integrity["kernel_release"].astype(str).str.startswith(release).all()
    clean = integrity[integrity["variant"].isin(["base", "control"])]
    assert (clean["findings"] == "").all(), "the baseline kernel, booted twice, reads back nothing wrong"
    [patched] = integrity[integrity["variant"] == "patched"].to_dict("records")
    found = {finding["phase"]: finding for finding in json.loads(patched["findings"])}
    pages = workloads.load("integrity").params()["size_mb"] * 256
    for phase in LEAKING:
        assert found[phase]["count"] >= 0.9 * pages and found[phase]["where"].startswith("child:"), found
        assert found[phase]["expected"] != found[phase]["found"]

    samples = pd.read_csv(out / "samples.csv")
    checked = samples[(samples["workload"] == "integrity") & (samples["metric"] == "checked_pages")]
    assert (checked.groupby("variant")["phase"].nunique() == len(workloads.load("integrity").phases)).all(), \
        "every variant checked every phase"
    wrong = samples[(samples["metric"] == "wrong_pages") & samples["variant"].isin(["base", "control"])]
    assert len(wrong) and (wrong["value"] == 0).all()
    rows = json.loads((out / "comparison.json").read_text())
    verdicts = {(r["phase"], r["metric"]): r["verdict"] for r in rows
                if r["variant"] == "patched" and r["workload"] == "integrity"}
    assert all(verdicts[(phase, "wrong_pages")] == "broken" for phase in LEAKING)
    show(f"known-bad on {release[:-1]}", f"{findings[0][:170]}; " + ", ".join(
        f"{phase} {found[phase]['count']:,} of {found[phase]['checked']:,}" for phase in sorted(found)))
