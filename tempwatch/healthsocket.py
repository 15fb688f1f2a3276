"""The service's health on a local socket, for `tempwatch health` and `tempwatch status`.

`tempwatch run` listens on a UNIX stream socket beside its lock file,
`<base_dir>/.tempwatch.sock`. Connecting takes write permission on it, which the usual umask
(022; systemd's UMask=0077) leaves to the service's own user and root. Each
connection gets one line of JSON, the body /healthz serves, and is closed. It needs no
network and no metrics port: it answers with metrics off, under systemd's
PrivateNetwork=yes, and whatever port the config names, so a container health check can
rely on it.

The socket is bound only while the instance lock is held, so a socket file left by a killed
service is ours to replace. A path longer than a socket address allows is reached through
/proc/self/fd of the directory instead.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tempwatch.errors import TempwatchError
from tempwatch.health import Health
from tempwatch.instance import SOCKET_NAME
from tempwatch.lazylog import logger

__all__ = ["SOCKET_NAME", "HealthSocket", "ServiceUnreachable", "ask_health"]

_MAX_ADDRESS_BYTES = 107  # sun_path holds 108 bytes with the terminating NUL
_CLIENT_TIMEOUT_SECONDS = 2.0
_MAX_ANSWER_BYTES = 1 << 20


class ServiceUnreachable(TempwatchError):
    """No running service answered on the health socket; the message says why."""


@contextmanager
def _address(base_dir: str) -> Iterator[str]:
    """The socket's path, or an equivalent short one through /proc when it is too long."""
    path = os.path.join(base_dir, SOCKET_NAME)
    if len(os.fsencode(path)) <= _MAX_ADDRESS_BYTES:
        yield path
        return
    fd = os.open(base_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


class HealthSocket:
    """Serves `health()` as one line of JSON per connection on `<base_dir>/.tempwatch.sock`.

    `start()` binds (raising TempwatchError if it cannot) and serves on a thread; `stop()`
    wakes that thread, joins it and removes the socket. Also a context manager.
    """

    def __init__(self, base_dir: str, health: Callable[[], Health]) -> None:
        self.path = os.path.join(base_dir, SOCKET_NAME)
        self._base_dir = base_dir
        self._health = health
        self._sock: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        """Bind the socket, mode 0600, and serve on a background thread."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._bind(sock)
            sock.listen(8)
        except OSError as e:
            sock.close()
            raise TempwatchError(
                f"cannot serve health on {self.path}: {e.strerror or e}"
            ) from e
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._serve, name="tempwatch-health", daemon=True)
        self._thread.start()

    def stop(self, timeout_seconds: float = 2.0) -> None:
        """Stop serving, join the thread and remove the socket. Safe when not started."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            self._thread = None
        sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._unlink_if_ours()

    def __enter__(self) -> HealthSocket:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------

    def _bind(self, sock: socket.socket) -> None:
        with _address(self._base_dir) as address:
            try:
                sock.bind(address)
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                self._remove_stale()
                sock.bind(address)
        st = os.lstat(self.path)
        self._identity = (st.st_dev, st.st_ino)

    def _remove_stale(self) -> None:
        """A socket file of ours left by a killed service: we hold the lock, so it is dead."""
        st = os.lstat(self.path)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
            raise TempwatchError(
                f"{self.path} exists and is not tempwatch's health socket: remove it"
            )
        os.unlink(self.path)

    def _unlink_if_ours(self) -> None:
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except OSError:
            pass  # gone already: nothing to clean

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            try:
                client, _ = sock.accept()
            except OSError:
                continue  # the client gave up before we accepted
            with client:
                self._answer(client)

    def _answer(self, client: socket.socket) -> None:
        try:
            client.settimeout(_CLIENT_TIMEOUT_SECONDS)
            try:
                body = self._health().to_json()
            except Exception as e:  # the socket must answer even when the stats fail
                logger.opt(exception=True).warning("health socket: could not assess health")
                body = json.dumps({"status": "unknown", "error": repr(e)})
            client.sendall(body.encode() + b"\n")
        except OSError:
            pass  # a client that hung up or stalled loses its answer, nothing more


def ask_health(base_dir: str, *, timeout_seconds: float = 5.0) -> dict[str, object]:
    """Ask the service watching `base_dir` for its health: the /healthz body, as a dict.

    Raises ServiceUnreachable, with a one-line reason, when no service answers.
    """
    path = os.path.join(base_dir, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout_seconds)
    try:
        with sock, _address(base_dir) as address:
            sock.connect(address)
            data = _read_answer(sock)
    except FileNotFoundError as e:
        raise ServiceUnreachable(
            f"no tempwatch is running on {base_dir} ({path} is missing)"
        ) from e
    except ConnectionRefusedError as e:
        raise ServiceUnreachable(
            f"no tempwatch is running on {base_dir} ({path} is left from a stopped one)"
        ) from e
    except PermissionError as e:
        raise ServiceUnreachable(
            f"may not ask tempwatch on {base_dir}: {path} is for the service's user and root"
        ) from e
    except TimeoutError as e:
        raise ServiceUnreachable(
            f"tempwatch on {base_dir} did not answer within {timeout_seconds:g}s"
        ) from e
    except OSError as e:
        raise ServiceUnreachable(f"cannot ask tempwatch on {base_dir}: {e.strerror or e}") from e
    try:
        body = json.loads(data)
    except ValueError as e:
        raise ServiceUnreachable(f"tempwatch on {base_dir} answered something else: {e}") from e
    if not isinstance(body, dict):
        raise ServiceUnreachable(f"tempwatch on {base_dir} answered something else")
    return body


def _read_answer(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < _MAX_ANSWER_BYTES:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
