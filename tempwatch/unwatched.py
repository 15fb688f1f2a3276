"""Directories inotify could not watch: counted, logged sparingly, forgotten once gone.

Past inotify's watch limit (`fs.inotify.max_user_watches`) every new directory is one: no
event reports what happens in it, and only rescans find its files. The watcher keeps them
here so that /healthz can say how many there are, the log says so without being flooded
(a warning for the first and every hundredth, the rest at DEBUG), and a periodic rescan can
ask the observer to try them again.
"""

from __future__ import annotations

from tempwatch.lazylog import logger
from tempwatch.longpath import lstat_any

__all__ = ["UnwatchedDirs"]

_WARN_EVERY = 100


class UnwatchedDirs:
    """The set of directories left without a watch. Thread-safe enough under the GIL: the
    emitter thread adds, the rescan thread prunes over a copy."""

    def __init__(self) -> None:
        self._paths: set[str] = set()

    def __len__(self) -> int:
        return len(self._paths)

    def add(self, path: str) -> None:
        """Note one, and log it (at WARNING for the first and every hundredth)."""
        self._paths.add(path)
        count = len(self._paths)
        logger.bind(event="unwatched", path=path, unwatched=count).log(
            "WARNING" if count % _WARN_EVERY == 1 else "DEBUG",
            "could not watch new directory {} ({} unwatched): its files are found by rescans; "
            "raise fs.inotify.max_user_watches", path, count,
        )

    def forget_gone(self) -> None:
        """Drop the directories that no longer exist."""
        for path in list(self._paths):
            try:
                lstat_any(path)
            except OSError:
                self._paths.discard(path)

    def clear(self) -> None:
        """Forget them all: a new walk (an observer restart, a re-watch) reports them again."""
        self._paths.clear()
