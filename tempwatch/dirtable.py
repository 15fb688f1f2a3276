"""One directory's share of the registry: its files by name, their figures in columns.

The registry keeps one `DirTable` per directory, keyed by the directory's path, so that a
file costs its name and not its whole path (about 45 characters two levels down, where the
name is about 12). A name maps to a slot; the slot indexes three `array` columns holding
the registration time (a double, read back exactly as given), the size and the inode:
24 bytes, where one int packing the three cost 64 with pymalloc's rounding. The slot ints
themselves are shared by every table of a registry (`ints`), so a slot costs no object of
its own: only a directory of more files than any other pays for new ones.

Age order: the `names` dict is kept in registration order, which is age order for every
name but those in `late` (registered with a time older than the newest, as a rename or a
scan's finding is). Iteration merges the two, and the registry sorts a table (`sort`) when
its late names outgrow their share, or once after a bulk load marked it `unsorted`.

Freed slots are reused; a table with more free slots than live ones is compacted.
Not thread-safe by itself: the registry calls it under its lock.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Entry", "DirTable"]

_COMPACT_MIN = 64
# Shared empty stand-ins, replaced by a table's own on first use: most tables never need
# either, and a small directory would pay more for them than for its files.
_NO_FREE: list[int] = []
_NO_LATE: dict[str, float] = {}


class Entry(NamedTuple):
    """What the registry holds for one path."""

    registered_at: float
    size_bytes: int
    ino: int


_make_entry = Entry._make


class DirTable:
    """The entries of one directory: name -> slot -> (time, size, inode)."""

    __slots__ = (
        "prefix",
        "names",
        "times",
        "sizes",
        "inos",
        "free",
        "late",
        "tail",
        "unsorted",
        "ints",
    )

    def __init__(self, prefix: str, ints: list[int]) -> None:
        self.prefix = prefix  # the directory's path and a slash: prefix + name is the path
        self.names: dict[str, int] = {}  # name -> slot, in age order but for `late`
        self.times = array("d")
        self.sizes = array("q")
        self.inos = array("Q")
        self.free: list[int] = _NO_FREE  # slots to reuse (a list of its own once any is)
        self.late: dict[str, float] = _NO_LATE  # names out of age order -> their time
        self.tail = float("-inf")  # time of the newest in-order name
        self.unsorted = False  # a bulk load added names in no order: `sort` before use
        self.ints = ints  # the registry's shared slot ints: ints[i] == i

    def __len__(self) -> int:
        return len(self.names)

    def entry(self, slot: int) -> Entry:
        return _make_entry((self.times[slot], self.sizes[slot], self.inos[slot]))

    def insert(self, name: str, registered_at: float, size_bytes: int, ino: int) -> bool:
        """Add a name not in the table; True if it landed out of age order (in `late`)."""
        free = self.free
        if free:
            slot = free.pop()
            self.times[slot] = registered_at
            self.sizes[slot] = size_bytes
            self.inos[slot] = ino
        else:
            times = self.times
            index = len(times)
            ints = self.ints
            if index >= len(ints):
                ints.extend(range(len(ints), index + index // 8 + 64))
            slot = ints[index]
            times.append(registered_at)
            self.sizes.append(size_bytes)
            self.inos.append(ino)
        self.names[name] = slot
        if self.unsorted:
            return False
        if registered_at >= self.tail:
            self.tail = registered_at
            return False
        if self.late is _NO_LATE:
            self.late = {}
        self.late[name] = registered_at
        return True

    def extend(
        self, names: list[str], times: list[float], sizes: list[int], inos: list[int]
    ) -> None:
        """Add names none of which is in the table (nor twice in `names`), in no order:
        the table is left `unsorted`. The columns grow by whole lists, in C."""
        start = len(self.times)
        end = start + len(names)
        ints = self.ints
        if end > len(ints):
            ints.extend(range(len(ints), end + end // 8 + 64))
        self.times.fromlist(times)
        self.sizes.fromlist(sizes)
        self.inos.fromlist(inos)
        self.names.update(zip(names, ints[start:end], strict=True))
        self.unsorted = True

    def pop(self, name: str, slot: int) -> Entry:
        """Drop `name` (at `slot`) and return its entry; compacts when free slots
        outnumber live ones."""
        entry = _make_entry((self.times[slot], self.sizes[slot], self.inos[slot]))
        del self.names[name]
        if self.late:
            self.late.pop(name, None)
        free = self.free
        if free is _NO_FREE:
            self.free = free = []
        free.append(slot)
        if len(free) > _COMPACT_MIN and len(free) > len(self.names):
            self._compact()
        if not self.names:
            self.tail = float("-inf")
        return entry

    def sort(self) -> None:
        """Put `names` in age order: a rebuild after late names, or a bulk load's one sort."""
        times = self.times
        order = sorted(self.names.items(), key=lambda item: times[item[1]])
        self.names = dict(order)
        self.late = _NO_LATE
        self.unsorted = False
        self.tail = times[order[-1][1]] if order else float("-inf")

    def iter_oldest(self) -> Iterator[tuple[str, Entry]]:
        """(path, Entry) oldest first."""
        prefix, names, times, sizes, inos = (
            self.prefix,
            self.names,
            self.times,
            self.sizes,
            self.inos,
        )
        make = _make_entry
        if self.unsorted:
            order = sorted(names.items(), key=lambda item: times[item[1]])
            return ((prefix + n, make((times[s], sizes[s], inos[s]))) for n, s in order)
        late = self.late
        if not late:
            return ((prefix + n, make((times[s], sizes[s], inos[s]))) for n, s in names.items())
        in_order = (
            (prefix + n, make((times[s], sizes[s], inos[s])))
            for n, s in names.items()
            if n not in late
        )
        out_of_order = [
            (prefix + n, make((times[s], sizes[s], inos[s])))
            for n in sorted(late, key=late.__getitem__)
            for s in (names[n],)
        ]
        return heapq.merge(in_order, out_of_order, key=age_of)

    def total_size(self) -> int:
        sizes = self.sizes
        return sum(sizes[slot] for slot in self.names.values())

    def _compact(self) -> None:
        # New columns holding only the live slots, renumbered in age order.
        ints, times, sizes, inos = self.ints, self.times, self.sizes, self.inos
        slots = list(self.names.values())
        self.times = array("d", [times[s] for s in slots])
        self.sizes = array("q", [sizes[s] for s in slots])
        self.inos = array("Q", [inos[s] for s in slots])
        self.names = dict(zip(self.names, ints, strict=False))
        self.free = _NO_FREE


def age_of(item: tuple[str, Entry]) -> float:
    """The sort key of an iterated (path, Entry): its registration time."""
    return item[1][0]
