import pytest

from harness.kernel import reindent


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
    assert reindent.indent_for(added, written) == indent


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
    assert reindent.indent_for(added, written) == indent
