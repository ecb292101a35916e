"""Kconfig fragments: find them in kconfigs/, merge them over tinyconfig, check that they survived."""

import re
from dataclasses import dataclass
from pathlib import Path

from harness import project
from harness.errors import KconfigOptionDropped, UnknownFragment

BASE_TARGET = "tinyconfig"
_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")
_DEFINED = re.compile(r"^\s*(?:menu)?config\s+(\w+)\s*$", re.M)


@dataclass(frozen=True)
class Fragment:
    name: str
    path: Path

    def options(self) -> dict[str, str]:
        return parse(self.path.read_text())

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
        given = Path(name).expanduser()
        if "/" in name or name.endswith(".config"):
            candidates = [given, given.with_name(given.name + ".config")]
        else:
            candidates = [folder / f"{name}.config"]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
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
    """Raise KconfigOptionDropped naming every option a fragment asked for that olddefconfig changed; an
    option that no Kconfig file of tree defines is said to be missing from this kernel."""
    final = parse(final_config.read_text())
    dropped = []
    for fragment in fragments:
        for option, wanted in fragment.options().items():
            actual = final.get(option, "n")
            if actual != wanted:
                dropped.append((option, wanted, actual, fragment))
    if not dropped:
        return
    defined = defined_symbols(tree) if tree else None     # empty: a tree without Kconfig files cannot tell
    details = []
    for option, wanted, actual, fragment in dropped:
        shown = "not set" if actual == "n" else f"={actual}"
        if defined and option.removeprefix("CONFIG_") not in defined:
            details.append(f"{option}={wanted} asked for by {fragment.shown} is not in this kernel's Kconfig files: "
                           "drop it from the fragment")
        else:
            details.append(f"{option}={wanted} asked for by {fragment.shown} is {shown} after olddefconfig: add the "
                           "options it depends on to the fragment (see 'Depends on' in 'make menuconfig')")
    raise KconfigOptionDropped(count=len(details), details="; ".join(details))


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
