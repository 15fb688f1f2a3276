"""The systemd notify protocol, without systemd's libraries: one datagram to $NOTIFY_SOCKET.

Under `Type=notify` the service sends READY=1 once its initial scan is done, STOPPING=1
when it begins to stop, and, when the unit sets WatchdogSec= (systemd then passes
WATCHDOG_USEC), WATCHDOG=1 at half that interval. Outside systemd NOTIFY_SOCKET is unset
and every call is a no-op returning False, so the service calls these unconditionally.

A notification is never worth stopping the service for: a failure to send is logged and
reported as False, never raised.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from tempwatch.lazylog import logger

__all__ = ["Notifier", "notify", "watchdog_interval_seconds"]

_SEND_TIMEOUT_SECONDS = 1.0


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@") and len(path) > 1:
        return "\0" + path[1:]  # Linux abstract namespace
    if path.startswith("/"):
        return path
    return None  # unset, or a form systemd itself would not use


def notify(state: str, *, env: Mapping[str, str] = os.environ) -> bool:
    """Send `state` (e.g. "READY=1", or several lines) to $NOTIFY_SOCKET.

    Returns True if the datagram was sent; False when NOTIFY_SOCKET is unset or invalid,
    or the send failed (logged at warning).
    """
    address = _address(env)
    if address is None or not state:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # The cleanup loop sends the pings: a receiver that stopped reading must not
            # hang it.
            sock.settimeout(_SEND_TIMEOUT_SECONDS)
            sock.sendto(state.encode(), address)
    except OSError as e:
        logger.bind(event="sd-notify", state=state).warning(
            "could not notify systemd ({}): {}", state.replace("\n", " "), e
        )
        return False
    return True


def watchdog_interval_seconds(
    env: Mapping[str, str] = os.environ, *, pid: int | None = None
) -> float | None:
    """The watchdog timeout systemd expects pings within (WATCHDOG_USEC), or None.

    None when WATCHDOG_USEC is unset, not a positive integer, or when WATCHDOG_PID is set
    to another process than ours (`pid`, default os.getpid()): the watchdog is then meant
    for a parent or a child, not for us.
    """
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """The notifications one service sends, read from `env` once.

    `ping_interval_seconds` is half the watchdog timeout (None without a watchdog), the
    cadence systemd recommends; the service pings at least that often.
    """

    def __init__(self, env: Mapping[str, str] = os.environ, *, pid: int | None = None) -> None:
        self._env = {key: env[key] for key in ("NOTIFY_SOCKET",) if key in env}
        self.watchdog_interval_seconds = watchdog_interval_seconds(env, pid=pid)

    @property
    def enabled(self) -> bool:
        """Whether there is a notify socket to talk to."""
        return _address(self._env) is not None

    @property
    def ping_interval_seconds(self) -> float | None:
        """How often to send WATCHDOG=1, or None when no watchdog is expected."""
        if self.watchdog_interval_seconds is None or not self.enabled:
            return None
        return self.watchdog_interval_seconds / 2

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (and a STATUS= line for `systemctl status`)."""
        return self._send("READY=1", status)

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: the service has begun to shut down."""
        return self._send("STOPPING=1", status)

    def ping(self) -> bool:
        """WATCHDOG=1: the service is alive and its loop turns."""
        return self._send("WATCHDOG=1", None)

    def status(self, text: str) -> bool:
        """STATUS=<text>, shown by `systemctl status`."""
        return self._send(None, text)

    def _send(self, state: str | None, status: str | None) -> bool:
        lines = [] if state is None else [state]
        if status:
            lines.append("STATUS=" + " ".join(status.split()))  # one line, as systemd reads it
        return notify("\n".join(lines), env=self._env)
