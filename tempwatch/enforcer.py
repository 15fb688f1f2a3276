"""Holds the limits as events arrive, between the service's full passes.

The watcher's callbacks only note what happened (an oversize file closed, the count or the
quota crossed) and wake the enforcer's thread; the enforcer then sweeps open files once,
outside the registry lock, and evicts the oldest files that are not open, down to the low
watermark. While a limit stays exceeded because the files that would go are open (or could
not be deleted), it backs off instead of sweeping on every event, and logs the pinned files
at most once per interval. A limit exceeded again because files kept arriving while it
evicted (a burst) is no reason to wait: it evicts again at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tempwatch.cleaner import CleanupListener, PassReport, log_pinned
from tempwatch.config import Config
from tempwatch.deleter import Deleter
from tempwatch.directory import pace_of
from tempwatch.lognoise import SaidOnce
from tempwatch.openfiles import NO_OPEN_FILES, OpenFiles, OpenFileSet
from tempwatch.pacing import Pacer, Pause
from tempwatch.policy import Limits
from tempwatch.registry import Registry
from tempwatch.rounds import run_eviction

__all__ = ["Enforcer"]

_MAX_BACKOFF_SECONDS = 1.0


def _made_way(report: PassReport) -> bool:
    """Whether an eviction still over a limit got as far as it could: it deleted files and
    no open file was left in the way. Files arrived meanwhile (a burst) then: go on at once.
    Otherwise the limit cannot be met now (open files, errors): back off."""
    return bool(report.deleted) and not report.pinned_files and not report.failed


class Enforcer:
    """Event-driven limits for one registry: oversize files once closed, count and quota."""

    def __init__(
        self,
        registry: Registry,
        *,
        base_dir: str,
        sweep: Callable[[str], OpenFiles],
        clock: Callable[[], float],
        listener: CleanupListener | None,
        act_lock: threading.Lock,
        pause: Pause,
        should_stop: Callable[[], bool] | None = None,
        said: SaidOnce | None = None,
    ) -> None:
        self._registry = registry
        self._base_dir = base_dir
        self._sweep = sweep
        self._clock = clock
        self._listener = listener
        self._act_lock = act_lock  # shared with the passes: one deleter at work at a time
        self._pause = pause  # between batches; True when the service stops
        self._should_stop = should_stop
        self._said = said
        self._oversize: set[str] = set()
        self._oversize_lock = threading.Lock()
        self._backoff_until = 0.0
        self._pinned_logged_at = float("-inf")
        self.pinned: tuple[int, int] = (0, 0)  # files and bytes held over a limit by open files

    # -- called from the watcher's thread: cheap, never blocking -------------------------

    def is_over_limits(self, limits: Limits) -> bool:
        """Whether the count or the quota is exceeded now."""
        return limits.is_exceeded(len(self._registry), self._registry.total_bytes)

    def note_closed(self, path: str, size_bytes: int, limits: Limits) -> bool:
        """Remember a file closed above the per-file limit; True if there is work to do."""
        limit = limits.max_file_size_bytes
        if limits.rules is not None:
            limit = limits.rules.governing(path).max_file_size_bytes
        if not (limit and size_bytes > limit):
            return False
        with self._oversize_lock:
            self._oversize.add(path)
        return True

    # -- called from the enforcer's thread -----------------------------------------------

    def backoff_remaining(self) -> float:
        """Seconds to wait before enforcing again (0 when not backing off)."""
        return max(0.0, self._backoff_until - time.monotonic())

    def back_off(self, interval_seconds: float) -> None:
        """Hold off for a while: the limit cannot be met now."""
        self._backoff_until = time.monotonic() + min(interval_seconds, _MAX_BACKOFF_SECONDS)

    def pass_done(self, report: PassReport) -> None:
        """A full pass ran: take its pinned figures (it logged them itself)."""
        self.pinned = (report.pinned_files, report.pinned_bytes)
        if report.pinned_files:
            self._pinned_logged_at = time.monotonic()

    def enforce(self, config: Config, limits: Limits, deleter: Deleter) -> None:
        """Delete closed oversize files and evict down to the low watermarks."""
        with self._oversize_lock:
            oversize, self._oversize = self._oversize, set()
        if not oversize and not self.is_over_limits(limits):
            return
        # One sweep, outside the registry lock: the handler must never wait on /proc.
        def sweep() -> OpenFileSet:
            return self._sweep(self._base_dir) if config.cleanup.skip_open_files else NO_OPEN_FILES

        open_paths = sweep()
        if self._should_stop is not None and self._should_stop():
            return
        entries = [(p, e) for p in oversize if (e := self._registry.get(p)) is not None]
        entries.sort(key=lambda item: item[1].registered_at)
        # Rounds of at most batch_size, the act lock let go and a pause between two.
        report = run_eviction(
            self._registry,
            deleter,
            limits,
            open_paths=open_paths,
            clock=self._clock,
            listener=self._listener,
            dry_run=config.cleanup.dry_run,
            should_stop=self._should_stop,
            said=self._said,
            pacer=Pacer(pace_of(config), pause=self._pause, lock=self._act_lock),
            reopen=sweep,
            oversize=entries,
        )
        self.pinned = (report.pinned_files, report.pinned_bytes)
        if self.is_over_limits(limits) and report.stopped is None and not _made_way(report):
            self.back_off(config.cleanup.interval_seconds)
            self._log_pinned(report, config.cleanup.interval_seconds)

    def _log_pinned(self, report: PassReport, interval_seconds: float) -> None:
        now = time.monotonic()
        if not report.pinned_files or now - self._pinned_logged_at < interval_seconds:
            return
        self._pinned_logged_at = now
        log_pinned(report)
