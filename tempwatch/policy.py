"""The cleanup policy: which files should go, and why. Pure: no I/O, no clock, no locks.

It reads entries oldest first and answers with decisions, each with its reason. Files
that are open are never chosen; when a limit cannot be met because the remaining files
are open, the plan names the files that pin it. A file that expired while held open is
still there, so it still counts against the limits, and pins them like any other.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from tempwatch.age import AgeBy, AgeCheck
from tempwatch.registry import Entry
from tempwatch.rules import RuleSet

__all__ = ["EVERY_PATH", "Decision", "Limits", "Plan", "Reason", "plan_evictions", "plan_pass"]


class _EveryPath:
    """A container holding every path: `forced=EVERY_PATH` ignores the age of every file."""

    def __contains__(self, path: object) -> bool:
        return True


EVERY_PATH: Container[str] = _EveryPath()


class Reason(str, Enum):
    """Why a file is removed."""

    EXPIRED = "expired"
    OVERSIZE = "oversize"
    OVER_COUNT = "over-count"
    OVER_QUOTA = "over-quota"
    FORCED = "forced"
    LOW_SPACE = "low-space"  # the filesystem's free space is below min_free_space
    LOW_INODES = "low-inodes"  # its free inodes are below min_free_inodes

    @property
    def label(self) -> str:
        """The form used as a metric label: over_count, over_quota, ..."""
        return self.value.replace("-", "_")


@dataclass(frozen=True, slots=True)
class Limits:
    """What the policy enforces. 0 means unlimited for the counts and sizes.

    Ages count from each entry's time (its last use as known: see `tempwatch.age`). With
    `age_by`, each expiry carries an AgeCheck so that the deleter's own lstat can still
    find the file used since and keep it; None trusts the entry's time alone.
    """

    max_age_seconds: float
    max_files: int = 0
    max_file_size_bytes: int = 0
    max_total_size_bytes: int = 0
    low_watermark: float = 0.9
    age_by: AgeBy | None = None
    rules: RuleSet | None = None  # per-pattern max_age, size limit, age_by or keep

    def is_exceeded(self, count: int, total_bytes: int) -> bool:
        """Whether `count` files of `total_bytes` in all are over the count or the quota."""
        return bool(
            (self.max_files and count > self.max_files)
            or (self.max_total_size_bytes and total_bytes > self.max_total_size_bytes)
        )

    def count_target(self) -> int:
        """How many files may remain after an eviction for the count limit."""
        return math.floor(self.max_files * self.low_watermark)

    def bytes_target(self) -> int:
        """How many bytes may remain after an eviction for the quota."""
        return math.floor(self.max_total_size_bytes * self.low_watermark)


class Decision(NamedTuple):
    """One file the policy chose, or would have chosen but for it being open.

    A named tuple: a pass makes one per file (see `tempwatch.deleter.FileId`).
    """

    path: str
    reason: Reason
    age_seconds: float
    size_bytes: int
    ino: int
    age_check: AgeCheck | None = None  # an expiry: the deleter keeps the file if used since


class Plan(NamedTuple):
    """The policy's answer for one pass or one eviction."""

    deletions: tuple[Decision, ...] = ()
    skipped_open: tuple[Decision, ...] = ()
    pinned: tuple[Decision, ...] = ()  # open files that leave a limit exceeded
    capped: bool = False  # stopped at max_deletions: more would go in another round

    @property
    def pinned_files(self) -> int:
        """How many files are left over a limit because they are open."""
        return len(self.pinned)

    @property
    def pinned_bytes(self) -> int:
        """Their size as the registry knows it (the cleaner measures them on disk)."""
        return sum(decision.size_bytes for decision in self.pinned)

    @property
    def is_limit_pinned(self) -> bool:
        """A limit stays exceeded because the files that would go are open."""
        return bool(self.pinned)


def _reason_by_file(
    entry: Entry, age_seconds: float, max_age_seconds: float, max_size_bytes: int, forced: bool
) -> Reason | None:
    if forced:
        return Reason.FORCED
    if age_seconds > max_age_seconds:
        return Reason.EXPIRED
    if max_size_bytes and entry.size_bytes > max_size_bytes:
        return Reason.OVERSIZE
    return None


def plan_pass(
    entries: Iterable[tuple[str, Entry]],
    *,
    now: float,
    limits: Limits,
    open_paths: Container[str],
    forced: Container[str] = (),
) -> Plan:
    """A full pass: expired and oversize files, and the `forced` ones whatever their age,
    then the limits.

    `entries` must be oldest first. `open_paths` is consulted only for files that would go,
    so a lazy container sweeps processes only when there is something to delete. With
    `limits.rules`, each file's rule sets its max_age, size limit and age_by; files a
    `keep` rule governs are left out altogether (never deleted, never counted).
    """
    deletions: list[Decision] = []
    skipped: list[Decision] = []
    kept: list[tuple[str, Entry]] = []  # what stays on disk, open files included
    total_bytes = 0
    rules = limits.rules or None
    age_by = limits.age_by
    max_age = limits.max_age_seconds
    max_size = limits.max_file_size_bytes
    # Without rules every expiry gets the same check: made once, not once per file.
    same_check = AgeCheck(age_by, now - max_age) if age_by is not None else None
    for path, entry in entries:
        if rules is not None:
            governing = rules.governing(path)
            if governing.keep:
                continue
            age_by = governing.age_by
            max_age = governing.max_age_seconds
            max_size = governing.max_file_size_bytes
        age = now - entry.registered_at
        reason = _reason_by_file(entry, age, max_age, max_size, path in forced)
        if reason is not None:
            check = None
            if age_by is not None and reason is Reason.EXPIRED:
                check = AgeCheck(age_by, now - max_age) if rules is not None else same_check
            decision = Decision(path, reason, age, entry.size_bytes, entry.ino, check)
            if path not in open_paths:
                deletions.append(decision)
                continue
            skipped.append(decision)
        kept.append((path, entry))
        total_bytes += entry.size_bytes
    evictions = plan_evictions(
        kept, count=len(kept), total_bytes=total_bytes, now=now, limits=limits,
        open_paths=open_paths,
    )
    # An expired (or oversize) open file is met again by the eviction: listed once.
    already = {decision.path for decision in skipped}
    return Plan(
        deletions=tuple(deletions) + evictions.deletions,
        skipped_open=tuple(skipped)
        + tuple(d for d in evictions.skipped_open if d.path not in already),
        pinned=evictions.pinned,
    )


def plan_evictions(
    oldest_first: Iterable[tuple[str, Entry]],
    *,
    count: int,
    total_bytes: int,
    now: float,
    limits: Limits,
    open_paths: Container[str],
    max_deletions: int = 0,
    under_way: Collection[Reason] = (),
) -> Plan:
    """Evict the oldest files that are not open, down to the low watermark of each limit.

    Nothing happens unless a limit is exceeded, or its eviction is `under_way` (an earlier
    round of the same eviction stopped at `max_deletions`: it goes on to the watermark);
    then only as many entries are read as the eviction needs, so the cost follows the
    number evicted, not the registry's size. `max_deletions` (0: no cap) ends the plan
    early; the pinned figures of a plan so cut are 0, as the rest was not looked at.
    """
    count_target, bytes_target = limits.count_target(), limits.bytes_target()
    over_count = bool(limits.max_files) and (
        count > limits.max_files or (Reason.OVER_COUNT in under_way and count > count_target)
    )
    over_quota = bool(limits.max_total_size_bytes) and (
        total_bytes > limits.max_total_size_bytes
        or (Reason.OVER_QUOTA in under_way and total_bytes > bytes_target)
    )
    if not (over_count or over_quota):
        return Plan()
    count_target = count_target if over_count else count
    bytes_target = bytes_target if over_quota else total_bytes
    deletions: list[Decision] = []
    skipped: list[Decision] = []
    rules = limits.rules or None
    for path, entry in oldest_first:
        if count <= count_target and total_bytes <= bytes_target:
            break
        if rules is not None and rules.is_kept(path):
            continue  # never registered by the service; a scan's list may hold it
        if max_deletions and len(deletions) >= max_deletions:
            return Plan(tuple(deletions), tuple(skipped), capped=True)
        reason = Reason.OVER_COUNT if count > count_target else Reason.OVER_QUOTA
        if reason is Reason.OVER_QUOTA and entry.size_bytes == 0:
            continue  # an empty file frees no bytes
        decision = Decision(path, reason, now - entry.registered_at, entry.size_bytes, entry.ino)
        if path in open_paths:
            skipped.append(decision)
            continue
        deletions.append(decision)
        count -= 1
        total_bytes -= entry.size_bytes
    met = count <= count_target and total_bytes <= bytes_target
    return Plan(tuple(deletions), tuple(skipped), () if met else tuple(skipped))
