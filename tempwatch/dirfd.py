"""Small system-call helpers for working below a directory file descriptor."""

from __future__ import annotations

import errno
import os

__all__ = ["DIR_OPEN_FLAGS", "fd_mount_id", "has_entries", "zero_data"]

DIR_OPEN_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""Flags for opening a directory component: never through a symlink, never a non-directory."""

_CHUNK_BYTES = 1 << 20


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
    for line in data.splitlines():
        if line.startswith(b"mnt_id:"):
            return int(line[7:])
    return None


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
