"""The watcher service: a registry kept by events, cleaned by age and held within limits.

`Service` is a context manager. Entering it creates base_dir if missing, takes the
one-instance lock, starts the observer first and only then registers the files already
present (with their mtime as registration time, so a restart never makes an old file
young), then starts four threads:

- cleanup: a full pass (expiry, oversize, limits) every `cleanup.interval_seconds`;
- enforcer: woken by the watcher when the count or the quota is exceeded or an oversize
  file was closed; sweeps the open files once, outside the registry lock, then evicts the
  oldest files that are not open. While a limit stays exceeded (the files that would go are
  open) it backs off instead of sweeping on every event. With a free-space or free-inode
  watermark it also reads the filesystem's figures, every few hundred milliseconds while
  files are written and every second otherwise (`tempwatch.reclaim`);
- rescan: reconciles the registry with the disk periodically and on request
  (`tempwatch.rescanner`);
- monitor: restarts a dead observer, and stops all cleaning while base_dir is not the
  directory verified at start (`tempwatch.supervise`).

Exiting stops every thread and joins it with a shared deadline (under two seconds).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable, Container

from tempwatch.blindspots import SweepVisibility
from tempwatch.cleaner import CleanupListener, PassReport
from tempwatch.config import Config, changed_settings
from tempwatch.deleter import Deleter
from tempwatch.directory import (
    deleter_for,
    limits_of,
    open_files_for,
    own_files,
    pace_of,
    remove_empty_dirs,
    rules_of,
    watermarks_of,
)
from tempwatch.dirfd import DirIdentity
from tempwatch.enforcer import Enforcer
from tempwatch.errors import TempwatchError
from tempwatch.globs import is_excluded
from tempwatch.instance import InstanceLock, ensure_base_dir
from tempwatch.inusecheck import LeaseFallbackNotice, in_use_check, is_lease_in_force
from tempwatch.lazylog import logger
from tempwatch.lognoise import SaidOnce
from tempwatch.openfiles import LazyOpenFiles, OpenFiles, OpenFileSet, sweep_open_files
from tempwatch.pacing import Pacer
from tempwatch.reclaim import Reclaimer
from tempwatch.registry import Registry
from tempwatch.rescanner import Rescanner
from tempwatch.rounds import run_pass
from tempwatch.scan import scan_tree
from tempwatch.servicestats import ServiceStats
from tempwatch.sharedfs import SharedFilesystem
from tempwatch.supervise import Supervisor
from tempwatch.watcher import Watcher

__all__ = ["Service", "ServiceStats"]

_STOP_SECONDS = 1.5  # the whole stop, all joins together


class Service:
    """Watches `config.watch.base_dir` and keeps it clean until stopped.

    `clock` gives registration and age times; `sweep(base_dir)` finds open files (the
    default sweeps /proc); `listener` hears every deletion and pass (the metrics);
    `inotify_read(fd, size)` reads the inotify instance (a test makes it fail).
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        sweep: Callable[[str], OpenFiles] = sweep_open_files,
        listener: CleanupListener | None = None,
        monitor_interval_seconds: float = 0.5,
        polling_interval_seconds: float = 1.0,
        own_passes: bool = True,
        inotify_read: Callable[[int, int], bytes] = os.read,
    ) -> None:
        self.registry = Registry()
        # False: the process hosting several directories runs the passes (`run_pass_now`),
        # so that one open-file sweep serves every directory due (tempwatch.host).
        self._own_passes = own_passes
        self._config = config
        self._base_dir = str(config.watch.base_dir)
        self._clock = clock
        self._visibility = SweepVisibility(sweep)
        self._sweep = self._visibility.sweep
        self._listener = listener
        self._monitor_interval = monitor_interval_seconds
        self._polling_interval = polling_interval_seconds
        self._read = inotify_read
        self._limits = limits_of(config)
        self._own = own_files(config)
        self._instance = InstanceLock(self._base_dir)
        self._supervisor = Supervisor(
            self._base_dir, self._instance,
            make_watcher=lambda: self._make_watcher(self._config, self._own),
            on_adopted=self._adopted,
        )
        self._deleter: Deleter | None = None
        self._lease_fallback = LeaseFallbackNotice()
        self._deleted_open = (0, 0)  # files, bytes: deleted under base_dir, still held open
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake_cleanup = threading.Event()
        self._wake_enforcer = threading.Event()
        self._act_lock = threading.Lock()  # one pass or eviction deletes at a time
        self._said = SaidOnce()  # a dry run's "would delete" lines, said once per verdict
        self._enforcer = Enforcer(
            self.registry, base_dir=self._base_dir, sweep=self._sweep, clock=clock,
            listener=listener, act_lock=self._act_lock, pause=self._stopping.wait,
            should_stop=self._stopping.is_set, said=self._said,
        )
        self._watermarks = watermarks_of(config)
        self._reclaimer = Reclaimer(
            self.registry, base_dir=self._base_dir, sweep=self._sweep, clock=clock,
            listener=listener, act_lock=self._act_lock, should_stop=self._stopping.is_set,
            said=self._said,
        )
        self._rescanner = Rescanner(
            self.registry, self._base_dir, supervisor=self._supervisor,
            settings=lambda: (self._config, self._own, self._limits.rules),
            stopping=self._stopping, on_found=self._on_change,
        )
        self._started_at = 0.0
        self._last_pass_at: float | None = None
        self._last_pass: PassReport | None = None

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def config(self) -> Config:
        """The configuration in force (after reloads)."""
        return self._config

    @property
    def is_stopping(self) -> bool:
        """Whether a stop was requested: passes, evictions and rescans are ending."""
        return self._stopping.is_set()

    @property
    def watcher(self) -> Watcher | None:
        """The watcher, once started."""
        return self._supervisor.watcher

    def start(self) -> None:
        """Create base_dir if needed, lock it, watch it, register what is there, start threads."""
        ensure_base_dir(self._base_dir)
        self._instance.acquire()
        try:
            self._started_at = self._clock()
            identity = self._supervisor.start()  # the observer runs before the scan
            self._deleter = deleter_for(self._config, identity)
            self._rescanner.run("start")
            cleanup = self._config.cleanup
            self._visibility.at_start(
                self._base_dir, cleanup.skip_open_files, is_lease_in_force(cleanup, self._deleter)
            )
            loops: list[tuple[str, Callable[[], None]]] = [
                ("cleanup", self._cleanup_loop),
                ("enforcer", self._enforcer_loop),
                ("rescan", self._rescanner.loop),
                ("monitor", functools.partial(
                    self._supervisor.monitor, self._stopping, self._monitor_interval,
                    self.request_rescan,
                )),
            ]
            for name, loop in loops if self._own_passes else loops[1:]:
                thread = threading.Thread(target=loop, name=f"tempwatch-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every thread and the observer, join them, release the lock. Idempotent."""
        deadline = time.monotonic() + _STOP_SECONDS
        self._stopping.set()
        self._reclaimer.leave()
        for event in (self._wake_cleanup, self._wake_enforcer):
            event.set()
        self._rescanner.wake()
        monitor = [t for t in self._threads if t.name == "tempwatch-monitor"]
        for thread in monitor:  # first, so that it cannot restart the observer meanwhile
            thread.join(max(0.0, deadline - time.monotonic()))
        self._supervisor.stop(max(0.1, deadline - time.monotonic()))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = [t.name for t in self._threads if t.is_alive()]
        if late:
            logger.bind(event="stop").warning("threads still busy at stop: {}", ", ".join(late))
        self._threads = [t for t in self._threads if t.is_alive()]
        self._instance.release()

    # -- public operations ----------------------------------------------------------

    @property
    def stats(self) -> ServiceStats:
        """What the service has done so far."""
        supervisor = self._supervisor
        watcher = supervisor.watcher
        by_events = watcher.registered_total if watcher is not None else 0
        return ServiceStats(
            started_at=self._started_at,
            registered_files=len(self.registry),
            registered_bytes=self.registry.total_bytes,
            registered_total=supervisor.registered_by_old_watchers + by_events
            + self._rescanner.registered,
            overflows=self._rescanner.overflows,
            rescans=self._rescanner.rescans,
            observer_restarts=supervisor.restarts,
            observer_failure=supervisor.observer_failure,
            observer_alive=watcher is not None and watcher.is_alive,
            observer_kind=watcher.kind if watcher is not None else None,
            last_pass_at=self._last_pass_at,
            last_pass_report=self._last_pass,
            pinned_files=self._enforcer.pinned[0],
            pinned_bytes=self._enforcer.pinned[1],
            base_dir_problem=supervisor.guard.problem,
            sweep_denied_processes=self._visibility.processes_denied,
            observer_fallback=watcher.fallback_reason if watcher is not None else None,
            unwatched_dirs=len(watcher.unwatched) if watcher is not None else 0,
            deleted_open_files=self._deleted_open[0],
            deleted_open_bytes=self._deleted_open[1],
            in_use_check=in_use_check(self._config.cleanup, self._deleter),
            pressure=self._reclaimer.state,
        )

    @property
    def is_working(self) -> bool:
        """Every thread runs and the observer lives (or was stopped because base_dir changed):
        what a watchdog should hear. A dead observer the monitor cannot restart says False."""
        threads_alive = bool(self._threads) and all(t.is_alive() for t in self._threads)
        return threads_alive and self._supervisor.is_watching

    def run_pass_now(self, shared_open_files: OpenFileSet | None = None) -> PassReport:
        """Run one full cleanup pass now, on the calling thread (while base_dir is not the
        directory verified at start, none: an empty report; see `base_dir_problem`).

        `shared_open_files`: a sweep shared with other directories (it must cover base_dir)
        for the first batch; by default the pass sweeps on its own, only if something would go.
        """
        config = self._config
        deleter = self._require_deleter()
        if self._supervisor.guard.problem is not None:
            return PassReport(dry_run=config.cleanup.dry_run)
        reopen = open_files_for(config, self._sweep)  # made again for a later batch
        open_paths: Container[str] = reopen()
        if shared_open_files is not None and config.cleanup.skip_open_files:
            open_paths = shared_open_files
        report = run_pass(
            self.registry, deleter, self._limits, open_paths=open_paths, clock=self._clock,
            listener=self._listener, dry_run=config.cleanup.dry_run,
            should_stop=self._stopping.is_set, said=self._said, reopen=reopen,
            pacer=Pacer(pace_of(config), pause=self._stopping.wait, lock=self._act_lock),
        )
        if config.cleanup.remove_empty_dirs and not config.cleanup.dry_run and not report.stopped:
            with self._act_lock:  # (a stop request after the pass: should_stop below)
                dirs = scan_tree(
                    self._base_dir, recursive=config.watch.recursive, exclude=config.watch.exclude
                ).dirs
                remove_empty_dirs(
                    deleter, dirs, config.cleanup.max_age_seconds, self._clock(),
                    should_stop=self._stopping.is_set,
                )
        self._visibility.after_pass(
            open_paths, self._base_dir, is_lease_in_force(config.cleanup, deleter)
        )
        self._last_pass_at = self._clock()
        self._last_pass = report
        self._enforcer.pass_done(report)
        self._lease_fallback.check(config.cleanup, deleter)
        if isinstance(open_paths, LazyOpenFiles):
            # Sweeps here if the pass needed no sweep: once per pass, for the metric.
            deleted = open_paths.deleted
            self._deleted_open = (len(deleted), sum(d.size_bytes for d in deleted))
        if not self._stopping.is_set():
            self._reclaimer.check(config, self._watermarks, deleter, full_pass=True)
        return report

    def share_pressure(self, group: SharedFilesystem) -> None:
        """Evict for free space together with the other directories on this filesystem
        (`tempwatch.sharedfs`): by age across them. Call it once started."""
        self._reclaimer.join(group, self._config, self._watermarks, self._require_deleter())

    def request_rescan(self, reason: str) -> None:
        """Ask the rescan thread to reconcile the registry with the disk soon."""
        self._rescanner.request(reason)

    def reload(self, config: Config) -> None:
        """Apply a new configuration. base_dir cannot change without a restart.

        Raises TempwatchError, with the old configuration still in force, if a changed
        observer setting cannot be applied.
        """
        old = self._config
        if config.watch.base_dir != old.watch.base_dir:
            logger.bind(event="reload").warning(
                "watch.base_dir changed to {}: that needs a restart; still watching {}",
                config.watch.base_dir, old.watch.base_dir,
            )
            config = dataclasses.replace(
                config, watch=dataclasses.replace(config.watch, base_dir=old.watch.base_dir)
            )
        own = own_files(config)
        if _watch_settings(config) != _watch_settings(old):
            self._replace_watcher(config, own)
        elif self._supervisor.watcher is not None:
            self._supervisor.watcher.skip_paths = own
        self._config = config
        self._limits = limits_of(config)
        self._watermarks = watermarks_of(config)
        self._own = own
        try:
            self._deleter = deleter_for(config, self._supervisor.guard.identity)
        except OSError:
            pass  # base_dir is not there: a deleter is made when a directory is adopted
        for event in (self._wake_cleanup, self._wake_enforcer):
            event.set()  # re-wait with the new intervals, re-check the new limits
        self._rescanner.wake()
        changes = changed_settings(old, config)
        said = ", ".join(f"{key} {a} -> {b}" for key, (a, b) in changes.items())
        logger.bind(
            event="reload", directory=self._base_dir,
            changes={k: list(v) for k, v in changes.items()},
        ).info("configuration reloaded for {}: {}", self._base_dir, said or "nothing changed")

    # -- watcher callbacks (on watchdog's threads: quick, never blocking) ---------------

    def _on_change(self) -> None:
        if self._enforcer.is_over_limits(self._limits) or (
            self._watermarks.is_set and self._reclaimer.note_written()
        ):
            self._wake_enforcer.set()

    def _on_closed(self, path: str, size_bytes: int) -> None:
        if self._enforcer.note_closed(path, size_bytes, self._limits):
            self._wake_enforcer.set()

    # -- threads ------------------------------------------------------------------

    def _wait(self, event: threading.Event, seconds: float | None) -> bool | None:
        """Wait for `event` or `seconds`: None when stopping, else whether `event` woke us."""
        woken = event.wait(seconds)
        event.clear()
        return None if self._stopping.is_set() else woken

    def _cleanup_loop(self) -> None:
        while True:
            woken = self._wait(self._wake_cleanup, self._config.cleanup.interval_seconds)
            if woken is None:
                return
            if woken:
                continue  # a reload: wait again, with the new interval
            try:
                self.run_pass_now()
            except Exception:
                logger.opt(exception=True).bind(event="pass-error").error("cleanup pass failed")

    def _enforcer_loop(self) -> None:
        pending = False  # woken for the limits, held back by the enforcer's back-off
        while True:
            timeout = self._reclaimer.wait_seconds(self._watermarks)
            if pending:  # the free-space checks go on while the limits back off
                delay = self._enforcer.backoff_remaining()
                timeout = delay if timeout is None else min(timeout, delay)
            woken = self._wait(self._wake_enforcer, timeout)
            if woken is None:
                return
            pending = pending or woken
            config = self._config
            if self._supervisor.guard.problem is not None:
                pending = False
                continue  # base_dir is not ours to clean now
            self._check_pressure(config)
            if not pending or self._enforcer.backoff_remaining() > 0:
                continue
            pending = False
            try:
                self._enforcer.enforce(config, self._limits, self._require_deleter())
            except Exception:
                logger.opt(exception=True).bind(event="enforce-error").error(
                    "limit enforcement failed"
                )
                self._enforcer.back_off(config.cleanup.interval_seconds)

    def _check_pressure(self, config: Config) -> None:
        try:
            self._reclaimer.check(config, self._watermarks, self._require_deleter())
        except Exception:
            logger.opt(exception=True).bind(event="pressure-error").error(
                "free-space check failed"
            )

    # -- helpers ------------------------------------------------------------------

    def _make_watcher(self, config: Config, own: frozenset[str]) -> Watcher:
        watch = config.watch
        return Watcher(
            self._base_dir, self.registry, recursive=watch.recursive, observer=watch.observer,
            exclude=watch.exclude, skip_paths=own, clock=self._clock, on_change=self._on_change,
            on_closed=self._on_closed, on_overflow=self._rescanner.note_overflow,
            on_missed=self._rescanner.request, polling_interval_seconds=self._polling_interval,
            age_by=config.cleanup.age_by, rules=rules_of(config), inotify_read=self._read,
        )

    def _replace_watcher(self, config: Config, own: frozenset[str]) -> None:
        self._supervisor.replace(self._make_watcher(config, own))
        if config.watch.exclude:
            for path in list(self.registry.times()):
                if is_excluded(path[len(self._base_dir) + 1 :], config.watch.exclude):
                    self.registry.discard(path)
        self.request_rescan("watch settings changed")

    def _adopted(self, identity: DirIdentity) -> None:
        """Another directory was adopted as base_dir: the deleter is bound to it alone."""
        self._deleter = deleter_for(self._config, identity)

    def _require_deleter(self) -> Deleter:
        if self._deleter is None:
            raise TempwatchError("the service is not started")
        return self._deleter


def _watch_settings(config: Config) -> tuple[object, ...]:
    watch = config.watch
    return (watch.recursive, watch.observer, watch.exclude, config.cleanup.age_by, config.rules)
