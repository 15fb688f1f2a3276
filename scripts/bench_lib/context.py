"""What every benchmark gets: where to work, how big to go, how many runs, where to log."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Context", "median_of"]


@dataclass(slots=True)
class Context:
    """`workdir` is private to this bench run (on tmpfs) and removed at the end."""

    workdir: str
    quick: bool
    runs: int
    _counter: int = field(default=0)
    _started: float = field(default_factory=time.monotonic)

    def size(self, full: int, quick: int) -> int:
        """The full-run size, or the quick one."""
        return quick if self.quick else full

    def seconds(self, full: float, quick: float) -> float:
        """The full-run duration, or the quick one."""
        return quick if self.quick else full

    def fresh_dir(self, name: str) -> str:
        """A new, empty directory under the workdir."""
        self._counter += 1
        path = os.path.join(self.workdir, f"{name}-{self._counter}")
        os.mkdir(path, 0o700)
        return path

    def log(self, message: str) -> None:
        """Progress on stderr, so stdout stays the table."""
        elapsed = time.monotonic() - self._started
        print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def median_of(samples: Sequence[float]) -> float | None:
    """The median, or None for no samples."""
    return statistics.median(samples) if samples else None
