"""Keeping the log readable under load: lists capped, repeated verdicts said once.

A log line must stay one screen wide whatever happens: after the watch limit is hit, a
rescan may have hundreds of reasons (one per unwatched directory). `capped` shows the first
few and counts the rest; the caller logs the full list at DEBUG (`log_in_full`).

A dry run in the service judges the same files pass after pass; saying "would delete" for
each of them every pass buried everything else. `SaidOnce` remembers what was said about
each path, so a line repeats at INFO only when the file (its inode or size) or the
verdict (its reason) changed.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

from tempwatch.lazylog import logger

__all__ = ["MAX_LISTED", "SaidOnce", "capped", "log_in_full"]

MAX_LISTED = 5
"""Items of a list shown in one log line; the rest are counted."""


def capped(items: Iterable[str], limit: int = MAX_LISTED) -> str:
    """`items` joined with ", ", at most `limit` of them, then "and N more"."""
    listed = list(items)
    shown = ", ".join(listed[:limit])
    rest = len(listed) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


def log_in_full(event: str, what: str, items: Collection[str], limit: int = MAX_LISTED) -> None:
    """Log every item of a list that `capped` shortened, on one DEBUG line."""
    if len(items) > limit:
        logger.debug(
            "{} in full ({}): {}", what, len(items), ", ".join(items),
            event=event, count=len(items),
        )


_Said = tuple[int, int, str]  # inode, size, verdict


class SaidOnce:
    """What has been said about each path; thread-safe (a pass and the enforcer share it)."""

    def __init__(self) -> None:
        self._said: dict[str, _Said] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._said)

    def is_new(self, path: str, ino: int, size_bytes: int, verdict: str) -> bool:
        """True the first time this is said of this file; then False until it changes."""
        said = (ino, size_bytes, verdict)
        with self._lock:
            if self._said.get(path) == said:
                return False
            self._said[path] = said
            return True

    def keep_only(self, paths: Collection[str]) -> None:
        """Forget the paths not in `paths` (a full pass's verdicts): said again if judged again."""
        with self._lock:
            self._said = {p: s for p, s in self._said.items() if p in paths}
