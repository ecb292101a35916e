from harness.kernel import checkpatch
from tests.kernel.test_patches import FORMAT_PATCH

# A stand-in for the kernel's scripts/checkpatch.pl: what --terse --show-types prints, one finding
# on a line of each kind of the patch (FORMAT_PATCH: message, diffstat, diff, signature), and the
# command line it was given as the text of the first.
FAKE_CHECKPATCH = """#!/usr/bin/perl
my $patch = $ARGV[-1];
print "$patch:6: WARNING:ARGS: @ARGV[0 .. $#ARGV - 1]\\n";
print "$patch:10: CHECK:DIFFSTAT: the diffstat is not code\\n";
print "$patch:19: ERROR:SPACING: a finding in the code\\n";
print "$patch:21: WARNING:SIGNATURE: the signature is not code\\n";
print "total: 1 errors, 2 warnings, 22 lines checked\\n";
"""


def test_a_tree_without_checkpatch_is_not_checked(tmp_path):
    patch = tmp_path / "0001.patch"
    patch.write_text(FORMAT_PATCH)
    assert checkpatch.run(patch, tmp_path) is None
    assert checkpatch.summary(None, tmp_path) == f"checkpatch: {tmp_path} has no scripts/checkpatch.pl, not checked"


def test_findings_in_the_diff_are_told_from_those_in_the_message(tmp_path, fake_tree):
    (fake_tree / "scripts").mkdir(exist_ok=True)
    (fake_tree / "scripts" / "checkpatch.pl").write_text(FAKE_CHECKPATCH)
    patch = tmp_path / "0001.patch"
    patch.write_text(FORMAT_PATCH)
    found = checkpatch.run(patch, fake_tree)
    assert [(f.line, f.level, f.kind, f.in_code) for f in found] == [
        (6, "WARNING", "ARGS", False), (10, "CHECK", "DIFFSTAT", False), (19, "ERROR", "SPACING", True),
        (21, "WARNING", "SIGNATURE", False)]
    assert found[0].text == f"--root={fake_tree} --terse --no-summary --show-types --ignore " \
        "GIT_COMMIT_ID,UNKNOWN_COMMIT_ID", "the import's own 'commit <id> upstream.' line is not a finding"
    assert str(found[2]) == "ERROR:SPACING line 19: a finding in the code"
    assert str(found[3]) == "WARNING:SIGNATURE line 21 (message): the signature is not code"
    assert checkpatch.summary(found, fake_tree) == \
        "checkpatch: 1 error(s), 0 warning(s) in the code; 3 finding(s) in the commit message"


def test_a_line_number_outside_the_patch_is_not_code():
    [finding] = checkpatch.findings("p:99: ERROR:X: past the end", ["diff --git a/x b/x", "+y"])
    assert not finding.in_code
