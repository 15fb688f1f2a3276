"""Which directory each inotify watch is on: watchdog's two maps kept true, trees watched.

A private helper of `tempwatch.inotify` (the watch group builds on this). watchdog keeps,
per watch group, wd -> path and path -> wd, and trusts the events to keep them right. They
cannot always. A directory renamed and made again under its old name before its events are
handled (`mkdir p; mv p m; mkdir p`, as a tool retrying a rename does) had its new `p`
watched at the first IN_CREATE (the kernel resolves a name when the watch is added), that
watch then moved to `m` by the rename's events: the real `m` was never watched, and nobody
was told (198 such directories out of 200 in a stress run), while `p`'s name stayed in the
path map for good. A removal of a name another watch had taken raised KeyError, at stop too.

Here:

- a watch the kernel answers with a wd known under another name shows that name was wrong:
  the mappings move to the name just added, and a directory found at the old name is watched
  as a new one (its files registered);
- a watch the kernel dropped (its directory deleted) whose name still holds a directory not
  watched has that directory watched;
- a mapping is removed only from the name that still points to it, never failing.

So the maps hold one name per watch, and no name of a removed directory stays in them.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import suppress
from dataclasses import dataclass, field

from watchdog.observers.inotify import InotifyWatchGroup
from watchdog.observers.inotify_c import WatchDescriptor

from tempwatch.eventsink import EventSink, Hooks, call_safely
from tempwatch.longpath import lstat_any, scandir_any

__all__ = ["WatchTree"]

_NO_WATCH = WatchDescriptor(-1)


def _is_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(lstat_any(path).st_mode)  # at any depth
    except OSError:
        return False  # gone again: nothing is missed


@dataclass
class WatchTree(InotifyWatchGroup):
    """watchdog's recursive watch group with its maps kept one name per watch."""

    hooks: Hooks = field(kw_only=True)
    # During a re-walk: every wd a watch was added or found for (the others are stale).
    _walk_seen: set[WatchDescriptor] | None = field(default=None, init=False)

    @property
    def watched_paths(self) -> dict[bytes, WatchDescriptor]:
        """A copy of the path -> wd map (what is watched, by name)."""
        with self._lock:
            return dict(self._active_callbacks_by_path)

    def _watch_tree(self, top: bytes) -> None:
        """Watch a new directory tree, then register what it already holds."""
        handler = self.hooks.handler
        stack = [top]
        while stack:
            directory = stack.pop()
            self._add_callback(directory)  # first: anything created later has its own event
            try:
                found = scandir_any(directory)
            except OSError:
                continue  # gone again, or not a directory any more
            for path, is_dir in found:
                if is_dir:
                    stack.append(path)
                else:
                    handler.created(os.fsdecode(path))

    def _rewatch(self) -> None:
        """Watch every directory of the tree again, keeping the watches that are right."""
        handler = self.hooks.handler
        by_path = self._active_callbacks_by_path
        seen: set[WatchDescriptor] = set()
        self._walk_seen = seen
        try:
            self._walk(handler)
        finally:
            self._walk_seen = None
        by_watch = self._active_callbacks_by_watch
        stale = [wd for wd in by_watch if wd not in seen]  # moved out or gone meanwhile
        if stale:
            self._inotify_fd.remove_callbacks([(wd, self._id) for wd in stale])
            for wd in stale:
                del by_watch[wd]
        by_path.clear()
        by_path.update((path, wd) for wd, path in by_watch.items())

    def _walk(self, handler: EventSink) -> None:
        by_path = self._active_callbacks_by_path
        stack = [self.path]
        while stack:
            directory = stack.pop()
            was_watched = directory in by_path
            try:
                self._add_callback(directory)  # the same wd if already watched
            except OSError:
                continue  # the root went: its IN_DELETE_SELF reports it
            if by_path.get(directory, _NO_WATCH) < 0:
                continue
            try:
                found = scandir_any(directory)
            except OSError:
                continue
            for path, is_dir in found:
                if is_dir:
                    stack.append(path)
                elif not was_watched:
                    handler.created(os.fsdecode(path))  # created before it had a watch

    def _add_callback(self, path: bytes) -> None:
        by_path, by_watch = self._active_callbacks_by_path, self._active_callbacks_by_watch
        try:
            wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
        except OSError:
            if path == self.path:
                raise  # a failure to watch the root reaches the caller
            wd = _NO_WATCH
        if wd >= 0 and self._walk_seen is not None:
            self._walk_seen.add(wd)
        known_as = by_watch.get(wd) if wd >= 0 else None
        if known_as is not None and known_as != path and by_path.get(known_as) == wd:
            # The directory here was taken for the one at `known_as`: its mappings (and its
            # subtree's) come here, and what is at `known_as` now was never watched.
            self._move_watches(known_as, path)
            if self.is_recursive and _is_dir(known_as):
                self._watch_tree(known_as)
        if wd >= 0:
            by_path[path] = wd
            by_watch[wd] = path
            return
        # watchdog swallows a failure to watch anything but the root, and on EACCES even the
        # root's (keeping wd -1). A directory that still exists yet has no watch is blind.
        if path == self.path:
            raise PermissionError(errno.EACCES, "cannot watch", os.fsdecode(path))
        if _is_dir(path):
            call_safely(self.hooks.unwatched, os.fsdecode(path))

    def _remove_watch_internally(self, wd: WatchDescriptor) -> None:
        path = self._active_callbacks_by_watch.pop(wd, None)
        if path is not None and self._active_callbacks_by_path.get(path) == wd:
            del self._active_callbacks_by_path[path]

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        """The kernel dropped a watch (its directory was deleted)."""
        with self._lock:
            if not self.is_active:
                return
            path = self._active_callbacks_by_watch.get(wd)
            self._remove_watch_internally(wd)
            if path is None or path == self.path or not self.is_recursive:
                return
            if path not in self._active_callbacks_by_path and _is_dir(path):
                with suppress(OSError):
                    self._watch_tree(path)  # another directory took the name, unwatched
