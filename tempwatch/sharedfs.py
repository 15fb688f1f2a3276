"""Several watched directories on one filesystem share its free space, and evict together.

Each directory's `Reclaimer` joins the `SharedFilesystem` of the filesystem holding it.
When one of them finds the filesystem below a watermark, it plans for all of them at once
(`tempwatch.pressure.plan_shared_pressure`): a directory's files are candidates only while
its own watermark is breached and its own target not met, and candidates are taken across
the directories by age, oldest first, ties in the order the directories joined (the
order of the config). Each directory's files are then deleted through its own deleter,
under its own act lock, and logged and counted by its own listener.

One eviction runs at a time per filesystem; it re-reads the filesystem's figures once it
has the group, so a member that waited does not evict again on figures already acted on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

from tempwatch.cleaner import PassReport
from tempwatch.openfiles import NO_OPEN_FILES, OpenFileSet
from tempwatch.policy import Plan
from tempwatch.pressure import FsUsage, PressurePlan, Watermarks, plan_shared_pressure
from tempwatch.registry import Registry

__all__ = ["Member", "SharedEviction", "SharedFilesystem", "merge_reports"]


class Member(Protocol):
    """What the group needs of a directory's reclaimer."""

    @property
    def base_dir(self) -> str: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def watermarks(self) -> Watermarks | None: ...  # None until its first check
    @property
    def skips_open_files(self) -> bool: ...
    def execute(self, plan: Plan) -> PassReport: ...


@dataclass(frozen=True, slots=True)
class SharedEviction:
    """What one eviction for the whole filesystem planned and did."""

    pressure: PressurePlan
    report: PassReport
    usage: FsUsage  # the figures it planned with
    watched_bytes: int  # the registered bytes of every member


class SharedFilesystem:
    """The members on one filesystem, in the order they joined."""

    def __init__(self) -> None:
        self._members: list[Member] = []
        self._lock = threading.Lock()  # one eviction at a time, and the member list

    def __len__(self) -> int:
        return len(self._members)

    def join(self, member: Member) -> None:
        """Add `member` (once) after those already there."""
        with self._lock:
            if member not in self._members:
                self._members.append(member)

    def leave(self, member: Member) -> None:
        """Remove `member`; the others go on sharing."""
        with self._lock:
            if member in self._members:
                self._members.remove(member)

    def evict(
        self,
        *,
        read_usage: Callable[[], FsUsage],
        sweep: Callable[[str], OpenFileSet],
        now: Callable[[], float],
        dry_run: bool,
    ) -> SharedEviction:
        """Plan for every member that has checked once, and delete each one's share.

        `read_usage` reads the filesystem's figures afresh; `sweep(prefix)` finds the open
        files under the members' common ancestor, once for all.
        """
        with self._lock:
            members = [m for m in self._members if m.watermarks is not None]
            usage = read_usage()
            open_paths = (
                sweep(os.path.commonpath([m.base_dir for m in members]))
                if any(m.skips_open_files for m in members)
                else NO_OPEN_FILES
            )
            with ExitStack() as stack:
                for member in members:  # always in join order: no lock-order inversion
                    stack.enter_context(member.registry.lock)
                sources = [(_marks(m), m.registry.iter_oldest()) for m in members]
                pressure = plan_shared_pressure(
                    sources, usage=usage, now=now(), open_paths=open_paths
                )
                watched = sum(m.registry.total_bytes for m in members)
            parts = [m.execute(_share(pressure, index)) for index, m in enumerate(members)]
        return SharedEviction(pressure, merge_reports(parts, dry_run=dry_run), usage, watched)


def _marks(member: Member) -> Watermarks:
    marks = member.watermarks
    assert marks is not None
    return marks


def _share(pressure: PressurePlan, index: int) -> Plan:
    """The part of the filesystem's plan that is one member's."""
    plan = pressure.plan
    owned = zip(plan.deletions, pressure.deletion_owners, strict=True)
    deletions = tuple(decision for decision, owner in owned if owner == index)
    passed_over = zip(plan.skipped_open, pressure.skipped_owners, strict=True)
    skipped = tuple(decision for decision, owner in passed_over if owner == index)
    return Plan(deletions, skipped, skipped if plan.pinned else ())


def merge_reports(reports: Sequence[PassReport], *, dry_run: bool) -> PassReport:
    """One report for the members' reports of one eviction."""
    merged = PassReport(dry_run=dry_run)
    for report in reports:
        merged.absorb(report)  # the members' directories differ: their files are disjoint
        merged.pinned_files += report.pinned_files
        merged.pinned_bytes += report.pinned_bytes
    return merged
