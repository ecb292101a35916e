"""Kconfig fragments: find them in kconfigs/, merge them over tinyconfig, check that they survived.

An option line right after a comment line `# optional` (or `# optional: why`) may be missing
from the final config: one fragment set then serves kernels where the option was renamed or
removed (CONFIG_ARCH_RANDOM is gone in 5.19, CONFIG_MEMCG_SWAP in 6.1). Every other option must
come out of olddefconfig as the last fragment that sets it asked (merge_config.sh lets a later
fragment override an earlier one: thp.config turns on what qemu-guest.config leaves off).
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from harness import project
from harness.errors import KconfigOptionDropped, UnknownFragment

BASE_TARGET = "tinyconfig"
_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")
_DEFINED = re.compile(r"^\s*(?:menu)?config\s+(\w+)\s*$", re.M)
_OPTIONAL = re.compile(r"^#\s*optional\b", re.I)

log = logging.getLogger("harness.kconfig")


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path

    def options(self) -> dict[str, str]:
        return parse(self.path.read_text())

    def optional(self) -> set[str]:
        """The options marked optional (the option line right after a `# optional` comment)."""
        marked, lines = set(), [line.strip() for line in self.path.read_text().splitlines()]
        for before, line in zip(lines, lines[1:]):
            if _OPTIONAL.match(before) and (option := parse(line)):
                marked.update(option)
        return marked

    @property
    def shown(self) -> str:
        """kconfigs/NAME.config for a shipped fragment, else its path."""
        try:
            return str(self.path.resolve().relative_to(project.ROOT))
        except ValueError:
            return str(self.path)


def find(names, folder: Path = project.KCONFIGS) -> list[Fragment]:
    """The fragments called names, in the order given: a name from folder (without .config), or a path
    to a fragment file (with or without .config)."""
    fragments = []
    for name in names:
        path = project.fragment_path(name, folder)
        if path is None:
            raise UnknownFragment(name=name, folder=folder, known=", ".join(project.names(folder, ".config")))
        fragments.append(Fragment(path.name.removesuffix(".config"), path.resolve()))
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


def check_survival(fragments: list[Fragment], final_config: Path, tree: Path | None = None) -> None:
    """Raise KconfigOptionDropped naming every required option a fragment asked for that olddefconfig
    changed, all at once; an option that no Kconfig file of tree defines is said to be missing from this
    kernel. Optional options that did not survive are logged."""
    final = parse(final_config.read_text())
    dropped, skipped = [], []
    last = {option: fragment for fragment in fragments for option in fragment.options()}   # a later fragment wins
    for fragment in fragments:
        optional = fragment.optional()
        for option, wanted in fragment.options().items():
            if last[option] is fragment and final.get(option, "n") != wanted:
                (skipped if option in optional else dropped).append((option, wanted, final.get(option, "n"), fragment))
    for option, wanted, actual, fragment in skipped:
        log.info("optional %s=%s of %s is %s in this kernel", option, wanted, fragment.shown, _shown(actual))
    if not dropped:
        return
    defined = defined_symbols(tree) if tree else None     # empty: a tree without Kconfig files cannot tell
    details = []
    for option, wanted, actual, fragment in dropped:
        if defined and option.removeprefix("CONFIG_") not in defined:
            details.append(f"{option}={wanted} asked for by {fragment.shown} is not in this kernel: drop it or "
                           "mark it optional (a '# optional' line above it)")
        else:
            details.append(f"{option}={wanted} asked for by {fragment.shown} is {_shown(actual)} after olddefconfig: "
                           "add the options it depends on to the fragment (see 'Depends on' in 'make menuconfig')")
    raise KconfigOptionDropped(count=len(details), details="; ".join(details))


def _shown(value: str) -> str:
    return "not set" if value == "n" else f"={value}"


def defined_symbols(tree: Path) -> set[str]:
    """Every symbol a Kconfig file of tree defines (config NAME / menuconfig NAME)."""
    symbols = set()
    for path in tree.rglob("Kconfig*"):
        if path.is_file():
            symbols.update(_DEFINED.findall(path.read_text(errors="replace")))
    return symbols


def merge_argv(tree: Path, fragments: list[Fragment]) -> list[str]:
    """merge_config.sh -m: merge the fragments into .config without running make."""
    return ["sh", tree / "scripts/kconfig/merge_config.sh", "-m", "-O", tree, tree / ".config",
            *[fragment.path for fragment in fragments]]
