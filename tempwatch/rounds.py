"""Passes and eviction rounds: the policy's plans carried out batch by batch.

A pass plans the per-file rules (expiry, oversize) from a snapshot of the registry and
carries them out in batches; then it evicts for the count and quota limits in rounds,
each planned from the registry as it is at that moment, under the same lock as its
deletions. Planning each round afresh matters once batches let go of the lock: the
enforcer may have evicted in between, and a plan made before would evict twice.

Between batches the pacer pauses (and may say "stop"); `should_stop` (a stop request) is
asked before each file. A pass also stops once its time budget is spent, logs that it
stopped early and how much is left, and the next pass continues from the registry. The
enforcer's rounds have no budget, as limits must be met, but they pause between batches
too; a limit still exceeded after a batch is logged as such.
An open-file set older than a second is swept again before the next batch, so pacing does
not widen the window in which a file opened after the sweep could be deleted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from tempwatch.cleaner import (
    FORGET,
    CleanupListener,
    PassReport,
    execute_plan,
    log_failures,
    log_pinned,
    pinned_on_disk,
)
from tempwatch.deleter import Deleter
from tempwatch.lazylog import logger
from tempwatch.lognoise import SaidOnce
from tempwatch.pacing import UNLIMITED, Budget, Pacer, batches
from tempwatch.policy import Limits, Plan, Reason, plan_evictions, plan_pass
from tempwatch.registry import Entry, Registry
from tempwatch.units import count

__all__ = ["run_eviction", "run_pass", "run_pass_over"]

_RESWEEP_SECONDS = 1.0
_NO_PACER = Pacer()


class _OpenCheck:
    """The open-file set, made again by `reopen` once it is older than a second."""

    __slots__ = ("_made_at", "_reopen", "_timer", "current")

    def __init__(
        self,
        open_paths: Container[str],
        reopen: Callable[[], Container[str]] | None,
        timer: Callable[[], float],
    ) -> None:
        self.current = open_paths
        self._reopen = reopen
        self._timer = timer
        self._made_at = timer()

    def fresh(self) -> Container[str]:
        """The set to judge the next batch by."""
        if self._reopen is not None and self._timer() - self._made_at > _RESWEEP_SECONDS:
            self.current = self._reopen()
            self._made_at = self._timer()
        return self.current


@dataclass(slots=True)
class _Run:
    """One pass or enforcement: what it acts with and what it did so far."""

    registry: Registry | None
    deleter: Deleter
    listener: CleanupListener | None
    dry_run: bool
    pacer: Pacer
    budget: Budget
    open_check: _OpenCheck
    report: PassReport
    should_stop: Callable[[], bool] | None = None
    said: SaidOnce | None = None
    reported: set[str] = field(default_factory=set)
    begun: bool = False

    def is_stopping(self) -> bool:
        """Asked before each file: a stop was requested or the time is up."""
        if self.should_stop is not None and self.should_stop():
            self.report.stopped = "stop requested"
            return True
        if self.budget.is_spent():
            self.report.stopped = "time limit"
            return True
        return False

    def may_begin(self) -> bool:
        """Asked before every batch: after the first, pause, then say whether to go on."""
        if not self.begun:
            self.begun = True
            return True
        if self.pacer.pause(self.pacer.pace.batch_pause_seconds):
            self.report.stopped = "stop requested"
            return False
        return not self.is_stopping()

    def execute(self, plan: Plan, open_paths: Container[str]) -> PassReport:
        """One batch (the caller holds the pacer's lock). `open_paths` names the holders of
        skipped files and, newer than the plan's, skips files opened since."""
        part = execute_plan(
            plan,
            self.registry,
            self.deleter,
            listener=self.listener,
            dry_run=self.dry_run,
            threads=self.pacer.pace.threads,
            should_stop=self.is_stopping,
            said=self.said,
            open_paths=open_paths,
            reported=self.reported,
        )
        self.report.absorb(part)
        if part.unfinished and self.report.stopped is None:
            self.report.stopped = "base_dir changed"  # the deleter halted on BASE_CHANGED
        return part


def _new_run(
    registry: Registry | None,
    deleter: Deleter,
    open_paths: Container[str],
    listener: CleanupListener | None,
    dry_run: bool,
    pacer: Pacer,
    budget: Budget,
    reopen: Callable[[], Container[str]] | None,
    should_stop: Callable[[], bool] | None,
    said: SaidOnce | None,
) -> _Run:
    check = _OpenCheck(open_paths, reopen, pacer.timer)
    report = PassReport(dry_run=dry_run)
    return _Run(
        registry, deleter, listener, dry_run, pacer, budget, check, report, should_stop, said
    )


def _carry_out(run: _Run, plan: Plan) -> None:
    """The plan's deletions in batches; its skips are reported once, with the first."""
    deletions = plan.deletions
    skipped = plan.skipped_open
    if not deletions:
        if skipped:
            with run.pacer.lock:
                run.execute(plan, run.open_check.current)
        return
    done = 0
    for batch in batches(deletions, run.pacer.pace.batch_size):
        if not run.may_begin():
            run.report.unfinished += len(deletions) - done
            return
        fresh = run.open_check.fresh()
        with run.pacer.lock:
            part = run.execute(Plan(tuple(batch), skipped), fresh)
        skipped = ()
        done += len(batch)
        if part.unfinished:
            run.report.unfinished += len(deletions) - done
            return


def _evict(run: _Run, registry: Registry, limits: Limits, clock: Callable[[], float]) -> Plan:
    """Eviction rounds of at most batch_size, each planned afresh; the last round's plan.

    A dry run evicts nothing, so its rounds could not advance: it has one, uncapped.
    """
    cap = 0 if run.dry_run else run.pacer.pace.batch_size
    under_way: set[Reason] = set()
    in_use: set[str] = set()  # refused at the unlink as in use: planned around
    replans = 0
    while True:
        if not under_way and not limits.is_exceeded(len(registry), registry.total_bytes):
            return Plan()  # the common case, without a lock or a sweep
        if not run.may_begin():
            return Plan()
        open_paths = run.open_check.fresh()
        # A lazy set sweeps now, outside the registry lock: the event handler waits on it.
        _ = "" in open_paths
        with run.pacer.lock:
            with registry.lock:
                plan = plan_evictions(
                    registry.iter_oldest(),
                    count=len(registry),
                    total_bytes=registry.total_bytes,
                    now=clock(),
                    limits=limits,
                    open_paths=_Union(open_paths, in_use) if in_use else open_paths,
                    max_deletions=cap,
                    under_way=under_way,
                )
            part = run.execute(plan, open_paths) if plan.deletions or plan.skipped_open else None
        run.report.pinned_files, run.report.pinned_bytes = (
            (part.pinned_files, part.pinned_bytes) if part is not None else (0, 0)
        )
        if part is None or part.unfinished:
            return plan
        under_way.update(decision.reason for decision in plan.deletions)
        # Files the kernel found in use at the unlink (a holder the sweep could not see):
        # the eviction is planned again without them, so that younger files go instead.
        refused = {d.path for d in part.skipped_open} - {d.path for d in plan.skipped_open}
        if refused and not run.dry_run and replans < _REPLANS:
            in_use |= refused
            replans += 1
        elif not plan.capped:
            return plan
        if plan.capped:
            _log_still_exceeded(
                len(plan.deletions), registry, limits, run.pacer.pace.batch_pause_seconds
            )


_REPLANS = 4


class _Union:
    """Open by the sweep's answer, or refused as in use by the kernel."""

    __slots__ = ("_extra", "_open")

    def __init__(self, open_paths: Container[str], extra: set[str]) -> None:
        self._open, self._extra = open_paths, extra

    def __contains__(self, path: object) -> bool:
        return path in self._extra or path in self._open


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
    pacer: Pacer = _NO_PACER,
    reopen: Callable[[], Container[str]] | None = None,
) -> PassReport:
    """One full pass over the registry: expiry and oversize, then the limits; logs a summary.

    Files in `forced` go whatever their age (policy.EVERY_PATH for all of them).
    `should_stop` and `said` as for `execute_plan`; after a dry run `said` keeps only the
    verdicts of this pass (a file judged again later is said again). `pacer` cuts the pass
    into batches with pauses, holds its lock around each batch and limits the pass's time;
    `reopen` makes a fresh open-file set for a later batch.
    """
    started = time.monotonic()
    run = _new_run(
        registry, deleter, open_paths, listener, dry_run, pacer, pacer.budget(), reopen,
        should_stop, said,
    )  # fmt: skip
    # A dry run leaves the registry as it is, so a round planned from it would choose the
    # same files again: it plans everything at once, as a one-shot pass does.
    rules = limits if dry_run else dataclasses.replace(limits, max_files=0, max_total_size_bytes=0)
    with pacer.lock:
        entries = registry.oldest_first()  # a snapshot taken under the registry's own lock
        plan = plan_pass(entries, now=clock(), limits=rules, open_paths=open_paths, forced=forced)
    run.report.pinned_files, run.report.pinned_bytes = pinned_on_disk(plan.pinned, registry)
    _carry_out(run, plan)
    if said is not None and dry_run:
        said.keep_only({decision.path for decision in plan.deletions})
    if run.report.stopped is None and not dry_run:
        _evict(run, registry, limits, clock)
    return _finish(run, started, len(registry), registry, limits)


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
    pacer: Pacer = _NO_PACER,
    reopen: Callable[[], Container[str]] | None = None,
) -> PassReport:
    """`run_pass` over a snapshot of entries, oldest first, without a registry to update.

    For a one-shot clean: a registry built from a scan only to be thrown away would cost a
    locked insert, a sorted read and a locked removal per file. Nothing else deletes
    meanwhile, so the limits are planned once with the rest.
    """
    started = time.monotonic()
    run = _new_run(
        None, deleter, open_paths, listener, dry_run, pacer, pacer.budget(), reopen,
        should_stop, None,
    )  # fmt: skip
    plan = plan_pass(entries, now=clock(), limits=limits, open_paths=open_paths)
    run.report.pinned_files, run.report.pinned_bytes = pinned_on_disk(plan.pinned, None)
    _carry_out(run, plan)
    remaining = len(entries) - (0 if dry_run else _forgettable(run.report))
    return _finish(run, started, remaining, None, limits)


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
    pacer: Pacer = _NO_PACER,
    reopen: Callable[[], Container[str]] | None = None,
    oversize: Sequence[tuple[str, Entry]] = (),
) -> PassReport:
    """Enforce the limits now: the `oversize` entries (closed above the per-file limit),
    then the count and quota, reading only the oldest entries each round needs.

    Not bound by the pacer's time limit: the limits must be met. `open_paths` is consulted
    while the registry lock is held, so pass a set that is already swept: a process sweep
    under the lock would stall the event handler. Files the kernel finds in use at the
    unlink (a holder the sweep could not see) are planned around: the eviction is planned
    again without them, so that younger files go instead and the pinned figures count them.
    """
    run = _new_run(
        registry, deleter, open_paths, listener, dry_run, pacer, UNLIMITED, reopen,
        should_stop, said,
    )  # fmt: skip
    if oversize:
        per_file = dataclasses.replace(limits, max_files=0, max_total_size_bytes=0)
        _carry_out(run, plan_pass(oversize, now=clock(), limits=per_file, open_paths=open_paths))
    if run.report.stopped is None:
        _evict(run, registry, limits, clock)
    if run.report.failed:
        log_failures(run.report)
    return run.report


def _finish(
    run: _Run, started: float, remaining: int, registry: Registry | None, limits: Limits
) -> PassReport:
    report = run.report
    report.duration_seconds = time.monotonic() - started
    if report.failed:
        log_failures(report)
    _summarise(report, remaining, run.deleter.base_dir)
    if report.stopped == "time limit":
        _log_time_limit(run, registry, limits)
    if run.listener is not None:
        run.listener.on_pass(report)
    return report


def _forgettable(report: PassReport) -> int:
    """How many of the report's files a registry would have dropped."""
    left = sum(1 for _, result in report.left_alone if result.outcome in FORGET)
    return len(report.deleted) + report.vanished + left


def _over(registry: Registry, limits: Limits) -> str:
    """What exceeds a limit now, for a log line ("" if nothing)."""
    parts = []
    count, total_bytes = len(registry), registry.total_bytes
    if limits.max_files and count > limits.max_files:
        parts.append(f"{count} files > limits.max_files {limits.max_files}")
    if limits.max_total_size_bytes and total_bytes > limits.max_total_size_bytes:
        parts.append(f"{total_bytes} bytes > limits.max_total_size {limits.max_total_size_bytes}")
    return ", ".join(parts)


def _log_still_exceeded(deleted: int, registry: Registry, limits: Limits, pause: float) -> None:
    over = _over(registry, limits) or "above the low watermark"
    logger.bind(event="batch-limit", batch_deletions=deleted).info(
        "a limit is still exceeded after a batch of {} deletions ({}): next batch in {}s",
        deleted,
        over,
        f"{pause:g}",
    )


def _log_time_limit(run: _Run, registry: Registry | None, limits: Limits) -> None:
    report = run.report
    over = _over(registry, limits) if registry is not None else ""
    tail = f"; a limit is still exceeded ({over})" if over else ""
    logger.bind(event="pass-stopped", unfinished=report.unfinished).warning(
        "cleanup pass stopped early at its time limit (cleanup.pass_timeout {}s) after {:.1f}s:"
        " {} planned deletions left for the next pass{}",
        f"{run.budget.timeout_seconds:g}",
        run.budget.elapsed_seconds(),
        report.unfinished,
        tail,
    )


def _summarise(report: PassReport, remaining: int, base_dir: str) -> None:
    stopped = (
        f"; stopped early, {count(report.unfinished, 'file')} left for the next pass"
        if report.unfinished
        else ""
    )
    logger.bind(
        event="pass",
        directory=base_dir,
        deleted=len(report.deleted),
        deleted_bytes=report.deleted_bytes,
        skipped_open=len(report.skipped_open),
        errors=len(report.failed),
        remaining=remaining,
        unfinished=report.unfinished,
        duration_seconds=round(report.duration_seconds, 4),
    ).info(
        "cleanup pass in {}: {} {} ({} bytes), {} skipped as open, {}, {} left{}",
        base_dir,
        "would delete" if report.dry_run else "deleted",
        count(len(report.deleted), "file"),
        report.deleted_bytes,
        len(report.skipped_open),
        count(len(report.failed), "error"),
        count(remaining, "file"),
        stopped,
    )
    if report.pinned_files:
        log_pinned(report)
