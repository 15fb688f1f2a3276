"""The registry: every file tempwatch knows about, with its registration time, size and inode.

It is kept ordered by age so that eviction takes the oldest entries without sorting the
whole registry on every event. Entries arrive almost always in time order (a new file is
registered "now"); those that do not (a file found by a scan, a renamed file keeping its
age) are kept in a small side table and merged in when the registry is iterated. When the
side table grows past a fraction of the registry, the registry is rebuilt in order.

All methods are thread-safe. `lock` is exposed so that a caller can check and act as one
step (the reconciling rescan does).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Entry", "Registry"]

_REBUILD_MIN = 1024


class Entry(NamedTuple):
    """What the registry holds for one path."""

    registered_at: float
    size_bytes: int
    ino: int


class Registry:
    """Thread-safe map of absolute path -> Entry, iterable oldest first."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._late: dict[str, float] = {}  # paths whose entry is out of insertion order
        self._tail = float("-inf")  # registration time of the newest in-order entry
        self._total_bytes = 0

    # -- queries -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def get(self, path: str) -> Entry | None:
        """The entry for `path`, or None."""
        return self._entries.get(path)

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of all registered files."""
        return self._total_bytes

    def times(self) -> dict[str, float]:
        """A copy of path -> registration time."""
        with self.lock:
            return {path: entry.registered_at for path, entry in self._entries.items()}

    def oldest_first(self) -> list[tuple[str, Entry]]:
        """A snapshot of every entry, oldest first."""
        with self.lock:
            return list(self._iter_oldest())

    def oldest(self, count: int) -> list[tuple[str, Entry]]:
        """A snapshot of the `count` oldest entries, without copying the rest."""
        with self.lock:
            result: list[tuple[str, Entry]] = []
            for item in self._iter_oldest():
                if len(result) >= count:
                    break
                result.append(item)
            return result

    def iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        """Iterate oldest first. Hold `lock` while iterating."""
        return self._iter_oldest()

    # -- updates -----------------------------------------------------------------

    def add(self, path: str, registered_at: float, size_bytes: int = 0, ino: int = 0) -> bool:
        """Register `path`; True if it was new.

        Registering a path again keeps its original time and refreshes its size. A known path
        whose inode changed is a different file under the same name: it starts anew.
        """
        with self.lock:
            old = self._entries.get(path)
            if old is not None and (ino == 0 or old.ino == 0 or old.ino == ino):
                self._replace(path, old, Entry(old.registered_at, size_bytes, ino or old.ino))
                return False
            if old is not None:
                self._remove(path, old)
            self._insert(path, Entry(registered_at, size_bytes, ino))
            return True

    def update_size(self, path: str, size_bytes: int) -> bool:
        """Refresh the size of a registered file; False if it is not registered."""
        with self.lock:
            old = self._entries.get(path)
            if old is None:
                return False
            self._replace(path, old, old._replace(size_bytes=size_bytes))
            return True

    def discard(self, path: str) -> Entry | None:
        """Drop `path`; return its entry, or None if it was not registered."""
        with self.lock:
            old = self._entries.get(path)
            if old is not None:
                self._remove(path, old)
            return old

    def move(self, src: str, dst: str) -> bool:
        """A rename: the entry moves to `dst` and keeps its age. False if `src` was unknown."""
        with self.lock:
            entry = self._entries.get(src)
            if entry is None:
                return False
            self._remove(src, entry)
            replaced = self._entries.get(dst)
            if replaced is not None:
                self._remove(dst, replaced)
            self._insert(dst, entry)
            return True

    def discard_tree(self, directory: str) -> int:
        """Drop every entry below `directory`; return how many."""
        prefix = directory.rstrip("/") + "/"
        with self.lock:
            doomed = [p for p in self._entries if p.startswith(prefix)]
            for path in doomed:
                self._remove(path, self._entries[path])
            return len(doomed)

    def move_tree(self, src_dir: str, dst_dir: str) -> int:
        """A directory rename: every entry below `src_dir` moves below `dst_dir`."""
        src_prefix = src_dir.rstrip("/") + "/"
        dst_prefix = dst_dir.rstrip("/") + "/"
        with self.lock:
            moving = [p for p in self._entries if p.startswith(src_prefix)]
            for path in moving:
                self.move(path, dst_prefix + path[len(src_prefix) :])
            return len(moving)

    def clear(self) -> None:
        """Forget everything."""
        with self.lock:
            self._entries.clear()
            self._late.clear()
            self._tail = float("-inf")
            self._total_bytes = 0

    # -- internals ---------------------------------------------------------------

    def _insert(self, path: str, entry: Entry) -> None:
        if not self._entries:
            self._tail = float("-inf")
        self._entries[path] = entry
        self._total_bytes += entry.size_bytes
        if entry.registered_at >= self._tail:
            self._tail = entry.registered_at
        else:
            self._late[path] = entry.registered_at
            if len(self._late) > max(_REBUILD_MIN, len(self._entries) // 8):
                self._rebuild()

    def _remove(self, path: str, entry: Entry) -> None:
        del self._entries[path]
        self._late.pop(path, None)
        self._total_bytes -= entry.size_bytes

    def _replace(self, path: str, old: Entry, new: Entry) -> None:
        # Same key, same time: assigning keeps the key's place in the order.
        self._entries[path] = new
        self._total_bytes += new.size_bytes - old.size_bytes

    def _rebuild(self) -> None:
        ordered = sorted(self._entries.items(), key=lambda item: item[1].registered_at)
        self._entries = dict(ordered)
        self._late.clear()
        self._tail = ordered[-1][1].registered_at if ordered else float("-inf")

    def _iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        entries = self._entries
        late = self._late
        in_order = ((p, e) for p, e in entries.items() if p not in late)
        if not late:
            return in_order
        out_of_order = sorted(((p, entries[p]) for p in late), key=lambda item: item[1][0])
        return heapq.merge(in_order, out_of_order, key=lambda item: item[1][0])
