"""Kconfig fragments: find them in kconfigs/, merge them over tinyconfig, check that they survived."""

import re
from dataclasses import dataclass
from pathlib import Path

from harness import project
from harness.errors import KconfigOptionDropped, UnknownFragment

BASE_TARGET = "tinyconfig"
_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path

    def options(self) -> dict[str, str]:
        return parse(self.path.read_text())


def find(names, folder: Path = project.KCONFIGS) -> list[Fragment]:
    """The fragments called names (without .config), in the order given."""
    fragments = []
    for name in names:
        path = folder / f"{name}.config"
        if not path.is_file():
            raise UnknownFragment(name=name, folder=folder, known=", ".join(project.names(folder, ".config")))
        fragments.append(Fragment(name, path))
    return fragments


def parse(text: str) -> dict[str, str]:
    """CONFIG_X -> value ('y', 'm', '"text"', '8'); '# CONFIG_X is not set' -> 'n'."""
    options = {}
    for line in text.splitlines():
        line = line.strip()
        if match := _SET.match(line):
            options[match.group(1)] = match.group(2)
        elif match := _UNSET.match(line):
            options[match.group(1)] = "n"
    return options


def check_survival(fragments: list[Fragment], final_config: Path) -> None:
    """Raise KconfigOptionDropped for the first option a fragment asked for that olddefconfig changed."""
    final = parse(final_config.read_text())
    for fragment in fragments:
        for option, wanted in fragment.options().items():
            actual = final.get(option, "n")
            if actual != wanted:
                shown = "not set" if actual == "n" else f"={actual}"
                raise KconfigOptionDropped(option=f"{option}={wanted}", fragment=fragment.path.name, actual=shown)


def merge_argv(tree: Path, fragments: list[Fragment]) -> list[str]:
    """merge_config.sh -m: merge the fragments into .config without running make."""
    return ["sh", tree / "scripts/kconfig/merge_config.sh", "-m", "-O", tree, tree / ".config",
            *[fragment.path for fragment in fragments]]
