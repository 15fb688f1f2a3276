"""Carries out a plan: deletes through the deleter, updates the registry, logs every outcome.

This is the step between the pure policy and the deleter. It logs one line per file
(deleted at info, skipped as open at debug, failure at warning) with structured fields,
and one summary line per pass; a listener (the metrics) hears the same events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from tempwatch.deleter import Deleter, DeleteResult, FileId, Outcome
from tempwatch.policy import Decision, Limits, Plan, plan_evictions, plan_pass
from tempwatch.registry import Registry

__all__ = ["CleanupListener", "PassReport", "execute_plan", "run_eviction", "run_pass"]

# Outcomes after which the name no longer belongs in the registry.
_FORGET = frozenset(
    {
        Outcome.DELETED,
        Outcome.VANISHED,
        Outcome.SWAPPED,
        Outcome.OUTSIDE,
        Outcome.SYMLINK_PARENT,
        Outcome.OTHER_FS,
        Outcome.SPECIAL,
        Outcome.NOT_OWNER,
    }
)


class CleanupListener(Protocol):
    """Hears what a pass did (the metrics implement it)."""

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None: ...
    def on_skipped_open(self, decision: Decision) -> None: ...
    def on_failed(self, decision: Decision, result: DeleteResult) -> None: ...
    def on_pass(self, report: PassReport) -> None: ...


@dataclass(slots=True)
class PassReport:
    """What one pass or eviction did."""

    deleted: list[tuple[Decision, DeleteResult]] = field(default_factory=list)
    skipped_open: list[Decision] = field(default_factory=list)
    failed: list[tuple[Decision, DeleteResult]] = field(default_factory=list)
    left_alone: list[tuple[Decision, DeleteResult]] = field(default_factory=list)
    vanished: int = 0
    pinned_files: int = 0
    pinned_bytes: int = 0
    duration_seconds: float = 0.0
    dry_run: bool = False

    @property
    def deleted_bytes(self) -> int:
        """Bytes removed (or, in a dry run, that would be)."""
        return sum(result.size_bytes for _, result in self.deleted)


def _base_dev(deleter: Deleter) -> int:
    """base_dir's device, or 0 if it is gone (the deleter then finds every file vanished)."""
    try:
        return os.stat(deleter.base_dir).st_dev
    except OSError:
        return 0


def execute_plan(
    plan: Plan,
    registry: Registry,
    deleter: Deleter,
    *,
    listener: CleanupListener | None = None,
    dry_run: bool = False,
) -> PassReport:
    """Delete what `plan` chose. One bad file never stops the rest."""
    report = PassReport(
        pinned_files=plan.pinned_files, pinned_bytes=plan.pinned_bytes, dry_run=dry_run
    )
    dev = _base_dev(deleter) if plan.deletions else 0
    for decision in plan.skipped_open:
        report.skipped_open.append(decision)
        logger.debug("skipped {path} ({reason}): open", **_fields(decision, "skipped-open"))
        if listener is not None:
            listener.on_skipped_open(decision)
    items = (
        (d.path, FileId(dev, d.ino) if d.ino and dev else None) for d in plan.deletions
    )
    for decision, result in zip(plan.deletions, deleter.delete_many(items), strict=True):
        _record(decision, result, report, registry, listener, dry_run)
    return report


def _record(
    decision: Decision,
    result: DeleteResult,
    report: PassReport,
    registry: Registry,
    listener: CleanupListener | None,
    dry_run: bool,
) -> None:
    if result.outcome in _FORGET and not dry_run:
        registry.discard(decision.path)
    if result.outcome is Outcome.DELETED:
        report.deleted.append((decision, result))
        # Fields passed as keywords land in the record's extra, like bind() but without
        # building a logger per file: this line runs once for every deletion.
        logger.info(
            "{verb} {path} ({reason}, age {age_seconds:.0f}s, {size_bytes} bytes)",
            verb="would delete" if dry_run else "deleted",
            **_fields(decision, "deleted", result.size_bytes),
        )
        if listener is not None:
            listener.on_deleted(decision, result)
    elif result.outcome is Outcome.VANISHED:
        report.vanished += 1
        logger.debug("{path} had already gone", **_fields(decision, "vanished"))
    elif result.outcome is Outcome.FAILED:
        report.failed.append((decision, result))
        logger.warning(
            "could not delete {path} ({reason}): {error}",
            error=result.error,
            **_fields(decision, "failed"),
        )
        if listener is not None:
            listener.on_failed(decision, result)
    else:
        report.left_alone.append((decision, result))
        logger.warning(
            "left {path} alone: {outcome}",
            outcome=result.outcome.value,
            **_fields(decision, "left-alone"),
        )


def _fields(decision: Decision, event: str, size_bytes: int | None = None) -> dict[str, Any]:
    return {
        "event": event,
        "path": decision.path,
        "reason": decision.reason.value,
        "age_seconds": round(decision.age_seconds, 3),
        "size_bytes": decision.size_bytes if size_bytes is None else size_bytes,
    }


def run_pass(
    registry: Registry,
    deleter: Deleter,
    limits: Limits,
    *,
    open_paths: Container[str],
    clock: Callable[[], float] = time.time,
    listener: CleanupListener | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> PassReport:
    """One full pass over the registry: expiry, oversize, then the limits; logs a summary."""
    started = time.monotonic()
    with registry.lock:
        entries = registry.oldest_first()
    plan = plan_pass(entries, now=clock(), limits=limits, open_paths=open_paths, force=force)
    report = execute_plan(plan, registry, deleter, listener=listener, dry_run=dry_run)
    report.duration_seconds = time.monotonic() - started
    _summarise(report, len(registry))
    if listener is not None:
        listener.on_pass(report)
    return report


def run_eviction(
    registry: Registry,
    deleter: Deleter,
    limits: Limits,
    *,
    open_paths: Container[str],
    clock: Callable[[], float] = time.time,
    listener: CleanupListener | None = None,
    dry_run: bool = False,
) -> PassReport:
    """Enforce the count and quota limits now, reading only the oldest entries it needs.

    `open_paths` is consulted while the registry lock is held, so pass a set that is
    already swept: a process sweep under the lock would stall the event handler.
    """
    with registry.lock:
        count, total_bytes = len(registry), registry.total_bytes
        plan = plan_evictions(
            registry.iter_oldest(),
            count=count,
            total_bytes=total_bytes,
            now=clock(),
            limits=limits,
            open_paths=open_paths,
        )
    return execute_plan(plan, registry, deleter, listener=listener, dry_run=dry_run)


def _summarise(report: PassReport, remaining: int) -> None:
    logger.bind(
        event="pass",
        deleted=len(report.deleted),
        deleted_bytes=report.deleted_bytes,
        skipped_open=len(report.skipped_open),
        errors=len(report.failed),
        remaining=remaining,
        duration_seconds=round(report.duration_seconds, 4),
    ).info(
        "cleanup pass: {} {} ({} bytes), {} skipped as open, {} errors, {} files remain",
        "would delete" if report.dry_run else "deleted",
        len(report.deleted),
        report.deleted_bytes,
        len(report.skipped_open),
        len(report.failed),
        remaining,
    )
    if report.pinned_files:
        logger.bind(
            event="pinned", pinned_files=report.pinned_files, pinned_bytes=report.pinned_bytes
        ).warning(
            "a limit is still exceeded: {} files ({} bytes) that would go are open",
            report.pinned_files,
            report.pinned_bytes,
        )
