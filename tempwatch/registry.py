"""The registry: every file tempwatch knows about, with its registration time, size and inode.

It is kept ordered by age so that eviction takes the oldest entries without sorting the
whole registry on every event. Entries arrive almost always in time order (a new file is
registered "now"); those that do not (a file found by a scan, a renamed file keeping its
age) are kept in a small side table and merged in when the registry is iterated. When the
side table grows past a fraction of the registry, the registry is rebuilt in order; a bulk
load (`add_many`, or anything inside a `tracking` window) rebuilds once, at its end. A
start-up's scan (`load`) adds in no order at all and sorts everything once, so that it can
register each directory as it is listed and free the scan's objects as it goes.

Memory: one entry is its path, its dict slot and one int packing time, size and inode
(48 bytes with pymalloc, where an Entry tuple of three objects cost about 150). The time is
packed as its exact IEEE-754 bits, so `registered_at` reads back as the very float given.

All methods are thread-safe. `lock` is exposed so that a caller can check and act as one
step (the reconciling rescan does).
"""

from __future__ import annotations

import bisect
import heapq
import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from tempwatch.touched import Touched

__all__ = ["Entry", "Registry"]

_REBUILD_MIN = 1024

# Packed value, little-endian: bits 0-63 the time (a double), 64-127 the size (signed),
# 128-191 the inode. Inodes are the widest field in practice, so they go on top where an
# int only pays for the digits it uses.
_LAYOUT = struct.Struct("<dqQ")
_TIME = struct.Struct("<d")
_WIDTH = _LAYOUT.size
_LOW64 = (1 << 64) - 1
_SIGN64 = 1 << 63
_pack_bytes = _LAYOUT.pack
_unpack_bytes = _LAYOUT.unpack
_unpack_time = _TIME.unpack
_from_bytes = int.from_bytes


class Entry(NamedTuple):
    """What the registry holds for one path."""

    registered_at: float
    size_bytes: int
    ino: int


_make_entry = Entry._make


class Registry:
    """Thread-safe map of absolute path -> Entry, iterable oldest first."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._entries: dict[str, int] = {}  # path -> packed (time, size, inode)
        self._late: dict[str, float] = {}  # paths whose entry is out of insertion order
        self._unsorted = False  # `load` added entries in no order: sort all when it settles
        self._tail = float("-inf")  # registration time of the newest in-order entry
        self._total_bytes = 0
        self._trackers: list[Touched] = []
        self._bulk = 0  # open bulk loads and tracking windows: rebuild when the last ends

    # -- queries -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def get(self, path: str) -> Entry | None:
        """The entry for `path`, or None."""
        value = self._entries.get(path)
        return None if value is None else _entry(value)

    def matches(self, path: str, size_bytes: int, ino: int) -> bool:
        """Whether `path` is registered with exactly this size and inode (no Entry built)."""
        value = self._entries.get(path)
        return value is not None and value >> 64 == (size_bytes & _LOW64) | ino << 64

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of all registered files."""
        return self._total_bytes

    def paths(self) -> list[str]:
        """A copy of the registered paths, in no particular order."""
        with self.lock:
            return list(self._entries)

    def times(self) -> dict[str, float]:
        """A copy of path -> registration time."""
        with self.lock:
            return {path: _time(value) for path, value in self._entries.items()}

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
            if self._trackers:
                self._touch(path)
            added = self._add(path, registered_at, size_bytes, ino)
            self._settle()
            return added

    def add_many(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        """`add` each (path, registered_at, size_bytes, ino), sorting once at the end.

        For bulk loads (a scan's findings) that arrive in any order: the side table of late
        entries is merged once, not every time it outgrows its threshold. Returns how many
        paths were new. Not recorded by `tracking`: the windows are for concurrent events.
        """
        added = 0
        with self.lock:
            self._bulk += 1
            try:
                added = self._add_all(items)
            finally:
                self._bulk -= 1
                self._settle()
        return added
    def load(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        """`add_many` for a load in no time order that the caller keeps in a bulk window
        (`tracking`): new paths are not ordered one by one, the whole registry is sorted
        once when the window closes. A start-up's scan registers directory by directory
        so; until the window closes, iterating sorts on every call."""
        added = 0
        with self.lock:
            entries = self._entries
            pack = _pack_bytes
            from_bytes = _from_bytes
            total = 0
            for path, registered_at, size_bytes, ino in items:
                if path in entries:
                    added += self._add(path, registered_at, size_bytes, ino)
                    continue
                entries[path] = from_bytes(pack(registered_at, size_bytes, ino), "little")
                total += size_bytes
                added += 1
            if total or added:
                self._unsorted = True
            self._total_bytes += total
            self._settle()
        return added

    def renew(self, path: str, used_at: float) -> bool:
        """A later use of a registered file: its time moves forward to `used_at`.

        False (nothing changed) if `path` is unknown or its time is not older than `used_at`.
        Not recorded by `tracking`: size and inode, what a rescan reconciles, stay as they are.
        """
        with self.lock:
            old = self._entries.get(path)
            if old is None or used_at <= _time(old):
                return False
            self._remove(path, old)
            value = _from_bytes(_pack_bytes(used_at, _size(old), old >> 128), "little")
            self._insert(path, value, used_at, _size(old))
            self._settle()
            return True

    def update_size(self, path: str, size_bytes: int) -> bool:
        """Refresh the size of a registered file; False if it is not registered."""
        with self.lock:
            if self._trackers:
                self._touch(path)
            old = self._entries.get(path)
            if old is None:
                return False
            self._entries[path] = old & _LOW64 | (size_bytes & _LOW64) << 64 | old >> 128 << 128
            self._total_bytes += size_bytes - _size(old)
            return True

    def discard(self, path: str) -> Entry | None:
        """Drop `path`; return its entry, or None if it was not registered."""
        with self.lock:
            if self._trackers:
                self._touch(path)
            old = self._entries.get(path)
            if old is None:
                return None
            self._remove(path, old)
            return _entry(old)

    def move(self, src: str, dst: str) -> bool:
        """A rename: the entry moves to `dst` and keeps its age. False if `src` was unknown."""
        with self.lock:
            if self._trackers:
                self._touch(src)
                self._touch(dst)
            moved = self._move(src, dst)
            self._settle()
            return moved

    def discard_tree(self, directory: str) -> int:
        """Drop every entry below `directory`; return how many."""
        prefix = directory.rstrip("/") + "/"
        with self.lock:
            if self._trackers:
                self._touch_tree(prefix)
            entries = self._entries
            doomed = [p for p in entries if p.startswith(prefix)]
            for path in doomed:
                self._remove(path, entries[path])
            return len(doomed)

    def move_tree(self, src_dir: str, dst_dir: str) -> int:
        """A directory rename: every entry below `src_dir` moves below `dst_dir`."""
        src_prefix = src_dir.rstrip("/") + "/"
        dst_prefix = dst_dir.rstrip("/") + "/"
        with self.lock:
            if self._trackers:
                self._touch_tree(src_prefix)
                self._touch_tree(dst_prefix)
            moving = [p for p in self._entries if p.startswith(src_prefix)]
            self._bulk += 1
            try:
                for path in moving:
                    self._move(path, dst_prefix + path[len(src_prefix) :])
            finally:
                self._bulk -= 1
                self._settle()
            return len(moving)

    def clear(self) -> None:
        """Forget everything."""
        with self.lock:
            self._entries.clear()
            self._late.clear()
            self._unsorted = False
            self._tail = float("-inf")
            self._total_bytes = 0

    @contextmanager
    def tracking(self) -> Iterator[Touched]:
        """Record the paths that add/update_size/discard/move (and the tree variants) touch.

        A rescan opens a window around scan and reconcile: a path nobody touched meanwhile
        is as the scan saw it, so only touched paths need checking again. While any window
        is open, reordering waits for the last one to close (the rescan's own bulk load).
        When no window is open, recording costs one test per update.
        """
        touched = Touched()
        with self.lock:
            self._trackers.append(touched)
            self._bulk += 1
        try:
            yield touched
        finally:
            with self.lock:
                self._trackers.remove(touched)
                self._bulk -= 1
                self._settle()

    # -- internals ---------------------------------------------------------------

    def _touch(self, path: str) -> None:
        for touched in self._trackers:
            touched.paths.add(path)

    def _touch_tree(self, prefix: str) -> None:
        for touched in self._trackers:
            touched.trees.add(prefix)

    def _add(self, path: str, registered_at: float, size_bytes: int, ino: int) -> bool:
        old = self._entries.get(path)
        if old is not None:
            old_ino = old >> 128
            if ino == 0 or old_ino == 0 or old_ino == ino:
                # Same key, same time: assigning keeps the key's place in the order.
                self._entries[path] = (
                    old & _LOW64 | (size_bytes & _LOW64) << 64 | (ino or old_ino) << 128
                )
                self._total_bytes += size_bytes - _size(old)
                return False
            self._remove(path, old)
        value = _from_bytes(_pack_bytes(registered_at, size_bytes, ino), "little")
        self._insert(path, value, registered_at, size_bytes)
        return True

    def _add_all(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        # `_add` unrolled for new paths: a start-up rescan brings a million of them.
        entries = self._entries
        late = self._late
        pack = _pack_bytes
        from_bytes = _from_bytes
        tail = self._tail if entries else float("-inf")
        count_before = len(entries)
        known_added = total = 0
        try:
            for path, registered_at, size_bytes, ino in items:
                if path in entries:
                    self._tail, self._total_bytes, total = tail, self._total_bytes + total, 0
                    known_added += self._add(path, registered_at, size_bytes, ino)
                    tail = self._tail if entries else float("-inf")
                    continue
                entries[path] = from_bytes(pack(registered_at, size_bytes, ino), "little")
                total += size_bytes
                if registered_at >= tail:
                    tail = registered_at
                else:
                    late[path] = registered_at
        finally:
            self._tail = tail
            self._total_bytes += total
        # A known path given a new inode is replaced: new, but the count stays.
        return len(entries) - count_before + known_added

    def _move(self, src: str, dst: str) -> bool:
        value = self._entries.get(src)
        if value is None:
            return False
        self._remove(src, value)
        replaced = self._entries.get(dst)
        if replaced is not None:
            self._remove(dst, replaced)
        self._insert(dst, value, _time(value), _size(value))
        return True

    def _insert(self, path: str, value: int, registered_at: float, size_bytes: int) -> None:
        entries = self._entries
        if not entries:
            self._tail = float("-inf")
        entries[path] = value
        self._total_bytes += size_bytes
        if registered_at >= self._tail:
            self._tail = registered_at
        else:
            self._late[path] = registered_at

    def _remove(self, path: str, value: int) -> None:
        del self._entries[path]
        self._late.pop(path, None)
        self._total_bytes -= _size(value)

    def _settle(self) -> None:
        """Rebuild if the side table outgrew its share, unless a bulk load is still open."""
        if self._bulk:
            return
        if self._unsorted:
            self._sort_all()
        elif len(self._late) > max(_REBUILD_MIN, len(self._entries) // 8):
            self._rebuild()

    def _sort_all(self) -> None:
        # By the time's IEEE-754 bits, one cheap key per entry: they order non-negative
        # times as the floats do; negative ones (mtimes before 1970) sort after them in
        # reverse, and are moved to the front reversed.
        items = sorted(self._entries.items(), key=_time_bits)
        first_negative = bisect.bisect_left(items, _SIGN64, key=_time_bits)
        if first_negative < len(items):
            items = items[first_negative:][::-1] + items[:first_negative]
        self._entries = dict(items)
        self._late = {}
        self._unsorted = False
        self._tail = _time(items[-1][1]) if items else float("-inf")

    def _rebuild(self) -> None:
        entries = self._entries
        late = self._late
        # Two sorted runs, the in-order entries then the late ones: sort() merges them in
        # linear time. Only the in-order entries need their time unpacked.
        key = {path: _time(value) for path, value in entries.items() if path not in late}
        ordered = list(key)
        ordered += sorted(late, key=late.__getitem__)
        key.update(late)
        ordered.sort(key=key.__getitem__)
        self._entries = {path: entries[path] for path in ordered}
        self._late = {}
        self._tail = key[ordered[-1]] if ordered else float("-inf")

    def _iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        entries = self._entries
        late = self._late
        if self._unsorted:
            return ((p, _entry(v)) for p, v in sorted(entries.items(), key=_time_of_item))
        if not late:
            return ((p, _entry(v)) for p, v in entries.items())
        in_order = ((p, _entry(v)) for p, v in entries.items() if p not in late)
        out_of_order = [(p, _entry(entries[p])) for p, _ in sorted(late.items(), key=_second)]
        return heapq.merge(in_order, out_of_order, key=_age)


def _entry(value: int) -> Entry:
    return _make_entry(_unpack_bytes(value.to_bytes(_WIDTH, "little")))


def _time(value: int) -> float:
    at: float = _unpack_time((value & _LOW64).to_bytes(8, "little"))[0]
    return at


def _time_of_item(item: tuple[str, int]) -> float:
    return _time(item[1])


def _time_bits(item: tuple[str, int]) -> int:
    return item[1] & _LOW64


def _size(value: int) -> int:
    return ((value >> 64 & _LOW64) ^ _SIGN64) - _SIGN64


def _second(item: tuple[str, float]) -> float:
    return item[1]


def _age(item: tuple[str, Entry]) -> float:
    return item[1][0]
