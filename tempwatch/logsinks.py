"""Log sinks that write a batch of lines in one system call.

A burst of evictions logs one line per deleted file; written one by one, each line costs a
write(2) per sink. `LineBatcher` collects the lines loguru hands it and writes them joined:
at once when no batch is open (a warning reaches the terminal as it happens), and, while
`batched_lines()` is open (the cleaner opens it around each batch of deletions), when the
batch ends, when 64 KiB are pending, or when the oldest pending line is a quarter of a
second old. Lines keep their order: they are appended and written under one lock, and
`stop()` (loguru's `remove()`, at reload and exit) writes what is left.
Without an open batch a line is written at once, as loguru's own sinks do.

The cost of batching: a process killed outright (SIGKILL, OOM) loses the lines still
pending, at most one batch's worth (64 KiB); SIGTERM, SIGINT and exceptions lose none,
since every exit path closes the batch or removes the sinks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["LineBatcher", "batched_lines", "stream_writer"]

_MAX_PENDING_CHARS = 64 * 1024
_MAX_PENDING_SECONDS = 0.25

# Batches open in any thread. Loguru's sinks are process-wide, so the scope is too.
_open = 0
_open_lock = threading.Lock()
_sinks: list[LineBatcher] = []


class LineBatcher:
    """A loguru sink: lines joined and passed to `write` in one call.

    `write` is the destination (a stream's write-and-flush, or loguru's file sink's
    write, which keeps rotation and retention); `stop` closes it.
    """

    def __init__(
        self,
        write: Callable[[str], object],
        stop: Callable[[], object] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._stop = stop
        self._clock = clock
        self._pending: list[str] = []
        self._pending_chars = 0
        self._oldest = 0.0
        self._lock = threading.Lock()
        self.is_stopped = False
        with _open_lock:
            _sinks.append(self)

    def write(self, message: str) -> None:
        """Take one formatted line (loguru calls this under its handler's lock)."""
        with self._lock:
            if not self._pending:
                self._oldest = self._clock()
            self._pending.append(message)
            self._pending_chars += len(message)
            if (
                not _open
                or self._pending_chars >= _MAX_PENDING_CHARS
                or self._clock() - self._oldest >= _MAX_PENDING_SECONDS
            ):
                self._flush_locked()

    # Not named flush: loguru calls a sink's flush() after every line it writes.
    def write_pending(self) -> None:
        """Write every pending line now."""
        with self._lock:
            self._flush_locked()

    def stop(self) -> None:
        """Write what is pending and close the destination (loguru's `remove()`)."""
        with _open_lock:
            if self in _sinks:
                _sinks.remove(self)
        with self._lock:
            self.is_stopped = True
            self._flush_locked()
            if self._stop is not None:
                self._stop()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        text = self._pending[0] if len(self._pending) == 1 else "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        self._write(text)


def stream_writer(stream: TextIO) -> Callable[[str], None]:
    """Write to `stream` and flush it, so the joined lines leave in one write(2)."""

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return write


@contextmanager
def batched_lines() -> Iterator[None]:
    """Hold the lines of every `LineBatcher` until the block ends (or a limit is hit).

    The end of any batch writes every sink's pending lines, another thread's too: a line
    waits at most for the batch it was logged during."""
    global _open
    with _open_lock:
        _open += 1
    try:
        yield
    finally:
        with _open_lock:
            _open -= 1
            sinks = list(_sinks)
        for sink in sinks:
            sink.write_pending()
