"""The process that hosts every configured directory: one `Service` per directory.

Each directory keeps what is its own: its watcher, registry, instance lock, enforcer and
rescans (`tempwatch.service`). What the directories share is the cleanup pass: one thread
here runs the passes of every directory that is due, and one open-file sweep (of the
directories' common ancestor, only if some pass has something to delete) serves all of
them, instead of one walk of /proc per directory.

`Host` is a context manager like `Service`. `reload` adds and removes directories without
disturbing the others: a directory still configured keeps its service (reloaded in place),
a new one gets a service, a removed one has its service stopped.

What each directory needs beside its service (`tempwatch run`'s health socket) comes in as
`attach`: a context manager per directory, entered once its service holds the directory's
lock and exited before that service stops, whether at start, on reload or at stop.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack

from tempwatch.cleaner import CleanupListener, PassReport
from tempwatch.config import Config
from tempwatch.errors import TempwatchError
from tempwatch.lazylog import logger
from tempwatch.openfiles import LazyOpenFiles, OpenFiles, sweep_open_files
from tempwatch.service import Service
from tempwatch.sharedfs import SharedFilesystem

__all__ = ["Host"]

_STOP_SECONDS = 2.0


class Host:
    """Serves `config.each_directory()` until stopped.

    `listener_for(base_dir)` gives each directory's listener (its metrics); `attach(base_dir)`
    what else serves the directory while its service runs (see the module's docstring);
    `sweep` is the open-file sweep shared by the passes; the other arguments go to every
    `Service`.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        sweep: Callable[[str], OpenFiles] = sweep_open_files,
        listener_for: Callable[[str], CleanupListener | None] | None = None,
        attach: Callable[[str], AbstractContextManager[object]] | None = None,
        monitor_interval_seconds: float = 0.5,
        polling_interval_seconds: float = 1.0,
    ) -> None:
        self._config = config
        self._clock = clock
        self._sweep = sweep
        self._listener_for = listener_for
        self._attach = attach
        self._service_options = {
            "monitor_interval_seconds": monitor_interval_seconds,
            "polling_interval_seconds": polling_interval_seconds,
        }
        self._services: dict[str, Service] = {}
        self._attached: dict[str, ExitStack] = {}  # base_dir -> what `attach` gave it
        self._due: dict[str, float] = {}  # base_dir -> monotonic time of its next pass
        self._lock = threading.Lock()  # the services and their due times
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweeps = 0  # open-file sweeps run for passes (one per round at most)
        self._filesystems: dict[int, SharedFilesystem] = {}  # st_dev -> its directories

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def config(self) -> Config:
        """The configuration in force (after reloads)."""
        return self._config

    @property
    def services(self) -> dict[str, Service]:
        """A snapshot: base_dir -> the service of that directory."""
        with self._lock:
            return dict(self._services)

    def start(self) -> None:
        """Start a service per directory (all or none), then the pass thread."""
        try:
            for directory in self._config.each_directory():
                self._add(directory)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._pass_loop, name="tempwatch-passes", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the pass thread and every service; join them. Idempotent."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            services = list(self._services.values())
            attached = list(self._attached.values())
            self._attached.clear()
        for companion in attached:
            companion.close()
        for service in services:  # a pass in progress there ends after its current file
            service.stop()
        if self._thread is not None:
            self._thread.join(_STOP_SECONDS)
            if self._thread.is_alive():
                logger.bind(event="stop").warning("the pass thread was still busy at stop")

    @property
    def is_working(self) -> bool:
        """The pass thread and every directory's service are working."""
        thread = self._thread
        services = self.services.values()
        return thread is not None and thread.is_alive() and all(s.is_working for s in services)

    # -- reload -------------------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """Apply a new configuration: directories added, removed or changed in place.

        A directory that cannot be started is logged and left out; the others go on.
        Raises TempwatchError only when a directory kept cannot take its new settings.
        """
        wanted = {str(d.watch.base_dir): d for d in config.each_directory()}
        current = self.services
        for base_dir in current.keys() - wanted.keys():
            with self._lock:
                service = self._services.pop(base_dir)
                self._due.pop(base_dir, None)
                companion = self._attached.pop(base_dir, None)
            if companion is not None:
                companion.close()
            service.stop()
            logger.bind(event="directory-removed", path=base_dir).info(
                "no longer serving {}", base_dir
            )
        for base_dir, directory in wanted.items():
            if base_dir in current:
                current[base_dir].reload(directory)
                continue
            try:
                self._add(directory)
            except (TempwatchError, OSError) as e:
                logger.bind(event="directory-failed", path=base_dir).error(
                    "cannot serve {}: {}", base_dir, e
                )
                continue
            logger.bind(event="directory-added", path=base_dir).info("now serving {}", base_dir)
        self._config = config
        self._wake.set()

    # -- passes -------------------------------------------------------------------------

    def run_passes_now(self, base_dirs: list[str] | None = None) -> dict[str, PassReport]:
        """One pass of each directory named (all by default), sharing one open-file sweep."""
        services = self.services
        chosen = [b for b in (base_dirs if base_dirs is not None else services) if b in services]
        if not chosen:
            return {}
        shared = LazyOpenFiles(os.path.commonpath(chosen), sweep=self._counted_sweep)
        reports: dict[str, PassReport] = {}
        for base_dir in chosen:
            if self._stopping.is_set():
                break
            try:
                reports[base_dir] = services[base_dir].run_pass_now(shared_open_files=shared)
            except Exception:
                logger.opt(exception=True).bind(event="pass-error", path=base_dir).error(
                    "cleanup pass of {} failed", base_dir
                )
        return reports

    def _counted_sweep(self, prefix: str) -> OpenFiles:
        self.sweeps += 1
        return self._sweep(prefix)

    def _pass_loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            with self._lock:
                due = [b for b, at in self._due.items() if at <= now]
                next_at = min(self._due.values(), default=now + 1.0)
            if due:
                self.run_passes_now(due)
                with self._lock:
                    for base_dir in due:
                        service = self._services.get(base_dir)
                        if service is not None:
                            interval = service.config.cleanup.interval_seconds
                            self._due[base_dir] = time.monotonic() + interval
                continue
            self._wake.wait(max(0.0, next_at - now))
            self._wake.clear()

    # -- helpers ------------------------------------------------------------------------

    def _share_filesystem(self, service: Service, base_dir: str) -> None:
        """Directories on one filesystem evict together for its free space, by age across
        them, in the order they were added (`tempwatch.sharedfs`)."""
        try:
            device = os.stat(base_dir).st_dev
        except OSError:
            return  # gone already: its service says so
        with self._lock:
            group = self._filesystems.setdefault(device, SharedFilesystem())
        service.share_pressure(group)

    def _add(self, directory: Config) -> None:
        base_dir = str(directory.watch.base_dir)
        listener = self._listener_for(base_dir) if self._listener_for is not None else None
        service = Service(
            directory,
            clock=self._clock,
            sweep=self._sweep,
            listener=listener,
            own_passes=False,
            monitor_interval_seconds=self._service_options["monitor_interval_seconds"],
            polling_interval_seconds=self._service_options["polling_interval_seconds"],
        )
        service.start()
        self._share_filesystem(service, base_dir)
        with self._lock:
            self._services[base_dir] = service
            self._due[base_dir] = time.monotonic() + directory.cleanup.interval_seconds
        if self._attach is None:
            return
        companion = ExitStack()
        try:
            companion.enter_context(self._attach(base_dir))  # it may ask for the service
        except BaseException:
            with self._lock:
                self._services.pop(base_dir, None)
                self._due.pop(base_dir, None)
            service.stop()
            raise
        with self._lock:
            self._attached[base_dir] = companion
