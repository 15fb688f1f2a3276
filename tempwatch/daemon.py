"""`tempwatch run`: the service in the foreground, driven by signals.

The only code that installs signal handlers, on the main thread. The first SIGINT or
SIGTERM stops the service gracefully (every thread joined, the last log line flushed);
a second one forces the exit at once (status 130 or 143). SIGHUP reloads the config: the
new one is validated by the loader first, and on any error the old one stays in force and
the reason is logged on one line.

The handlers only record the signal and wake the main loop: logging, reloading and
stopping happen on the main thread outside the handler, where taking locks is safe.

With `metrics.enabled`, the service's metrics and /healthz are served while it runs. Under
systemd (NOTIFY_SOCKET) it reports READY=1 once the files present at start are registered,
WATCHDOG=1 pings while every service thread and the observer are alive (so systemd
restarts a service whose observer could not be revived), and STOPPING=1.

The heap's free pages are given back to the system every half minute (`tempwatch.heap`).

`stopped` is the last line: a thread still busy past the stop's deadline (a pass stuck in a
system call) has its later lines dropped, the count of those dropped until then given in
`stopped` (`late_lines_dropped`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import TYPE_CHECKING

from tempwatch import heap
from tempwatch.config import Config
from tempwatch.errors import AlreadyRunningError, ConfigError, TempwatchError
from tempwatch.health import Health, assess_service, combine_health
from tempwatch.healthsocket import HealthSocket
from tempwatch.host import Host
from tempwatch.lazylog import logger
from tempwatch.logsinks import close_to_other_threads, dropped_lines, reopen_to_all_threads
from tempwatch.openfiles import OpenFiles, sweep_open_files
from tempwatch.sdnotify import Notifier

if TYPE_CHECKING:
    from tempwatch.metrics import Metrics

__all__ = ["run_daemon"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_HANDLED = (*_STOP_SIGNALS, signal.SIGHUP)
_IDLE_WAKE_SECONDS = 1.0  # belt and braces: the loop re-checks its flags at least this often


class _Signals:
    """Records signals for the main loop; a second stop signal exits on the spot."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.stop_signal: int | None = None
        self.reload_requested = False
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in _HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        elif self.stop_signal is None:
            self.stop_signal = signum
        else:
            _force_exit(signum)
        self.wake.set()


def _force_exit(signum: int) -> None:
    # Runs inside the signal handler, maybe while a log sink is mid-write: loguru is not
    # re-entrant there, so say it with one plain write to stderr.
    name = signal.Signals(signum).name
    try:
        os.write(2, f"tempwatch: second {name}: exiting now\n".encode())
    except OSError:
        pass
    os._exit(128 + signum)


def run_daemon(
    load_config: Callable[[], Config],
    *,
    configure_logging: Callable[[Config], None],
    sweep: Callable[[str], OpenFiles] = sweep_open_files,
) -> int:
    """Run the service until SIGINT or SIGTERM; returns the exit status.

    `load_config` is called once at start (a ConfigError propagates to the caller) and
    again on every SIGHUP. `sweep(prefix)` finds open files for the passes (the default
    sweeps /proc). Returns 1 with a one-line message on stderr if another instance
    already watches the directory, 0 after a graceful stop.
    """
    config = load_config()
    reopen_to_all_threads()
    configure_logging(config)
    heap.tune()  # before the threads start: each would take an arena of its own
    signals = _Signals()
    signals.install()
    try:
        return _serve(config, signals, load_config, configure_logging, sweep)
    except AlreadyRunningError as e:
        logger.complete()
        print(f"tempwatch: {e}", file=sys.stderr)
        return 1
    finally:
        signals.restore()


def _serve(
    config: Config,
    signals: _Signals,
    load_config: Callable[[], Config],
    configure_logging: Callable[[Config], None],
    sweep: Callable[[str], OpenFiles],
) -> int:
    notifier = Notifier()
    with ExitStack() as stack:
        service = _start(config, stack, sweep)
        all_stats = [s.stats for s in service.services.values()]
        files = sum(stats.registered_files for stats in all_stats)
        observer = all_stats[0].observer_kind if all_stats else None
        watched = ", ".join(str(d.watch.base_dir) for d in config.each_directory())
        logger.bind(
            event="started", path=watched, observer=observer, files=files, pid=os.getpid(),
        ).info("watching {} ({}), {} files registered", watched, observer, files)
        settings = service.config.settings()
        logger.bind(event="settings", settings=settings).info(
            "settings: {}",
            # TOML-like words (true, [], "a b") rather than Python's (True, [], a b).
            " ".join(f"{key}={json.dumps(value)}" for key, value in settings.items()),
        )
        notifier.ready(f"watching {watched}")
        ping_seconds = notifier.ping_interval_seconds
        trimmer = heap.Trimmer()
        while signals.stop_signal is None:
            signals.wake.wait(ping_seconds or _IDLE_WAKE_SECONDS)
            signals.wake.clear()
            trimmer.tick()  # free heap pages back to the system (tempwatch.heap)
            if ping_seconds is not None and service.is_working:
                notifier.ping()  # every thread turns and the observer lives
            if signals.reload_requested and signals.stop_signal is None:
                signals.reload_requested = False
                _reload(service, load_config, configure_logging)
        name = signal.Signals(signals.stop_signal).name
        notifier.stopping(f"{name}: stopping")
        logger.bind(event="stopping", signal=name).info("{}: stopping", name)
    # Every thread was asked to stop and joined, with a deadline: one still busy past it (a
    # pass stuck in a system call) must not log after the last line, whenever it wakes.
    close_to_other_threads()
    dropped = dropped_lines()
    logger.bind(event="stopped", late_lines_dropped=dropped).info(
        "stopped" if not dropped else f"stopped ({dropped} lines of threads still busy dropped)"
    )
    logger.complete()
    return 0


def _start(config: Config, stack: ExitStack, sweep: Callable[[str], OpenFiles]) -> Host:
    """The host of every directory, a health socket in each, and the metrics and /healthz
    when enabled, on `stack`.

    With [[directory]] entries, every sample carries a `directory` label and /healthz
    answers for each directory; a single-directory config keeps the unlabelled form.
    """
    hosts: list[Host] = []
    by_directory: dict[str, Metrics] = {}

    def listener_for(base_dir: str) -> Metrics | None:
        if not config.metrics.enabled:
            return None
        from tempwatch.metrics import Metrics  # prometheus_client only when used

        metrics = by_directory.get(base_dir)
        if metrics is None:
            metrics = Metrics(source=lambda: hosts[0].services[base_dir].stats)
            by_directory[base_dir] = metrics
        return metrics

    def health_of(base_dir: str) -> Health:
        service = hosts[0].services[base_dir]
        return assess_service(
            service.stats, service.config, now=time.time(),
            base_dir_exists=os.path.isdir(base_dir),
        )

    def told(base_dir: str) -> Health:
        # The socket also tells the directory's config in force, so that `status` judges
        # with the service's settings rather than its own reading of the file.
        health = health_of(base_dir)
        directory = hosts[0].services[base_dir].config
        effective = dataclasses.replace(directory, directories=(directory,)).to_toml()
        return dataclasses.replace(health, body={**health.body, "config_toml": effective})

    def health_socket(base_dir: str) -> HealthSocket:
        # Every directory served has one, those a reload adds too; a removed one loses it.
        return HealthSocket(base_dir, functools.partial(told, base_dir))

    host = Host(config, listener_for=listener_for, attach=health_socket, sweep=sweep)
    hosts.append(host)  # before it starts: a socket may be asked at once
    stack.enter_context(host)

    def health() -> Health:
        if not config.directories:
            return health_of(str(config.watch.base_dir))
        return combine_health({path: health_of(path) for path in host.services})

    if config.metrics.enabled:
        from tempwatch.endpoint import MetricsServer
        from tempwatch.metrics import LabelledMetrics

        def served() -> dict[str, Metrics]:
            services = host.services
            return {path: m for path, m in by_directory.items() if path in services}

        single = None if config.directories else by_directory.get(str(config.watch.base_dir))
        stack.enter_context(
            MetricsServer(
                single if single is not None else LabelledMetrics(served),
                address=config.metrics.address, port=config.metrics.port, health=health,
            )
        )
    return host


def _reload(
    service: Host,
    load_config: Callable[[], Config],
    configure_logging: Callable[[Config], None],
) -> None:
    old = service.config
    try:
        new = load_config()
    except ConfigError as e:
        logger.bind(event="reload-failed").error("reload failed, keeping the old config: {}", e)
        return
    try:
        configure_logging(new)
    except Exception as e:  # e.g. a log file that cannot be opened
        configure_logging(old)
        logger.bind(event="reload-failed").error(
            "reload failed, keeping the old config: logging: {}", e
        )
        return
    try:
        service.reload(new)
    except TempwatchError as e:
        configure_logging(old)
        logger.bind(event="reload-failed").error("reload failed, keeping the old config: {}", e)
