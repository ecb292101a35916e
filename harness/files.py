"""Files written whole: to a temporary name beside the target, then renamed over it, so that
a killed harness leaves the old file or the new one, never half of one."""

import os
from pathlib import Path


def write_atomic(path: Path, text: str, errors: str = "strict") -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(text, errors=errors)
    os.replace(partial, path)
