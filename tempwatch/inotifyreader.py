"""The thread that reads the inotify instance, and what happens when it fails.

A private helper of `tempwatch.inotify` (with `tempwatch.watcher`, the only modules that
import watchdog). The reader only drains the kernel queue: each read goes whole to a
`sink` (the watch group's backlog, handled on the emitter thread), one thread hop per read
where watchdog's pipeline cost three per event and let a burst overflow the kernel queue.
It watches a directory deeper than PATH_MAX through a directory fd.

watchdog's reader has no guard: an exception escaping its loop (a read refused with EIO or
ENOMEM, the instance's fd closed under it, a failure handing a read on) ended the thread
with a traceback on stderr, and left its inotify fd open; an fd closed under it made it
spin on EBADF, alive and reading nothing. This one catches whatever escapes, logs it once
(`inotify-reader-failed`), releases the instance, and ends: the observer then counts as
dead (`failure` says why), and the service's monitor replaces it with a new one and
rescans, which finds what was created meanwhile.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from watchdog.observers.inotify_c import InotifyConstants, InotifyFD, Mask

from tempwatch.lazylog import logger
from tempwatch.longpath import watchable

__all__ = ["READ_BUFFER_BYTES", "InotifyReader", "ReadEvents"]

ReadEvents = Callable[[int, int], bytes]
"""`os.read(fd, size)`: how the reader reads the inotify fd (a test injects a failure)."""

READ_BUFFER_BYTES = 64 * 1024
"""About two thousand events per read. Kept under glibc's mmap threshold (128 KiB, fixed by
`tempwatch.heap`): a larger read buffer was mapped, shrunk and unmapped at every read, three
system calls more each time."""

# After a read that did not fill half the buffer, the reader lets events gather this long:
# read as they came, every read handed the GIL to the emitter and back, a few futex calls
# each, while the enforcer deleting meanwhile wanted it after every system call (a burst
# eviction made 6.7 futex calls per deleted file at 1 ms, 0.9 at 5 ms). The kernel queue
# (16384 events by default) holds far more than arrives meanwhile, and a full read is
# followed by the next one at once.
_READ_PAUSE_SECONDS = 0.005
_DONT_FOLLOW = InotifyConstants.IN_DONT_FOLLOW


class InotifyReader(InotifyFD):
    """watchdog's inotify reader thread, reduced to draining the kernel queue into `sink`.

    `read` reads the inotify fd (`os.read`). After a failure, `failure` says what it was
    and the thread has ended; `stop()` works as before.
    """

    def __init__(self, *, read: ReadEvents = os.read) -> None:
        super().__init__()  # EMFILE here: the instance limit
        self.name = "tempwatch-inotify-reader"
        self.sink: Callable[[bytes], None] | None = None
        self.failure: str | None = None
        self._read = read

    def run(self) -> None:
        try:
            while self.should_keep_running():
                buffer = self._read_event_buffer(READ_BUFFER_BYTES)
                sink = self.sink
                if buffer and sink is not None:
                    sink(buffer)
                if 0 < len(buffer) < READ_BUFFER_BYTES // 2:
                    self.stopped_event.wait(_READ_PAUSE_SECONDS)  # a stop still ends it at once
        except Exception as error:
            self.failure = f"inotify reader failed: {type(error).__name__}: {error}"
            logger.opt(exception=error).bind(
                event="inotify-reader-failed", error=str(error)
            ).error("{}; events are no longer read: the observer will be restarted", self.failure)
        finally:
            self._release()

    def is_readable(self) -> bool:
        """Whether the kernel queue holds events not read yet."""
        return bool(select.select([self._inotify_fd], [], [], 0)[0])

    def _read_event_buffer(self, event_buffer_size: int) -> bytes:
        # watchdog's, but with `read` injected, and an fd closed under it (EBADF before our
        # own close) raised instead of answered with b"" forever: that was a spin.
        with self._lock:
            if self._closed:
                return b""
            self._is_reading = True
        buffer = b""
        if self._check_inotify_fd():
            buffer = self._read(self._inotify_fd, event_buffer_size)
        with self._lock:
            self._is_reading = False
            if self._closed:
                self._close_resources()
                return b""
        return buffer

    def _release(self) -> None:
        """After the loop, however it ended: the instance's fds are closed once, by whoever
        is last (this thread if `close()` ran while it was reading, else `close()`)."""
        with self._lock:
            was_reading, self._is_reading = self._is_reading, False
            if was_reading and self._closed:
                with suppress(OSError):
                    self._close_resources()

    def _add_callback(self, path: bytes, mask: Mask, callback: Any, id_: Any) -> Any:
        # watchdog warns when a group adds its callback to a watch that has it already (the
        # same directory added again, under its name or another): that is no news here, and
        # the warning killed the thread where warnings are errors.
        watch = self._get_or_create_watch(path, mask)
        watch.callbacks[id_] = callback
        return watch.wd

    def _get_or_create_watch(self, path: bytes, mask: Mask) -> Any:
        with watchable(path, follow=not mask & _DONT_FOLLOW) as name:
            if name != path:
                mask = Mask(mask & ~_DONT_FOLLOW)
            return super()._get_or_create_watch(name, mask)
