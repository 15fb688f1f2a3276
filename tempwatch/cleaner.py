"""Carries out a plan: deletes through the deleter, updates the registry, logs every outcome.

This is the step between the pure policy and the deleter. It logs one line per file
(deleted at info, skipped as open at debug, failure at warning) with structured fields;
a listener (the metrics) hears the same events. Passes and eviction rounds, which call it
batch by batch and log one summary line per pass, are in tempwatch.rounds.

`should_stop` is asked before each file: a stop request (or a pass's time limit) ends a
batch after the file being deleted, counting the rest as unfinished. In a dry run, `said`
(a `SaidOnce`) keeps each "would delete" line to one at INFO until the file or its verdict
changes; repeats go to DEBUG.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tempwatch import loglane
from tempwatch.deleter import DeleteItem, Deleter, DeleteResult, FileId, Outcome
from tempwatch.lazylog import logger
from tempwatch.lognoise import SaidOnce
from tempwatch.logsinks import batched_lines
from tempwatch.openfiles import OpenFileSet
from tempwatch.policy import Decision, Plan
from tempwatch.registry import Registry
from tempwatch.spread import delete_spread

__all__ = [
    "FORGET",
    "CleanupListener",
    "PassReport",
    "execute_plan",
    "log_failures",
    "log_pinned",
    "pinned_on_disk",
]

FORGET = frozenset(
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
"""Outcomes after which the name no longer belongs in the registry."""


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
    unfinished: int = 0  # planned deletions not attempted: a stop or the time limit
    holders: dict[str, str] = field(default_factory=dict)  # skipped path -> who holds it
    stopped: str | None = None  # why it ended early: "time limit", "stop requested", ...
    batches: int = 0

    @property
    def deleted_bytes(self) -> int:
        """Bytes removed (or, in a dry run, that would be)."""
        return sum(result.size_bytes for _, result in self.deleted)

    def absorb(self, part: PassReport) -> None:
        """Add what one batch did; a file skipped before is counted once. The pinned
        figures are the caller's to set (the latest round's)."""
        self.deleted += part.deleted
        self.failed += part.failed
        self.left_alone += part.left_alone
        self.vanished += part.vanished
        self.used_since += part.used_since
        self.unfinished += part.unfinished
        seen = {d.path for d in self.skipped_open}
        self.skipped_open += [d for d in part.skipped_open if d.path not in seen]
        self.holders.update(part.holders)
        self.batches += 1


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
    threads: int = 1,
    reported: set[str] | None = None,
) -> PassReport:
    """Delete what `plan` chose and drop what is gone from `registry`, if one is given.

    One bad file never stops the rest. The deletions run grouped by directory, not in the
    plan's order: the policy has already chosen, and the deleter enters each directory once.
    `should_stop` is asked before each file; once it answers True the rest is left alone
    and counted in `PassReport.unfinished`, as after a BASE_CHANGED result (base_dir is no
    longer the directory the deleter is bound to). `open_paths`, when it is the pass's
    sweep, names the holders of skipped files; when it is newer than the plan's sweep, a
    file it finds open is skipped too. `threads` > 1 spreads the directories over that many
    threads. Skips whose path is in `reported` are not reported again (a round after a
    round).
    """
    pinned_files, pinned_bytes = pinned_on_disk(plan.pinned, registry)
    report = PassReport(pinned_files=pinned_files, pinned_bytes=pinned_bytes, dry_run=dry_run)
    names = open_paths if isinstance(open_paths, OpenFileSet) else None
    chosen: Sequence[Decision] = plan.deletions
    for decision in plan.skipped_open:
        _skipped(decision, "open", report, listener, names, reported)
    if open_paths is not None and chosen:
        kept: list[Decision] = []
        now_open: list[Decision] = []
        for decision in plan.deletions:  # one lookup per file: this runs for every file
            (now_open if decision.path in open_paths else kept).append(decision)
        chosen = kept
        for decision in now_open:
            _skipped(decision, "open", report, listener, names, reported)
    if not chosen:
        return report
    dev = _base_dev(deleter)
    deletions = _by_directory(chosen)
    items: list[DeleteItem] = [
        (d.path, FileId(dev, d.ino) if d.ino and dev else None, d.age_check) for d in deletions
    ]
    discard = registry.discard if registry is not None and not dry_run else None
    said_now = said if dry_run else None
    halted = False  # base_dir is no longer the directory verified: not one more file

    def is_halted() -> bool:  # read by the deletion threads too
        return halted or (should_stop is not None and should_stop())

    renew = registry.renew if registry is not None else None
    done = 0
    spread = delete_spread(deleter, items, threads=threads, should_stop=is_halted)
    # The batch's lines leave together (a write per sink, not per line), in order.
    with batched_lines():
        # The items end early on a stop; the decisions left are counted.
        for index, result in spread:
            done += 1
            decision = deletions[index]
            if result.outcome is Outcome.TOO_RECENT and result.last_used_at is not None:
                _kept_used(decision, result.last_used_at, report, renew)
            elif result.outcome in _IN_USE:
                _skipped(decision, result.outcome.value, report, listener, names, reported)
            else:
                _record(decision, result, report, discard, listener, said_now)
            halted = halted or result.outcome is Outcome.BASE_CHANGED
    report.unfinished = len(deletions) - done
    return report


def log_failures(report: PassReport) -> None:
    """One warning per kind of error, with how many files it stopped and the first one
    (once per pass or enforcement, whatever its number of batches)."""
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


def pinned_on_disk(pinned: Sequence[Decision], registry: Registry | None) -> tuple[int, int]:
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
    reported: set[str] | None = None,
) -> None:
    """A file kept because it is in use: open by the sweep, or by the kernel's answer.
    With `reported`, a file already reported (by an earlier round) is not reported again."""
    if reported is not None:
        if decision.path in reported:
            return
        reported.add(decision.path)
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
    if discard is not None and outcome in FORGET:
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
        # Through the fast lane: made once, straight to the CLI's JSON sinks; not even built
        # when no sink would write it (`clean` prints its own line per file).
        # A dry run's line must not count as a deletion: `select(.event == "deleted")`.
        if loglane.is_heard(level):
            loglane.log_deletion(
                level,
                "would delete" if dry_run else "deleted",
                "would-delete" if dry_run else "deleted",
                decision.path,
                decision.reason.value,
                round(decision.age_seconds, 3),
                result.size_bytes,
            )
        if listener is not None:
            listener.on_deleted(decision, result)
    elif outcome is Outcome.VANISHED:
        report.vanished += 1
        logger.debug("{path} had already gone", **_fields(decision, "vanished"))
    elif outcome is Outcome.FAILED:
        report.failed.append((decision, result))
        # At debug: a read-only filesystem fails every file of every pass, and one warning
        # per pass and kind of error says it (`log_failures`, from tempwatch.rounds).
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
