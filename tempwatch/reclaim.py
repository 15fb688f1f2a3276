"""Keeps the filesystem holding base_dir above its free-space and free-inode watermarks.

The watcher's callbacks only note that files were written (`note_written`); the enforcer's
thread calls `check`, which reads statvfs at most every `ACTIVE_CHECK_SECONDS` while
files are being written, every `IDLE_CHECK_SECONDS` otherwise (a file growing while open,
or a writer outside the watched directories, sends no event), and on every full pass.
Below a watermark it sweeps the open files once, plans with `tempwatch.pressure` under the
registry lock and deletes through the cleaner, as the other limits do.

What cannot be freed (the files that would go are open, or the use is outside the
watched directories) is said once per cleanup interval with the figures, and kept in
`state` for /healthz, the metrics and `status`. A filesystem that cannot be read, or on
which deletions fail (read-only), is logged and retried with a growing delay: the
service never dies of it and never spins on it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tempwatch.cleaner import CleanupListener, PassReport, execute_plan
from tempwatch.config import Config
from tempwatch.deleter import Deleter
from tempwatch.freespace import read_usage
from tempwatch.lazylog import logger
from tempwatch.lognoise import SaidOnce
from tempwatch.openfiles import NO_OPEN_FILES, OpenFiles, OpenFileSet
from tempwatch.policy import Plan
from tempwatch.pressure import FsUsage, PressurePlan, Targets, Watermarks, plan_pressure
from tempwatch.registry import Registry
from tempwatch.sharedfs import SharedFilesystem
from tempwatch.units import format_size

__all__ = [
    "ACTIVE_CHECK_SECONDS",
    "IDLE_CHECK_SECONDS",
    "PressureState",
    "Reclaimer",
]

ACTIVE_CHECK_SECONDS = 0.2
"""Shortest time between two statvfs while files are being written."""

IDLE_CHECK_SECONDS = 1.0
"""Time between two statvfs while nothing is written in base_dir."""

_MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class PressureState:
    """What the last check saw and did, for /healthz, the metrics and `status`."""

    usage: FsUsage | None = None
    targets: Targets | None = None
    checked_at: float | None = None  # the clock's time of the check
    pinned_files: int = 0  # open files that would have to go
    pinned_bytes: int = 0
    outside_bytes: int = 0  # the filesystem's use that is not a registered file
    short_bytes: int = 0  # still missing to the target after the last eviction
    short_inodes: int = 0
    error: str | None = None  # why the filesystem could not be read, or freed
    retry_seconds: float = 0.0  # the delay before the next attempt, after an error

    @property
    def is_low(self) -> bool:
        """A watermark is breached now."""
        if self.usage is None or self.targets is None:
            return False
        return self.targets.is_low_space(self.usage) or self.targets.is_low_inodes(self.usage)

    @property
    def problem(self) -> str | None:
        """Why the watermarks cannot be held, for /healthz; None when they are."""
        if self.error is not None:
            return self.error
        if not (self.short_bytes or self.short_inodes) or self.usage is None:
            return None
        return describe_shortfall(self)


def describe_shortfall(state: PressureState) -> str:
    """One line: what is below its watermark, and what keeps it there."""
    usage, targets = state.usage, state.targets
    assert usage is not None and targets is not None
    parts = []
    if state.short_bytes:
        parts.append(
            f"free space {format_size(usage.free_bytes)} is below "
            f"{format_size(targets.min_free_bytes)}"
        )
    if state.short_inodes:
        parts.append(
            f"free inodes {usage.free_inodes} are below {targets.min_free_inodes}"
        )
    return (
        f"{' and '.join(parts)}: {state.pinned_files} files ({format_size(state.pinned_bytes)})"
        f" that would go are open, {format_size(state.outside_bytes)} of the filesystem's use"
        " is outside the watched directories"
    )


class Reclaimer:
    """Disk-pressure eviction for one registry and the filesystem holding its base_dir."""

    def __init__(
        self,
        registry: Registry,
        *,
        base_dir: str,
        sweep: Callable[[str], OpenFiles],
        clock: Callable[[], float],
        listener: CleanupListener | None,
        act_lock: threading.Lock,
        should_stop: Callable[[], bool] | None = None,
        said: SaidOnce | None = None,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._base_dir = base_dir
        self._sweep = sweep
        self._clock = clock
        self._listener = listener
        self._act_lock = act_lock  # shared with the passes: one deleter at work at a time
        self._should_stop = should_stop
        self._said = said
        self._statvfs = statvfs
        self._monotonic = monotonic
        self._written = False  # files were written since the last check
        self._last_at = float("-inf")  # the last check (monotonic)
        self._backoff = 0.0  # nothing could be freed: wait this long (writes cut it short)
        self._is_failing = False  # deletions fail or statvfs does: only time ends the wait
        self._again = False  # the last check freed space: check again at once
        self._error = ""  # the failure last logged
        self._check_lock = threading.Lock()  # the enforcer and a pass may both check
        self._warned_at = float("-inf")
        self.state = PressureState()
        self.checks = 0  # statvfs calls so far
        self.group: SharedFilesystem | None = None  # other directories on this filesystem
        self._settings: tuple[Config, Watermarks, Deleter] | None = None  # as last checked

    # -- a member of a SharedFilesystem --------------------------------------------------

    def join(
        self, group: SharedFilesystem, config: Config, watermarks: Watermarks, deleter: Deleter
    ) -> None:
        """Evict together with the other directories of `group` from now on."""
        self._settings = (config, watermarks, deleter)
        self.group = group
        group.join(self)

    def leave(self) -> None:
        """Evict alone again."""
        if self.group is not None:
            self.group.leave(self)
            self.group = None

    @property
    def base_dir(self) -> str:
        """The directory whose files this reclaimer may delete."""
        return self._base_dir

    @property
    def registry(self) -> Registry:
        """Its registry."""
        return self._registry

    @property
    def watermarks(self) -> Watermarks | None:
        """The watermarks of the last check (None before the first)."""
        return None if self._settings is None else self._settings[1]

    @property
    def skips_open_files(self) -> bool:
        """Whether open files are kept (the default)."""
        return self._settings is None or self._settings[0].cleanup.skip_open_files

    def execute(self, plan: Plan) -> PassReport:
        """Delete this directory's share of a filesystem-wide plan, as its own eviction."""
        assert self._settings is not None
        config, _, deleter = self._settings
        with self._act_lock:
            return execute_plan(
                plan, self._registry, deleter, listener=self._listener,
                dry_run=config.cleanup.dry_run, should_stop=self._should_stop, said=self._said,
            )

    # -- called from the watcher's thread: cheap, never blocking -------------------------

    def note_written(self) -> bool:
        """Files were created or written: check soon. True the first time since a check
        (the caller then wakes the enforcer, to shorten its wait)."""
        first = not self._written
        self._written = True
        return first

    # -- called from the enforcer's thread -----------------------------------------------

    def next_check_at(self) -> float:
        """When the next check is due (monotonic). After an eviction that freed space, at
        once: a writer may have filled it again meanwhile, and the next eviction is what
        keeps the filesystem above its watermark, not the next timer."""
        if self._again:
            return self._last_at
        if self._is_failing:
            return self._last_at + self._backoff
        if self._written:
            return self._last_at + ACTIVE_CHECK_SECONDS
        return self._last_at + (self._backoff or IDLE_CHECK_SECONDS)

    def wait_seconds(self, watermarks: Watermarks) -> float | None:
        """How long the enforcer may wait for events before the next check (None: forever)."""
        if not watermarks.is_set:
            return None
        return max(0.0, self.next_check_at() - self._monotonic())

    def check(
        self, config: Config, watermarks: Watermarks, deleter: Deleter, *, full_pass: bool = False
    ) -> PassReport | None:
        """Read the filesystem's figures if due (always on a `full_pass`) and evict below a
        watermark. Returns what the eviction did, None when nothing was checked or needed."""
        if not watermarks.is_set:
            if self.state.usage is not None or self.state.error is not None:
                self.state = PressureState()
            return None
        with self._check_lock:
            self._settings = (config, watermarks, deleter)
            now = self._monotonic()
            if not full_pass and now < self.next_check_at():
                return None
            self._written = self._again = False
            self._last_at = now
            return self._check(config, watermarks, deleter, full_pass)

    def _check(
        self, config: Config, watermarks: Watermarks, deleter: Deleter, full_pass: bool
    ) -> PassReport | None:
        self.checks += 1
        try:
            usage = read_usage(self._base_dir, self._statvfs)
        except OSError as e:
            error = f"cannot read the free space of {self._base_dir}: {e.strerror or e}"
            self._failing(error, config)
            return None
        targets = watermarks.targets(usage)
        low = targets.is_low_space(usage) or targets.is_low_inodes(usage)
        if not low:
            if self.state.is_low or self.state.error:
                logger.bind(
                    event="pressure-over", free_bytes=usage.free_bytes,
                    free_inodes=usage.free_inodes,
                ).info(
                    "free space on {} is back above the watermarks: {} and {} inodes free",
                    self._base_dir, format_size(usage.free_bytes), usage.free_inodes,
                )
            self._backoff, self._is_failing = 0.0, False
            self.state = PressureState(usage, targets, self._clock())
            return None
        return self._evict(config, watermarks, deleter, usage, full_pass)

    def _evict(
        self, config: Config, watermarks: Watermarks, deleter: Deleter, usage: FsUsage,
        full_pass: bool,
    ) -> PassReport:
        group = self.group
        if group is not None and len(group) > 1:
            shared = group.evict(
                read_usage=lambda: read_usage(self._base_dir, self._statvfs),
                sweep=self._sweep, now=self._clock, dry_run=config.cleanup.dry_run,
            )
            pressure, report = shared.pressure, shared.report
            usage, watched_bytes = shared.usage, shared.watched_bytes
        else:
            pressure, report, watched_bytes = self._evict_own(config, watermarks, deleter, usage)
        targets = watermarks.targets(usage)
        self.state = PressureState(
            usage, targets, self._clock(),
            pinned_files=report.pinned_files, pinned_bytes=report.pinned_bytes,
            outside_bytes=max(0, usage.used_bytes - watched_bytes),
            short_bytes=pressure.short_bytes, short_inodes=pressure.short_inodes,
        )
        self._say(pressure, report, usage)
        if report.failed and not report.deleted:
            errors = sorted({result.error or "error" for _, result in report.failed})
            self._failing(
                f"cannot free space on the filesystem of {self._base_dir}: "
                f"deletions fail ({', '.join(errors)})",
                config, keep_state=True,
            )
        else:
            self._is_failing = False
            if not report.deleted or config.cleanup.dry_run:
                self._back_off(config)  # nothing could be done: wait for a change, not a spin
            else:
                self._backoff = 0.0
                self._again = True  # freed some: whether it stays freed is the next check's
            if not pressure.is_met:
                self._warn(config, force=full_pass)
        return report

    def _evict_own(
        self, config: Config, watermarks: Watermarks, deleter: Deleter, usage: FsUsage
    ) -> tuple[PressurePlan, PassReport, int]:
        # One sweep, outside the registry lock: the handler must never wait on /proc.
        open_paths: OpenFileSet = (
            self._sweep(self._base_dir) if config.cleanup.skip_open_files else NO_OPEN_FILES
        )
        registry = self._registry
        with self._act_lock:
            with registry.lock:
                pressure = plan_pressure(
                    registry.iter_oldest(), usage=usage, watermarks=watermarks,
                    now=self._clock(), open_paths=open_paths,
                )
                watched_bytes = registry.total_bytes
            report = execute_plan(
                pressure.plan, registry, deleter, listener=self._listener,
                dry_run=config.cleanup.dry_run, should_stop=self._should_stop, said=self._said,
            )
        return pressure, report, watched_bytes

    def _say(self, pressure: PressurePlan, report: PassReport, usage: FsUsage) -> None:
        if not report.deleted:
            return
        what = "space" if pressure.low_space else "inodes"
        logger.bind(
            event="pressure", deleted=len(report.deleted), deleted_bytes=report.deleted_bytes,
            free_bytes=usage.free_bytes, free_inodes=usage.free_inodes,
        ).info(
            "low free {} on {} ({} and {} inodes free): {} {} files ({})",
            what, self._base_dir, format_size(usage.free_bytes), usage.free_inodes,
            "would delete" if report.dry_run else "deleted", len(report.deleted),
            format_size(report.deleted_bytes),
        )

    def _warn(self, config: Config, *, force: bool) -> None:
        """The shortfall, said once per cleanup interval (and on every pass)."""
        now = self._monotonic()
        if not force and now - self._warned_at < config.cleanup.interval_seconds:
            return
        self._warned_at = now
        state = self.state
        logger.bind(
            event="pressure-pinned", pinned_files=state.pinned_files,
            pinned_bytes=state.pinned_bytes, outside_bytes=state.outside_bytes,
            short_bytes=state.short_bytes, short_inodes=state.short_inodes,
        ).warning("{}", describe_shortfall(state))

    def _back_off(self, config: Config) -> None:
        ceiling = max(ACTIVE_CHECK_SECONDS, min(config.cleanup.interval_seconds,
                                                _MAX_BACKOFF_SECONDS))
        self._backoff = min(ceiling, max(ACTIVE_CHECK_SECONDS, self._backoff * 2))

    def _failing(self, error: str, config: Config, *, keep_state: bool = False) -> None:
        first = not self._is_failing or self._error != error
        self._error = error
        self._is_failing = True
        self._back_off(config)
        if first:
            logger.bind(event="pressure-error", retry_seconds=self._backoff).warning(
                "{}; retrying with a growing delay", error
            )
        base = self.state if keep_state else PressureState(checked_at=self._clock())
        self.state = dataclasses.replace(base, error=error, retry_seconds=self._backoff)
