"""When one directory's registry is reconciled with the disk, and the counts of it.

A rescan (tempwatch.rescan) runs at start, every `watch.rescan_interval_seconds`, and
promptly when something asks for one: an inotify overflow, a directory inotify could not
watch, an observer restart, changed watch settings. Requests made while one is pending
settle for a moment into one rescan, whose log line names every reason (capped; the full
list at DEBUG). Nothing is registered while base_dir is not the directory verified at
start (tempwatch.supervise).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tempwatch.config import Config
from tempwatch.lazylog import logger
from tempwatch.lognoise import capped, log_in_full
from tempwatch.registry import Registry
from tempwatch.rescan import ReconcileResult, rescan
from tempwatch.rules import RuleSet
from tempwatch.supervise import Supervisor

__all__ = ["Rescanner", "RescanSettings"]

_SETTLE_SECONDS = 0.2

RescanSettings = Callable[[], tuple[Config, frozenset[str], RuleSet | None]]
"""The settings in force now: the config, tempwatch's own files, the directory's rules."""


class Rescanner:
    """Runs one directory's rescans: on request, periodically, and the one at start.

    `on_found` is called after a rescan that added or resized files (the limits may be
    exceeded now).
    """

    def __init__(
        self,
        registry: Registry,
        base_dir: str,
        *,
        supervisor: Supervisor,
        settings: RescanSettings,
        stopping: threading.Event,
        on_found: Callable[[], None],
    ) -> None:
        self._registry = registry
        self._base_dir = base_dir
        self._supervisor = supervisor
        self._settings = settings
        self._stopping = stopping
        self._on_found = on_found
        self._wake = threading.Event()
        self._reasons: set[str] = set()
        self._lock = threading.Lock()
        self.rescans = 0
        self.registered = 0  # files the rescans registered (events missed or before start)
        self.overflows = 0

    def request(self, reason: str) -> None:
        """Reconcile soon, for `reason`."""
        with self._lock:
            self._reasons.add(reason)
        self._wake.set()

    def note_overflow(self) -> None:
        """The inotify queue overflowed: events were lost."""
        self.overflows += 1
        logger.bind(event="overflow").warning(
            "inotify queue overflowed under {}: events were lost; rescanning", self._base_dir
        )
        self.request("overflow")

    def wake(self) -> None:
        """Wait again (with a new interval after a reload) or end (on stop)."""
        self._wake.set()

    def run(self, reason: str) -> ReconcileResult:
        """Reconcile the registry with the disk now, on the calling thread."""
        if not self._supervisor.is_base_dir_verified():
            return ReconcileResult()  # never register what another directory holds
        config, own, rules = self._settings()
        watch = config.watch
        result = rescan(
            self._registry, self._base_dir, reason=reason, recursive=watch.recursive,
            exclude=watch.exclude, skip_paths=own, should_stop=self._stopping.is_set,
            age_by=config.cleanup.age_by, rules=rules,
        )
        self.rescans += 1
        self.registered += result.added
        self._supervisor.after_rescan(periodic=reason == "periodic")
        if result.added or result.resized:
            self._on_found()
        return result

    def loop(self) -> None:
        """The rescan thread: until the stop event is set."""
        while True:
            interval = self._settings()[0].watch.rescan_interval_seconds
            woken = self._wake.wait(interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            if woken and self._reasons and self._stopping.wait(_SETTLE_SECONDS):
                return  # let a burst of overflows settle into one rescan
            with self._lock:
                reasons, self._reasons = self._reasons, set()
            if woken and not reasons:
                continue  # a reload: wait again, with the new interval
            listed = sorted(reasons)
            log_in_full("rescan-reasons", "rescan reasons", listed)
            try:
                self.run(capped(listed) or "periodic")
            except Exception:
                logger.opt(exception=True).bind(event="rescan-error").error("rescan failed")
