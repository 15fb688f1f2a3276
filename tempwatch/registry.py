"""The registry: every file tempwatch knows about, with its registration time, size and inode.

Memory: the files are held per directory (`tempwatch.dirtable`): one table per directory
path, in which a file is its name, one dict slot and 24 bytes of columns. The directory's
path is stored once per table instead of once per file; paths are put together again only
when asked for (iteration, `paths`, `times`). About 110 bytes per file two levels down,
where one dict of whole paths to packed ints took 192.

Order: each table is kept in age order but for a few late entries (a file found by a scan,
a renamed file keeping its age) that iteration merges in; the registry iterates oldest
first by merging its tables. A table whose late entries outgrow a fraction of it is sorted
again; a bulk load (`add_many`, or anything inside a `tracking` window) sorts once, at its
end. A start-up's scan (`load`) adds in no order at all and sorts each table once, so that
it can register each directory as it is listed and free the scan's objects as it goes.

All methods are thread-safe. `lock` is exposed so that a caller can check and act as one
step (the reconciling rescan does).
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager

from tempwatch.dirtable import DirTable, Entry, age_of
from tempwatch.touched import Touched

__all__ = ["Entry", "Registry"]

_REBUILD_MIN = 1024  # late entries a table tolerates before it is sorted again


def _split(path: str) -> tuple[str, str]:
    """(directory prefix with its trailing slash, name); "" prefix for a bare name."""
    cut = path.rfind("/") + 1
    return path[:cut], path[cut:]


def _needs_sort(table: DirTable) -> bool:
    """A bulk load left it unsorted, or its late entries outgrew their share."""
    return table.unsorted or len(table.late) > max(_REBUILD_MIN, len(table) // 8)


class Registry:
    """Thread-safe map of absolute path -> Entry, iterable oldest first."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._dirs: dict[str, DirTable] = {}  # "dir/" -> its table; no empty table kept
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
        if not isinstance(path, str):
            return False
        prefix, name = _split(path)
        table = self._dirs.get(prefix)
        return table is not None and name in table.names

    def get(self, path: str) -> Entry | None:
        """The entry for `path`, or None."""
        prefix, name = _split(path)
        with self.lock:
            table = self._dirs.get(prefix)
            slot = None if table is None else table.names.get(name)
            return None if slot is None or table is None else table.entry(slot)

    def matches(self, path: str, size_bytes: int, ino: int) -> bool:
        """Whether `path` is registered with exactly this size and inode (no Entry built)."""
        prefix, name = _split(path)
        with self.lock:
            table = self._dirs.get(prefix)
            slot = None if table is None else table.names.get(name)
            return (
                slot is not None
                and table is not None
                and table.inos[slot] == ino
                and table.sizes[slot] == size_bytes
            )

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of all registered files."""
        return self._total_bytes

    def paths(self) -> list[str]:
        """A copy of the registered paths, in no particular order."""
        with self.lock:
            return [prefix + name for prefix, table in self._dirs.items() for name in table.names]

    def paths_not_in(self, present: Container[str]) -> list[str]:
        """The registered paths that `present` lacks (each other path is built and dropped)."""
        with self.lock:
            return [
                path
                for prefix, table in self._dirs.items()
                for name in table.names
                if (path := prefix + name) not in present
            ]

    def times(self) -> dict[str, float]:
        """A copy of path -> registration time."""
        with self.lock:
            return {
                prefix + name: table.times[slot]
                for prefix, table in self._dirs.items()
                for name, slot in table.names.items()
            }

    def oldest_first(self) -> list[tuple[str, Entry]]:
        """A snapshot of every entry, oldest first."""
        with self.lock:
            if len(self._dirs) < 2:
                return list(self._iter_oldest())
            # Each table is one sorted run: the sort merges them.
            items = [item for p, t in self._dirs.items() for item in t.iter_oldest(p)]
            items.sort(key=age_of)
            return items

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
        prefix, name = _split(path)
        with self.lock:
            if self._trackers:
                self._touch(path)
            added = self._add(prefix, name, registered_at, size_bytes, ino)
            self._settle()
            return added

    def add_many(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        """`add` each (path, registered_at, size_bytes, ino), sorting once at the end.

        For bulk loads (a scan's findings) that arrive in any order: the late entries are
        merged once, not every time they outgrow their threshold. Returns how many paths
        were new. Not recorded by `tracking`: the windows are for concurrent events.
        """
        added = 0
        with self.lock:
            self._bulk += 1
            try:
                add = self._add
                for path, registered_at, size_bytes, ino in items:
                    cut = path.rfind("/") + 1
                    added += add(path[:cut], path[cut:], registered_at, size_bytes, ino)
            finally:
                self._bulk -= 1
                self._settle()
        return added

    def load(self, items: Iterable[tuple[str, float, int, int]]) -> int:
        """`add_many` for a load in no time order that the caller keeps in a bulk window
        (`tracking`): new paths are not ordered one by one, each table they land in is
        sorted once when the window closes. A start-up's scan registers directory by
        directory so; until the window closes, iterating sorts on every call."""
        added = total = 0
        with self.lock:
            dirs = self._dirs
            pending = self._pending
            last_prefix = None
            table = names = insert = None
            for path, registered_at, size_bytes, ino in items:
                cut = path.rfind("/") + 1
                prefix, name = path[:cut], path[cut:]
                if prefix != last_prefix or table is None or names is None or insert is None:
                    table = dirs.get(prefix)
                    if table is None:
                        table = dirs[prefix] = DirTable(self._ints)
                    table.unsorted = True
                    pending.add(table)
                    names, insert, last_prefix = table.names, table.insert, prefix
                if name in names:
                    self._count += added
                    self._total_bytes += total
                    added = total = 0
                    added += self._add(prefix, name, registered_at, size_bytes, ino)
                    last_prefix = None  # the table may have been dropped and made anew
                    continue
                insert(name, registered_at, size_bytes, ino)
                total += size_bytes
                added += 1
            self._count += added
            self._total_bytes += total
            self._settle()
        return added

    def renew(self, path: str, used_at: float) -> bool:
        """A later use of a registered file: its time moves forward to `used_at`.

        False (nothing changed) if `path` is unknown or its time is not older than `used_at`.
        Not recorded by `tracking`: size and inode, what a rescan reconciles, stay as they are.
        """
        prefix, name = _split(path)
        with self.lock:
            table = self._dirs.get(prefix)
            slot = None if table is None else table.names.get(name)
            if slot is None or table is None or used_at <= table.times[slot]:
                return False
            size_bytes, ino = table.sizes[slot], table.inos[slot]
            self._remove(prefix, table, name, slot)
            self._insert(prefix, name, used_at, size_bytes, ino)
            self._settle()
            return True

    def update_size(self, path: str, size_bytes: int) -> bool:
        """Refresh the size of a registered file; False if it is not registered."""
        prefix, name = _split(path)
        with self.lock:
            if self._trackers:
                self._touch(path)
            table = self._dirs.get(prefix)
            slot = None if table is None else table.names.get(name)
            if slot is None or table is None:
                return False
            self._total_bytes += size_bytes - table.sizes[slot]
            table.sizes[slot] = size_bytes
            return True

    def discard(self, path: str) -> Entry | None:
        """Drop `path`; return its entry, or None if it was not registered."""
        prefix, name = _split(path)
        with self.lock:
            if self._trackers:
                self._touch(path)
            table = self._dirs.get(prefix)
            slot = None if table is None else table.names.get(name)
            if slot is None or table is None:
                return None
            entry = table.entry(slot)
            self._remove(prefix, table, name, slot)
            return entry

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
            doomed = [p for p in self._dirs if p.startswith(prefix)]
            gone = 0
            for table_prefix in doomed:
                table = self._dirs.pop(table_prefix)
                gone += len(table)
                self._total_bytes -= table.total_size()
                self._pending.discard(table)
            self._count -= gone
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
            moving = [(p, dirs.pop(p)) for p in [p for p in dirs if p.startswith(src_prefix)]]
            moved = 0
            self._bulk += 1
            try:
                for prefix, table in moving:
                    moved += len(table)
                    target = dst_prefix + prefix[len(src_prefix) :]
                    if target not in dirs:
                        dirs[target] = table  # a table renamed keeps its entries and order
                        continue
                    for name, slot in table.names.items():  # merged into entries there
                        size_bytes = table.sizes[slot]
                        self._count -= 1
                        self._total_bytes -= size_bytes
                        self._replace(target, name, table.times[slot], size_bytes, table.inos[slot])
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
            self._count = 0
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

    def _add(self, prefix: str, name: str, registered_at: float, size_bytes: int, ino: int) -> bool:
        table = self._dirs.get(prefix)
        slot = None if table is None else table.names.get(name)
        if slot is not None and table is not None:
            old_ino = table.inos[slot]
            if ino == 0 or old_ino == 0 or old_ino == ino:
                # Same name, same time: the entry keeps its place in the order.
                self._total_bytes += size_bytes - table.sizes[slot]
                table.sizes[slot] = size_bytes
                if ino:
                    table.inos[slot] = ino
                return False
            self._remove(prefix, table, name, slot)
        self._insert(prefix, name, registered_at, size_bytes, ino)
        return True

    def _insert(
        self, prefix: str, name: str, registered_at: float, size_bytes: int, ino: int
    ) -> None:
        table = self._dirs.get(prefix)
        if table is None:
            table = self._dirs[prefix] = DirTable(self._ints)
        if table.insert(name, registered_at, size_bytes, ino) and _needs_sort(table):
            self._pending.add(table)
        self._count += 1
        self._total_bytes += size_bytes

    def _replace(
        self, prefix: str, name: str, registered_at: float, size_bytes: int, ino: int
    ) -> None:
        """`_insert`, dropping first whatever `prefix + name` held."""
        table = self._dirs.get(prefix)
        slot = None if table is None else table.names.get(name)
        if slot is not None and table is not None:
            self._remove(prefix, table, name, slot)
        self._insert(prefix, name, registered_at, size_bytes, ino)

    def _remove(self, prefix: str, table: DirTable, name: str, slot: int) -> None:
        self._total_bytes -= table.sizes[slot]
        self._count -= 1
        table.remove(name, slot)
        if not table.names:
            del self._dirs[prefix]
            self._pending.discard(table)

    def _move(self, src: str, dst: str) -> bool:
        prefix, name = _split(src)
        table = self._dirs.get(prefix)
        slot = None if table is None else table.names.get(name)
        if slot is None or table is None:
            return False
        registered_at, size_bytes, ino = table.entry(slot)
        self._remove(prefix, table, name, slot)
        self._replace(*_split(dst), registered_at, size_bytes, ino)
        return True

    def _settle(self) -> None:
        """Sort the tables that need it, unless a bulk load is still open."""
        if self._bulk or not self._pending:
            return
        for table in self._pending:
            if _needs_sort(table):
                table.sort()
        self._pending.clear()

    def _iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        dirs = self._dirs
        if len(dirs) == 1:
            for prefix, table in dirs.items():
                return table.iter_oldest(prefix)
        return heapq.merge(*(t.iter_oldest(p) for p, t in dirs.items()), key=age_of)
