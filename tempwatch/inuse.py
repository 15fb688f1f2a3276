"""In use, as the kernel sees it: a write lease on a file, a BSD lock on a directory.

The /proc sweep (openfiles.py) names who holds what, but cannot see every holder: processes
in another PID namespace or of another user, files only memory-mapped, a file opened after
the sweep. The kernel can: `fcntl(F_SETLEASE, F_WRLCK)` succeeds only when no other open
file description of the file exists anywhere (a mapping keeps one), and while it is held,
another process's open() waits for the lease to be broken, which our unlink and close end
at once. So the deleter takes the lease right before the unlink and drops it right after:
no window is left in which a file can be opened and then deleted under its opener.

A lease break signals the lease holder with SIGIO, whose default action ends the process.
A probe made on the main thread sets SIGIO to ignored (`prepare_lease_signal`; a handler
the program set is kept); one made elsewhere while SIGIO keeps its default action takes
no leases, and the sweep alone decides.

Leases need file ownership or CAP_LEASE and are refused by some filesystems (NFS, some
overlay setups) or when fs.leases-enable is 0: the first refusal other than "in use" turns
the probe off for that deleter and is reported once through `LeaseProbe.unavailable`.

systemd's convention for directories: a directory locked with flock(2), shared or
exclusive, is in use with everything below it. `is_dir_locked` probes that with a
non-blocking exclusive lock, released at once: held, it would make our own threads (the
enforcer beside a pass) find each other's directories locked. The convention is for locks
held while a program works in a directory, not for a lock taken in the microseconds
between the probe and an unlink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading

__all__ = [
    "InUse",
    "LeaseProbe",
    "is_dir_locked",
    "lease_signal_problem",
    "prepare_lease_signal",
]

# O_NOFOLLOW: never a swapped-in link; O_NONBLOCK: a swapped-in FIFO does not block the
# open; O_NOCTTY: a terminal never becomes ours. O_NOATIME is added where permitted, so the
# probe does not make the file look recently used.
_PROBE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)
_IN_USE_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})


def lease_signal_problem() -> str | None:
    """Why leases would be unsafe now (SIGIO would end the process), or None."""
    if signal.getsignal(signal.SIGIO) == signal.SIG_DFL:
        return "SIGIO has its default action (ending the process) on a lease break"
    return None


def prepare_lease_signal() -> str | None:
    """Make a lease break harmless: ignore SIGIO if it has its default action.

    Only the main thread may change a signal's action; elsewhere nothing changes and the
    reason leases stay off is returned. A handler the program set is left alone.
    """
    if lease_signal_problem() is None:
        return None
    if threading.current_thread() is not threading.main_thread():
        return lease_signal_problem()
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    return None


class LeaseProbe:
    """Takes a write lease on the file about to be unlinked, or says it is in use.

    `acquire` returns an fd holding the lease (close it after the unlink), None when
    leases are unavailable (the sweep's answer stands), and raises InUse when another
    open file description of the file exists.
    """

    __slots__ = ("_flags", "unavailable")

    def __init__(self) -> None:
        self._flags = _PROBE_FLAGS | _NOATIME
        self.unavailable: str | None = prepare_lease_signal()

    def acquire(self, name: str, dir_fd: int) -> int | None:
        """Open `name` below `dir_fd` and take a write lease on it.

        Raises OSError from the open (the caller maps ENOENT, ELOOP, ...), InUse when the
        file is open elsewhere. The caller checks the fd's identity before unlinking.
        """
        if self.unavailable is not None:
            return None
        fd = self.open(name, dir_fd)
        try:
            held = self.hold(fd)
        except BaseException:
            os.close(fd)
            raise
        if not held:
            os.close(fd)
            return None
        return fd

    def hold(self, fd: int) -> bool:
        """Take the write lease on the open regular file `fd`: True when held, False when
        leases are refused here (for this probe from now on); InUse when open elsewhere.

        Ask it of a regular file only: the kernel refuses a lease on anything else, which
        would turn the probe off for every later file.
        """
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        except OSError as e:
            if e.errno in _IN_USE_ERRNOS:
                raise InUse from e
            self.unavailable = f"leases refused here ({os.strerror(e.errno or 0)})"
            return False
        return True

    def open(self, name: str, dir_fd: int) -> int:
        """Open `name` below `dir_fd` as the probe does (never following a link, never
        blocking, without touching its access time where permitted); OSError as open."""
        try:
            return os.open(name, self._flags, dir_fd=dir_fd)
        except PermissionError:
            if not self._flags & _NOATIME:
                raise
            # O_NOATIME needs ownership or CAP_FOWNER: open as anyone may from now on.
            self._flags &= ~_NOATIME
            return os.open(name, self._flags, dir_fd=dir_fd)


class InUse(Exception):
    """Another open file description of the file exists: the kernel refused the lease."""


def is_dir_locked(fd: int) -> bool:
    """Whether a process holds a BSD lock (shared or exclusive) on the directory `fd`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        # Anything else (ENOLCK on a filesystem without flock) leaves nothing to honour.
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


