"""Helpers shared by the tests: waiting on conditions, and child processes holding files open."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loguru import logger

__all__ = [
    "HIDDEN_PROCESSES_WARNING",
    "OnDeleted",
    "hold_open",
    "is_healthy_but_for_hidden_processes",
    "small_inotify_queue",
    "wait_for",
    "without_hidden_process_warnings",
]

# Where the sweep cannot inspect some process even as root (on the development machine,
# pid 1 is shielded), tempwatch says so, in the log and in /healthz. Tests about other
# things accept exactly that and nothing else.
HIDDEN_PROCESSES_WARNING = "the open-file check could not inspect"
_HIDDEN_PROCESSES_REASON = "the open-file check cannot inspect"


def without_hidden_process_warnings(text: str) -> str:
    """`text` without the lines that warn of processes the sweep could not inspect."""
    return "".join(
        line for line in text.splitlines(keepends=True) if HIDDEN_PROCESSES_WARNING not in line
    )


def is_healthy_but_for_hidden_processes(body: dict[str, object]) -> bool:
    """A /healthz body that is healthy, or degraded only for processes the sweep cannot see."""
    if body["status"] == "healthy":
        return True
    reasons = body["reasons"]
    assert isinstance(reasons, list)
    return (
        body["status"] == "degraded"
        and len(reasons) == 1
        and str(reasons[0]).startswith(_HIDDEN_PROCESSES_REASON)
    )


def wait_for(
    condition: Callable[[], object], *, timeout: float = 30.0, message: str = "condition"
) -> None:
    """Poll `condition` every few milliseconds until it is truthy; fail clearly at the deadline.

    The default deadline is generous on purpose: it is only reached when the test fails,
    and a loaded machine (benchmarks, other suites on 2 cores) can delay a thread for seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(0.005)


_HOLDER = r"""
import os, sys
flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "path": getattr(os, "O_PATH", os.O_RDONLY)}
fd = os.open(sys.argv[1], flags[sys.argv[2]])
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
os.close(fd)
"""


@contextmanager
def hold_open(path: Path | str, mode: str = "r") -> Iterator[int]:
    """Run a child process that holds `path` open (mode "r", "w" or "path" for O_PATH).

    Yields the child's pid; the child closes the file and exits when the block ends.
    """
    with child_process(_HOLDER, str(path), mode) as proc:
        yield proc.pid


@contextmanager
def child_process(code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """Run Python `code` (dedented) in a child that prints "ready" once it holds what it
    holds, and waits for its stdin to close: the end of the block."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"child did not get ready: {line!r} ({args})"
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


_MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")


@contextmanager
def small_inotify_queue(events: int) -> Iterator[None]:
    """Lower the machine-wide inotify queue for instances made inside the block (root only).

    The limit applies when an instance is made, so the block should only start the
    watcher. On exit the old value is put back; a tiny one found there is another test's
    temporary value (tests may run concurrently), so the kernel default goes back instead.
    """
    value = int(_MAX_QUEUED_EVENTS.read_text())
    saved = f"{value if value >= 1024 else 16384}\n"
    _MAX_QUEUED_EVENTS.write_text(f"{events}\n")
    try:
        yield
    finally:
        _MAX_QUEUED_EVENTS.write_text(saved)


@contextmanager
def event_lines(level: str = "DEBUG") -> Iterator[list[str]]:
    """tempwatch's log records with an event, from `level` up, as "LEVEL event message"."""
    lines: list[str] = []
    logger.enable("tempwatch")
    sink = logger.add(lines.append, level=level, format="{level} {extra[event]} {message}",
                      filter=lambda r: "event" in r["extra"])
    try:
        yield lines
    finally:
        logger.remove(sink)
        logger.disable("tempwatch")


class OnDeleted:
    """A cleanup listener that hears only deletions (`on_deleted`, for a subclass to say);
    the rest of the listener protocol is heard and ignored."""

    def on_deleted(self, decision: Any, result: Any) -> None:
        pass

    def on_skipped_open(self, decision: Any) -> None:
        pass

    def on_failed(self, decision: Any, result: Any) -> None:
        pass

    def on_pass(self, report: Any) -> None:
        pass
