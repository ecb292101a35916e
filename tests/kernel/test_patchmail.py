import pytest

from harness.errors import PatchParseError
from harness.kernel import patchmail
from tests.conftest import SEED_MAIL

SEED = SEED_MAIL.read_text()


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


def test_a_message_without_a_diff_is_refused():
    with pytest.raises(PatchParseError, match="no 'diff --git'"):
        patchmail.parse("Subject: hello\nFrom: a <a@b>\n\njust words\n")
