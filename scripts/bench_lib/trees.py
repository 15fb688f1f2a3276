"""Making and removing the file trees the benchmarks run on.

Files are created empty with os.open/os.close, the cheapest create Python has, so the
creator is not the bottleneck it measures. Every loop has a deadline.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

__all__ = [
    "CREATE_FLAGS",
    "PacedRun",
    "age_tree",
    "count_files",
    "create_burst",
    "create_paced",
    "make_dirs",
    "make_tree",
    "remove_tree",
]

CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
_TICK_SECONDS = 0.001


def make_tree(root: str, files: int, *, files_per_dir: int = 1000) -> list[str]:
    """Create `files` empty files in subdirectories of `root` holding `files_per_dir` each.

    Returns the subdirectories. With files_per_dir <= 0 every file goes into root itself.
    """
    os.makedirs(root, exist_ok=True)
    dirs: list[str] = []
    for index in range(files):
        if files_per_dir > 0 and index % files_per_dir == 0:
            current = os.path.join(root, f"d{index // files_per_dir:05d}")
            os.mkdir(current)
            dirs.append(current)
        parent = dirs[-1] if files_per_dir > 0 else root
        os.close(os.open(f"{parent}/f{index:07d}.tmp", CREATE_FLAGS, 0o600))
    return dirs


def make_dirs(root: str, count: int) -> list[str]:
    """Create `count` empty subdirectories of `root`."""
    os.makedirs(root, exist_ok=True)
    dirs = [os.path.join(root, f"d{index:05d}") for index in range(count)]
    for path in dirs:
        os.mkdir(path)
    return dirs


def age_tree(root: str, age_seconds: float) -> int:
    """Set atime and mtime of every regular file below `root` to `age_seconds` ago."""
    when = time.time() - age_seconds
    aged = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
            aged += 1
    return aged


def count_files(root: str) -> int:
    """Regular files and symlinks below `root` (not directories)."""
    return sum(len(filenames) for _, _, filenames in os.walk(root))


def remove_tree(path: str, timeout_seconds: float = 300.0) -> None:
    """rm -rf, staying on one filesystem; a missing path is fine."""
    if not os.path.lexists(path):
        return
    subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", path], check=True, timeout=timeout_seconds
    )


@dataclass(frozen=True, slots=True)
class PacedRun:
    """What a paced creation achieved."""

    created: int
    target: int
    seconds: float
    last_create_at: float  # time.monotonic() just after the last create

    @property
    def rate(self) -> float:
        return self.created / self.seconds if self.seconds > 0 else 0.0


def create_paced(directory: str, rate: float, duration_seconds: float) -> PacedRun:
    """Create rate * duration files in `directory` at a steady rate, in 1 ms ticks.

    Sleeps between ticks rather than spinning: on a small machine a spinning creator would
    take the core the reader under test needs. Gives up at 3x the planned duration.
    """
    target = int(rate * duration_seconds)
    started = time.monotonic()
    give_up = started + duration_seconds * 3 + 5
    created = 0
    prefix = f"{directory}/f"
    while created < target:
        now = time.monotonic()
        if now > give_up:
            break
        due = min(target, int((now - started) * rate) + 1)
        while created < due:
            os.close(os.open(f"{prefix}{created:07d}", CREATE_FLAGS, 0o600))
            created += 1
        if created < target:
            time.sleep(_TICK_SECONDS)
    finished = time.monotonic()
    return PacedRun(created, target, finished - started, finished)


def create_burst(directory: str, files: int) -> PacedRun:
    """Create `files` files in `directory` as fast as possible."""
    started = time.monotonic()
    prefix = f"{directory}/f"
    for index in range(files):
        os.close(os.open(f"{prefix}{index:07d}", CREATE_FLAGS, 0o600))
    finished = time.monotonic()
    return PacedRun(files, files, finished - started, finished)
