import shutil
import subprocess

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


@pytest.mark.parametrize("written, added, indent", [
    # a brace-less body made of a comment block and one statement: the next statement is back at the if
    (["\tif (PageSwapCache(page))", "\t\t/*", "\t\t * drop it", "\t\t */", "\t\ttry_to_free_swap(page);"],
     "if (PageKsm(page))", "\t"),
    (["\tif (PageSwapCache(page))", "\t\t/*", "\t\t * drop it", "\t\t */"], "try_to_free_swap(page);", "\t\t"),
    (["\tif (PageSwapCache(page))"], "/*", "\t\t"),
    (["\tif (a)", "\t\t/* one line */", "\t\tx();"], "y();", "\t"),
    # nested brace-less headers end together
    (["\tfor (i = 0; i < nr; i++)", "\t\tif (pages[i])", "\t\t\tput_page(pages[i]);"], "return 0;", "\t"),
    (["\tfor (i = 0; i < nr; i++)", "\t\tif (pages[i])"], "put_page(pages[i]);", "\t\t\t"),
    # a header over two lines, and a statement over two lines
    (["\tif (PageKsm(page) ||", "\t    page_count(page) != 1)"], "goto copy;", "\t\t"),
    (["\tif (PageKsm(page) ||", "\t    page_count(page) != 1)", "\t\tgoto copy;"], "unlock_page(page);", "\t"),
    (["\tif (a)", "\t\tret = call(first,", "\t\t\t   second);"], "return ret;", "\t"),
    # else and else if, braced and not
    (["\tif (a)", "\t\tx();"], "else if (b)", "\t"),
    (["\tif (a)", "\t\tx();", "\telse if (b)"], "y();", "\t\t"),
    (["\tif (a)", "\t\tx();", "\telse if (b)", "\t\ty();", "\telse"], "z();", "\t\t"),
    (["\tif (a)", "\t\tx();", "\telse if (b)", "\t\ty();", "\telse", "\t\tz();"], "w();", "\t"),
    (["\tif (a) {", "\t\tx();"], "} else if (b) {", "\t"),
    (["\t} else", "\t\tz();"], "w();", "\t"),
    (["\tswitch (x) {", "\tcase 1:"], "y();", "\t\t"),
    (["\tx(); /* trailing */"], "y();", "\t"),
    (["\tif (a) /* why */"], "y();", "\t\t"),
    # a line of code that starts with '*' is code, not a comment
    (["\tif (pte)", "\t\t*pte = entry;"], "return 0;", "\t"),
    (["\t*pte = entry;"], "update_mmu_cache(vma, address, pte);", "\t"),
])
def test_brace_less_bodies_comments_continuations_and_else_if(written, added, indent):
    assert patches.indent_for(added, written) == indent


BEFORE = """static vm_fault_t do_wp_page(struct vm_fault *vmf)
{
\tstruct page *page = vmf->page;
\tint i, ret;

\tif (!page)
\t\treturn 0;
\treturn wp_page_copy(vmf);
}
"""

AFTER = """static vm_fault_t do_wp_page(struct vm_fault *vmf)
{
\tstruct page *page = vmf->page;
\tint i, ret;

\tif (!page)
\t\treturn 0;
\tif (PageSwapCache(page))
\t\t/*
\t\t * The swap cache holds a reference: drop it before
\t\t * the write, when no one else maps the page.
\t\t */
\t\ttry_to_free_swap(page);
\tif (PageKsm(page) ||
\t    page_count(page) != 1)
\t\tgoto copy;
\tfor (i = 0; i < 2; i++)
\t\tif (i)
\t\t\tlru_add_drain();
\tret = reuse_swap_page(page,
\t\t\t      NULL);
\tif (ret) {
\t\twp_page_reuse(vmf);
\t} else if (i) {
\t\tunlock_page(page);
\t} else
\t\tput_page(page);
\treturn 0;
copy:
\treturn wp_page_copy(vmf);
}
"""


def mangled_quote(clean: str) -> str:
    """A clean patch as a list archive shows a reply quoting it: '> ' before every line, the
    leading whitespace of the code gone (the '+'/'-' tag stays, a context line loses its space)."""
    out = ["Re: [PATCH 2/2] mm: drop the swap cache reference before a write", "", "On Monday, A wrote:"]
    in_diff = False
    for line in clean.splitlines():
        in_diff = in_diff or line.startswith("diff --git")
        if in_diff and line[:1] in ("+", "-") and not line.startswith(("+++", "---")):
            line = line[0] + " " + line[1:].strip()
        elif in_diff and line[:1] == " ":
            line = line.strip()
        out.append("> " + line)
    return "\n".join(out) + "\n"


def hunk_lines(text: str) -> list[str]:
    """From the first @@ to the end of the diff (the format-patch signature left out); @@ headers without
    their section text, which git takes from the line before the hunk."""
    lines = text.split("\n-- \n")[0].splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("@@")):]
    return [line.split(" @@")[0] if line.startswith("@@") else line for line in body]


def test_a_mangled_quote_of_a_brace_less_body_imports_byte_for_byte(tmp_path, fake_tree):
    (fake_tree / "mm" / "wp.c").write_text(BEFORE)
    git = ["git", "-c", "user.name=Ann", "-c", "user.email=ann@example.org"]
    subprocess.run([*git, "init", "-q", str(tmp_path / "repo")], check=True)
    (tmp_path / "repo" / "mm").mkdir()
    (tmp_path / "repo" / "mm" / "wp.c").write_text(BEFORE)
    subprocess.run([*git, "-C", str(tmp_path / "repo"), "add", "."], check=True)
    subprocess.run([*git, "-C", str(tmp_path / "repo"), "commit", "-qm", "before"], check=True)
    (tmp_path / "repo" / "mm" / "wp.c").write_text(AFTER)
    diff = subprocess.run(["git", "-C", str(tmp_path / "repo"), "diff"], capture_output=True, text=True).stdout
    clean = ("From: Ann Author <ann@example.org>\nSubject: [PATCH] mm: drop the swap cache reference\n\n"
             "Body.\n\nSigned-off-by: Ann Author <ann@example.org>\n---\n" + diff)
    imported = patches.import_message(mangled_quote(clean), fake_tree, author="Ann Author <ann@example.org>")
    assert hunk_lines(imported) == hunk_lines(diff), "every added line indented as in the original"
    patch = tmp_path / "0001.patch"
    patch.write_text(imported)
    assert patches.git_check_series([patch], fake_tree) == (True, "")


def test_series_patch_names_are_the_ones_git_format_patch_gives():
    # both names as git 2.39 format-patch wrote them for these subjects
    assert patches.patch_file_name(1, "mm: optimize do_wp_page() for exclusive pages in the swapcache") == \
        "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-sw.patch"
    assert patches.patch_file_name(1, "mm: a b c d e f g h i j k l m n o p q r s t u v w xx yy zz") == \
        "0001-mm-a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t-u-v-w-xx-.patch"


SERIES = FORMAT_PATCH + "\n" + SECOND.replace("From: Ann", "From 2222222222222222222222222222222222222222 Mon Sep 17 "
                                               "00:00:00 2001\nFrom: Ann", 1)
COVER = ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: Ann Author <ann@example.org>\n"
         "Subject: [PATCH 0/2] mm: two\n\nThe cover letter.\n")


def test_an_mbox_series_is_split_ordered_and_each_patch_anchored_after_the_last(tmp_path, fake_tree):
    mbox = tmp_path / "series.mbox"
    second, first = patchmail.split_mbox(SERIES)[1], patchmail.split_mbox(SERIES)[0]
    mbox.write_text(COVER + "\n" + second + "\n" + first)        # the cover letter first, then out of order
    parts = patchmail.split_series(mbox)
    assert [(part.number, part.total) for part in parts] == [(1, 2), (2, 2)]
    imported = patches.import_series(parts, fake_tree)
    assert [patch.name for patch in imported] == ["0001-mm-first.patch", "0002-mm-second.patch"]
    folder = tmp_path / "out"
    folder.mkdir()
    for patch in imported:
        (folder / patch.name).write_text(patch.text)
    assert patches.git_check_series(sorted(folder.glob("*.patch")), fake_tree) == (True, "")
    assert [part.origin for part in patchmail.split_series(folder)] == ["0001-mm-first.patch", "0002-mm-second.patch"]
    mbox.write_text(SERIES + "\n" + SERIES)
    with pytest.raises(PatchParseError, match="patch numbers repeat"):
        patchmail.split_series(mbox)
