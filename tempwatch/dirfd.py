"""Small system-call helpers for working below a directory file descriptor."""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

__all__ = [
    "DIR_OPEN_FLAGS",
    "DirIdentity",
    "dir_identity",
    "fd_mount_id",
    "has_entries",
    "stat_ancestor",
    "up_path",
    "zero_data",
]

DIR_OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""Flags for opening a directory component: never through a symlink, never a non-directory."""

_CHUNK_BYTES = 1 << 20
# ".." hops resolved by one fstatat: 3 bytes each keeps the path well under PATH_MAX (4096).
_MAX_HOPS = 1000
_PATH_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


class DirIdentity(NamedTuple):
    """What makes a directory the one that was checked: device, inode and mount id.

    The mount id (None where /proc is missing) tells a bind mount of the same filesystem,
    or the same directory bind-mounted over itself, from the directory underneath.
    """

    dev: int
    ino: int
    mount_id: int | None

    @classmethod
    def of_fd(cls, fd: int, st: os.stat_result | None = None) -> DirIdentity:
        """The identity of the directory open at `fd` (`st`: its fstat, if already read)."""
        st = os.fstat(fd) if st is None else st
        return cls(st.st_dev, st.st_ino, fd_mount_id(fd))

    def same_as(self, other: DirIdentity) -> bool:
        """Same device and inode, and the same mount where both mount ids are known."""
        if (self.dev, self.ino) != (other.dev, other.ino):
            return False
        return self.mount_id is None or other.mount_id is None or self.mount_id == other.mount_id


def dir_identity(path: str) -> DirIdentity:
    """The identity of the directory at `path`, never through a symlink in its last name.

    Raises OSError: ENOENT if it is gone, ELOOP if it is a symlink, ENOTDIR if not a directory.
    """
    fd = os.open(path, DIR_OPEN_FLAGS)
    try:
        return DirIdentity.of_fd(fd)
    finally:
        os.close(fd)


def fd_mount_id(fd: int) -> int | None:
    """The id of the mount `fd` lives on (Linux /proc/self/fdinfo), or None if unavailable.

    st_dev alone cannot tell a bind mount of the same filesystem from a plain directory.
    """
    try:
        info_fd = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(info_fd, 4096)
    except OSError:
        return None
    finally:
        os.close(info_fd)
    # "mnt_id:" is never the first line ("pos:" is), so searching for it after a newline
    # cannot match inside another field.
    start = data.find(b"\nmnt_id:")
    if start < 0:
        return None
    end = data.find(b"\n", start + 8)
    return int(data[start + 8 : end if end >= 0 else len(data)])


def stat_ancestor(fd: int, levels: int) -> os.stat_result:
    """stat of the directory `levels` levels above the directory open at `fd`.

    The walk goes through ".." only, never through a name, so it reports where the directory
    hangs now, whatever was renamed since it was opened. Raises OSError (ENOENT if the
    directory has been removed).
    """
    up_fd = fd
    try:
        while levels > _MAX_HOPS:
            next_fd = os.open(up_path(_MAX_HOPS), _PATH_DIR_FLAGS, dir_fd=up_fd)
            if up_fd != fd:
                os.close(up_fd)
            up_fd = next_fd
            levels -= _MAX_HOPS
        return os.stat(up_path(levels) or ".", dir_fd=up_fd, follow_symlinks=False)
    finally:
        if up_fd != fd:
            os.close(up_fd)


def up_path(levels: int) -> str:
    """The relative path "../..", `levels` components long, or "" if too long for one path."""
    return "/".join([".."] * levels) if levels <= _MAX_HOPS else ""


def zero_data(fd: int, size_bytes: int) -> None:
    """Overwrite [0, size_bytes) with zeros, skipping holes so sparse files stay sparse."""
    zeros = memoryview(bytes(min(_CHUNK_BYTES, size_bytes)))
    offset = 0
    while offset < size_bytes:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size_bytes)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return  # only a hole remains
            if e.errno != errno.EINVAL:
                raise
            start, end = offset, size_bytes  # no SEEK_DATA support: the whole range is data
        while start < end:
            written = os.pwrite(fd, zeros[: min(_CHUNK_BYTES, end - start)], start)
            if written <= 0:
                raise OSError(errno.EIO, "short write while overwriting")
            start += written
        offset = end


def has_entries(dir_fd: int) -> bool:
    with os.scandir(dir_fd) as it:
        return next(it, None) is not None
