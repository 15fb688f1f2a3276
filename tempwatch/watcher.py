"""The watcher: filesystem events under base_dir become registry updates.

This is the only module that imports watchdog. Its handler runs on watchdog's dispatcher
thread and does as little as possible: one lstat for a new or closed file, then one short
registry update. It never unlinks, never scans processes, and never lets an exception
escape, because watchdog's dispatch loop dies on the first one.

What the handler does with each event:

- created regular file (or moved in from outside): registered at `clock()` with its size
  and inode. Symlinks, FIFOs, sockets and devices are never registered.
- deleted: dropped. Moved out of the tree: dropped (a directory: its whole subtree).
- renamed inside the tree: the entry moves and keeps its age (a directory: its subtree).
- closed after writing: the size is refreshed and `on_change` is called so that the limits
  are checked at once.
- attrib (chmod, touch) and modify events are not even subscribed to with inotify: they
  neither register nor reset an age. (The polling observer has no close event; there a
  modification refreshes the size, never the age.)

Missed events are reported, never silently lost: an inotify queue overflow calls
`on_overflow`, and a new subdirectory that inotify could not watch (watchdog swallows that
error) or an event the handler failed on calls `on_missed`; the service answers both with a
rescan.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

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
from watchdog.observers.api import BaseObserver, EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyFullEmitter, InotifyWatchGroup
from watchdog.observers.inotify_c import InotifyFD
from watchdog.observers.polling import PollingObserver

from tempwatch.errors import TempwatchError
from tempwatch.registry import Registry
from tempwatch.scan import is_excluded

__all__ = ["ObserverKind", "Watcher"]

ObserverKind = Literal["auto", "inotify", "polling"]

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


@dataclass(slots=True)
class _Hooks:
    """What the inotify layer reports that watchdog would otherwise only log or swallow."""

    overflow: Callable[[], None]
    unwatched: Callable[[str], None]


def _call_safely(hook: Callable[..., None], *args: Any) -> None:
    # Hooks run on watchdog's inotify reader thread, which has no guard of its own.
    try:
        hook(*args)
    except Exception:
        logger.opt(exception=True).bind(event="watcher-error").error("watcher hook failed")


@dataclass
class _WatchGroup(InotifyWatchGroup):
    """watchdog's recursive watch, plus reports of a queue overflow and an unwatched subdir."""

    hooks: _Hooks | None = field(default=None, kw_only=True)

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        if self.hooks is not None:
            _call_safely(self.hooks.overflow)

    def _add_callback(self, path: bytes) -> None:
        self._forget_own_callback(path)
        super()._add_callback(path)
        # watchdog swallows a failure to watch anything but the root, and on EACCES even the
        # root's (keeping wd -1). A directory that still exists yet has no watch is blind.
        if self._active_callbacks_by_path.get(path, -1) >= 0:
            return
        if path == self.path:
            raise PermissionError(errno.EACCES, "cannot watch", os.fsdecode(path))
        if self.hooks is None:
            return
        if os.path.isdir(path) and not os.path.islink(path):
            _call_safely(self.hooks.unwatched, os.fsdecode(path))

    def _forget_own_callback(self, path: bytes) -> None:
        # `mkdir -p a/b` races watchdog into watching a/b twice (once while walking a, once
        # on b's own create event); the second add warns with a RuntimeWarning, which kills
        # the inotify reader thread when warnings are errors. Dropping our callback from the
        # existing watch first makes the re-add a plain add, with the same effect.
        wd = self._active_callbacks_by_path.get(path)
        fd = self._inotify_fd
        if wd is None or not hasattr(fd, "_watch_for_wd"):
            return
        with fd._lock:
            watch = fd._watch_for_wd.get(wd)
            if watch is not None:
                watch.callbacks.pop(self._id, None)


class _Emitter(InotifyFullEmitter):
    # Full events: a move out is (src, "") and a move in ("", dst), so a plain rmdir (of an
    # empty directory) needs no scan of the registry for entries below it.

    def __init__(
        self,
        event_queue: EventQueue,
        watch: ObservedWatch,
        *,
        hooks: _Hooks,
        **kwargs: Any,
    ) -> None:
        super().__init__(event_queue, watch, **kwargs)
        self._hooks = hooks

    def on_thread_start(self) -> None:
        self._inotify = _WatchGroup(
            self._inotify_fd,
            os.fsencode(self.watch.path),
            is_recursive=self.watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(),
            follow_symlink=self.watch.follow_symlink,
            hooks=self._hooks,
        )


class _InotifyObserver(BaseObserver):
    """An inotify observer with its own inotify instance and the reporting emitter."""

    def __init__(self, hooks: _Hooks) -> None:
        self._inotify_fd = InotifyFD()  # EMFILE here: the instance limit
        self._inotify_fd.start()
        super().__init__(_Emitter, inotify_fd=self._inotify_fd, hooks=hooks)

    @property
    def reader_alive(self) -> bool:
        """Whether the thread reading the inotify instance runs (it has no guard of its own)."""
        return self._inotify_fd.is_alive()

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        if self._inotify_fd.is_alive():
            self._inotify_fd.join()


class _Handler(FileSystemEventHandler):
    """Turns events into registry updates. Runs on watchdog's dispatcher thread."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher
        self._base = watcher.base_dir
        self._prefix = watcher.base_dir.rstrip("/") + "/"

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:
            logger.opt(exception=True).bind(event="watcher-error").error(
                "failed to handle {}", event
            )
            self._w._missed("handler error")

    def _handle(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileCreatedEvent):
            self._register(src)
        elif isinstance(event, FileClosedEvent | FileModifiedEvent):
            self._refresh(src)
        elif isinstance(event, FileDeletedEvent):
            self._w.registry.discard(src)
        elif isinstance(event, FileMovedEvent):
            self._file_moved(src, os.fsdecode(event.dest_path))
        elif isinstance(event, DirMovedEvent):
            self._dir_moved(src, os.fsdecode(event.dest_path))
        elif isinstance(event, DirDeletedEvent) and src.rstrip("/") == self._base.rstrip("/"):
            # The root itself went; an rmdir below it only removes an empty directory.
            self._w.registry.discard_tree(self._base)

    def _is_ignored(self, path: str) -> bool:
        if not path.startswith(self._prefix) or path in self._w.skip_paths:
            return True
        patterns = self._w.exclude
        return bool(patterns) and is_excluded(path[len(self._prefix) :], patterns)

    def _lstat_regular(self, path: str) -> os.stat_result | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None  # gone already: nothing to register
        # Another filesystem mounted below base_dir is not ours to clean (the scan skips it).
        return st if stat.S_ISREG(st.st_mode) and st.st_dev == self._w.base_dev else None

    def _register(self, path: str) -> None:
        if self._is_ignored(path):
            return
        st = self._lstat_regular(path)
        if st is None:
            return
        w = self._w
        if w.registry.add(path, w.clock(), st.st_size, st.st_ino):
            w.registered_total += 1
            logger.bind(event="registered", path=path, size_bytes=st.st_size).debug(
                "registered {}", path
            )
        w._changed()

    def _refresh(self, path: str) -> None:
        if self._is_ignored(path):
            return
        st = self._lstat_regular(path)
        if st is None:
            return
        w = self._w
        # add() keeps the age of a known file and restarts it only if the inode changed;
        # a file first seen at its close (created before its directory was watched) is new.
        if w.registry.add(path, w.clock(), st.st_size, st.st_ino):
            w.registered_total += 1
        if w.on_closed is not None:
            w.on_closed(path, st.st_size)
        w._changed()

    def _file_moved(self, src: str, dst: str) -> None:
        registry = self._w.registry
        if not dst or self._is_ignored(dst):
            registry.discard(src)  # moved out of the tree, or to a name never watched
        elif not src or not registry.move(src, dst):
            self._register(dst)  # moved in, or its source was not registered
        else:
            self._w._changed()

    def _dir_moved(self, src: str, dst: str) -> None:
        registry = self._w.registry
        if not dst:
            registry.discard_tree(src)
        elif src:
            registry.move_tree(src, dst)
        # A directory moved in: watchdog follows with a created event per file inside.


class Watcher:
    """Keeps `registry` in step with the files under `base_dir`, from filesystem events.

    `observer` is "inotify", "polling" or "auto" (inotify, falling back to polling with a
    warning when the inotify watch or instance limit is reached). `skip_paths` are absolute
    paths never registered (the service's own lock and log files); `exclude` are globs
    matched against the path relative to `base_dir`. `on_change` is called after every
    registration or size change, `on_closed(path, size_bytes)` after a file is closed after
    writing, `on_overflow` when the inotify queue overflowed (events were lost), and
    `on_missed(reason)` when events may have been missed otherwise. All callbacks run on
    watchdog's threads: they must be quick and must not block.
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
    ) -> None:
        self.base_dir = os.path.abspath(base_dir)
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
        self._observer: BaseObserver | None = None
        self._kind: Literal["inotify", "polling"] | None = None
        self._hooks = _Hooks(overflow=self._overflowed, unwatched=self._unwatched)

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
        if isinstance(observer, _InotifyObserver) and not observer.reader_alive:
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
        self.start()

    # -- internals ----------------------------------------------------------------

    def _start_inotify(self) -> None:
        observer = _InotifyObserver(self._hooks)
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
            _Handler(self), self.base_dir, recursive=self.recursive, event_filter=events
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

    def _unwatched(self, path: str) -> None:
        logger.bind(event="unwatched", path=path).warning(
            "could not watch new directory {}: its files are found by the next rescan", path
        )
        self._missed(f"unwatched directory {path}")

    def _missed(self, reason: str) -> None:
        if self.on_missed is not None:
            _call_safely(self.on_missed, reason)
