"""The watcher's event handler: what each filesystem event does to the registry.

It runs on watchdog's threads and does as little as possible: one lstat per file (a file
created and closed within one read costs one), then the registry updates of a read's files
under one hold of the registry lock, and `on_change` once per read. It never unlinks, never
scans processes, and never lets an exception escape (a failure on one file costs that file
only, and is reported as possibly missed events).

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
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from tempwatch.age import stat_last_used_at
from tempwatch.globs import is_excluded
from tempwatch.lazylog import logger
from tempwatch.longpath import lstat_any

if TYPE_CHECKING:
    from tempwatch.watcher import Watcher

__all__ = ["EventHandler"]

# (path, size, inode, is_close, last use per the lstat or None: registration counts)
_Found = tuple[str, int, int, bool, "float | None"]


class EventHandler:
    """Turns `watcher`'s events into registry updates (the `EventSink` of the inotify layer):
    on the inotify emitter thread, or on the polling observer's dispatcher thread."""

    def __init__(self, watcher: Watcher) -> None:
        self._w = watcher
        self._base = watcher.base_dir
        self._prefix = watcher.base_dir.rstrip("/") + "/"

    def failed(self, what: object) -> None:
        """Log the exception being handled, and report that events may have been missed."""
        logger.opt(exception=True).bind(event="watcher-error").error("failed to handle {}", what)
        self._w.note_missed("handler error")

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
        self._w.note_changed()
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
        self._w.note_missed("handler error")

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
            self._w.note_changed()

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
