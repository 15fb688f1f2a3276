"""Paths of any length: opened, stat'ed and listed in pieces shorter than PATH_MAX.

A system call refuses a path of PATH_MAX (4096) bytes or more with ENAMETOOLONG, yet a
directory tree can go deeper than that: `mkdir` relative to a directory fd has no limit.
The scan and the deleter already walk one directory fd at a time; the watcher works with
absolute paths, and these helpers let it reach any depth. A path that fits is used as it is
(one system call, the common case); a longer one is opened in pieces of at most
`_PIECE_BYTES`, each relative to the directory fd of the one before, then the final name is
acted on through that fd. Symlinks in the pieces are followed as the kernel would follow
them in one path, so these answer exactly what the plain call would answer if it could.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MAX_PATH_BYTES", "is_long", "lstat_any", "open_any", "scandir_any", "watchable"]

MAX_PATH_BYTES = 4096
"""Linux's PATH_MAX, terminating NUL included: a path this long fails with ENAMETOOLONG."""

_PIECE_BYTES = 3072  # a piece opened at once: well below PATH_MAX, whatever its names
_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def is_long(path: str | bytes) -> bool:
    """Whether `path` is too long for one system call."""
    return len(os.fsencode(path)) >= MAX_PATH_BYTES


def open_any(path: str | bytes, flags: int) -> int:
    """`os.open(path, flags)` for a path of any length. Raises OSError like os.open."""
    raw = os.fsencode(path)
    if len(raw) < MAX_PATH_BYTES:
        return os.open(raw, flags)
    parent, _, name = raw.rstrip(b"/").rpartition(b"/")
    dir_fd = _open_dir(parent or b"/")
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def lstat_any(path: str | bytes) -> os.stat_result:
    """`os.lstat(path)` for a path of any length. Raises OSError like os.lstat."""
    raw = os.fsencode(path)
    if len(raw) < MAX_PATH_BYTES:
        return os.lstat(raw)
    parent, _, name = raw.rstrip(b"/").rpartition(b"/")
    dir_fd = _open_dir(parent or b"/")
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(dir_fd)


def scandir_any(directory: bytes) -> list[tuple[bytes, bool]]:
    """(path, is a directory, symlinks not followed) of each entry of `directory`."""
    if len(directory) < MAX_PATH_BYTES:
        with os.scandir(directory) as entries:
            return [(e.path, e.is_dir(follow_symlinks=False)) for e in entries]
    fd = open_any(directory, _LIST_FLAGS)
    try:
        with os.scandir(fd) as entries:
            return [(directory + b"/" + os.fsencode(e.name), e.is_dir(follow_symlinks=False))
                    for e in entries]
    finally:
        os.close(fd)


@contextmanager
def watchable(path: bytes, *, follow: bool) -> Iterator[bytes]:
    """A name inotify_add_watch can take for the directory `path`, valid inside the block.

    `path` itself if it fits in one system call; else the /proc/self/fd name of an fd on
    the directory (opened a piece at a time), which the kernel resolves to the directory
    itself. Without `follow`, a symlink as the last name is refused here (ELOOP), as
    IN_DONT_FOLLOW would refuse it; the /proc name must then be watched following it.
    """
    if len(path) < MAX_PATH_BYTES:
        yield path
        return
    fd = open_any(path, _WALK_FLAGS | (0 if follow else os.O_NOFOLLOW))
    try:
        yield f"/proc/self/fd/{fd}".encode()
    finally:
        os.close(fd)


def _open_dir(path: bytes) -> int:
    """An O_PATH fd on the directory `path`, opened a piece at a time."""
    fd: int | None = None
    try:
        for piece in _pieces(path):
            next_fd = os.open(piece, _WALK_FLAGS, dir_fd=fd)
            if fd is not None:
                os.close(fd)
            fd = next_fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    assert fd is not None
    return fd


def _pieces(path: bytes) -> list[bytes]:
    """`path` cut at slashes into relative runs of at most _PIECE_BYTES (the first absolute)."""
    pieces: list[bytes] = []
    current = b"/" if path.startswith(b"/") else b""
    for name in path.split(b"/"):
        if not name:
            continue
        if current and len(current) + len(name) + 1 > _PIECE_BYTES:
            pieces.append(current)
            current = b""
        current = current + b"/" + name if current and current != b"/" else current + name
    if current:
        pieces.append(current)
    return pieces
