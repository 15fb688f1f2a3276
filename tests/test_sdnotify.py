"""sd_notify: datagrams arrive on a real AF_UNIX socket, as systemd would receive them."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tempwatch.sdnotify import Notifier, notify, watchdog_interval_seconds


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, str(path)


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notify_sends_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify("READY=1", env={"NOTIFY_SOCKET": path}) is True
    assert receive(sock) == "READY=1"
    assert notify("STATUS=scanning\nREADY=1", env={"NOTIFY_SOCKET": path}) is True
    assert receive(sock) == "STATUS=scanning\nREADY=1"  # several assignments, one datagram


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"tempwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name}) is True
        assert receive(sock) == "WATCHDOG=1"


@pytest.mark.parametrize("value", [None, "", "relative/notify.sock", "@"])
def test_notify_is_a_no_op_without_a_usable_socket(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert notify("READY=1", env=env) is False


def test_notify_reads_the_process_environment_by_default(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify("READY=1") is True
    assert receive(sock) == "READY=1"


def test_a_socket_nobody_listens_on_is_false_not_an_exception(tmp_path: Path) -> None:
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) is False


def test_a_receiver_that_stopped_reading_does_not_hang_the_sender(
    listener: tuple[socket.socket, str],
) -> None:
    _sock, path = listener
    # A unix datagram queue holds only a few messages (net.unix.max_dgram_qlen): once it is
    # full a blocking send would wait forever for a reader.
    sent = 0
    while notify("WATCHDOG=1", env={"NOTIFY_SOCKET": path}):
        sent += 1
        assert sent < 10_000, "the queue never filled"
    assert sent >= 1
    started = time.monotonic()
    assert notify("WATCHDOG=1", env={"NOTIFY_SOCKET": path}) is False
    assert time.monotonic() - started < 5  # gave up after its send timeout


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "200000"}, 0.2),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], seconds: float | None) -> None:
    assert watchdog_interval_seconds(env) == seconds


def test_watchdog_pid_is_compared_with_the_given_pid() -> None:
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "4242"}
    assert watchdog_interval_seconds(env, pid=4242) == 1.0
    assert watchdog_interval_seconds(env, pid=4243) is None


def test_notifier_sends_ready_pings_and_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    assert notifier.enabled
    assert notifier.watchdog_interval_seconds == 4.0
    assert notifier.ping_interval_seconds == 2.0  # half, as systemd recommends
    assert notifier.ready("watching /tmp/x\n12 files")
    assert notifier.ping()
    assert notifier.status("3 files")
    assert notifier.stopping()
    received = [receive(sock) for _ in range(4)]
    assert received == [
        "READY=1\nSTATUS=watching /tmp/x 12 files",
        "WATCHDOG=1",
        "STATUS=3 files",
        "STOPPING=1",
    ]


def test_notifier_without_systemd_does_nothing() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "4000000"})
    assert not notifier.enabled
    assert notifier.ping_interval_seconds is None  # nobody to ping
    assert notifier.ready() is False
    assert notifier.ping() is False
    assert notifier.stopping() is False
