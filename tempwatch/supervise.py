"""Keeps the service's observer running, on the directory verified at start.

The service's monitor thread calls `Supervisor.tick` about twice a second. It checks first
that base_dir is still the directory verified at start (`BaseGuard`): when it is not, the
observer is stopped (its events would describe a directory that is no longer base_dir) and
stays stopped until a directory there passes the start checks; then the instance lock is
taken in it, the observer restarted, and a rescan asked for. Otherwise it restarts an
observer that died (a killed thread, a lost inotify instance) and asks for a rescan, or,
when that fails, says so and retries later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone

from tempwatch.baseguard import BaseGuard, BaseState, describe_change
from tempwatch.dirfd import DirIdentity, dir_identity
from tempwatch.errors import TempwatchError
from tempwatch.instance import InstanceLock
from tempwatch.lazylog import logger
from tempwatch.watcher import Watcher

__all__ = ["RESTART_RETRY_SECONDS", "Supervisor"]

RESTART_RETRY_SECONDS = 5.0
"""How long the monitor waits after a failed observer restart before trying again."""


class Supervisor:
    """The observer of one base_dir and the guard on base_dir's identity.

    `make_watcher()` builds a watcher (with the service's callbacks); `on_adopted(identity)`
    is told when another directory was adopted as base_dir (the service makes a new deleter
    bound to it). `watcher_lock` serialises every change of observer.
    """

    def __init__(
        self,
        base_dir: str,
        instance: InstanceLock,
        *,
        make_watcher: Callable[[], Watcher],
        on_adopted: Callable[[DirIdentity], None],
    ) -> None:
        self.guard = BaseGuard(base_dir)
        self.watcher: Watcher | None = None
        self.watcher_lock = threading.Lock()
        self.restarts = 0
        self.last_failure: str | None = None  # why the observer last died, and when
        self.registered_by_old_watchers = 0
        self._base_dir = base_dir
        self._instance = instance
        self._make_watcher = make_watcher
        self._on_adopted = on_adopted

    @property
    def observer_failure(self) -> str | None:
        """Why the observer is dead now (when it is known), else why it last died, when it
        was found dead and restarted; None if it never died."""
        watcher = self.watcher
        if watcher is not None and not watcher.is_alive and watcher.failure is not None:
            return watcher.failure
        return self.last_failure

    @property
    def is_watching(self) -> bool:
        """The observer runs, or it was stopped on purpose because base_dir changed."""
        watcher = self.watcher
        alive = watcher is not None and watcher.is_alive
        return alive or self.guard.problem is not None

    def is_base_dir_verified(self) -> bool:
        """base_dir is, right now, the directory verified (at start or on adoption)."""
        guard = self.guard
        identity = guard.identity
        if guard.problem is not None or identity is None:
            return guard.problem is None
        return describe_change(self._base_dir, identity) is None

    def after_rescan(self, *, periodic: bool) -> None:
        """A rescan ran: unwatched directories that are gone no longer count, and after a
        periodic one (never a prompt one: a failing re-walk would ask for another) the rest
        are tried again."""
        watcher = self.watcher
        if watcher is not None:
            watcher.unwatched.forget_gone()
            if periodic:
                watcher.retry_unwatched()

    def start(self) -> DirIdentity:
        """Record base_dir's identity and start the observer (before any scan)."""
        try:
            identity = self.guard.verify_start()
        except OSError as e:
            raise TempwatchError(f"cannot use base_dir {self._base_dir}: {e.strerror}") from e
        watcher = self._make_watcher()
        watcher.start()  # before the scan: nothing created meanwhile is missed
        self.watcher = watcher
        return identity

    def stop(self, timeout_seconds: float) -> None:
        """Stop the observer and join its threads."""
        with self.watcher_lock:
            if self.watcher is not None:
                self.watcher.stop(timeout_seconds)

    def replace(self, watcher: Watcher) -> None:
        """Stop the observer and start `watcher` instead (new watch settings)."""
        with self.watcher_lock:
            old = self.watcher
            if old is not None:
                old.stop()
            watcher.start()  # on failure the old one, stopped, is restarted by the monitor
            self.watcher = watcher
            if old is not None:
                self.registered_by_old_watchers += old.registered_total

    def monitor(
        self, stopping: threading.Event, interval_seconds: float, rescan: Callable[[str], None]
    ) -> None:
        """The monitor thread: `tick` every `interval_seconds` until `stopping` is set,
        asking `rescan` for the rescans it needs; after a failed restart it waits longer."""
        while not stopping.wait(interval_seconds):
            outcome = self.tick(stopping.is_set)
            if isinstance(outcome, str):
                rescan(outcome)
            elif outcome is False and stopping.wait(RESTART_RETRY_SECONDS):
                return

    def tick(self, is_stopping: Callable[[], bool]) -> str | bool | None:
        """One look: a rescan reason if one is needed, False if a restart failed, else None."""
        state = self.guard.poll()
        if state is BaseState.SAME:
            return self._restart_dead_observer(is_stopping)
        with self.watcher_lock:
            if is_stopping():
                return None
            if state is BaseState.CHANGED:
                if self.watcher is not None:
                    self.watcher.stop()
                return None
            if state is BaseState.RETURNED:
                return self._resume(None)
            if state is BaseState.ADOPTABLE:
                return self._adopt()
        return None

    def _adopt(self) -> str | bool | None:
        """Take the lock in the directory now at base_dir, then resume on it."""
        self._instance.release()  # its file went with the old directory
        try:
            self._instance.acquire()
            identity = dir_identity(self._base_dir)
        except (TempwatchError, OSError) as e:
            self._instance.release()
            self.guard.refused(f"its lock cannot be taken: {e}")
            return None
        return self._resume(identity)

    def _resume(self, identity: DirIdentity | None) -> str | bool | None:
        """Restart the observer on base_dir; `identity`: a new directory to adopt."""
        watcher = self.watcher
        try:
            if watcher is None:
                raise TempwatchError("no observer")
            watcher.restart()
        except (TempwatchError, OSError) as e:
            logger.bind(event="observer-restart-failed").error(
                "could not watch {} again: {}; retrying", self._base_dir, e
            )
            return False
        if identity is not None:
            self._on_adopted(identity)
        self.guard.adopted(identity or self._identity(), returned=identity is None)
        return "base_dir adopted" if identity is not None else "base_dir back"

    def _identity(self) -> DirIdentity:
        identity = self.guard.identity
        assert identity is not None
        return identity

    def _restart_dead_observer(self, is_stopping: Callable[[], bool]) -> str | bool | None:
        with self.watcher_lock:
            watcher = self.watcher
            if watcher is None or watcher.is_alive or is_stopping():
                return None
            why = watcher.failure or "a thread of it ended"
            logger.bind(event="observer-died", observer=watcher.kind, reason=why).error(
                "the {} observer of {} stopped ({}); restarting it", watcher.kind,
                self._base_dir, why,
            )
            found_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.last_failure = f"{why} (found at {found_at})"
            try:
                watcher.restart()
            except (TempwatchError, OSError) as e:
                logger.bind(event="observer-restart-failed").error(
                    "could not restart the observer: {}; retrying in {}s", e,
                    RESTART_RETRY_SECONDS,
                )
                return False
            self.restarts += 1
            return "observer restart"
