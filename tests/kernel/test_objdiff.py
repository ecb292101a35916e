"""Object-code comparison: real gcc, objdump and readelf on small programs."""

import json
import subprocess

import pytest

from harness import results
from harness.errors import CommandFailed
from harness.kernel import objdiff

PROGRAM = """
static int helper(int x) {{ return x * {factor}; }}
__attribute__((noinline)) int untouched(int x) {{ return x + 1; }}
__attribute__((noinline)) int changed(int x) {{ {comment} return helper(x) + untouched(x); }}
int main(int argc, char **argv) {{ return changed(argc) + untouched(argc); }}
"""


def compile_program(folder, name, **fields):
    source = folder / f"{name}.c"
    source.write_text(PROGRAM.format(**{"factor": 3, "comment": "", **fields}))
    binary = folder / name
    subprocess.run(["gcc", "-O2", "-o", binary, source], check=True)
    return binary


def test_a_comment_only_change_is_identical_and_a_code_change_names_its_function(tmp_path):
    base = objdiff.facts(compile_program(tmp_path, "base"), tmp_path)
    assert (tmp_path / objdiff.FACTS_FILE).is_file(), "the facts are kept beside the build"
    comment = objdiff.facts(compile_program(tmp_path, "comment", comment="/* only a comment */"))
    code = objdiff.facts(compile_program(tmp_path, "code", factor=5))
    same = objdiff.compare("comment", "base", base, comment)
    assert same.identical and same.changed == [] and "identical to base" in same.summary()
    different = objdiff.compare("code", "base", base, code)
    assert not different.identical and ".text" in different.sections
    assert "changed" in different.changed and "untouched" not in different.changed and "main" not in different.changed
    assert different.summary().startswith("object code differs from base: ")


def test_normalise_takes_out_what_moves_when_other_code_moves():
    moved = [("call   ffffffff8100042b <schedule>", "call   ffffffff8100052b <schedule>"),
             ("mov    0xa03f51(%rip),%rax        # ffffffff81a03f58 <initial_gs>",
              "mov    0xa03f11(%rip),%rax        # ffffffff81a03f18 <initial_gs>"),
             ("mov    -0x7e6cc800(,%rax,4),%eax", "mov    -0x7e6cc808(,%rax,4),%eax"),
             ("jbe    ffffffff811ad437 <f+0x540>", "jbe    ffffffff811ad47a <f+0x548>")]
    for before, after in moved:
        assert objdiff.normalise(before) == objdiff.normalise(after), before
    kept = [("call   ffffffff8100042b <schedule>", "call   ffffffff8100042b <yield>"),
            ("mov    $0x3,%eax", "mov    $0x5,%eax"), ("add    %rax,%rbx", "sub    %rax,%rbx")]
    for before, after in kept:
        assert objdiff.normalise(before) != objdiff.normalise(after), before


def test_copies_of_a_static_function_are_counted(tmp_path):
    old = {"sections": {".text": [10, "a"]}, "functions": {"page_mapcount": ["h", "h", "h"], "f": ["x"]}}
    new = {"sections": {".text": [8, "b"]}, "functions": {"page_mapcount": ["h", "h"], "f": ["y"], "g": ["z"]}}
    difference = objdiff.compare("patched", "base", old, new)
    assert difference.changed == ["f", "page_mapcount (3 -> 2 copies)"] and difference.added == ["g"]
    assert difference.sections == {".text": [10, 8]}
    assert difference.shared == ["page_mapcount"], "two copies are as they were: the profiler cannot tell them apart"
    every = objdiff.compare("patched", "base", old, {**new, "functions": {**new["functions"],
                                                                          "page_mapcount": ["i", "j"]}})
    assert every.shared == [], "every copy changed: any call is a call of changed code"


def test_a_failing_disassembler_is_a_command_error(tmp_path):
    with pytest.raises(CommandFailed, match="objdump"):
        objdiff.function_hashes(tmp_path / "missing")


TRACED = """
__attribute__((noinline, section(".init.text"))) int setup(int x) {{ return x * {factor}; }}
__attribute__((noinline, no_instrument_function)) int quiet(int x) {{ return x - {factor}; }}
__attribute__((noinline)) int traced(int x) {{ return x + {factor}; }}
int main(int argc, char **argv) {{ return setup(argc) + quiet(argc) + traced(argc); }}
"""


def test_functions_in_init_sections_and_without_fentry_are_named(tmp_path):
    """As the kernel is built: -pg -mfentry puts `call __fentry__` first in every function the function
    profiler can count; a notrace function has none, and one in .init.text is freed after boot."""
    binaries = []
    for factor in (3, 5):
        source = tmp_path / f"traced{factor}.c"
        source.write_text(TRACED.format(factor=factor))
        binaries.append(tmp_path / f"traced{factor}")
        subprocess.run(["gcc", "-O2", "-pg", "-mfentry", "-o", binaries[-1], source], check=True)
    old, new = (objdiff.facts(binary) for binary in binaries)
    assert "setup" in new["init"] and "traced" not in new["init"]
    assert "quiet" in new["untraced"] and "traced" not in new["untraced"] and "setup" not in new["untraced"]
    difference = objdiff.compare("five", "three", old, new)
    assert {"setup", "quiet", "traced"} <= set(difference.functions)
    assert difference.init == ["setup"] and difference.untraced == ["quiet"], difference
    stored = json.loads(json.dumps(results.RunMetadata(object_code={"five": difference}).to_dict()))
    assert results.RunMetadata.from_dict(stored).object_code["five"] == difference, "as a run's metadata keeps it"
