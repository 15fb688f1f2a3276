"""One service per base_dir: it is created 0700 if missing, and claimed with an flock'ed lock file
that holds the owner's pid.

The lock is the kernel's flock, so it is released when the process dies, even by kill -9:
a stale file never blocks a restart. The file is opened without following symlinks and
must be a regular file with a single link owned by us, because base_dir is often a
world-writable temp directory where anyone could plant a symlink or a hard link to a file
we must not truncate. On release the file is unlinked while still locked; an acquirer
that locked a file since unlinked retries on the new one, so two services can never both
believe they hold the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from tempwatch.errors import AlreadyRunningError, TempwatchError
from tempwatch.lazylog import logger

__all__ = ["BASE_DIR_MODE", "LOCK_FILE_NAME", "SOCKET_NAME", "InstanceLock", "ensure_base_dir"]

LOCK_FILE_NAME = ".tempwatch.lock"
SOCKET_NAME = ".tempwatch.sock"
"""The running service's health socket in base_dir (tempwatch.healthsocket): named here,
beside the lock, so that what lists tempwatch's own files need not import the socket code."""
BASE_DIR_MODE = 0o700
"""Mode of a base_dir the service creates: nobody else can plant files in it."""

# Held read-only: a file open for writing would keep base_dir's filesystem from being
# remounted read-only (EBUSY) for as long as the service runs. flock needs no write access.
_OPEN_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_ATTEMPTS = 5


def ensure_base_dir(base_dir: str) -> None:
    """Create base_dir (mode 0700) if it is missing; its parent must exist."""
    try:
        os.mkdir(base_dir, mode=BASE_DIR_MODE)
    except FileExistsError:
        return
    except OSError as e:
        raise TempwatchError(f"cannot create base_dir {base_dir}: {e.strerror}") from e
    logger.bind(event="created-base-dir", path=base_dir).info(
        "created {} (mode {:o})", base_dir, BASE_DIR_MODE
    )


class InstanceLock:
    """The lock that makes one service the only one watching `base_dir`.

    Use as a context manager or call `acquire()` / `release()`. `acquire` raises
    AlreadyRunningError naming the pid of the holder, or TempwatchError if the lock file
    cannot be used safely.
    """

    def __init__(self, base_dir: str | os.PathLike[str], *, pid: int | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.path = self.base_dir / LOCK_FILE_NAME
        self._pid = os.getpid() if pid is None else pid
        self._fd: int | None = None

    @property
    def is_held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write our pid into the lock file."""
        if self._fd is not None:
            return
        for _ in range(_ATTEMPTS):
            fd = self._open()
            try:
                if self._lock(fd) and self._still_linked(fd):
                    self._claim(fd)
                    self._fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # locked a file a releasing holder had just unlinked: retry
        raise TempwatchError(f"could not take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        """Remove the lock file and drop the lock. Safe to call when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._still_linked(fd):
                os.unlink(self.path)
        except OSError:
            pass  # a leftover file is harmless: the lock is the flock, not the file
        finally:
            os.close(fd)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- internals ----------------------------------------------------------------

    def _open(self) -> int:
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise TempwatchError(f"lock file {self.path} is a symlink: refusing it") from e
            raise TempwatchError(f"cannot open lock file {self.path}: {e.strerror}") from e
        st = os.fstat(fd)
        problem = _unsafe(st)
        if problem:
            os.close(fd)
            raise TempwatchError(f"lock file {self.path} {problem}: refusing it")
        return fd

    def _lock(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            who = f"pid {holder}" if holder else "pid unknown"
            raise AlreadyRunningError(
                f"another tempwatch ({who}) already watches {self.base_dir}"
            ) from None
        return True

    def _still_linked(self, fd: int) -> bool:
        try:
            on_disk = os.lstat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def _claim(self, fd: int) -> None:
        """Write our pid into the locked file, through a short-lived fd on that very file."""
        try:
            out = os.open(self.path, _WRITE_FLAGS)
        except OSError as e:
            raise TempwatchError(f"cannot write lock file {self.path}: {e.strerror}") from e
        try:
            if not _same_file(os.fstat(out), os.fstat(fd)):
                raise TempwatchError(f"lock file {self.path} was replaced while locking it")
            os.ftruncate(out, 0)
            os.pwrite(out, f"{self._pid}\n".encode(), 0)
        finally:
            os.close(out)


def _unsafe(st: os.stat_result) -> str:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by us"
    if st.st_nlink != 1:
        return "has other hard links"
    return ""


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
