"""The interface between the watcher and its inotify layer: what events become, and hooks.

The inotify layer (`tempwatch.inotify`) reads the kernel's events and reports them, path by
path, to an `EventSink` (the watcher's handler); what watchdog would only log or swallow
(an overflow, a directory it could not watch) goes to the `Hooks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tempwatch.lazylog import logger

__all__ = ["EventSink", "Hooks", "call_safely"]


class EventSink(Protocol):
    """What the inotify layer reports, path by path (the watcher's handler)."""

    def created(self, path: str) -> None: ...
    def closed(self, path: str) -> None: ...
    def written(self, files: list[tuple[str, bool]]) -> None:
        """Files created (False) or closed after writing (True), in order, from one read."""
        ...

    def deleted(self, path: str) -> None: ...
    def root_deleted(self) -> None: ...
    def file_moved(self, src: str, dst: str) -> None: ...
    def dir_moved(self, src: str, dst: str) -> None: ...
    def failed(self, what: str) -> None: ...


@dataclass(slots=True)
class Hooks:
    """Where the inotify layer sends what it reads, and what watchdog would only log or swallow."""

    handler: EventSink
    overflow: Callable[[], None]
    unwatched: Callable[[str], None]


def call_safely(hook: Callable[..., None], *args: Any) -> None:
    # Hooks run on the inotify emitter thread: an exception there must not end it.
    try:
        hook(*args)
    except Exception:
        logger.opt(exception=True).bind(event="watcher-error").error("watcher hook failed")
