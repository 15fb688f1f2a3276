"""The watcher: filesystem events under base_dir become registry updates.

It chooses and runs the observer, and reports what the registry cannot be told by events.
With inotify (`tempwatch.inotify`, its reader thread in `tempwatch.inotifyreader`) the
reader only drains the kernel queue into a bounded backlog and the emitter thread turns
each read into registry updates directly (no per-event hops through watchdog's queues);
with polling, watchdog's dispatcher thread hands each event over. Either way what an event
does to the registry is `tempwatch.handler`'s `EventHandler` (which does not know watchdog:
this module, `tempwatch.inotify` and its reader are the only ones importing it).

Missed events are reported, never silently lost: an inotify queue overflow (or a backlog
over `_MAX_BACKLOG_BYTES`) calls `on_overflow` and, once the queue is drained, one re-walk
adds watches for directories made meanwhile, keeping the watches that are right. A new
subdirectory that inotify could not watch (watchdog swallows that error) or an event the
handler failed on calls `on_missed`. The service answers both with a rescan. An observer
whose thread ended (the inotify reader failed: `failure` says how) is no longer `is_alive`:
the service's monitor restarts it (`restart`) and rescans.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Collection
from typing import Literal

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from tempwatch.age import DEFAULT_AGE_BY, AgeBy
from tempwatch.errors import TempwatchError
from tempwatch.eventsink import Hooks, call_safely
from tempwatch.handler import EventHandler
from tempwatch.inotify import InotifyObserver
from tempwatch.inotifyreader import ReadEvents
from tempwatch.lazylog import logger
from tempwatch.registry import Registry
from tempwatch.rules import RuleSet
from tempwatch.unwatched import UnwatchedDirs

__all__ = ["ObserverKind", "Watcher"]

ObserverKind = Literal["auto", "inotify", "polling"]

_WRITE_SOURCES = frozenset({"modified", "changed"})


# Only what the handler needs. watchdog derives the inotify mask from this list: no
# IN_MODIFY, IN_ATTRIB, IN_OPEN or IN_CLOSE_NOWRITE, which with many subdirectories cost a
# core while idle and overflowed the queue under load.
_INOTIFY_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
    DirDeletedEvent,
    FileClosedEvent,
]
# Polling reports no close: a modification is the only sign that a size changed.
_POLLING_EVENTS: list[type[FileSystemEvent]] = [*_INOTIFY_EVENTS, FileModifiedEvent]

# inotify cannot be used: watch limit (ENOSPC) or instance/descriptor limit (EMFILE).
_INOTIFY_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE})


class _Dispatch(FileSystemEventHandler):
    """watchdog's events, as the polling observer delivers them on its dispatcher thread,
    handed to the `EventHandler` (the inotify layer calls the handler directly)."""

    def __init__(self, handler: EventHandler, base_dir: str) -> None:
        self._handler = handler
        self._base = base_dir.rstrip("/")

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:
            self._handler.failed(event)

    def _handle(self, event: FileSystemEvent) -> None:
        handler = self._handler
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileCreatedEvent):
            handler.created(src)
        elif isinstance(event, FileClosedEvent | FileModifiedEvent):
            handler.closed(src)
        elif isinstance(event, FileDeletedEvent):
            handler.deleted(src)
        elif isinstance(event, FileMovedEvent):
            handler.file_moved(src, os.fsdecode(event.dest_path))
        elif isinstance(event, DirMovedEvent):
            handler.dir_moved(src, os.fsdecode(event.dest_path))
        elif isinstance(event, DirDeletedEvent) and src.rstrip("/") == self._base:
            handler.root_deleted()  # an rmdir below the root only removes an empty directory


class Watcher:
    """Keeps `registry` in step with the files under `base_dir`, from filesystem events.

    `observer` is "inotify", "polling" or "auto" (inotify, falling back to polling with a
    warning when the inotify watch or instance limit is reached). `skip_paths` are absolute
    paths never registered (the service's own lock and log files); `exclude` are globs
    matched against the path relative to `base_dir`. `on_change` is called after
    registrations or size changes (once for all those of one inotify read),
    `on_closed(path, size_bytes)` after each file closed after writing, `on_overflow` when
    the inotify queue overflowed (events were lost), and `on_missed(reason)` when events may
    have been missed otherwise. All callbacks run on watchdog's threads: they must be quick
    and must not block.
    """

    def __init__(
        self,
        base_dir: str,
        registry: Registry,
        *,
        recursive: bool = True,
        observer: ObserverKind = "auto",
        exclude: Collection[str] = (),
        skip_paths: Collection[str] = (),
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
        on_closed: Callable[[str, int], None] | None = None,
        on_overflow: Callable[[], None] | None = None,
        on_missed: Callable[[str], None] | None = None,
        polling_interval_seconds: float = 1.0,
        age_by: AgeBy = DEFAULT_AGE_BY,
        rules: RuleSet | None = None,
        inotify_read: ReadEvents = os.read,
    ) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.age_by = age_by
        self.rules = rules if rules else None
        # A close after writing is a use only when writes count for the age.
        self.renews_on_write = bool(age_by & _WRITE_SOURCES)
        self.registry = registry
        self.recursive = recursive
        self.observer_kind: ObserverKind = observer
        self.exclude = tuple(exclude)
        self.skip_paths = frozenset(os.path.abspath(p) for p in skip_paths)
        self.clock = clock
        self.on_change = on_change
        self.on_closed = on_closed
        self.on_overflow = on_overflow
        self.on_missed = on_missed
        self.polling_interval_seconds = polling_interval_seconds
        self.registered_total = 0
        self.base_dev = -1
        self.fallback_reason: str | None = None  # why "auto" fell back to polling
        self.unwatched = UnwatchedDirs()  # directories inotify could not watch
        self._observer: BaseObserver | None = None
        self._kind: Literal["inotify", "polling"] | None = None
        self._read = inotify_read
        self._handler = EventHandler(self)
        self._dispatch = _Dispatch(self._handler, self.base_dir)
        self._hooks = Hooks(
            handler=self._handler, overflow=self._overflowed, unwatched=self._unwatched
        )

    def counts_writes(self, path: str) -> bool:
        """Whether a write is a use of `path`: its age_by has "modified" or "changed"."""
        rules = self.rules
        if rules is None:
            return self.renews_on_write
        return bool((rules.age_by_for(path) or self.age_by) & _WRITE_SOURCES)

    @property
    def kind(self) -> Literal["inotify", "polling"] | None:
        """The observer in use: "inotify" or "polling"; None before start."""
        return self._kind

    @property
    def is_alive(self) -> bool:
        """Whether events are being received: the dispatcher and every emitter run."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        if isinstance(observer, InotifyObserver) and not observer.reader_alive:
            return False
        return all(emitter.is_alive() for emitter in observer.emitters)

    def watched_dirs(self) -> set[str] | None:
        """The directories inotify watches, by name; None when polling or not started."""
        observer = self._observer
        return observer.watched_paths() if isinstance(observer, InotifyObserver) else None

    @property
    def failure(self) -> str | None:
        """Why the observer died, when it is known (the inotify reader failed); else None."""
        observer = self._observer
        return observer.failure if isinstance(observer, InotifyObserver) else None

    def start(self) -> None:
        """Start watching. Raises TempwatchError if no observer can watch base_dir."""
        if self._observer is not None:
            return
        try:
            self.base_dev = os.stat(self.base_dir).st_dev
        except OSError as e:
            raise TempwatchError(f"cannot watch {self.base_dir}: {e.strerror}") from e
        if self.observer_kind == "polling":
            self._start_polling()
            return
        try:
            self._start_inotify()
        except OSError as e:
            if self.observer_kind == "inotify" or e.errno not in _INOTIFY_LIMIT_ERRNOS:
                raise TempwatchError(f"cannot watch {self.base_dir} with inotify: {e}") from e
            self.fallback_reason = f"inotify unavailable: {e.strerror or e}"
            logger.bind(event="observer-fallback", error=str(e)).warning(
                "inotify unavailable for {} ({}); falling back to polling every {}s",
                self.base_dir, e, self.polling_interval_seconds,
            )
            self._start_polling()

    def stop(self, timeout_seconds: float = 1.5) -> None:
        """Stop watching and join watchdog's threads."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()  # also stops and joins the emitters and the inotify reader
        if observer.ident is not None:
            observer.join(timeout_seconds)

    def restart(self) -> None:
        """Stop the observer (dead or alive) and start a new one of the configured kind."""
        self.stop()
        self._kind = None
        self.fallback_reason = None
        self.unwatched.clear()  # the new observer watches what it can, and says so
        self.start()

    # -- internals ----------------------------------------------------------------

    def _start_inotify(self) -> None:
        observer = InotifyObserver(self._hooks, read=self._read)
        self._launch(observer, _INOTIFY_EVENTS)
        self._kind = "inotify"

    def _start_polling(self) -> None:
        observer = PollingObserver(timeout=self.polling_interval_seconds)
        try:
            self._launch(observer, _POLLING_EVENTS)
        except OSError as e:
            raise TempwatchError(f"cannot watch {self.base_dir}: {e}") from e
        self._kind = "polling"

    def _launch(self, observer: BaseObserver, events: list[type[FileSystemEvent]]) -> None:
        observer.schedule(
            self._dispatch, self.base_dir, recursive=self.recursive, event_filter=events
        )
        try:
            observer.start()  # the root's watch is added here: ENOSPC surfaces here
        except BaseException:
            observer.stop()  # releases the inotify instance; the thread never started
            raise
        self._observer = observer

    def note_changed(self) -> None:
        """Registrations or sizes changed (the handler's report): `on_change`."""
        if self.on_change is not None:
            self.on_change()

    def _overflowed(self) -> None:
        if self.on_overflow is not None:
            self.on_overflow()

    def retry_unwatched(self) -> None:
        """Try again to watch the directories inotify could not watch (the limit may have
        been raised): a re-walk adds the missing watches; those still failing report again."""
        observer = self._observer
        if len(self.unwatched) and isinstance(observer, InotifyObserver):
            self.unwatched.clear()
            observer.rewatch()

    def _unwatched(self, path: str) -> None:
        self.unwatched.add(path)
        self.note_missed(f"unwatched directory {path}")

    def note_missed(self, reason: str) -> None:
        """Events may have been missed (the handler's report): `on_missed(reason)`."""
        if self.on_missed is not None:
            call_safely(self.on_missed, reason)
