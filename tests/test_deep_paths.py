"""Directories deeper than PATH_MAX: stat'ed, listed, watched and cleaned like any other."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import wait_for

from tempwatch.config import CleanupConfig, Config, WatchConfig
from tempwatch.longpath import MAX_PATH_BYTES, is_long, lstat_any, open_any, scandir_any
from tempwatch.service import Service

HOUR = 3600.0
NAME = "d" * 200  # 21 of these make a path over 4096 bytes


@contextmanager
def deep_chain(top: Path, levels: int) -> Iterator[tuple[str, int]]:
    """Make `levels` nested directories under `top` through directory fds (mkdir by path
    stops at PATH_MAX); yield the bottom's path and an fd on it."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    path = str(top)
    try:
        for _ in range(levels):
            os.mkdir(NAME, dir_fd=fd)
            child = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            path += "/" + NAME
        yield path, fd
    finally:
        os.close(fd)


def write_at(dir_fd: int, name: str, data: bytes = b"x") -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_the_helpers_reach_below_path_max(base: Path) -> None:
    with deep_chain(base, 24) as (bottom, fd):
        write_at(fd, "file", b"abc")
        os.mkdir("sub", dir_fd=fd)
        path = bottom + "/file"
        assert is_long(path) and len(path) > MAX_PATH_BYTES
        with pytest.raises(OSError) as plain:
            os.lstat(path)
        assert plain.value.errno == errno.ENAMETOOLONG
        st = lstat_any(path)
        assert st.st_size == 3 and st.st_ino == os.stat("file", dir_fd=fd).st_ino
        listed = sorted(scandir_any(os.fsencode(bottom)))
        assert listed == [(os.fsencode(path), False), (os.fsencode(bottom + "/sub"), True)]
        opened = open_any(path, os.O_RDONLY)
        try:
            assert os.read(opened, 10) == b"abc"
        finally:
            os.close(opened)
        with pytest.raises(FileNotFoundError):
            lstat_any(bottom + "/missing")
    assert lstat_any(str(base)).st_ino == base.stat().st_ino  # short paths as they are
    assert scandir_any(os.fsencode(base)) == [(os.fsencode(f"{base}/{NAME}"), True)]


def test_a_file_below_path_max_is_registered_by_its_event_and_expires(base: Path) -> None:
    config = Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=HOUR),  # no rescan to help
        cleanup=CleanupConfig(max_age_seconds=0.5, interval_seconds=0.1),
    )
    with Service(config) as service:
        with deep_chain(base, 24) as (bottom, fd):
            write_at(fd, "deep-file")
            path = bottom + "/deep-file"
            wait_for(lambda: path in service.registry, message="the deep file registered")
            watcher = service.watcher
            assert watcher is not None and watcher.registered_total == 1, "by its event"
            # Removed by the deleter (which walks one directory fd at a time) once expired.
            wait_for(lambda: "deep-file" not in os.listdir(fd), message="the deep file expired")
            wait_for(lambda: path not in service.registry, message="its entry dropped")
            # Renamed within the deep directory: the entry follows.
            write_at(fd, "before")
            wait_for(lambda: bottom + "/before" in service.registry, message="registered")
            os.rename("before", "after", src_dir_fd=fd, dst_dir_fd=fd)
            wait_for(lambda: bottom + "/after" in service.registry, message="the rename")
