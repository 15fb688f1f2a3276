"""Disk pressure: which files should go so that a filesystem keeps some space and inodes free.

Pure: no I/O, no clock, no locks. The caller reads the filesystem's figures (`FsUsage`,
from statvfs) and hands in the registered files oldest first, as for the other limits.

When free space falls below `min_free_space` (or free inodes below `min_free_inodes`),
the oldest files that are not open go until the free amount reaches the watermark plus a
reclaim margin, then eviction stops: the margin is `1 - low_watermark` of the watermark
(with 10% and 0.9, eviction stops at 11% free), so a writer that keeps writing is met by
rounds that each free a little more than it takes, not one eviction per file it writes.

Several directories on one filesystem share its free space. Each brings its own files
(oldest first) and its own watermarks; a directory's files are candidates only while its
own watermark is breached and its own target not yet met. Candidates are taken across
the directories by age, oldest first, ties in the order the directories are given: the
same input always gives the same evictions.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import NamedTuple

from tempwatch.policy import Decision, Plan, Reason
from tempwatch.registry import Entry
from tempwatch.rules import RuleSet

__all__ = [
    "FreeAmount",
    "FsUsage",
    "PressurePlan",
    "Targets",
    "Watermarks",
    "plan_pressure",
    "plan_shared_pressure",
]


class FreeAmount(NamedTuple):
    """A minimum free amount: absolute (bytes, or inodes) or a percentage of the total."""

    value: float
    is_percent: bool = False

    def of(self, total: int) -> int:
        """The amount for a filesystem of `total` bytes (or inodes)."""
        if self.is_percent:
            return math.ceil(total * self.value / 100)
        return int(self.value)

    def __str__(self) -> str:
        if self.is_percent:
            return f"{self.value:g}%"
        return str(int(self.value))


class Watermarks(NamedTuple):
    """One directory's pressure settings. None leaves that watermark off."""

    min_free_space: FreeAmount | None = None
    min_free_inodes: FreeAmount | None = None
    low_watermark: float = 0.9  # the reclaim margin is (1 - low_watermark) x the watermark
    rules: RuleSet | None = None  # files a `keep` rule governs never go

    @property
    def is_set(self) -> bool:
        """Whether either watermark is on."""
        return self.min_free_space is not None or self.min_free_inodes is not None

    def targets(self, usage: FsUsage) -> Targets:
        """The watermarks and the amounts eviction stops at, for this filesystem."""
        space = self.min_free_space.of(usage.total_bytes) if self.min_free_space else 0
        # A filesystem without an inode table (btrfs reports 0) has no inode watermark.
        inodes = (
            self.min_free_inodes.of(usage.total_inodes)
            if self.min_free_inodes and usage.total_inodes
            else 0
        )
        return Targets(space, _with_margin(space, self), inodes, _with_margin(inodes, self))


def _with_margin(amount: int, watermarks: Watermarks) -> int:
    return amount + math.ceil(amount * (1 - watermarks.low_watermark))


class Targets(NamedTuple):
    """Watermarks in bytes and inodes (0: off), and where eviction stops once started."""

    min_free_bytes: int
    stop_free_bytes: int
    min_free_inodes: int
    stop_free_inodes: int

    def is_low_space(self, usage: FsUsage) -> bool:
        """Free space is below the watermark."""
        return usage.free_bytes < self.min_free_bytes

    def is_low_inodes(self, usage: FsUsage) -> bool:
        """Free inodes are below the watermark."""
        return usage.free_inodes < self.min_free_inodes


class FsUsage(NamedTuple):
    """A filesystem's figures as statvfs gives them (free: what unprivileged users may use)."""

    free_bytes: int
    total_bytes: int
    free_inodes: int
    total_inodes: int
    block_bytes: int = 1  # a file frees its size rounded up to this

    @property
    def used_bytes(self) -> int:
        """Bytes in use (by anyone)."""
        return max(0, self.total_bytes - self.free_bytes)

    def blocks_of(self, size_bytes: int) -> int:
        """What deleting a file of `size_bytes` gives back, as far as the size tells."""
        block = max(1, self.block_bytes)
        return -(-size_bytes // block) * block


class PressurePlan(NamedTuple):
    """The evictions for one filesystem, and the figures to report them by.

    `plan.pinned` lists the open files the eviction had to pass over while a target was
    still not met: what stops the filesystem from getting back above its watermark (with
    whatever use is outside the watched directories).
    """

    plan: Plan
    low_space: bool = False
    low_inodes: bool = False
    short_bytes: int = 0  # still missing to the target after these deletions
    short_inodes: int = 0
    deletion_owners: tuple[int, ...] = ()  # the source (directory) of each deletion
    skipped_owners: tuple[int, ...] = ()  # and of each open file passed over

    @property
    def is_pressed(self) -> bool:
        """A watermark is breached."""
        return self.low_space or self.low_inodes

    @property
    def is_met(self) -> bool:
        """The deletions planned bring every breached directory to its target."""
        return not (self.short_bytes or self.short_inodes)


def plan_pressure(
    oldest_first: Iterable[tuple[str, Entry]],
    *,
    usage: FsUsage,
    watermarks: Watermarks,
    now: float,
    open_paths: Container[str],
) -> PressurePlan:
    """Evict the oldest files that are not open until `usage` is back at the targets.

    `oldest_first` must be oldest first; only as many entries are read as needed.
    """
    return plan_shared_pressure(
        [(watermarks, oldest_first)], usage=usage, now=now, open_paths=open_paths
    )


class _Need(NamedTuple):
    """One directory's targets while the plan is built."""

    targets: Targets
    space: bool
    inodes: bool
    rules: RuleSet | None

    def is_kept(self, path: str) -> bool:
        """Whether a `keep` rule of this directory governs `path`."""
        return self.rules is not None and self.rules.is_kept(path)

    def reason(self, free_bytes: int, free_inodes: int) -> Reason | None:
        """Why one more of this directory's files should go, or None once met."""
        if self.space and free_bytes < self.targets.stop_free_bytes:
            return Reason.LOW_SPACE
        if self.inodes and free_inodes < self.targets.stop_free_inodes:
            return Reason.LOW_INODES
        return None


def plan_shared_pressure(
    sources: Sequence[tuple[Watermarks, Iterable[tuple[str, Entry]]]],
    *,
    usage: FsUsage,
    now: float,
    open_paths: Container[str],
) -> PressurePlan:
    """`plan_pressure` for several directories on one filesystem: see the module's doc."""
    needs: list[_Need | None] = []
    for watermarks, _ in sources:
        targets = watermarks.targets(usage)
        space, inodes = targets.is_low_space(usage), targets.is_low_inodes(usage)
        pressed = space or inodes
        needs.append(_Need(targets, space, inodes, watermarks.rules) if pressed else None)
    if not any(needs):
        return PressurePlan(Plan())
    free_bytes, free_inodes = usage.free_bytes, usage.free_inodes
    deletions: list[Decision] = []
    skipped: list[Decision] = []
    deletion_owners: list[int] = []
    skipped_owners: list[int] = []
    live = [need for need in needs if need is not None]
    for index, path, entry in _merged(sources, needs):
        need = needs[index]
        assert need is not None  # _merged reads only the pressed directories
        reason = need.reason(free_bytes, free_inodes)
        if reason is None:
            continue  # this directory is back at its target; another is not yet
        if need.is_kept(path):
            continue  # never registered by the service; a scan's list may hold it
        freed = usage.blocks_of(entry.size_bytes)
        if reason is Reason.LOW_SPACE and not freed and not need.inodes:
            continue  # an empty file frees no space
        decision = Decision(path, reason, now - entry.registered_at, entry.size_bytes, entry.ino)
        if path in open_paths:
            skipped.append(decision)
            skipped_owners.append(index)
            continue
        deletions.append(decision)
        deletion_owners.append(index)
        free_bytes += freed
        free_inodes += 1
        if all(n.reason(free_bytes, free_inodes) is None for n in live):
            break
    short_bytes = max(
        (n.targets.stop_free_bytes - free_bytes for n in live if n.space), default=0
    )
    short_inodes = max(
        (n.targets.stop_free_inodes - free_inodes for n in live if n.inodes), default=0
    )
    short_bytes, short_inodes = max(0, short_bytes), max(0, short_inodes)
    pinned = tuple(skipped) if short_bytes or short_inodes else ()
    return PressurePlan(
        Plan(tuple(deletions), tuple(skipped), pinned),
        low_space=any(n.space for n in live),
        low_inodes=any(n.inodes for n in live),
        short_bytes=short_bytes,
        short_inodes=short_inodes,
        deletion_owners=tuple(deletion_owners),
        skipped_owners=tuple(skipped_owners),
    )


def _merged(
    sources: Sequence[tuple[Watermarks, Iterable[tuple[str, Entry]]]],
    needs: Sequence[_Need | None],
) -> Iterator[tuple[int, str, Entry]]:
    """The pressed directories' entries as one stream, oldest first, ties by directory order."""
    streams = [
        _keyed(index, entries)
        for index, (_, entries) in enumerate(sources)
        if needs[index] is not None
    ]
    if len(streams) == 1:
        for _, index, path, entry in streams[0]:
            yield index, path, entry
        return
    for _, index, path, entry in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield index, path, entry


def _keyed(
    index: int, entries: Iterable[tuple[str, Entry]]
) -> Iterator[tuple[float, int, str, Entry]]:
    for path, entry in entries:
        yield entry.registered_at, index, path, entry
