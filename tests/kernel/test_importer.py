
import pytest

from harness.errors import HunkAnchorsTwice, HunkNotAnchored, PatchParseError
from harness.kernel import importer, patches, patchmail
from tests.conftest import DATA, SEED_MAIL, git, git_repo
from tests.kernel.test_patches import FORMAT_PATCH, SECOND

SEED = SEED_MAIL.read_text()
AUTHOR = "David Hildenbrand <david@redhat.com>"


def test_seed_round_trips_to_the_golden_clean_patch():
    text = importer.import_message(SEED, DATA / "excerpt", author=AUTHOR, upstream="53a05ad9f21d")
    assert text == (DATA / "seed-on-excerpt.patch").read_text()


def test_reimporting_a_clean_patch_is_a_fixed_point():
    clean = (DATA / "seed-on-excerpt.patch").read_text()
    again = importer.import_message(clean, DATA / "excerpt", upstream="")
    assert again.split("\ndiff --git", 1)[1] == clean.split("\ndiff --git", 1)[1]


def test_mangled_hunk_that_anchors_twice_is_refused(tmp_path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    excerpt = (DATA / "excerpt" / "mm" / "memory.c").read_text()
    (tree / "mm" / "memory.c").write_text(excerpt + "\n" + excerpt)
    with pytest.raises(HunkAnchorsTwice, match=r"Hunk 1 of mm/memory.c .* anchors in 2 places .*lines 43, 119"):
        importer.import_message(SEED, tree, author=AUTHOR)


def test_hunk_that_anchors_nowhere_is_refused(tmp_path):
    tree = tmp_path / "tree"
    (tree / "mm").mkdir(parents=True)
    (tree / "mm" / "memory.c").write_text("int unrelated;\n")
    with pytest.raises(HunkNotAnchored, match="Hunk 1 of mm/memory.c"):
        importer.import_message(SEED, tree, author=AUTHOR)


def test_format_patch_keeps_author_date_and_exact_lines(fake_tree):
    text = importer.import_message(FORMAT_PATCH, fake_tree)
    assert "From: Ann Author <ann@example.org>\nDate: Mon, 01 Jan 2024 00:00:00 +0000\n" in text
    assert "Subject: [PATCH] mm: first\n" in text
    assert "+\tif (count > 1)\n" in text
    assert "@@ -5,3 +5,3 @@ static int reuse_count(int count)\n" in text


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
    git_repo(tmp_path / "repo", {"mm/wp.c": BEFORE}, "before")
    (tmp_path / "repo" / "mm" / "wp.c").write_text(AFTER)
    diff = git(tmp_path / "repo", "diff")
    clean = ("From: Ann Author <ann@example.org>\nSubject: [PATCH] mm: drop the swap cache reference\n\n"
             "Body.\n\nSigned-off-by: Ann Author <ann@example.org>\n---\n" + diff)
    imported = importer.import_message(mangled_quote(clean), fake_tree, author="Ann Author <ann@example.org>")
    assert hunk_lines(imported) == hunk_lines(diff), "every added line indented as in the original"
    patch = tmp_path / "0001.patch"
    patch.write_text(imported)
    assert patches.git_check_series([patch], fake_tree) == (True, "")


def test_series_patch_names_are_the_ones_git_format_patch_gives():
    # both names as git 2.39 format-patch wrote them for these subjects
    assert importer.patch_file_name(1, "mm: optimize do_wp_page() for exclusive pages in the swapcache") == \
        "0001-mm-optimize-do_wp_page-for-exclusive-pages-in-the-sw.patch"
    assert importer.patch_file_name(1, "mm: a b c d e f g h i j k l m n o p q r s t u v w xx yy zz") == \
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
    imported = importer.import_series(parts, fake_tree)
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
