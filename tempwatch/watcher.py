"""The watcher: filesystem events under base_dir become registry updates.

This module and its private helper `tempwatch.inotify` are the only ones importing watchdog.
With inotify, watchdog's reader thread only
drains the kernel queue into a bounded backlog and the emitter thread turns each read into
registry updates directly (no per-event hops through watchdog's queues); with polling, the
handler runs on watchdog's dispatcher thread. Either way it does as little as possible: one
lstat per file (a file created and closed within one read costs one), then the registry
updates of a read's files under one hold of the registry lock, and `on_change` once per
read. It never unlinks, never scans processes, and never lets a handler exception escape
(a failure on one file costs that file only).

What the handler does with each event:

- created regular file or symlink (or moved in from outside): registered at `clock()` with
  its size and inode (without "registered" in `age_by`: at its last use per its lstat,
  `tempwatch.age`). A symlink is aged and removed like a file; its target is never
  touched. FIFOs, sockets and devices are never registered.
- deleted: dropped. Moved out of the tree: dropped (a directory: its whole subtree).
- renamed inside the tree: the entry moves and keeps its age (a directory: its subtree).
- closed after writing: the size is refreshed, the entry renewed (a use, when `age_by`
  counts writes), `on_closed` is called for the file and `on_change` (once for the read's
  files) so that the limits are checked at once.
- attrib (chmod, touch) and modify events are not even subscribed to with inotify: the
  deleter's lstat before each expiry judges those timestamps. (The polling observer has no
  close event; there a modification refreshes the size and renews the entry.)

Missed events are reported, never silently lost: an inotify queue overflow (or a backlog
over `_MAX_BACKLOG_BYTES`) calls `on_overflow` and, once the queue is drained, one re-walk
adds watches for directories made meanwhile, keeping the watches that are right. A new
subdirectory that inotify could not watch (watchdog swallows that error) or an event the
handler failed on calls `on_missed`. The service answers both with a rescan.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Collection
from typing import Literal

from loguru import logger
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

from tempwatch.age import DEFAULT_AGE_BY, AgeBy, stat_last_used_at
from tempwatch.errors import TempwatchError
from tempwatch.eventsink import Hooks, call_safely
from tempwatch.globs import is_excluded
from tempwatch.inotify import InotifyObserver
from tempwatch.longpath import lstat_any
from tempwatch.registry import Registry
from tempwatch.rules import RuleSet
from tempwatch.unwatched import UnwatchedDirs

__all__ = ["ObserverKind", "Watcher"]

ObserverKind = Literal["auto", "inotify", "polling"]

_WRITE_SOURCES = frozenset({"modified", "changed"})

# (path, size, inode, is_close, last use per the lstat or None: registration counts)
_Found = tuple[str, int, int, bool, "float | None"]

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


class _Handler(FileSystemEventHandler):
    """Turns events into registry updates: on the inotify reader thread, or as watchdog's
    handler on the polling observer's dispatcher thread."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher
        self._base = watcher.base_dir
        self._prefix = watcher.base_dir.rstrip("/") + "/"

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:
            self.failed(event)

    def failed(self, what: object) -> None:
        """Log the exception being handled, and report that events may have been missed."""
        logger.opt(exception=True).bind(event="watcher-error").error("failed to handle {}", what)
        self._w._missed("handler error")

    def _handle(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileCreatedEvent):
            self.created(src)
        elif isinstance(event, FileClosedEvent | FileModifiedEvent):
            self.closed(src)
        elif isinstance(event, FileDeletedEvent):
            self.deleted(src)
        elif isinstance(event, FileMovedEvent):
            self.file_moved(src, os.fsdecode(event.dest_path))
        elif isinstance(event, DirMovedEvent):
            self.dir_moved(src, os.fsdecode(event.dest_path))
        elif isinstance(event, DirDeletedEvent) and src.rstrip("/") == self._base.rstrip("/"):
            self.root_deleted()  # an rmdir below the root only removes an empty directory

    def _is_ignored(self, path: str) -> bool:
        if not path.startswith(self._prefix) or path in self._w.skip_paths:
            return True
        patterns = self._w.exclude
        if patterns and is_excluded(path[len(self._prefix) :], patterns):
            return True
        rules = self._w.rules
        return rules is not None and rules.is_kept(path)  # a keep rule: never registered

    def created(self, path: str) -> None:
        """A new regular file (or one moved in) is registered now; anything else never."""
        self.written([(path, False)])

    def closed(self, path: str) -> None:
        """Closed after writing (or modified, when polling): refresh the size."""
        self.written([(path, True)])

    def written(self, files: list[tuple[str, bool]]) -> None:
        """Files created (False) or closed after writing (True): register or refresh each.

        A whole read's worth at once: the lstat calls first, then the registry updates under
        one hold of its lock, then the logs and callbacks outside it; `on_change` once.
        """
        found = self._stat_regular(files)
        if not found:
            return
        new = self._register(found)
        on_closed = self._w.on_closed
        if on_closed is not None:
            for path, size_bytes, _, is_close, _ in found:
                if is_close:
                    try:
                        on_closed(path, size_bytes)
                    except Exception as error:
                        self._failed_with(error, path)
        self._w._changed()
        for path, size_bytes in new:
            # Fields as keywords, not bind(): no Logger object per file when debug is off.
            logger.debug(
                "registered {}", path, event="registered", path=path, size_bytes=size_bytes
            )

    def _stat_regular(self, files: list[tuple[str, bool]]) -> list[_Found]:
        """(path, size, inode, is_close, used_at) of `files` that are ours: files and links.

        `used_at` is None when registration counts (the registry takes `clock()`), else the
        file's last use per this lstat.
        """
        base_dev = self._w.base_dev
        age_by = self._w.age_by
        rules = self._w.rules
        by_stat = "registered" not in age_by
        found: list[_Found] = []
        for path, is_close in files:
            if self._is_ignored(path):
                continue
            try:
                st = os.lstat(path)
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    continue  # gone already: nothing to register
                try:
                    st = lstat_any(path)  # deeper than PATH_MAX: through directory fds
                except OSError:
                    continue
            # Another filesystem mounted below base_dir is not ours to clean (the scan skips
            # it); FIFOs, sockets and devices are never registered.
            mode = st.st_mode
            if (stat.S_ISREG(mode) or stat.S_ISLNK(mode)) and st.st_dev == base_dev:
                if rules is not None:  # its rule may age it otherwise
                    age_by = rules.age_by_for(path) or self._w.age_by
                    by_stat = "registered" not in age_by
                used_at = stat_last_used_at(st, age_by) if by_stat else None
                found.append((path, st.st_size, st.st_ino, is_close, used_at))
        return found

    def _register(self, found: list[_Found]) -> list[tuple[str, int]]:
        """Add each found file to the registry; return (path, size) of those that were new."""
        w = self._w
        registry, clock = w.registry, w.clock
        renews = w.renews_on_write or w.rules is not None
        new: list[tuple[str, int]] = []
        errors: list[tuple[str, Exception]] = []
        with registry.lock:
            for path, size_bytes, ino, is_close, used_at in found:
                try:
                    at = clock() if used_at is None else used_at
                    # add() keeps the age of a known file and restarts it only if the inode
                    # changed; a file first seen at its close (created before its directory
                    # was watched, or created and closed within one read) is new.
                    if registry.add(path, at, size_bytes, ino):
                        new.append((path, size_bytes))
                    elif is_close and renews and w.counts_writes(path):
                        registry.renew(path, at)  # written: used now
                except Exception as error:
                    errors.append((path, error))  # reported outside the lock
        w.registered_total += len(new)
        for path, failure in errors:
            self._failed_with(failure, path)
        return new

    def _failed_with(self, error: Exception, what: object) -> None:
        logger.opt(exception=error).bind(event="watcher-error").error("failed to handle {}", what)
        self._w._missed("handler error")

    def deleted(self, path: str) -> None:
        """A file was unlinked (by anyone: our own deletions are already unregistered)."""
        if self._w.registry.discard(path) is not None:
            logger.debug(
                "unregistered {}: deleted", path, event="unregistered", cause="deleted", path=path
            )

    def root_deleted(self) -> None:
        """base_dir itself went: nothing below it remains."""
        gone = self._w.registry.discard_tree(self._base)
        logger.debug(
            "unregistered {} files: base_dir {} was removed", gone, self._base,
            event="unregistered", cause="base-dir-removed", path=self._base, files=gone,
        )

    def file_moved(self, src: str, dst: str) -> None:
        """A file renamed; `src` is "" when moved in, `dst` "" when moved out."""
        registry = self._w.registry
        if not dst or self._is_ignored(dst):
            # Moved out of the tree, or to a name never watched (excluded, another tree).
            if registry.discard(src) is not None:
                logger.debug(
                    "unregistered {}: moved out to {}", src, dst or "outside base_dir",
                    event="unregistered", cause="moved-out", path=src, src_path=src,
                    dest_path=dst or None,
                )
        elif not src or not registry.move(src, dst):
            self.created(dst)  # moved in, or its source was not registered
        else:
            self._refresh_size(dst)
            logger.debug(
                "renamed {} -> {}", src, dst, event="renamed", path=dst, src_path=src,
                dest_path=dst,
            )
            self._w._changed()

    def _refresh_size(self, path: str) -> None:
        # A write closed just before a rename was reported under the old name, gone by the
        # time its lstat ran: read the size again, without renewing the entry.
        try:
            st = lstat_any(path)
        except OSError:
            return  # renamed again, or gone: its own event follows
        if stat.S_ISREG(st.st_mode):
            self._w.registry.update_size(path, st.st_size)

    def dir_moved(self, src: str, dst: str) -> None:
        """A directory renamed inside the tree (the entries keep their ages) or moved out."""
        registry = self._w.registry
        if not dst:
            gone = registry.discard_tree(src)
            logger.debug(
                "unregistered {} files: directory {} moved out of base_dir", gone, src,
                event="unregistered", cause="moved-out", path=src, src_path=src,
                dest_path=None, files=gone,
            )
        elif src:
            moved = registry.move_tree(src, dst)
            logger.debug(
                "renamed directory {} -> {} ({} files)", src, dst, moved, event="renamed",
                path=dst, src_path=src, dest_path=dst, files=moved,
            )
        # A directory moved in: its files are registered one by one (a created event each).


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
        self._handler = _Handler(self)
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
        observer = InotifyObserver(self._hooks)
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
            self._handler, self.base_dir, recursive=self.recursive, event_filter=events
        )
        try:
            observer.start()  # the root's watch is added here: ENOSPC surfaces here
        except BaseException:
            observer.stop()  # releases the inotify instance; the thread never started
            raise
        self._observer = observer

    def _changed(self) -> None:
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
        self._missed(f"unwatched directory {path}")

    def _missed(self, reason: str) -> None:
        if self.on_missed is not None:
            call_safely(self.on_missed, reason)
