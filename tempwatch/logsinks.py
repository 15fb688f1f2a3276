"""Log sinks that write a batch of lines in one system call.

A burst of evictions logs one line per deleted file; written one by one, each line costs a
write(2) per sink. `LineBatcher` collects the lines loguru hands it and writes them joined:
at once when no batch is open (a warning reaches the terminal as it happens), and, while
`batched_lines()` is open (the cleaner opens it around each batch of deletions), when the
batch ends, when 64 KiB are pending, or when the oldest pending line is a quarter of a
second old. Lines keep their order: they are appended and written under one lock, and
`stop()` (loguru's `remove()`, at reload and exit) writes what is left.
Without an open batch a line is written at once, as loguru's own sinks do.

At the end of `tempwatch run`, `close_to_other_threads()` makes the last line the last:
once every thread was asked to stop and joined (with a deadline), a thread still busy (a
pass stuck in a system call, say) may wake later and log; from then on only the closing
thread's lines are written, the others are dropped and counted (`dropped_lines`).

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

__all__ = [
    "LineBatcher",
    "batched_lines",
    "close_to_other_threads",
    "dropped_lines",
    "reopen_to_all_threads",
    "stream_writer",
]

_MAX_PENDING_CHARS = 64 * 1024
_MAX_PENDING_SECONDS = 0.25

# Batches open in any thread. Loguru's sinks are process-wide, so the scope is too.
_open = 0
_open_lock = threading.Lock()
_sinks: list[LineBatcher] = []
# After close_to_other_threads(): the one thread whose lines are still written.
_only_thread: int | None = None


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
        self.dropped = 0  # lines of other threads, after close_to_other_threads()
        with _open_lock:
            _sinks.append(self)

    def write(self, message: str) -> None:
        """Take one formatted line (loguru calls this under its handler's lock)."""
        if _only_thread is not None and threading.get_ident() != _only_thread:
            with self._lock:
                self.dropped += 1
            return
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


def close_to_other_threads() -> None:
    """From now on write only the calling thread's lines; drop the others', counting them.

    Every pending line is written first, so that what was logged before stays before."""
    global _only_thread
    with _open_lock:
        _only_thread = threading.get_ident()
        sinks = list(_sinks)
    for sink in sinks:
        sink.write_pending()


def reopen_to_all_threads() -> None:
    """Undo `close_to_other_threads` (a process that serves again), the counts reset."""
    global _only_thread
    with _open_lock:
        _only_thread = None
        for sink in _sinks:
            sink.dropped = 0


def dropped_lines() -> int:
    """Lines dropped since `close_to_other_threads`: the most any one sink dropped (a line
    goes to each sink its level admits)."""
    with _open_lock:
        return max((sink.dropped for sink in _sinks), default=0)


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
