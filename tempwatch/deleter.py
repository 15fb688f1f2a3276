"""The only code in tempwatch that unlinks: every deletion, from every entry point, goes here.

`Deleter.delete` removes one regular file or symlink strictly below `base_dir` and reports
what happened as a `DeleteResult`; it never raises for a per-file problem. Safety rests on
walking down from `base_dir` one directory fd at a time instead of trusting a path string:

- the path is normalised lexically (`os.path.abspath`, never `realpath`), and anything not
  strictly below `base_dir` is refused before the filesystem is touched;
- each directory component is opened with `O_NOFOLLOW | O_DIRECTORY` relative to its parent
  fd, so a symlink (or a directory swapped for one mid-pass) is never entered;
- a component on another filesystem or another mount (bind mounts of the same filesystem
  included, detected through the mount id in /proc/self/fdinfo) is not entered;
- the final name is judged with `lstat` through the parent fd and judged again right before
  the unlink; if its (st_dev, st_ino) changed, the name now refers to another file and is
  left alone.

Known limits: without /proc the mount-id check is skipped and only st_dev is compared; Linux
has no unlink-by-fd, so a rename between the last check and `unlinkat` (a window of one
system call) cannot be excluded, only made small.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from tempwatch.dirfd import DIR_OPEN_FLAGS, fd_mount_id, has_entries, zero_data

__all__ = [
    "DeleteResult",
    "Deleter",
    "FileId",
    "Outcome",
    "PathArg",
]

PathArg: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes]"
"""A path as str, bytes (any name, UTF-8 or not) or a path-like object."""


# O_NONBLOCK and O_NOCTTY: if a FIFO or terminal is swapped in after the lstat, the open must
# neither hang waiting for a reader nor acquire a controlling terminal; fstat then rejects it.
_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_FILE_TYPES = (stat.S_IFREG, stat.S_IFLNK)


class Outcome(str, Enum):
    """What `Deleter.delete` or `Deleter.remove_empty_dir` did with one path."""

    DELETED = "deleted"  # unlinked (or, in a dry run, would have been)
    VANISHED = "vanished"  # no such file any more; not an error
    SWAPPED = "swapped"  # the name now refers to another file than the one judged
    OUTSIDE = "outside"  # not strictly below base_dir (base_dir itself included)
    SYMLINK_PARENT = "symlink-parent"  # a directory component is a symlink or not a directory
    OTHER_FS = "other-filesystem"  # a component is on another filesystem or mount
    SPECIAL = "special-file"  # FIFO, socket, device, or the wrong kind (dir vs file)
    NOT_OWNER = "not-owner"  # owner_uid set and the file belongs to someone else
    FAILED = "failed"  # an OSError such as EPERM; DeleteResult.error says which
    NOT_EMPTY = "not-empty"  # remove_empty_dir: the directory has entries
    TOO_RECENT = "too-recent"  # remove_empty_dir: modified less than older_than_seconds ago


@dataclass(frozen=True, slots=True)
class FileId:
    """Identity of the file that was judged (for example by a scan), checked before unlinking."""

    dev: int
    ino: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The outcome for one path; `size_bytes` is st_size from the last lstat before the unlink."""

    path: str
    outcome: Outcome
    size_bytes: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the file was deleted (or, in a dry run, would have been)."""
        return self.outcome is Outcome.DELETED


class _Refused(Exception):
    """Ends one deletion early with an outcome; never escapes this module."""

    def __init__(self, outcome: Outcome, error: str | None = None) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome
        self.error = error


def _reason(e: OSError) -> str:
    # Built without the filename: a name may hold newlines and the error must stay one line.
    return f"[Errno {e.errno}] {e.strerror}"


def _refusal(e: OSError, *, swap_errnos: tuple[int, ...] = ()) -> _Refused:
    if e.errno == errno.ENOENT:
        return _Refused(Outcome.VANISHED)
    if e.errno in swap_errnos:
        return _Refused(Outcome.SWAPPED)
    return _Refused(Outcome.FAILED, _reason(e))


def _lstat(name: str, dir_fd: int) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as e:
        raise _refusal(e) from e


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_dev == b.st_dev and a.st_ino == b.st_ino


class _Base:
    """An open fd on base_dir with its device and (lazily read) mount id."""

    __slots__ = ("dev", "fd", "_mount_id")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.dev = os.fstat(fd).st_dev
        self._mount_id: int | None = -1

    def mount_id(self) -> int | None:
        if self._mount_id == -1:
            self._mount_id = fd_mount_id(self.fd)
        return self._mount_id

    def is_other_mount(self, fd: int, st: os.stat_result) -> bool:
        if st.st_dev != self.dev:
            return True
        base_mount = self.mount_id()
        return base_mount is not None and fd_mount_id(fd) != base_mount


class Deleter:
    """Deletes files strictly below one directory, safely under concurrent renames.

    `base_dir` is resolved once with realpath; it must exist (else FileNotFoundError) and be a
    directory (else NotADirectoryError). Paths given to `delete` must lie below the resolved
    form. With `secure_delete`, a regular file's data is overwritten with zeros before the
    unlink (skipped when other hard links still share the data). With `owner_uid`, only files
    owned by that uid are deleted. With `dry_run`, every check runs but nothing is written or
    unlinked. This class does not log and does not check for open files: callers do.
    """

    __slots__ = ("_base_dir", "_prefix", "dry_run", "owner_uid", "secure_delete")

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        secure_delete: bool = False,
        owner_uid: int | None = None,
        dry_run: bool = False,
    ) -> None:
        real = os.path.realpath(os.fspath(base_dir))
        if not stat.S_ISDIR(os.stat(real).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "base_dir is not a directory", real)
        self._base_dir = real
        self._prefix = real if real.endswith(os.sep) else real + os.sep
        self.secure_delete = secure_delete
        self.owner_uid = owner_uid
        self.dry_run = dry_run

    @property
    def base_dir(self) -> str:
        """The resolved directory below which this deleter acts."""
        return self._base_dir

    def delete(self, path: PathArg, expected: FileId | None = None) -> DeleteResult:
        """Unlink the regular file or symlink at `path` (a symlink's target is never touched).

        `expected` is the identity the caller judged (from a scan or an event); if the name now
        refers to another file the result is SWAPPED and nothing is removed. Relative paths are
        taken relative to the current directory. Raises only TypeError for a non-path argument.
        """

        def unlink_file(base: _Base, dir_fd: int, name: str) -> int:
            return self._unlink_file(base, dir_fd, name, expected)

        return self._act(path, unlink_file)

    def delete_many(
        self, items: Iterable[tuple[PathArg, FileId | None]]
    ) -> Iterator[DeleteResult]:
        """`delete` for each (path, expected) in turn, yielding each result as it is done.

        Files directly in base_dir share one fd on base_dir, which saves three system calls
        a file in the common flat temp directory. Files in subdirectories take the full
        descent each time: an fd kept on a subdirectory would follow it if it were moved
        out of base_dir.
        """
        base: _Base | None = None
        try:
            for path, expected in items:
                abs_path, parts = self._split(path)
                if parts is None or len(parts) > 1 or "\0" in abs_path:
                    yield self.delete(path, expected)
                    continue
                if base is None:
                    try:
                        base, _ = self._open_parent([])
                    except _Refused as r:
                        yield DeleteResult(abs_path, r.outcome, error=r.error)
                        continue
                yield self._act_at(abs_path, base, base.fd, parts[0], expected)
        finally:
            if base is not None:
                os.close(base.fd)

    def _act_at(
        self, abs_path: str, base: _Base, dir_fd: int, name: str, expected: FileId | None
    ) -> DeleteResult:
        try:
            size_bytes = self._unlink_file(base, dir_fd, name, expected)
        except _Refused as r:
            return DeleteResult(abs_path, r.outcome, error=r.error)
        except OSError as e:
            return DeleteResult(abs_path, Outcome.FAILED, error=_reason(e))
        return DeleteResult(abs_path, Outcome.DELETED, size_bytes=size_bytes)

    def remove_empty_dir(
        self, path: PathArg, older_than_seconds: float, now: float
    ) -> DeleteResult:
        """Remove the directory at `path` if it is empty and its mtime is at least
        `older_than_seconds` before `now`. Never base_dir; same descent rules as `delete`.

        Emptiness is left to rmdir itself (atomic); in a dry run the directory is listed.
        """

        def rmdir(base: _Base, dir_fd: int, name: str) -> int:
            return self._rmdir(base, dir_fd, name, now - older_than_seconds)

        return self._act(path, rmdir)

    def _act(self, path: PathArg, action: Callable[[_Base, int, str], int]) -> DeleteResult:
        """Check `path` lexically, descend to its parent, and apply `action` to the last name."""
        abs_path, parts = self._split(path)
        if parts is None:
            return DeleteResult(abs_path, Outcome.OUTSIDE)
        if "\0" in abs_path:
            return DeleteResult(abs_path, Outcome.FAILED, error="path contains a NUL byte")
        try:
            base, dir_fd = self._open_parent(parts[:-1])
            try:
                size_bytes = action(base, dir_fd, parts[-1])
            finally:
                os.close(dir_fd)
        except _Refused as r:
            return DeleteResult(abs_path, r.outcome, error=r.error)
        except OSError as e:  # e.g. EIO from an fstat: still a per-file problem, never raised
            return DeleteResult(abs_path, Outcome.FAILED, error=_reason(e))
        return DeleteResult(abs_path, Outcome.DELETED, size_bytes=size_bytes)

    def _split(self, path: PathArg) -> tuple[str, list[str] | None]:
        """Absolute path and its components below base_dir, or None if not strictly below."""
        if isinstance(path, str) and path.startswith(self._prefix):
            rest = path[len(self._prefix) :]
            # Already absolute and below base_dir; with no "." component nor empty one it is
            # also normalised, which is what the callers' paths (from scans, events) are.
            if rest and "//" not in rest and "/." not in rest and not rest.startswith("."):
                if not rest.endswith("/"):
                    return path, rest.split(os.sep)
        # fsdecode uses surrogateescape, so non-UTF-8 names round-trip to the same bytes.
        abs_path = os.path.abspath(os.fsdecode(path))
        if abs_path.startswith("//"):
            # POSIX lets "//" mean something else; on Linux it is "/", so compare it as such.
            abs_path = "/" + abs_path.lstrip("/")
        # abspath has already collapsed "..", so a lexical prefix test cannot be escaped.
        if not abs_path.startswith(self._prefix) or len(abs_path) == len(self._prefix):
            return abs_path, None
        return abs_path, abs_path[len(self._prefix) :].split(os.sep)

    def _open_parent(self, dirs: list[str]) -> tuple[_Base, int]:
        """Open base_dir, then each of `dirs` in turn; return the base info and the last fd."""
        try:
            fd = os.open(self._base_dir, DIR_OPEN_FLAGS)
        except OSError as e:
            raise _refusal(e) from e
        try:
            base = _Base(fd)
        except BaseException:
            os.close(fd)
            raise
        for name in dirs:
            fd = _enter(base, fd, name)  # consumes the parent fd, whatever happens
        return base, fd

    def _judge(
        self,
        base: _Base,
        dir_fd: int,
        name: str,
        kinds: tuple[int, ...],
        expected: FileId | None = None,
    ) -> os.stat_result:
        """lstat the name and decide whether it may go; raise _Refused if not."""
        st = _lstat(name, dir_fd)
        # Identity first: a different file in the name's place is a swap, whatever its type.
        if expected is not None and (st.st_dev, st.st_ino) != (expected.dev, expected.ino):
            raise _Refused(Outcome.SWAPPED)
        if stat.S_IFMT(st.st_mode) not in kinds:
            raise _Refused(Outcome.SPECIAL)
        if st.st_dev != base.dev:
            raise _Refused(Outcome.OTHER_FS)
        if self.owner_uid is not None and st.st_uid != self.owner_uid:
            raise _Refused(Outcome.NOT_OWNER)
        return st

    def _unlink_file(self, base: _Base, dir_fd: int, name: str, expected: FileId | None) -> int:
        judged = self._judge(base, dir_fd, name, _FILE_TYPES, expected)
        final = judged
        if (
            self.secure_delete
            and not self.dry_run
            and stat.S_ISREG(judged.st_mode)
            and judged.st_nlink == 1
        ):
            self._overwrite(base, dir_fd, name, judged)
            # The overwrite took time: judge the name again right before the unlink.
            final = _lstat(name, dir_fd)
            if not _same(final, judged):
                raise _Refused(Outcome.SWAPPED)
        if self.dry_run:
            return final.st_size
        # Inherent window: Linux cannot unlink by fd, so a rename landing between the lstat
        # above and this unlinkat would still be removed. The window is one system call, and
        # whoever can rename inside this directory could unlink that name themselves.
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError as e:
            raise _refusal(e, swap_errnos=(errno.EISDIR,)) from e
        return final.st_size

    def _overwrite(self, base: _Base, dir_fd: int, name: str, judged: os.stat_result) -> None:
        """Zero the data of the judged regular file through a fresh, verified fd.

        Zeroing in place does not defeat copy-on-write filesystems or SSD remapping; it keeps
        the data from the next reader of those blocks on ordinary filesystems.
        """
        try:
            fd = os.open(name, _WRITE_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            raise _refusal(e, swap_errnos=(errno.ELOOP, errno.ENXIO, errno.EISDIR)) from e
        try:
            st = os.fstat(fd)
            if not _same(st, judged) or not stat.S_ISREG(st.st_mode):
                raise _Refused(Outcome.SWAPPED)
            if base.is_other_mount(fd, st):
                raise _Refused(Outcome.OTHER_FS)  # a file bind-mounted over the name
            if st.st_nlink != 1:
                return  # a hard link appeared since the lstat: its data is not ours to destroy
            zero_data(fd, st.st_size)
            os.fsync(fd)
        except OSError as e:
            raise _refusal(e) from e
        finally:
            os.close(fd)

    def _rmdir(self, base: _Base, dir_fd: int, name: str, newest_mtime: float) -> int:
        judged = self._judge(base, dir_fd, name, (stat.S_IFDIR,))
        try:
            fd = os.open(name, DIR_OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            raise _refusal(e, swap_errnos=(errno.ELOOP, errno.ENOTDIR)) from e
        try:
            st = os.fstat(fd)
            if not _same(st, judged):
                raise _Refused(Outcome.SWAPPED)
            if base.is_other_mount(fd, st):
                raise _Refused(Outcome.OTHER_FS)
            if st.st_mtime > newest_mtime:
                raise _Refused(Outcome.TOO_RECENT)
            if self.dry_run and has_entries(fd):
                raise _Refused(Outcome.NOT_EMPTY)
        except OSError as e:
            raise _refusal(e) from e
        finally:
            os.close(fd)
        if not _same(_lstat(name, dir_fd), judged):
            raise _Refused(Outcome.SWAPPED)
        if self.dry_run:
            return 0
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise _Refused(Outcome.NOT_EMPTY) from e
            raise _refusal(e, swap_errnos=(errno.ENOTDIR,)) from e
        return 0


def _enter(base: _Base, parent_fd: int, name: str) -> int:
    """Open directory `name` below `parent_fd` (which this closes) and return its fd."""
    try:
        try:
            fd = os.open(name, DIR_OPEN_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _Refused(Outcome.SYMLINK_PARENT) from e
            raise _refusal(e) from e
        try:
            st = os.fstat(fd)
            if base.is_other_mount(fd, st):
                raise _Refused(Outcome.OTHER_FS)
            # The fd is a real directory whatever happens next; this catches a swap of the
            # name between the open and now, so that we act on what the name refers to.
            if not _same(_lstat(name, parent_fd), st):
                raise _Refused(Outcome.SWAPPED)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(parent_fd)
    return fd
