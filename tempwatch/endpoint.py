"""The HTTP endpoint: `/metrics` (tempwatch.metrics) and `/healthz` (tempwatch.health).

`MetricsServer` serves them from a `ThreadingHTTPServer` on a thread of its own; `stop()`
shuts it down and joins every thread it started. A request that fails answers 500 with
the error, and is logged.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from tempwatch.errors import TempwatchError
from tempwatch.health import Health
from tempwatch.lazylog import logger

__all__ = ["Exposition", "MetricsServer"]


class Exposition(Protocol):
    """What the endpoint serves at /metrics."""

    def render(self, accept: str = "") -> tuple[bytes, str]: ...



class _Server(ThreadingHTTPServer):
    # Request threads are joined by server_close(); the socket timeout bounds that wait
    # when a client stalls.
    daemon_threads = False
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Exposition,
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
        metrics: Exposition,
        *,
        address: str = "127.0.0.1",
        port: int = 8328,
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
        """Base URL of the endpoint, e.g. http://127.0.0.1:8328."""
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
