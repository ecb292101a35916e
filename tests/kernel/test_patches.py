import shutil
import subprocess

from harness.kernel import patches
from tests.conftest import DATA

FORMAT_PATCH = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Ann Author <ann@example.org>
Date: Mon, 1 Jan 2024 00:00:00 +0000
Subject: [PATCH 1/2] mm: first

Body one.

Signed-off-by: Ann Author <ann@example.org>
---
 mm/memory.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/mm/memory.c b/mm/memory.c
--- a/mm/memory.c
+++ b/mm/memory.c
@@ -5,3 +5,3 @@ static int reuse_count(int count)
 {
-\tif (count != 1)
+\tif (count > 1)
 \t\treturn 0;
-- 
2.39.5
"""

SECOND = """From: Ann Author <ann@example.org>
Subject: [PATCH 2/2] mm: second

---
diff --git a/mm/memory.c b/mm/memory.c
--- a/mm/memory.c
+++ b/mm/memory.c
@@ -5,4 +5,5 @@ static int reuse_count(int count)
 {
 \tif (count > 1)
 \t\treturn 0;
+\t/* only one */
 \treturn 1;
"""


def test_clean_patch_applies_with_git(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(DATA / "excerpt", tree)
    ok, detail = patches.git_check_series([DATA / "seed-on-excerpt.patch"], tree)
    assert ok, detail


def test_check_series_reports_every_hunk_in_order(tmp_path, fake_tree):
    first, second = tmp_path / "0001.patch", tmp_path / "0002.patch"
    first.write_text(FORMAT_PATCH)
    second.write_text(SECOND)
    reports = patches.check_series([first, second], fake_tree)
    assert [(r.patch, r.number, r.ok) for r in reports] == [("0001.patch", 1, True), ("0002.patch", 1, True)]
    assert patches.git_check_series([first, second], fake_tree) == (True, "")
    assert (fake_tree / "mm" / "memory.c").read_text().count("count != 1") == 1, "the tree is not touched"
    alone = patches.check_series([second], fake_tree)
    assert not alone[0].ok and "not found" in alone[0].detail
    assert patches.first_failure(second, fake_tree) == "mm/memory.c hunk 1"
    ok, detail = patches.git_check_series([second], fake_tree)
    assert not ok and "0002.patch" in detail and "\n" not in detail


def test_check_reports_an_offset(tmp_path, fake_tree):
    memory = fake_tree / "mm" / "memory.c"
    memory.write_text("\n\n" + memory.read_text())
    patch = tmp_path / "0001.patch"
    patch.write_text(FORMAT_PATCH)
    [report] = patches.check_series([patch], fake_tree)
    assert report.ok and report.detail == "applies at line 7 (offset +2 lines)"


NEW_FILE = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Ann Author <ann@example.org>
Subject: [PATCH] mm: add memory.c

---
diff --git a/mm/memory.c b/mm/memory.c
new file mode 100644
--- /dev/null
+++ b/mm/memory.c
@@ -0,0 +1 @@
+int created;
--
2.39.2
"""


def test_a_patch_that_creates_a_file_the_tree_has_does_not_apply(tmp_path, fake_tree):
    # the build's git apply refuses it in the tree: the check, on its scratch copy, must refuse it too
    creates, adds = tmp_path / "creates.patch", tmp_path / "adds.patch"
    creates.write_text(NEW_FILE)
    adds.write_text(NEW_FILE.replace("mm/memory.c", "mm/brand-new.c"))
    assert patches.git_check_series([creates], fake_tree) == (
        False, "creates.patch: error: mm/memory.c: already exists in working directory")
    assert patches.git_check_series([adds], fake_tree) == (True, "")
    refused = subprocess.run(["git", "apply", "--check", str(creates)], cwd=fake_tree, capture_output=True, text=True)
    assert refused.returncode == 1 and "already exists in working directory" in refused.stderr, "as the build sees it"
