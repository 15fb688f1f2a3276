"""Carries out a plan: deletes through the deleter, updates the registry, logs every outcome.

This is the step between the pure policy and the deleter. It logs one line per file
(deleted at info, skipped as open at debug, failure at warning) with structured fields,
and one summary line per pass; a listener (the metrics) hears the same events.

`should_stop` is asked before each file: a stop request ends a pass after the file being
deleted, and the summary says how many were left for the next one. In a dry run, `said`
(a `SaidOnce`) keeps each "would delete" line to one at INFO until the file or its verdict
changes; repeats go to DEBUG.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from tempwatch.deleter import DeleteItem, Deleter, DeleteResult, FileId, Outcome
from tempwatch.lognoise import SaidOnce
from tempwatch.openfiles import OpenFileSet
from tempwatch.policy import Decision, Limits, Plan, plan_evictions, plan_pass
from tempwatch.registry import Entry, Registry

__all__ = [
    "CleanupListener",
    "PassReport",
    "execute_plan",
    "log_pinned",
    "run_eviction",
    "run_pass",
    "run_pass_over",
]

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


# Outcomes that mean "in use" as the kernel sees it: the file stays, as if found open.
_IN_USE = frozenset({Outcome.IN_USE, Outcome.LOCKED})


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
    used_since: int = 0  # expired by the entry's time, kept: the lstat showed a later use
    pinned_files: int = 0
    pinned_bytes: int = 0
    duration_seconds: float = 0.0
    dry_run: bool = False
    unfinished: int = 0  # planned deletions not attempted: a stop was requested
    holders: dict[str, str] = field(default_factory=dict)  # skipped path -> who holds it


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
    registry: Registry | None,
    deleter: Deleter,
    *,
    listener: CleanupListener | None = None,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
    said: SaidOnce | None = None,
    open_paths: Container[str] | None = None,
) -> PassReport:
    """Delete what `plan` chose and drop what is gone from `registry`, if one is given.

    One bad file never stops the rest. The deletions run grouped by directory, not in the
    plan's order: the policy has already chosen, and the deleter enters each directory once.
    `should_stop` is asked before each file; once it answers True the rest is left alone
    and counted in `PassReport.unfinished`, as after a BASE_CHANGED result (base_dir is no
    longer the directory the deleter is bound to). `open_paths`, when it is the pass's
    sweep, names the holders of skipped files.
    """
    pinned_files, pinned_bytes = _on_disk(plan.pinned, registry)
    report = PassReport(pinned_files=pinned_files, pinned_bytes=pinned_bytes, dry_run=dry_run)
    names = open_paths if isinstance(open_paths, OpenFileSet) else None
    for decision in plan.skipped_open:
        _skipped(decision, "open", report, listener, names)
    if not plan.deletions:
        return report
    dev = _base_dev(deleter)
    deletions = _by_directory(plan.deletions)
    discard = registry.discard if registry is not None and not dry_run else None
    halted = False  # base_dir is no longer the directory verified: not one more file

    def is_halted() -> bool:
        return halted or (should_stop is not None and should_stop())

    renew = registry.renew if registry is not None else None
    items = _until_stopped(deletions, dev, is_halted)
    done = 0
    # Not strict: the items end early on a stop, and the decisions left are counted.
    for decision, result in zip(deletions, deleter.delete_many(items), strict=False):
        done += 1
        if result.outcome is Outcome.TOO_RECENT and result.last_used_at is not None:
            _kept_used(decision, result.last_used_at, report, renew)
        elif result.outcome in _IN_USE:
            _skipped(decision, result.outcome.value, report, listener, names)
        else:
            _record(decision, result, report, discard, listener, said if dry_run else None)
        halted = result.outcome is Outcome.BASE_CHANGED
    report.unfinished = len(deletions) - done
    if report.failed:
        _log_failures(report)
    return report


def _log_failures(report: PassReport) -> None:
    """One warning per kind of error, with how many files it stopped and the first one."""
    by_error: dict[str, list[Decision]] = {}
    for decision, result in report.failed:
        by_error.setdefault(result.error or "unknown error", []).append(decision)
    for error, decisions in by_error.items():
        first = decisions[0]
        logger.warning(
            "could not delete {count} {files}: {error} (first {path}, {reason}); "
            "they stay registered and are retried",
            count=len(decisions), files="file" if len(decisions) == 1 else "files",
            error=error, **_fields(first, "failed"),
        )


def _until_stopped(
    deletions: Sequence[Decision], dev: int, should_stop: Callable[[], bool]
) -> Iterator[DeleteItem]:
    for d in deletions:
        if should_stop():
            return
        yield d.path, FileId(dev, d.ino) if d.ino and dev else None, d.age_check


def _kept_used(
    decision: Decision,
    last_used_at: float,
    report: PassReport,
    renew: Callable[[str, float], object] | None,
) -> None:
    """An expiry the deleter refused: the file was used since its entry's time."""
    report.used_since += 1
    if renew is not None:
        renew(decision.path, last_used_at)  # so the next pass ages it from its last use
    logger.debug("kept {path}: used since it was judged", **_fields(decision, "kept-used"))


def _on_disk(pinned: Sequence[Decision], registry: Registry | None) -> tuple[int, int]:
    """How many pinned files are still there and their size now: a file still being written
    has grown since its last close, which is when the registry last heard of its size. The
    registry learns the new sizes too, so the totals the limits use catch up."""
    files = total = 0
    for decision in pinned:
        try:
            st = os.lstat(decision.path)
        except OSError:
            continue  # gone since the plan: it pins nothing
        if decision.ino and st.st_ino != decision.ino:
            continue  # another file under the name: not the one held
        files += 1
        total += st.st_size
        if registry is not None and st.st_size != decision.size_bytes:
            registry.update_size(decision.path, st.st_size)
    return files, total


def _skipped(
    decision: Decision,
    why: str,
    report: PassReport,
    listener: CleanupListener | None,
    names: OpenFileSet | None,
) -> None:
    """A file kept because it is in use: open by the sweep, or by the kernel's answer."""
    report.skipped_open.append(decision)
    holders = _holders(names, decision.path)
    report.holders[decision.path] = holders
    logger.debug(
        "skipped {path} ({reason}): {why}, held by {holders}",
        why=why,
        holders=holders,
        **_fields(decision, "skipped-open"),
    )
    if listener is not None:
        listener.on_skipped_open(decision)


def _holders(names: OpenFileSet | None, path: str) -> str:
    found = () if names is None else names.holders_of(path)
    if found:
        return ", ".join(str(holder) for holder in found)
    return "a process the sweep cannot see (another PID namespace or user, or a mapping)"


def _by_directory(decisions: Sequence[Decision]) -> list[Decision]:
    """`decisions` grouped by parent directory, each group in plan order."""
    groups: dict[str, list[Decision]] = {}
    for decision in decisions:
        parent = decision.path.rpartition("/")[0]
        group = groups.get(parent)
        if group is None:
            groups[parent] = [decision]
        else:
            group.append(decision)
    if len(groups) == 1:
        return list(decisions)
    return [decision for group in groups.values() for decision in group]


def _record(
    decision: Decision,
    result: DeleteResult,
    report: PassReport,
    discard: Callable[[str], object] | None,
    listener: CleanupListener | None,
    said: SaidOnce | None,
) -> None:
    dry_run = report.dry_run
    outcome = result.outcome
    if discard is not None and outcome in _FORGET:
        discard(decision.path)
    if outcome is Outcome.DELETED:
        report.deleted.append((decision, result))
        # Fields passed as keywords land in the record's extra, like bind() but without
        # building a logger per file: this line runs once for every deletion.
        level = "INFO"
        if said is not None and not said.is_new(
            decision.path, decision.ino, result.size_bytes, decision.reason.value
        ):
            level = "DEBUG"  # a dry run already said so, of this very file and verdict
        logger.log(
            level,
            "{verb} {path} ({reason}, age {age_seconds:.0f}s, {size_bytes} bytes)",
            verb="would delete" if dry_run else "deleted",
            **_fields(decision, "deleted", result.size_bytes),
        )
        if listener is not None:
            listener.on_deleted(decision, result)
    elif outcome is Outcome.VANISHED:
        report.vanished += 1
        logger.debug("{path} had already gone", **_fields(decision, "vanished"))
    elif outcome is Outcome.FAILED:
        report.failed.append((decision, result))
        # At debug: a read-only filesystem fails every file of every pass, and one warning
        # per pass and kind of error says it (`_log_failures`).
        logger.debug(
            "could not delete {path} ({reason}): {error}",
            error=result.error,
            **_fields(decision, "failed-file"),
        )
        if listener is not None:
            listener.on_failed(decision, result)
    else:
        report.left_alone.append((decision, result))
        logger.warning(
            "left {path} alone: {outcome}",
            outcome=outcome.value,
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
    forced: Container[str] = (),
    should_stop: Callable[[], bool] | None = None,
    said: SaidOnce | None = None,
) -> PassReport:
    """One full pass over the registry: expiry, oversize, then the limits; logs a summary.

    Files in `forced` go whatever their age (policy.EVERY_PATH for all of them).
    `should_stop` and `said` as for `execute_plan`; after a dry run `said` keeps only the
    verdicts of this pass (a file judged again later is said again).
    """
    started = time.monotonic()
    entries = registry.oldest_first()  # a snapshot taken under the registry's own lock
    return _pass(
        entries, registry, deleter, limits, open_paths=open_paths, clock=clock,
        listener=listener, dry_run=dry_run, forced=forced, started=started,
        should_stop=should_stop, said=said,
    )


def run_pass_over(
    entries: Sequence[tuple[str, Entry]],
    deleter: Deleter,
    limits: Limits,
    *,
    open_paths: Container[str],
    clock: Callable[[], float] = time.time,
    listener: CleanupListener | None = None,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> PassReport:
    """`run_pass` over a snapshot of entries, oldest first, without a registry to update.

    For a one-shot clean: a registry built from a scan only to be thrown away would cost a
    locked insert, a sorted read and a locked removal per file.
    """
    started = time.monotonic()
    return _pass(
        entries, None, deleter, limits, open_paths=open_paths, clock=clock,
        listener=listener, dry_run=dry_run, forced=(), started=started,
        should_stop=should_stop, said=None,
    )


def _pass(
    entries: Sequence[tuple[str, Entry]],
    registry: Registry | None,
    deleter: Deleter,
    limits: Limits,
    *,
    open_paths: Container[str],
    clock: Callable[[], float],
    listener: CleanupListener | None,
    dry_run: bool,
    forced: Container[str],
    started: float,
    should_stop: Callable[[], bool] | None,
    said: SaidOnce | None,
) -> PassReport:
    plan = plan_pass(entries, now=clock(), limits=limits, open_paths=open_paths, forced=forced)
    report = execute_plan(
        plan, registry, deleter, listener=listener, dry_run=dry_run,
        should_stop=should_stop, said=said, open_paths=open_paths,
    )
    if said is not None and dry_run:
        said.keep_only({decision.path for decision in plan.deletions})
    report.duration_seconds = time.monotonic() - started
    if registry is not None:
        remaining = len(registry)
    else:
        remaining = len(entries) - (0 if dry_run else _forgettable(report))
    _summarise(report, remaining)
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
    should_stop: Callable[[], bool] | None = None,
    said: SaidOnce | None = None,
) -> PassReport:
    """Enforce the count and quota limits now, reading only the oldest entries it needs.

    `open_paths` is consulted while the registry lock is held, so pass a set that is
    already swept: a process sweep under the lock would stall the event handler. Files the
    kernel finds in use at the unlink (a holder the sweep could not see) are planned
    around: the eviction is planned again without them, so that younger files go instead
    and the plan's pinned figures count them.
    """
    in_use: set[str] = set()
    report = PassReport(dry_run=dry_run)
    for _ in range(_REPLANS):
        with registry.lock:
            plan = plan_evictions(
                registry.iter_oldest(),
                count=len(registry),
                total_bytes=registry.total_bytes,
                now=clock(),
                limits=limits,
                open_paths=_Union(open_paths, in_use) if in_use else open_paths,
            )
        step = execute_plan(
            plan, registry, deleter, listener=listener, dry_run=dry_run,
            should_stop=should_stop, said=said, open_paths=open_paths,
        )
        _merge(report, step)
        refused = {d.path for d in step.skipped_open} - {d.path for d in plan.skipped_open}
        if dry_run or not refused or step.unfinished:
            break
        in_use |= refused
    return report


_REPLANS = 4


class _Union:
    """Open by the sweep's answer, or refused as in use by the kernel."""

    __slots__ = ("_extra", "_open")

    def __init__(self, open_paths: Container[str], extra: set[str]) -> None:
        self._open, self._extra = open_paths, extra

    def __contains__(self, path: object) -> bool:
        return path in self._extra or path in self._open


def _merge(report: PassReport, step: PassReport) -> None:
    """Add one round's outcomes to `report`; the pinned figures are the latest round's."""
    report.deleted += step.deleted
    report.failed += step.failed
    report.left_alone += step.left_alone
    report.vanished += step.vanished
    report.unfinished += step.unfinished
    # A file skipped in one round is skipped again in the next: count it once.
    seen = {d.path for d in report.skipped_open}
    report.skipped_open += [d for d in step.skipped_open if d.path not in seen]
    report.holders.update(step.holders)
    report.pinned_files, report.pinned_bytes = step.pinned_files, step.pinned_bytes


def _forgettable(report: PassReport) -> int:
    """How many of the report's files a registry would have dropped."""
    left = sum(1 for _, result in report.left_alone if result.outcome in _FORGET)
    return len(report.deleted) + report.vanished + left


def _summarise(report: PassReport, remaining: int) -> None:
    stopped = (
        f"; stopped early, {report.unfinished} files left for the next pass"
        if report.unfinished
        else ""
    )
    logger.bind(
        event="pass",
        deleted=len(report.deleted),
        deleted_bytes=report.deleted_bytes,
        skipped_open=len(report.skipped_open),
        errors=len(report.failed),
        remaining=remaining,
        unfinished=report.unfinished,
        duration_seconds=round(report.duration_seconds, 4),
    ).info(
        "cleanup pass: {} {} ({} bytes), {} skipped as open, {} errors, {} files remain{}",
        "would delete" if report.dry_run else "deleted",
        len(report.deleted),
        report.deleted_bytes,
        len(report.skipped_open),
        len(report.failed),
        remaining,
        stopped,
    )
    if report.pinned_files:
        log_pinned(report)


def log_pinned(report: PassReport) -> None:
    """Warn that a limit stays exceeded because the files that would go are open, naming
    the top holders."""
    top = Counter(report.holders.values()).most_common(_TOP_HOLDERS)
    named = "; ".join(f"{holders} ({count} files)" for holders, count in top)
    logger.bind(
        event="pinned",
        pinned_files=report.pinned_files,
        pinned_bytes=report.pinned_bytes,
        holders=named,
    ).warning(
        "a limit is still exceeded: {} files ({} bytes) that would go are open{}",
        report.pinned_files,
        report.pinned_bytes,
        f"; held by {named}" if named else "",
    )


_TOP_HOLDERS = 3
