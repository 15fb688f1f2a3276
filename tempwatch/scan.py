"""Walks base_dir and reports the files and directories in it, without leaving it.

Used by `tempwatch clean`, `status`, the service's initial scan and its reconciling rescans.
The walk goes from directory fd to directory fd (`O_NOFOLLOW | O_DIRECTORY` relative to the
parent), so a symlink is reported as a file but never followed, and a directory swapped for a
symlink mid-walk is not entered. Directories on another filesystem or another mount are not
entered either (listed in `skipped_mounts`). FIFOs, sockets and devices are not reported.

The walk is iterative and holds at most one fd per directory that still has subdirectories
left to open, so a long chain of nested directories costs two fds, not one per level.
It is a snapshot of a moving tree: the deleter re-checks everything before acting on it.
"""

from __future__ import annotations

import gc
import os
import re
import stat
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from tempwatch.dirfd import DIR_OPEN_FLAGS, fd_mount_id
from tempwatch.globs import GlobMatcher, compile_globs

if TYPE_CHECKING:
    from tempwatch.deleter import FileId

__all__ = [
    "collector_paused","DirInfo", "FileInfo", "ScanResult", "scan_tree"]

# Plain module constants: read in the hot loop, where `stat.S_IFREG` would cost an extra lookup.
_S_IFMT = 0o170000
_S_IFREG = stat.S_IFREG
_S_IFLNK = stat.S_IFLNK
_S_IFDIR = stat.S_IFDIR


class FileInfo(NamedTuple):
    """A regular file or a symlink found by the scan (symlinks are deletable, not followed).

    A named tuple rather than a frozen dataclass: a scan builds one per file, and a start
    over a million files felt the difference (about 0.4 against 1 µs each).
    """

    path: str  # absolute; non-UTF-8 names via surrogateescape, as os.fsdecode gives
    size_bytes: int
    mtime: float
    dev: int
    ino: int
    uid: int
    is_symlink: bool
    ctime: float
    atime: float

    @property
    def file_id(self) -> FileId:
        """The identity to pass to `Deleter.delete(expected=...)`."""
        from tempwatch.deleter import FileId  # not loaded to scan alone (`status`)

        return FileId(self.dev, self.ino)


@dataclass(frozen=True, slots=True)
class DirInfo:
    """A subdirectory of base_dir that was entered; `is_empty`: it had no entries at all."""

    path: str
    mtime: float
    is_empty: bool


@dataclass(slots=True)
class ScanResult:
    """Everything one walk found. `dirs` is deepest first, so children precede parents."""

    files: list[FileInfo]
    dirs: list[DirInfo]
    errors: list[tuple[str, str]]
    skipped_mounts: list[str]


def scan_tree(
    base_dir: str | os.PathLike[str],
    *,
    recursive: bool = True,
    exclude: Sequence[str] = (),
    skip_names: Collection[str] = (),
    on_files: Callable[[list[FileInfo]], None] | None = None,
) -> ScanResult:
    """Walk `base_dir` (resolved with realpath, as the Deleter does) and report what is in it.

    `exclude` takes the patterns of `is_excluded`; an excluded directory is not entered.
    `skip_names` are absolute paths never reported (the service's own log and lock files).
    With `recursive=False` only base_dir's own entries are reported and `dirs` stays empty.
    Raises OSError only if base_dir itself cannot be opened; a bad entry below it lands in
    `errors` and an entry that vanishes mid-walk is skipped silently.

    `on_files` is given each directory's files as soon as it is listed, and `files` stays
    empty: a start-up registers them directory by directory, so that the scan's objects
    for one directory are freed before the next is listed and their memory is reused
    (collected all, they would be freed in between the kept paths, and stay resident).
    """
    walk = _Walk(compile_globs(exclude), _normalise(skip_names), recursive, on_files)
    base = os.path.realpath(os.fspath(base_dir))
    base_fd = os.open(base, DIR_OPEN_FLAGS)
    try:
        walk.base_dev = os.fstat(base_fd).st_dev
        walk.mount_points = _mount_points_below(base)
        if walk.mount_points is None:
            walk.base_mount = fd_mount_id(base_fd)
    except BaseException:
        os.close(base_fd)
        raise
    walk.run(base_fd, base.rstrip("/"))
    walk.dirs.sort(key=_depth, reverse=True)
    return ScanResult(
        files=walk.files,
        dirs=[info for _, info in walk.dirs],
        errors=walk.errors,
        skipped_mounts=walk.skipped_mounts,
    )


class _Parent:
    """An open directory fd shared by its pending subdirectories; closed after the last one."""

    __slots__ = ("fd", "pending")

    def __init__(self, fd: int, pending: int) -> None:
        self.fd = fd
        self.pending = pending


# A subdirectory waiting to be opened: parent, name, absolute path, relative path, depth, lstat.
_Pending = tuple[_Parent, str, str, str, int, os.stat_result]


class _Walk:
    """State of one scan_tree call; `run` takes ownership of the base fd."""

    def __init__(
        self,
        matcher: GlobMatcher,
        skip: frozenset[str],
        recursive: bool,
        on_files: Callable[[list[FileInfo]], None] | None = None,
    ) -> None:
        self.names = matcher.names.fullmatch if matcher.names is not None else None
        self.paths = matcher.paths.fullmatch if matcher.paths is not None else None
        self.skip = skip
        self.recursive = recursive
        self.on_files = on_files
        self.base_dev = 0
        self.base_mount: int | None = None
        self.mount_points: frozenset[str] | None = None
        self.files: list[FileInfo] = []
        self.dirs: list[tuple[int, DirInfo]] = []
        self.errors: list[tuple[str, str]] = []
        self.skipped_mounts: list[str] = []
        self.stack: list[_Pending] = []

    def run(self, base_fd: int, base_path: str) -> None:
        try:
            self._take(base_fd, base_path, "", 0)
            while self.stack:
                self._visit(*self.stack.pop())
        finally:
            # Only reached with pending entries if something raised (e.g. KeyboardInterrupt).
            for parent in {id(item[0]): item[0] for item in self.stack}.values():
                os.close(parent.fd)
            self.stack.clear()

    def _visit(
        self, parent: _Parent, name: str, path: str, rel: str, depth: int, lst: os.stat_result
    ) -> None:
        try:
            fd = os.open(name, DIR_OPEN_FLAGS, dir_fd=parent.fd)
        except FileNotFoundError:
            return
        except OSError as e:
            self.errors.append((path, _reason(e)))
            return
        finally:
            parent.pending -= 1
            if parent.pending == 0:
                os.close(parent.fd)
        # No fstat to compare with `lst`: a directory renamed into this name since the listing
        # is still a real directory (O_NOFOLLOW) on this filesystem (rename cannot cross one,
        # nor move a mount point), so entering it is as safe as entering the one listed.
        try:
            if self._is_mount_point(fd, path):
                os.close(fd)  # e.g. a bind mount of base_dir's own filesystem
                self.skipped_mounts.append(path)
                return
        except BaseException:
            os.close(fd)
            raise
        is_empty = self._take(fd, path, rel + "/", depth)
        self.dirs.append((depth, DirInfo(path, lst.st_mtime, is_empty)))

    def _is_mount_point(self, fd: int, path: str) -> bool:
        # st_dev cannot tell a bind mount of the same filesystem from a directory. The mount
        # table read once per scan can (a mount made during the scan is missed; the deleter
        # checks again per component); without it, ask /proc for each directory's mount id.
        if self.mount_points is not None:
            return path in self.mount_points
        return self.base_mount is not None and fd_mount_id(fd) != self.base_mount

    def _take(self, fd: int, path: str, rel_prefix: str, depth: int) -> bool:
        """List the directory open at `fd` (owning it from here on); True if it was empty."""
        try:
            subdirs, is_empty = self._list(fd, path + "/", rel_prefix)
        except BaseException:
            os.close(fd)
            raise
        if self.on_files is not None and self.files:
            files, self.files = self.files, []
            try:
                self.on_files(files)
            except BaseException:
                os.close(fd)
                raise
        if not subdirs:
            os.close(fd)
            return is_empty
        parent = _Parent(fd, len(subdirs))
        push = self.stack.append
        for name, lst in reversed(subdirs):
            push((parent, name, path + "/" + name, rel_prefix + name, depth + 1, lst))
        return is_empty

    def _list(
        self, fd: int, prefix: str, rel_prefix: str
    ) -> tuple[list[tuple[str, os.stat_result]], bool]:
        # The hot loop of every scan: keep per-entry work to one lstat and a few comparisons.
        add_file = self.files.append
        new_info = tuple.__new__  # FileInfo's own __new__ is Python code, twice the cost
        skip = self.skip
        names = self.names
        paths = self.paths
        base_dev = self.base_dev
        subdirs: list[tuple[str, os.stat_result]] = []
        is_empty = True
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    is_empty = False
                    name = entry.name
                    if (names is not None and names(name)) or (
                        paths is not None and paths(rel_prefix + name)
                    ):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        self.errors.append((prefix + name, _reason(e)))
                        continue
                    kind = st.st_mode & _S_IFMT
                    if kind == _S_IFREG or kind == _S_IFLNK:
                        path = prefix + name
                        if path not in skip:
                            add_file(
                                new_info(
                                    FileInfo,
                                    (
                                        path,
                                        st.st_size,
                                        st.st_mtime,
                                        st.st_dev,
                                        st.st_ino,
                                        st.st_uid,
                                        kind == _S_IFLNK,
                                        st.st_ctime,
                                        st.st_atime,
                                    ),
                                )
                            )
                    elif kind == _S_IFDIR:
                        if st.st_dev != base_dev:
                            self.skipped_mounts.append(prefix + name)
                        elif self.recursive:
                            subdirs.append((name, st))
        except OSError as e:  # the listing itself failed part way: keep what was read
            self.errors.append((prefix.rstrip("/") or "/", _reason(e)))
        return subdirs, is_empty


def _mount_points_below(base: str) -> frozenset[str] | None:
    """Mount points strictly below `base` per /proc/self/mountinfo, or None if unreadable."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return None
    prefix = base.rstrip("/") + "/"
    found = set()
    for line in table.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            # Field 5 is the mount point, with space, tab, newline and backslash as octal escapes.
            point = os.fsdecode(_OCTAL_ESCAPE.sub(_unescape, fields[4]))
            if point.startswith(prefix):
                found.add(point)
    return frozenset(found)


_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape(match: re.Match[bytes]) -> bytes:
    return bytes([int(match.group(1), 8)])


def _depth(item: tuple[int, DirInfo]) -> int:
    return item[0]


def _reason(e: OSError) -> str:
    return f"[Errno {e.errno}] {e.strerror}"


def _normalise(skip_names: Collection[str]) -> frozenset[str]:
    """Absolute forms of `skip_names`, both as given and with the directory resolved."""
    out: set[str] = set()
    for name in skip_names:
        absolute = os.path.abspath(os.fsdecode(name))
        head, tail = os.path.split(absolute)
        out.add(absolute)
        out.add(os.path.join(os.path.realpath(head), tail))
    return frozenset(out)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection for the duration (as it was before, afterwards).

    A scan and what is built from it (a reconcile, a cleanup plan) make a few objects per
    file and free them only at the end, so each of the collector's full sweeps would walk
    every one of them for nothing to collect: about a tenth of a start-up over a million
    files, or of a 100,000-file clean. Cycles made meanwhile are collected once it is on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
