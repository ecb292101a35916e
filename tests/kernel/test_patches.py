import shutil

import pytest

from harness.errors import HunkAnchorsTwice, HunkNotAnchored, PatchParseError
from harness.kernel import patches, patchmail
from tests.conftest import DATA, SEED_MAIL

SEED = SEED_MAIL.read_text()
AUTHOR = "David Hildenbrand <david@redhat.com>"


def test_seed_message_is_read_as_a_quoted_patch():
    message = patchmail.parse(SEED)
    assert message.quoted
    assert message.subject == "mm: optimize do_wp_page() for exclusive pages in the swapcache"
    assert message.author == "David Hildenbrand <david@xxxxxxxxxx>", "taken from the quoted sign-off"
    assert message.body.startswith("Liang Zhang reported [1]")
    assert "Can we make the description" not in message.body, "the reviewer's words are not the patch's"
    assert "Nadav with a simple reproducer.\n\nLet's optimize" in message.body
    [diff] = message.files
    assert diff.old_path == diff.new_path == "mm/memory.c"
    [hunk] = diff.hunks
    assert (len(hunk.old_lines()), len(hunk.new_lines())) == (19, 27)


def test_seed_round_trips_to_the_golden_clean_patch():
    text = patches.import_message(SEED, DATA / "excerpt", author=AUTHOR, upstream="53a05ad9f21d")
    assert text == (DATA / "seed-on-excerpt.patch").read_text()


def test_clean_patch_applies_with_git(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(DATA / "excerpt", tree)
    ok, detail = patches.git_check_series([DATA / "seed-on-excerpt.patch"], tree)
    assert ok, detail


def test_reimporting_a_clean_patch_is_a_fixed_point():
    clean = (DATA / "seed-on-excerpt.patch").read_text()
    again = patches.import_message(clean, DATA / "excerpt", upstream="")
    assert again.split("\ndiff --git", 1)[1] == clean.split("\ndiff --git", 1)[1]


def test_mangled_hunk_that_anchors_twice_is_refused(tmp_path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    excerpt = (DATA / "excerpt" / "mm" / "memory.c").read_text()
    (tree / "mm" / "memory.c").write_text(excerpt + "\n" + excerpt)
    with pytest.raises(HunkAnchorsTwice, match=r"Hunk 1 of mm/memory.c .* anchors in 2 places .*lines 43, 119"):
        patches.import_message(SEED, tree, author=AUTHOR)


def test_hunk_that_anchors_nowhere_is_refused(tmp_path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "memory.c").write_text("int unrelated;\n")
    with pytest.raises(HunkNotAnchored, match="Hunk 1 of mm/memory.c"):
        patches.import_message(SEED, tree, author=AUTHOR)


def test_a_message_without_a_diff_is_refused():
    with pytest.raises(PatchParseError, match="no 'diff --git'"):
        patchmail.parse("Subject: hello\nFrom: a <a@b>\n\njust words\n")


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


def test_format_patch_keeps_author_date_and_exact_lines(fake_tree):
    text = patches.import_message(FORMAT_PATCH, fake_tree)
    assert "From: Ann Author <ann@example.org>\nDate: Mon, 01 Jan 2024 00:00:00 +0000\n" in text
    assert "Subject: [PATCH] mm: first\n" in text
    assert "+\tif (count > 1)\n" in text
    assert "@@ -5,3 +5,3 @@ static int reuse_count(int count)\n" in text


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


@pytest.mark.parametrize("written, added, indent", [
    (["\tif (a) {"], "x();", "\t\t"),
    (["\t\tif (PageSwapCache(page))"], "try_to_free_swap(page);", "\t\t\t"),
    (["\t\tif (PageSwapCache(page))", "\t\t\ttry_to_free_swap(page);"], "if (b) {", "\t\t"),
    (["\t\t/*"], "* text", "\t\t "),
    (["\t\t/*", "\t\t * text"], "*/", "\t\t "),
    (["\t\t/*", "\t\t */"], "if (c)", "\t\t"),
    (["\tif (a) {", "\t\tx();"], "}", "\t"),
    (["\tret = call(first,"], "second);", "\t\t   "),
    (["\tx();"], "out:", ""),
    (["\tx();"], "#ifdef CONFIG_SWAP", ""),
])
def test_added_lines_take_the_indentation_of_their_code(written, added, indent):
    assert patches.indent_for(added, written) == indent
