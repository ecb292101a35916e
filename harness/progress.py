"""One stopwatch and one progress reporter, for builds and for cells alike."""

import logging
import time
from contextlib import contextmanager

log = logging.getLogger("harness.progress")


class Stopwatch:
    """Wall time of named stages: `with watch("build"): ...`; watch.seconds maps name -> seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0) + time.monotonic() - started, 1)

    @property
    def total(self) -> float:
        return round(sum(self.seconds.values()), 1)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Progress:
    """Progress through items, logged by `logger`:

    - step(label) for items of known number: 'cell 3/20 (label): 1m10s elapsed, about 4m left';
    - tick(label) for a stream of small items (compiled files): a line at most every `every_s` seconds,
      'build base: 120 files, 40 s, now CC mm/memory.o'.
    """

    def __init__(self, kind: str, total: int = 0, done: int = 0, limit: int | None = None,
                 every_s: float = 30.0, logger: logging.Logger = log, unit: str = "files"):
        self.kind, self.total, self.number, self.limit = kind, total, done, limit
        self.every_s, self.logger, self.unit = every_s, logger, unit
        self.todo = total - done
        self.started = self.last = time.monotonic()
        self.finished = 0
        self.count = 0

    def step(self, label: str) -> None:
        self.number += 1
        elapsed = time.monotonic() - self.started
        left = ""
        if self.finished:
            left = f", about {minutes(elapsed / self.finished * (self.todo - self.finished))} left"
        most = f" (at most {self.limit})" if self.limit and self.limit > self.total else ""
        self.logger.info("%s %d/%d%s (%s): %s elapsed%s", self.kind, self.number, self.total, most, label,
                         minutes(elapsed), left)

    def finish(self) -> None:
        self.finished += 1

    def tick(self, label: str, counted: bool = True) -> None:
        self.count += counted
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.logger.info("%s: %d %s, %.0f s, now %s", self.kind, self.count, self.unit, now - self.started,
                             label)
