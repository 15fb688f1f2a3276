"""The registry: every file tempwatch knows about, with its registration time, size and inode.

Memory: files are held per directory (`tempwatch.dirtable`), a file being its name, a dict
slot and 24 bytes of columns; a path is put together again only when asked for. Benchmark
5 (a million files, a thousand a directory) measured 120 bytes of RSS per file, where one
dict of whole paths to packed ints took 192.

Order: each table is in age order but for a few late entries (a file found by a scan, a
renamed file keeping its age) that iteration merges in; the registry merges its tables. A
table whose late entries outgrow a fraction of it is sorted again; a bulk load (`add_many`,
or anything inside a `tracking` window) sorts once, at its end. A start-up's scan (`load`)
adds in no order and sorts each table once, registering each directory as it is listed.

All methods are thread-safe. `lock` is exposed so that a caller can check and act as one
step (the reconciling rescan does).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager

from tempwatch.dirtable import DirTable, Entry, age_of
from tempwatch.touched import Touched

__all__ = ["Entry", "Registry"]

_REBUILD_MIN = 1024  # late entries a table tolerates before it is sorted again

_Key = str | None  # a table's key: its directory (rpartition's head); None for bare names


def _needs_sort(table: DirTable) -> bool:
    """A bulk load left it unsorted, or its late entries outgrew their share."""
    return table.unsorted or len(table.late) > max(_REBUILD_MIN, len(table) // 8)


class Registry:
    """Thread-safe map of absolute path -> Entry, iterable oldest first."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._dirs: dict[_Key, DirTable] = {}  # no empty table is kept
        self._ints: list[int] = []  # slot ints shared by every table
        self._pending: set[DirTable] = set()  # tables to sort when no bulk load is open
        self._count = 0
        self._total_bytes = 0
        self._trackers: list[Touched] = []
        self._bulk = 0  # open bulk loads and tracking windows: sort when the last ends

    # -- queries -----------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self._locate(path)[2] is not None

    def get(self, path: str) -> Entry | None:
        """The entry for `path`, or None."""
        with self.lock:
            _, _, table, slot = self._locate(path)
            return None if table is None else table.entry(slot)

    def matches(self, path: str, size_bytes: int, ino: int) -> bool:
        """Whether `path` is registered with exactly this size and inode (no Entry built).
        Hold `lock` for an answer exact while other threads update (a compaction)."""
        head, sep, name = path.rpartition("/")
        table = self._dirs.get(head if sep else None)
        if table is None:
            return False
        slot = table.names.get(name)
        if slot is None:
            return False
        try:
            return table.inos[slot] == ino and table.sizes[slot] == size_bytes
        except IndexError:  # the table was compacted in between
            return False

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of all registered files."""
        return self._total_bytes

    def paths(self) -> list[str]:
        """A copy of the registered paths, in no particular order."""
        with self.lock:
            return [t.prefix + name for t in self._dirs.values() for name in t.names]

    def paths_not_in(self, present: Container[str]) -> list[str]:
        """The registered paths that `present` lacks (each other path is built and dropped)."""
        with self.lock:
            return [
                path
                for table in self._dirs.values()
                for name in table.names
                if (path := table.prefix + name) not in present
            ]

    def times(self) -> dict[str, float]:
        """A copy of path -> registration time."""
        with self.lock:
            return {
                table.prefix + name: table.times[slot]
                for table in self._dirs.values()
                for name, slot in table.names.items()
            }

    def oldest_first(self) -> list[tuple[str, Entry]]:
        """A snapshot of every entry, oldest first."""
        with self.lock:
            if len(self._dirs) < 2:
                return list(self._iter_oldest())
            # Each table is one sorted run: the sort merges them.
            items = [item for table in self._dirs.values() for item in table.iter_oldest()]
            items.sort(key=age_of)
            return items

    def oldest(self, count: int) -> list[tuple[str, Entry]]:
        """A snapshot of the `count` oldest entries, without copying the rest."""
        with self.lock:
            return list(itertools.islice(self._iter_oldest(), count))

    def iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        """Iterate oldest first. Hold `lock` while iterating."""
        return self._iter_oldest()

    # -- updates -----------------------------------------------------------------

    def add(self, path: str, registered_at: float, size_bytes: int = 0, ino: int = 0) -> bool:
        """Register `path`; True if it was new.

        Registering a path again keeps its original time and refreshes its size. A known path
        whose inode changed is a different file under the same name: it starts anew.
        """
        head, sep, name = path.rpartition("/")
        key = head if sep else None
        with self.lock:
            if self._trackers:
                self._touch(path)
            table = self._dirs.get(key)
            if table is not None and name in table.names:
                added = self._add(key, name, registered_at, size_bytes, ino)
            else:  # the common case, a new file: `_insert` inlined
                table = table if table is not None else self._table(key)
                if table.insert(name, registered_at, size_bytes, ino) and _needs_sort(table):
                    self._pending.add(table)
                self._count += 1
                self._total_bytes += size_bytes
                added = True
            if self._pending and not self._bulk:
                self._settle()
            return added

    def add_many(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        """`add` each (path, registered_at, size_bytes, ino), sorting once at the end.

        For bulk loads (a scan's findings) that arrive in any order: the late entries are
        merged once, not every time they outgrow their threshold. Returns how many paths
        were new. Not recorded by `tracking`: the windows are for concurrent events.
        """
        with self.lock:
            self._bulk += 1
            try:
                return self._add_all(items, unsorted=False)
            finally:
                self._bulk -= 1
                self._settle()

    def load(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        """`add_many` for a load in no time order inside a bulk window (`tracking`): each
        table it adds to is sorted once, when the window closes (until then, iterating
        sorts on every call)."""
        with self.lock:
            added = self._add_all(items, unsorted=True)
            self._settle()
        return added

    def load_directory(
        self, directory: str, names: list[str], times: list[float], sizes: list[int],
        inos: list[int],
    ) -> int:  # fmt: skip
        """`load` for one directory's files, in columns (`times[i]` is `names[i]`'s): a
        start-up's scan lists a directory so. New names go in whole."""
        key = directory.rstrip("/")
        with self.lock:
            table = self._dirs.get(key)
            if len(set(names)) < len(names) or not (
                table is None or table.names.keys().isdisjoint(names)
            ):
                paths = [f"{key}/{name}" for name in names]
                return self.load(zip(paths, times, sizes, inos, strict=True))
            if names:
                table = self._table(key)
                table.extend(names, times, sizes, inos)
                self._pending.add(table)
                self._count += len(names)
                self._total_bytes += sum(sizes)
                self._settle()
        return len(names)

    def renew(self, path: str, used_at: float) -> bool:
        """A later use of a registered file: its time moves forward to `used_at`.

        False (nothing changed) if `path` is unknown or its time is not older than `used_at`.
        Not recorded by `tracking`: size and inode, what a rescan reconciles, stay as they are.
        """
        with self.lock:
            key, name, table, slot = self._locate(path)
            if table is None or used_at <= table.times[slot]:
                return False
            _, size_bytes, ino = self._pop(key, table, name, slot)
            self._insert(self._table(key), name, used_at, size_bytes, ino)
            self._settle()
            return True

    def update_size(self, path: str, size_bytes: int) -> bool:
        """Refresh the size of a registered file; False if it is not registered."""
        with self.lock:
            if self._trackers:
                self._touch(path)
            _, _, table, slot = self._locate(path)
            if table is None:
                return False
            self._total_bytes += size_bytes - table.sizes[slot]
            table.sizes[slot] = size_bytes
            return True

    def discard(self, path: str) -> Entry | None:
        """Drop `path`; return its entry, or None if it was not registered."""
        head, sep, name = path.rpartition("/")
        key = head if sep else None
        with self.lock:
            if self._trackers:
                self._touch(path)
            table = self._dirs.get(key)
            slot = None if table is None else table.names.get(name)
            if slot is None or table is None:
                return None
            entry = table.pop(name, slot)  # `_pop`, with one call less
            self._count -= 1
            self._total_bytes -= entry.size_bytes
            if not table.names:
                del self._dirs[key]
                self._pending.discard(table)
            return entry

    def move(self, src: str, dst: str) -> bool:
        """A rename: the entry moves to `dst` and keeps its age. False if `src` was unknown."""
        with self.lock:
            if self._trackers:
                self._touch(src)
                self._touch(dst)
            key, name, table, slot = self._locate(src)
            if table is None:
                return False
            registered_at, size_bytes, ino = self._pop(key, table, name, slot)
            head, sep, name = dst.rpartition("/")
            self._replace(head if sep else None, name, registered_at, size_bytes, ino)
            self._settle()
            return True

    def discard_tree(self, directory: str) -> int:
        """Drop every entry below `directory`; return how many."""
        prefix = directory.rstrip("/") + "/"
        with self.lock:
            if self._trackers:
                self._touch_tree(prefix)
            below = [k for k, t in self._dirs.items() if t.prefix.startswith(prefix)]
            doomed = [self._dirs.pop(key) for key in below]
            self._pending.difference_update(doomed)
            self._total_bytes -= sum(table.total_size() for table in doomed)
            self._count -= (gone := sum(map(len, doomed)))
            return gone

    def move_tree(self, src_dir: str, dst_dir: str) -> int:
        """A directory rename: every entry below `src_dir` moves below `dst_dir`."""
        src_prefix = src_dir.rstrip("/") + "/"
        dst_prefix = dst_dir.rstrip("/") + "/"
        with self.lock:
            if self._trackers:
                self._touch_tree(src_prefix)
                self._touch_tree(dst_prefix)
            dirs = self._dirs
            below = [k for k, t in dirs.items() if t.prefix.startswith(src_prefix)]
            moving = [dirs.pop(key) for key in below]
            moved = sum(map(len, moving))
            self._bulk += 1
            try:
                for table in moving:
                    prefix = dst_prefix + table.prefix[len(src_prefix) :]
                    if prefix[:-1] not in dirs:
                        table.prefix = prefix  # renamed: its entries keep their order
                        dirs[prefix[:-1]] = table
                        continue
                    for name, slot in table.names.items():  # merged into the entries there
                        self._count -= 1
                        self._total_bytes -= table.sizes[slot]
                        self._replace(prefix[:-1], name, *table.entry(slot))
                    self._pending.discard(table)
            finally:
                self._bulk -= 1
                self._settle()
            return moved

    def clear(self) -> None:
        """Forget everything."""
        with self.lock:
            self._dirs.clear()
            self._pending.clear()
            self._count = self._total_bytes = 0

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

    # -- internals (the lock held) -------------------------------------------------

    def _touch(self, path: str) -> None:
        for touched in self._trackers:
            touched.paths.add(path)

    def _touch_tree(self, prefix: str) -> None:
        for touched in self._trackers:
            touched.trees.add(prefix)

    def _locate(self, path: str) -> tuple[_Key, str, DirTable | None, int]:
        """(key, name, table, slot) of `path`; table None if it is not registered."""
        head, sep, name = path.rpartition("/")
        key = head if sep else None
        table = self._dirs.get(key)
        slot = None if table is None else table.names.get(name)
        return (key, name, None, -1) if slot is None else (key, name, table, slot)

    def _table(self, key: _Key) -> DirTable:
        table = self._dirs.get(key)
        if table is None:
            table = self._dirs[key] = DirTable("" if key is None else key + "/", self._ints)
        return table

    def _add_all(self, items: Iterable[tuple[str, float, int, int]], *, unsorted: bool) -> int:
        # `add` for many paths, the table kept from one path to the next of its directory.
        # `unsorted`: each table is marked to be sorted once, at the end of the bulk load.
        last: object = self  # no key is the registry itself
        table: DirTable | None = None
        insert = names = None
        known = fresh = total = 0  # the counts of new names are added up at the end
        try:
            for path, registered_at, size_bytes, ino in items:
                head, sep, name = path.rpartition("/")
                key = head if sep else None
                if key != last or table is None or insert is None or names is None:
                    table = self._table(key)
                    insert, names, last = table.insert, table.names, key
                    if unsorted:
                        table.unsorted = True
                        self._pending.add(table)
                if name in names:
                    known += self._add(key, name, registered_at, size_bytes, ino)
                    last = self  # the table may have been dropped and made anew
                    continue
                if insert(name, registered_at, size_bytes, ino) and _needs_sort(table):
                    self._pending.add(table)
                fresh += 1
                total += size_bytes
        finally:
            self._count += fresh
            self._total_bytes += total
        return known + fresh

    def _add(self, key: _Key, name: str, registered_at: float, size_bytes: int, ino: int) -> bool:
        table = self._dirs.get(key)
        if table is not None:
            slot = table.names.get(name)
            if slot is not None:
                old_ino = table.inos[slot]
                if ino == 0 or old_ino == 0 or old_ino == ino:
                    # Same name, same time: the entry keeps its place in the order.
                    self._total_bytes += size_bytes - table.sizes[slot]
                    table.sizes[slot] = size_bytes
                    if ino:
                        table.inos[slot] = ino
                    return False
                self._pop(key, table, name, slot)
        self._insert(self._table(key), name, registered_at, size_bytes, ino)
        return True

    def _insert(
        self, table: DirTable, name: str, registered_at: float, size_bytes: int, ino: int
    ) -> None:
        if table.insert(name, registered_at, size_bytes, ino) and _needs_sort(table):
            self._pending.add(table)
        self._count += 1
        self._total_bytes += size_bytes

    def _replace(
        self, key: _Key, name: str, registered_at: float, size_bytes: int, ino: int
    ) -> None:
        """`_insert`, dropping first whatever held that name."""
        table = self._dirs.get(key)
        slot = None if table is None else table.names.get(name)
        if slot is not None and table is not None:
            self._pop(key, table, name, slot)
        self._insert(self._table(key), name, registered_at, size_bytes, ino)

    def _pop(self, key: _Key, table: DirTable, name: str, slot: int) -> Entry:
        entry = table.pop(name, slot)
        self._count -= 1
        self._total_bytes -= entry.size_bytes
        if not table.names:
            del self._dirs[key]
            self._pending.discard(table)
        return entry

    def _settle(self) -> None:
        """Sort the tables that need it, unless a bulk load is still open."""
        if self._bulk or not self._pending:
            return
        for table in self._pending:
            if _needs_sort(table):
                table.sort()
        self._pending.clear()

    def _iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        tables = self._dirs.values()
        if len(tables) == 1:
            for table in tables:
                return table.iter_oldest()
        return heapq.merge(*(table.iter_oldest() for table in tables), key=age_of)
