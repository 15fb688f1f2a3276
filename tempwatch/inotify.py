"""The inotify fast path of the watcher, built on watchdog's inotify layer.

A private helper of `tempwatch.watcher` (it, this and `tempwatch.inotifyreader` are the
only modules importing watchdog; this and the reader lean on watchdog 7.1 internals, hence
the pin). The reader thread
(`tempwatch.inotifyreader`) only drains the kernel queue into a bounded backlog; the
emitter thread turns each read into calls on an
`EventSink` (the watcher's handler), pairing renames itself, and after a queue overflow
re-walks the tree once, when the queue has drained, to add the watches lost events missed.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from watchdog.observers.api import BaseObserver, EventQueue, ObservedWatch
from watchdog.observers.inotify import InotifyFullEmitter
from watchdog.observers.inotify_c import (
    InotifyConstants,
    InotifyEvent,
    Mask,
    WatchDescriptor,
)

from tempwatch.eventsink import Hooks, call_safely
from tempwatch.inotifyreader import InotifyReader, ReadEvents
from tempwatch.inotifywatches import WatchTree

__all__ = ["InotifyObserver"]


_IN = InotifyConstants
_CLOSE_WRITE = _IN.IN_CLOSE_WRITE
_CREATE_FILE = _IN.IN_CREATE | _IN.IN_ISDIR
# The events of a file being written, the bulk of any load: handed over a read's run at once.
_WRITTEN = _IN.IN_CREATE | _IN.IN_CLOSE_WRITE
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()
_MAX_DIR_NAMES = 4096  # decoded directory paths kept (one per directory written to)
_BOOKKEEPING = _IN.IN_IGNORED | _IN.IN_Q_OVERFLOW  # a removed watch, a lost queue: watchdog's
_HEADER = struct.Struct("iIII")  # struct inotify_event, before its name
_MAX_BACKLOG_BYTES = 32 * 1024 * 1024  # reads not handled yet (~1M events): beyond, overflow
# After an overflow the watches are checked once the queue is drained, or this long after.
_REWATCH_MAX_DELAY_SECONDS = 1.0

_RawEvent = tuple[int, int, int, bytes]  # wd, mask, cookie, name


def _is_related(a: bytes, b: bytes) -> bool:
    return a == b or a.startswith(b + b"/") or b.startswith(a + b"/")


@dataclass
class _WatchGroup(WatchTree):
    """watchdog's recursive watch, turning each read's events into registry updates at once.

    Runs on the emitter thread. Hands the creates and closes of files to the sink a run at
    a time (`EventSink.written`), in order with the other events. Pairs renames itself: an
    IN_MOVED_FROM waits for its IN_MOVED_TO until an event about a related path arrives or
    the queue is drained, and is then a move out of the tree. After a queue overflow (or
    when asked: `request_rewatch`) it re-walks the tree once the queue is drained, keeping
    the watches it has: only directories that had none (made meanwhile, or over the watch
    limit before) gain one.
    """

    on_root_gone: Callable[[], None] = field(kw_only=True)
    _pending_moves: dict[int, tuple[bytes, bool]] = field(default_factory=dict, init=False)
    _rewatch_due: float | None = field(default=None, init=False)
    _backlog: deque[bytes | None] = field(default_factory=deque, init=False)
    _backlog_bytes: int = field(default=0, init=False)
    _backlog_ready: threading.Condition = field(default_factory=threading.Condition, init=False)
    _dir_names: dict[bytes, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if isinstance(self._inotify_fd, InotifyReader):
            self._inotify_fd.sink = self.enqueue  # before the first watch: it sees every event
        super().__post_init__()

    def on_event(self, event: InotifyEvent) -> None:
        self.on_batch([(event.wd, event.mask, event.cookie, event.name)])

    def enqueue(self, buffer: bytes) -> None:
        """Keep one read for the emitter thread (called by the reader thread)."""
        with self._backlog_ready:
            if self._backlog_bytes + len(buffer) > _MAX_BACKLOG_BYTES:
                # As the kernel does when its queue is full: drop it all and say so.
                self._backlog.clear()
                self._backlog_bytes = 0
                self._backlog.append(None)
            else:
                self._backlog.append(buffer)
                self._backlog_bytes += len(buffer)
            self._backlog_ready.notify()

    def deactivate(self) -> None:
        super().deactivate()
        with self._backlog_ready:
            self._backlog.clear()
            self._backlog_ready.notify_all()  # wakes the emitter waiting in handle_next

    def handle_next(self, timeout_seconds: float) -> None:
        """Handle the oldest read in the backlog, waiting for one at most timeout_seconds."""
        with self._backlog_ready:
            if not self._backlog and self._is_active:
                self._backlog_ready.wait(timeout_seconds)
            if not self._backlog:
                return
            buffer = self._backlog.popleft()
            self._backlog_bytes -= 0 if buffer is None else len(buffer)
        if buffer is None:
            self.on_queue_overflow()
        else:
            self._handle_buffer(buffer)
        fd = self._inotify_fd
        # The backlog first: a select() per read is a GIL hand-off per read.
        has_more = bool(self._backlog) or (isinstance(fd, InotifyReader) and fd.is_readable())
        self.after_read(has_more=has_more)

    def _handle_buffer(self, buffer: bytes) -> None:
        events: list[_RawEvent] = []
        offset, end = 0, len(buffer)
        while offset + _HEADER.size <= end:
            wd, mask, cookie, length = _HEADER.unpack_from(buffer, offset)
            offset += _HEADER.size
            name = buffer[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & _BOOKKEEPING:
                # In order with the rest: a lost watch or a lost queue changes what follows.
                self.on_batch(events)
                events = []
                event = InotifyEvent(WatchDescriptor(wd), Mask(mask), cookie, name)
                self._inotify_fd.handle_event(event)
            elif wd >= 0:
                events.append((wd, mask, cookie, name))
        self.on_batch(events)

    def on_batch(self, events: list[_RawEvent]) -> None:
        """Handle one read's events in order."""
        if not events:
            return
        root_gone = False
        with self._lock:
            if not self._is_active:
                return
            # A file created and closed within one read costs one lstat, at the close.
            last_close = {(e[0], e[3]): i for i, e in enumerate(events) if e[1] & _CLOSE_WRITE}
            watched_paths = self._active_callbacks_by_watch
            written: list[tuple[str, bool]] = []
            for index, (wd, mask, cookie, name) in enumerate(events):
                is_file_create = (mask & _CREATE_FILE) == _IN.IN_CREATE
                if is_file_create and last_close.get((wd, name), -1) > index:
                    continue
                watched = watched_paths.get(WatchDescriptor(wd))
                if watched is None:
                    continue  # its watch is gone: a removed directory
                if mask & _WRITTEN and name and not (mask & _IN.IN_ISDIR or self._pending_moves):
                    # Decoded here, once per name: the watcher needs str paths.
                    directory = self._dir_name(watched)
                    written.append((directory + name.decode(_FS_ENCODING, _FS_ERRORS),
                                    bool(mask & _CLOSE_WRITE)))
                    continue
                if written:
                    self._written(written)  # before what follows: it may be about them
                    written = []
                path = os.path.join(watched, name) if name else watched
                try:
                    root_gone |= self._handle(mask, cookie, path)
                except Exception:
                    self.hooks.handler.failed(f"mask {mask:#x} on {path!r}")
            if written:
                self._written(written)
        if root_gone:
            self.on_root_gone()  # stops the emitter, which takes this group's lock

    def _written(self, files: list[tuple[str, bool]]) -> None:
        try:
            self.hooks.handler.written(files)
        except Exception:
            self.hooks.handler.failed(f"{len(files)} files written, from {files[0][0]!r}")

    def _dir_name(self, directory: bytes) -> str:
        """`directory` decoded, with a trailing slash (cached: a read names few directories)."""
        name = self._dir_names.get(directory)
        if name is None:
            if len(self._dir_names) >= _MAX_DIR_NAMES:
                self._dir_names.clear()
            name = os.fsdecode(directory).rstrip("/") + "/"
            self._dir_names[directory] = name
        return name

    def _handle(self, mask: int, cookie: int, path: bytes) -> bool:
        if self._pending_moves and not (mask & _IN.IN_MOVED_TO and cookie in self._pending_moves):
            self._flush_moves(related_to=path)
        handler = self.hooks.handler
        is_dir = bool(mask & _IN.IN_ISDIR)
        if mask & _CLOSE_WRITE:
            handler.closed(os.fsdecode(path))
        elif mask & _IN.IN_CREATE:
            if not is_dir:
                handler.created(os.fsdecode(path))
            elif self.is_recursive:
                self._watch_tree(path)
        elif mask & _IN.IN_DELETE:
            if not is_dir:
                handler.deleted(os.fsdecode(path))
        elif mask & _IN.IN_MOVED_FROM:
            self._pending_moves[cookie] = (path, is_dir)
        elif mask & _IN.IN_MOVED_TO:
            self._moved_to(self._pending_moves.pop(cookie, None), path, is_dir)
        elif mask & _IN.IN_DELETE_SELF and path == self.path:
            handler.root_deleted()
            return True
        return False

    def _moved_to(self, source: tuple[bytes, bool] | None, dst: bytes, is_dir: bool) -> None:
        handler = self.hooks.handler
        src = b"" if source is None else source[0]
        if not is_dir:
            handler.file_moved(os.fsdecode(src), os.fsdecode(dst))
            return
        was_watched = bool(src) and self._move_watches(src, dst)
        if src:
            handler.dir_moved(os.fsdecode(src), os.fsdecode(dst))
        if self.is_recursive and not was_watched:
            self._watch_tree(dst)  # moved in: watch it and register what it holds

    def _flush_moves(self, related_to: bytes | None) -> None:
        for cookie, (src, is_dir) in list(self._pending_moves.items()):
            if related_to is None or _is_related(src, related_to):
                del self._pending_moves[cookie]
                self._moved_out(src, is_dir)

    def _moved_out(self, src: bytes, is_dir: bool) -> None:
        handler = self.hooks.handler
        if not is_dir:
            handler.file_moved(os.fsdecode(src), "")
            return
        handler.dir_moved(os.fsdecode(src), "")
        # Its watches would report what happens outside as if it were still inside.
        prefix = src + b"/"
        gone = [
            wd for wd, path in self._active_callbacks_by_watch.items()
            if path == src or path.startswith(prefix)
        ]
        if gone:
            self._remove_callbacks(gone)

    def after_read(self, *, has_more: bool) -> None:
        """End of one read: settle unpaired moves and the re-walk once the queue is drained."""
        with self._lock:
            if not self._is_active:
                return
            if not has_more:
                self._flush_moves(related_to=None)
            due = self._rewatch_due
            if due is None or (has_more and time.monotonic() < due):
                return
            self._rewatch_due = None
            self._rewatch()

    def request_rewatch(self) -> None:
        """Re-walk the tree soon, on the emitter thread, adding the watches that are missing."""
        with self._lock:
            if not (self._is_active and self.is_recursive) or self._rewatch_due is not None:
                return
            self._rewatch_due = time.monotonic()
        self.enqueue(b"")  # an empty read: the emitter wakes, finds nothing, then re-walks

    def on_queue_overflow(self) -> None:
        # watchdog drops every watch and re-walks the tree here, on the reader thread, at
        # each overflow: reading stops, and more overflows follow. One re-walk, later, will do.
        with self._lock:
            if not self._is_active:
                return
            self._pending_moves.clear()  # their partners may be lost: the rescan settles them
            if self.is_recursive and self._rewatch_due is None:
                self._rewatch_due = time.monotonic() + _REWATCH_MAX_DELAY_SECONDS
        call_safely(self.hooks.overflow)



class _Emitter(InotifyFullEmitter):
    # Its thread handles what the reader thread read, through the group.

    def __init__(
        self, event_queue: EventQueue, watch: ObservedWatch, *, hooks: Hooks, **kwargs: Any
    ) -> None:
        super().__init__(event_queue, watch, **kwargs)
        self._hooks = hooks

    def on_thread_start(self) -> None:
        watch = self.watch
        self._inotify = _WatchGroup(
            self._inotify_fd, os.fsencode(watch.path), is_recursive=watch.is_recursive,
            event_mask=self.get_event_mask_from_filter(), follow_symlink=watch.follow_symlink,
            hooks=self._hooks, on_root_gone=self.stop,
        )

    def queue_events(self, timeout: float, *, full_events: bool = False) -> None:
        group = self._inotify
        if isinstance(group, _WatchGroup):
            group.handle_next(timeout)


class InotifyObserver(BaseObserver):
    """An inotify observer with its own inotify instance, read by the direct reader."""

    def __init__(self, hooks: Hooks, *, read: ReadEvents = os.read) -> None:
        self._inotify_fd = InotifyReader(read=read)  # EMFILE here: the instance limit
        self._inotify_fd.start()
        super().__init__(_Emitter, inotify_fd=self._inotify_fd, hooks=hooks)

    def rewatch(self) -> None:
        """Watch the directories that have no watch yet (say, after the limit was raised)."""
        for group in (getattr(e, "_inotify", None) for e in self.emitters):
            if isinstance(group, _WatchGroup):
                group.request_rewatch()

    def watched_paths(self) -> set[str]:
        """The directories watched, by name (one name per watch)."""
        return {
            os.fsdecode(path)
            for group in (getattr(e, "_inotify", None) for e in self.emitters)
            if isinstance(group, _WatchGroup)
            for path in group.watched_paths
        }

    @property
    def kernel_watches(self) -> int:
        """Watches held in the kernel's inotify instance."""
        return len(self._inotify_fd._watch_for_wd)

    @property
    def reader_alive(self) -> bool:
        """Whether the thread reading the inotify instance runs."""
        return self._inotify_fd.is_alive()

    @property
    def failure(self) -> str | None:
        """What ended the reader thread, if a failure did (the observer is then dead)."""
        return self._inotify_fd.failure

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        if self._inotify_fd.is_alive():
            self._inotify_fd.join()
