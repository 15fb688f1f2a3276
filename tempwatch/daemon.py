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
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType

from loguru import logger

from tempwatch.config import Config
from tempwatch.errors import AlreadyRunningError, ConfigError, TempwatchError
from tempwatch.health import Health, assess_service
from tempwatch.healthsocket import HealthSocket
from tempwatch.sdnotify import Notifier
from tempwatch.service import Service

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
    load_config: Callable[[], Config], *, configure_logging: Callable[[Config], None]
) -> int:
    """Run the service until SIGINT or SIGTERM; returns the exit status.

    `load_config` is called once at start (a ConfigError propagates to the caller) and
    again on every SIGHUP. Returns 1 with a one-line message on stderr if another instance
    already watches the directory, 0 after a graceful stop.
    """
    config = load_config()
    configure_logging(config)
    signals = _Signals()
    signals.install()
    try:
        return _serve(config, signals, load_config, configure_logging)
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
) -> int:
    notifier = Notifier()
    with ExitStack() as stack:
        service = _start(config, stack)
        stats = service.stats
        logger.bind(
            event="started", path=str(config.watch.base_dir), observer=stats.observer_kind,
            files=stats.registered_files, pid=os.getpid(),
        ).info(
            "watching {} ({}), {} files registered",
            config.watch.base_dir, stats.observer_kind, stats.registered_files,
        )
        notifier.ready(f"watching {config.watch.base_dir}")
        ping_seconds = notifier.ping_interval_seconds
        while signals.stop_signal is None:
            signals.wake.wait(ping_seconds or _IDLE_WAKE_SECONDS)
            signals.wake.clear()
            if ping_seconds is not None and service.is_working:
                notifier.ping()  # every thread turns and the observer lives
            if signals.reload_requested and signals.stop_signal is None:
                signals.reload_requested = False
                _reload(service, load_config, configure_logging)
        name = signal.Signals(signals.stop_signal).name
        notifier.stopping(f"{name}: stopping")
        logger.bind(event="stopping", signal=name).info("{}: stopping", name)
    logger.bind(event="stopped").info("stopped")
    logger.complete()
    return 0


def _start(config: Config, stack: ExitStack) -> Service:
    """The service, its health socket, and its metrics and /healthz when enabled, on `stack`."""
    started: list[Service] = []
    metrics = None
    if config.metrics.enabled:
        from tempwatch.metrics import Metrics  # prometheus_client only when used

        metrics = Metrics(source=lambda: started[0].stats)
    service = stack.enter_context(Service(config, listener=metrics))
    started.append(service)

    def health() -> Health:
        return assess_service(
            service.stats, service.config, now=time.time(),
            base_dir_exists=os.path.isdir(service.config.watch.base_dir),
        )

    # `tempwatch health` asks here: no network, whatever the metrics settings.
    stack.enter_context(HealthSocket(str(config.watch.base_dir), health))
    if metrics is not None:
        from tempwatch.metrics import MetricsServer

        stack.enter_context(
            MetricsServer(
                metrics, address=config.metrics.address, port=config.metrics.port,
                health=health,
            )
        )
    return service


def _reload(
    service: Service,
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
