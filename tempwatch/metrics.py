"""Prometheus metrics, and the HTTP endpoint that serves them with /healthz.

This is the only module that imports prometheus_client. `Metrics` hears what the service
does (it is a `CleanupListener`, plus a few service events) and keeps the counters and
histograms in a private `CollectorRegistry`, never the global one, so that several
services, or several tests, can live in one process. The gauges that mirror state
(files, bytes, pinned bytes) are not pushed per event: they are read from callables when
Prometheus scrapes, so the event path pays nothing for them.

`MetricsServer` serves `/metrics` and `/healthz` from a `ThreadingHTTPServer` on a thread
of its own; `stop()` shuts it down and joins every thread it started.
"""

from __future__ import annotations

import errno
import json
import platform
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from tempwatch.cleaner import PassReport
from tempwatch.deleter import DeleteResult
from tempwatch.errors import TempwatchError
from tempwatch.health import Health
from tempwatch.policy import Decision, Reason

__all__ = [
    "AGE_BUCKETS_SECONDS",
    "DURATION_BUCKETS_SECONDS",
    "ERROR_LABELS",
    "Metrics",
    "MetricsServer",
    "error_label",
]

AGE_BUCKETS_SECONDS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 86400, 604800)
"""Buckets of temp_file_age_seconds: from a second to a week, around the usual max_age."""

DURATION_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Buckets of temp_file_cleanup_duration_seconds."""

ERROR_LABELS = frozenset(
    {
        "EPERM", "EACCES", "EBUSY", "EROFS", "EIO", "ENOTDIR", "EISDIR", "ELOOP",
        "ENAMETOOLONG", "ETXTBSY", "EXDEV", "ENOSPC", "EDQUOT", "EINVAL", "EMFILE",
        "ENFILE", "ENOMEM", "ESTALE", "ENOTEMPTY",
    }
)  # fmt: skip
"""errno names used as the `error` label as they are; any other failure is "other"."""

_ERRNO = re.compile(r"\[Errno (\d+)\]")


def error_label(error: str | None) -> str:
    """The `error` label for a failed deletion: its errno name (EPERM, ...) or "other".

    The set is closed so that an unusual error cannot create unbounded label values.
    """
    found = _ERRNO.match(error or "")
    name = errno.errorcode.get(int(found.group(1)), "") if found else ""
    return name if name in ERROR_LABELS else "other"


def _version() -> str:
    from tempwatch import __version__  # deferred: the package imports us while loading

    return __version__


class Metrics:
    """The service's metrics in a private registry; a `CleanupListener`.

    `active_files`, `total_bytes` and `pinned_bytes` are read at scrape time; without
    `pinned_bytes` the figure of the last `on_pass` report is used. `observer` names the
    observer in use ("inotify", "polling") for the build_info label, also read at scrape.
    """

    def __init__(
        self,
        *,
        active_files: Callable[[], int] = lambda: 0,
        total_bytes: Callable[[], int] = lambda: 0,
        pinned_bytes: Callable[[], int] | None = None,
        observer: Callable[[], str | None] = lambda: None,
        version: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self._last_pinned_bytes = 0
        self._state = _StateCollector(
            active_files=active_files,
            total_bytes=total_bytes,
            pinned_bytes=pinned_bytes or (lambda: self._last_pinned_bytes),
            observer=observer,
            version=version or _version(),
        )
        self.registry.register(self._state)
        reg = self.registry
        self._registered = Counter(
            "temp_files_registered", "Files registered (created, moved in, or found by a scan).",
            registry=reg,
        )
        self._cleaned = Counter(
            "temp_files_cleaned", "Files deleted, by reason.", ["reason"], registry=reg
        )
        for reason in Reason:
            self._cleaned.labels(reason=reason.label)  # every reason shows, at 0
        self._age = Histogram(
            "temp_file_age_seconds", "Age of each file when it was deleted.",
            buckets=AGE_BUCKETS_SECONDS, registry=reg,
        )
        self._duration = Histogram(
            "temp_file_cleanup_duration_seconds", "Duration of each cleanup pass.",
            buckets=DURATION_BUCKETS_SECONDS, registry=reg,
        )
        self._skipped_open = Counter(
            "temp_files_skipped_open", "Files that would have gone but were open.", registry=reg
        )
        self._errors = Counter(
            "temp_files_cleanup_errors", "Failed deletions, by errno name.", ["error"],
            registry=reg,
        )
        self._overflows = Counter(
            "tempwatch_inotify_overflows", "inotify event queue overflows.", registry=reg
        )
        self._rescans = Counter(
            "tempwatch_rescans", "Reconciling rescans of base_dir.", registry=reg
        )
        self._restarts = Counter(
            "tempwatch_observer_restarts", "Observers found dead and restarted.", registry=reg
        )

    # -- CleanupListener ---------------------------------------------------------------

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        """A file was deleted (in a dry run: would have been)."""
        self._cleaned.labels(reason=decision.reason.label).inc()
        self._age.observe(max(decision.age_seconds, 0.0))

    def on_skipped_open(self, decision: Decision) -> None:
        """A file that would have gone was kept because it is open."""
        self._skipped_open.inc()

    def on_failed(self, decision: Decision, result: DeleteResult) -> None:
        """A deletion failed; counted under its errno name."""
        self._errors.labels(error=error_label(result.error)).inc()

    def on_pass(self, report: PassReport) -> None:
        """A cleanup pass ended."""
        self._duration.observe(report.duration_seconds)
        self._last_pinned_bytes = report.pinned_bytes

    # -- service events ----------------------------------------------------------------

    def on_registered(self, n: int = 1) -> None:
        """`n` files were registered."""
        self._registered.inc(n)

    def on_overflow(self) -> None:
        """The inotify queue overflowed: events were lost."""
        self._overflows.inc()

    def on_rescan(self) -> None:
        """A reconciling rescan ran."""
        self._rescans.inc()

    def on_observer_restart(self) -> None:
        """The observer was found dead and restarted."""
        self._restarts.inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an HTTP Accept header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _StateCollector:
    """Gauges read from the service when scraped, and the build info."""

    def __init__(
        self,
        *,
        active_files: Callable[[], int],
        total_bytes: Callable[[], int],
        pinned_bytes: Callable[[], int],
        observer: Callable[[], str | None],
        version: str,
    ) -> None:
        self._gauges = (
            ("temp_files_active", "Files registered now.", active_files),
            ("temp_files_bytes", "Total size of the files registered now.", total_bytes),
            (
                "tempwatch_pinned_bytes",
                "Bytes over a limit that stay because the files are open.",
                pinned_bytes,
            ),
        )
        self._observer = observer
        self._version = version

    def collect(self) -> Iterator[Metric]:
        for name, text, read in self._gauges:
            try:
                value = read()
            except Exception:  # a scrape must still answer with the rest
                logger.opt(exception=True).warning("metrics: could not read {}", name)
                continue
            yield GaugeMetricFamily(name, text, value=value)
        info = GaugeMetricFamily(
            "tempwatch_build_info",
            "Version of tempwatch and Python, and the observer in use.",
            labels=["version", "python", "observer"],
        )
        info.add_metric([self._version, platform.python_version(), self._observer() or ""], 1)
        yield info


class _Server(ThreadingHTTPServer):
    # Request threads are joined by server_close(); the socket timeout bounds that wait
    # when a client stalls.
    daemon_threads = False
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Metrics,
        health: Callable[[], Health] | None,
        family: socket.AddressFamily,
    ) -> None:
        self.address_family = family
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5.0
    server_version = "tempwatch"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, content_type = self.server.metrics.render(self.headers.get("Accept", ""))
                self._send(200, body, content_type)
            elif path == "/healthz" and self.server.health is not None:
                health = self.server.health()
                self._send(health.http_status, health.to_json().encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")
        except Exception as e:
            logger.opt(exception=True).warning("metrics endpoint: {} failed", path)
            body = json.dumps({"status": "unknown", "error": repr(e)}).encode()
            self._send(500, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


class MetricsServer:
    """Serves `/metrics` and, given `health`, `/healthz` on address:port (0: any free port).

    `start()` binds (raising TempwatchError if it cannot) and serves on a thread;
    `stop()` shuts the server down and joins its threads. Also a context manager.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        address: str = "127.0.0.1",
        port: int = 9090,
        health: Callable[[], Health] | None = None,
    ) -> None:
        self.metrics = metrics
        self.address = address
        self._port = port
        self._health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the real one when 0 was asked), else the asked one."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the endpoint, e.g. http://127.0.0.1:9090."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self._port}"

    def start(self) -> None:
        """Bind and start serving on a background thread."""
        if self._server is not None:
            return
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        try:
            server = _Server((self.address, self._port), self.metrics, self._health, family)
        except OSError as e:
            raise TempwatchError(
                f"cannot serve metrics on {self.address}:{self._port}: {e.strerror or e}"
            ) from e
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="tempwatch-metrics",
            daemon=True,
        )
        self._thread.start()
        logger.bind(event="metrics", url=self.url).info("serving metrics on {}/metrics", self.url)

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop serving and join the server's threads. Safe to call when not started."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_seconds)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
