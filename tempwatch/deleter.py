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
- the final name is judged once (type, device, owner, the (st_dev, st_ino) the caller saw,
  age by last use), from the stat of what will be unlinked: with the lease probe on, the
  `fstat` of the fd it is opened as (see below), else an `lstat` through the parent fd. A
  name now referring to another file than the caller's is left alone (SWAPPED);
- a batch keeps the fd of the directory it is working in while consecutive files share it;
  right before each unlink, one `fstatat` of "../.." proves that directory still hangs
  below base_dir, at the depth it was entered at. If it does not, the path is walked again;
- in use, as the kernel sees it (inuse.py): the name is opened without following links
  (O_NOFOLLOW), blocking (O_NONBLOCK) or taking a terminal (O_NOCTTY), judged by that fd,
  and only a regular file is then leased, right before the unlink; the kernel refuses the
  lease when any other process has the file open or mapped (IN_USE). The lease is held
  across the unlink, so an open by another process in between waits and then finds the
  name gone. A name that cannot be opened so (a symlink, a socket) is judged by lstat and
  never leased. A directory holding a BSD lock is not entered (LOCKED), nor below it.

Judging by the opened fd replaced an lstat before the open (a system call per file less).
That lstat kept a non-regular file swapped in after the caller's scan from being opened;
now it is opened, refused (SWAPPED, or SPECIAL without an identity) and closed, never
leased (a refused lease turns the probe off) nor unlinked. The open can do no more than
the old lstat-to-open window allowed: a FIFO opens without blocking, a socket refuses, no
terminal is acquired, and only root makes device nodes (test_deleter: swapped specials).

Known limits: without /proc the mount-id check is skipped and only st_dev is compared.
Linux has no unlink-by-fd and no way to hold a rename off, so one window stays open: a
directory (or one above it) renamed out of base_dir after the `fstatat` of "../.." that
proves it still hangs below base_dir and before the `unlinkat` that follows it (the very
next system call) takes the file in hand with it, and that file is removed outside
base_dir. It is always the file that was judged, inside base_dir, one system call earlier
(same device and inode); the next file of the batch sees the move and is not touched, and
no other file can be reached. (An adversarial run hit it 3 times in 20 with a rename racing
a pass, 0.6-1.1 ms after the rename.) Whoever can rename that directory could unlink the
file as well.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Generator, Iterable
from typing import NamedTuple, TypeAlias, TypeVar

from tempwatch.age import AgeCheck
from tempwatch.descent import (
    Base,
    Cursor,
    Moved,
    Outcome,
    Refused,
    judge,
    lstat_at,
    reason,
    refusal,
    same_file,
    split_below,
)
from tempwatch.dirfd import DIR_OPEN_FLAGS, DirIdentity, has_entries
from tempwatch.inuse import InUse, LeaseProbe, is_dir_locked
from tempwatch.shred import zero_judged_file

__all__ = [
    "AgeCheck",
    "DeleteItem",
    "DeleteResult",
    "Deleter",
    "FileId",
    "Outcome",
    "PathArg",
]

PathArg: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes]"
"""A path as str, bytes (any name, UTF-8 or not) or a path-like object."""


_FILE_TYPES = (stat.S_IFREG, stat.S_IFLNK)

_T = TypeVar("_T")


_RETRY = (Outcome.VANISHED, Outcome.SWAPPED)


class FileId(NamedTuple):
    """Identity of the file that was judged (for example by a scan), checked before unlinking.

    FileId, DeleteResult and the policy's Decision are named tuples, not frozen dataclasses:
    a clean makes one of each per file, and a frozen dataclass costs about four times as
    much to build (its __init__ sets each field through object.__setattr__).
    """

    dev: int
    ino: int


DeleteItem: TypeAlias = (
    "tuple[PathArg, FileId | None] | tuple[PathArg, FileId | None, AgeCheck | None]"
)
"""(path, expected identity) or (path, expected identity, age check) for `delete_many`."""


class DeleteResult(NamedTuple):
    """The outcome for one path; `size_bytes` is st_size from the last lstat before the unlink.

    `last_used_at` is set with TOO_RECENT: the file's last use per the deleter's lstat.
    """

    path: str
    outcome: Outcome
    size_bytes: int = 0
    error: str | None = None
    last_used_at: float | None = None

    @property
    def ok(self) -> bool:
        """True when the file was deleted (or, in a dry run, would have been)."""
        return self.outcome is Outcome.DELETED


class _UsedSince(Refused):
    """The file was used after the age check's cutoff: it is younger than judged."""

    def __init__(self, last_used_at: float) -> None:
        super().__init__(Outcome.TOO_RECENT)
        self.last_used_at = last_used_at


def _check_use(judged: os.stat_result, check: AgeCheck | None) -> None:
    # Age by last use from the stat just taken: no extra system call per file.
    if check is not None:
        used = check.used_since(judged)
        if used is not None:
            raise _UsedSince(used)


class Deleter:
    """Deletes files strictly below one directory, safely under concurrent renames.

    `base_dir` is resolved once with realpath; it must exist (else FileNotFoundError) and be a
    directory (else NotADirectoryError). Paths given to `delete` must lie below the resolved
    form. With `secure_delete`, a regular file's data is overwritten with zeros before the
    unlink (skipped when other hard links still share the data). With `owner_uid`, only files
    owned by that uid are deleted. With `dry_run`, every check runs but nothing is written or
    unlinked. With `identity`, base_dir must still be that very directory (device, inode,
    mount) each time it is opened, else every result is BASE_CHANGED: a directory mounted
    over base_dir, or put in its place, is never cleaned. With `lease_probe` (the default)
    a regular file is deleted only under a write lease; where leases are unavailable
    `lease_unavailable` says why, and the caller's /proc sweep is the only open-file check.
    This class does not log.
    """

    __slots__ = (
        "_base_dir", "_lease", "_prefix", "dry_run", "identity", "owner_uid", "secure_delete",
    )  # fmt: skip

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        secure_delete: bool = False,
        owner_uid: int | None = None,
        dry_run: bool = False,
        identity: DirIdentity | None = None,
        lease_probe: bool = True,
    ) -> None:
        real = os.path.realpath(os.fspath(base_dir))
        if not stat.S_ISDIR(os.stat(real).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "base_dir is not a directory", real)
        self._base_dir = real
        self._prefix = real if real.endswith(os.sep) else real + os.sep
        self.secure_delete = secure_delete
        self.owner_uid = owner_uid
        self.dry_run = dry_run
        self.identity = identity
        self._lease = LeaseProbe() if lease_probe else None

    @property
    def base_dir(self) -> str:
        """The resolved directory below which this deleter acts."""
        return self._base_dir

    @property
    def lease_unavailable(self) -> str | None:
        """Why files are deleted without a lease (only the sweep checked them), or None."""
        if self._lease is None:
            return "the lease probe is off"
        return self._lease.unavailable

    def delete(
        self, path: PathArg, expected: FileId | None = None, age_check: AgeCheck | None = None
    ) -> DeleteResult:
        """Unlink the regular file or symlink at `path` (a symlink's target is never touched).

        `expected` is the identity the caller judged (from a scan or an event); if the name now
        refers to another file the result is SWAPPED and nothing is removed. With `age_check`,
        a file whose lstat shows it used after the cutoff is kept: TOO_RECENT, with its
        `last_used_at`. Relative paths are taken relative to the current directory. Raises
        only TypeError for a non-path argument.
        """
        results = self.delete_many([(path, expected, age_check)])
        try:
            return next(results)
        finally:
            results.close()

    def delete_many(self, items: Iterable[DeleteItem]) -> Generator[DeleteResult, None, None]:
        """`delete` for each (path, expected[, age_check]), yielding each result as it is done.

        One fd on base_dir serves the whole batch, and the fd on a subdirectory is kept while
        consecutive items are in it: sort the items by directory to enter each one once.
        Before each unlink the kept directory is checked to still hang below base_dir.
        """
        cursor: Cursor | None = None
        try:
            for item in items:
                path, expected = item[0], item[1]
                check = item[2] if len(item) == 3 else None
                abs_path, rel = split_below(self._prefix, path)
                if rel is None:
                    yield DeleteResult(abs_path, Outcome.OUTSIDE)
                    continue
                if cursor is None:
                    try:
                        cursor = Cursor(self._base_dir, self.identity)
                    except Refused as r:
                        yield DeleteResult(abs_path, r.outcome, error=r.error)
                        continue
                    except OSError as e:
                        yield DeleteResult(abs_path, Outcome.FAILED, error=reason(e))
                        continue
                yield self._act(cursor, abs_path, rel, self._unlink_file, (expected, check))
        finally:
            if cursor is not None:
                cursor.close()

    def remove_empty_dir(
        self, path: PathArg, older_than_seconds: float, now: float
    ) -> DeleteResult:
        """Remove the directory at `path` if it is empty and its mtime is at least
        `older_than_seconds` before `now`. Never base_dir; same descent rules as `delete`.

        Emptiness is left to rmdir itself (atomic); in a dry run the directory is listed.
        """
        abs_path, rel = split_below(self._prefix, path)
        if rel is None:
            return DeleteResult(abs_path, Outcome.OUTSIDE)
        try:
            cursor = Cursor(self._base_dir, self.identity)
        except Refused as r:
            return DeleteResult(abs_path, r.outcome, error=r.error)
        except OSError as e:
            return DeleteResult(abs_path, Outcome.FAILED, error=reason(e))
        try:
            return self._act(cursor, abs_path, rel, self._rmdir, now - older_than_seconds)
        finally:
            cursor.close()

    def _act(
        self,
        cursor: Cursor,
        abs_path: str,
        rel: str,
        action: Callable[[Cursor, str, _T], int],
        arg: _T,
    ) -> DeleteResult:
        """Go to the parent of `rel` and apply `action` to its last name; never raises OSError."""
        if "\0" in rel:
            return DeleteResult(abs_path, Outcome.FAILED, error="path contains a NUL byte")
        parent, _, name = rel.rpartition(os.sep)
        kept = False
        try:
            try:
                kept = cursor.enter(parent)
                size_bytes = action(cursor, name, arg)
            except (Moved, Refused) as e:
                # A kept directory may have been moved, removed or renamed since it was
                # entered: before reporting the name gone or swapped, walk the path afresh.
                if not kept or (isinstance(e, Refused) and e.outcome not in _RETRY):
                    raise
                cursor.leave()
                cursor.enter(parent)
                size_bytes = action(cursor, name, arg)
        except Moved:
            cursor.leave()
            return DeleteResult(abs_path, Outcome.SWAPPED)
        except _UsedSince as u:
            return DeleteResult(abs_path, u.outcome, last_used_at=u.last_used_at)
        except Refused as r:
            return DeleteResult(abs_path, r.outcome, error=r.error)
        except OSError as e:  # e.g. EIO from an fstat: still a per-file problem, never raised
            return DeleteResult(abs_path, Outcome.FAILED, error=reason(e))
        return DeleteResult(abs_path, Outcome.DELETED, size_bytes)  # positional: quicker

    def _unlink_file(
        self, cursor: Cursor, name: str, arg: tuple[FileId | None, AgeCheck | None]
    ) -> int:
        expected, check = arg
        lease = self._lease
        if lease is not None and lease.unavailable is None and not self.secure_delete:
            try:
                fd = lease.open(name, cursor.fd)
            except OSError:
                pass  # a symlink (ELOOP), a socket, gone, denied: judged by its lstat below
            else:
                return self._unlink_opened(cursor, name, fd, expected, check)
        base, dir_fd = cursor.base, cursor.fd
        judged = judge(lstat_at(name, dir_fd), base, _FILE_TYPES, expected, self.owner_uid)
        _check_use(judged, check)
        final = judged
        if (
            self.secure_delete
            and not self.dry_run
            and stat.S_ISREG(judged.st_mode)
            and judged.st_nlink == 1
        ):
            if not cursor.is_below_base():
                raise Moved  # never write to a file outside base_dir either
            self._overwrite(base, dir_fd, name, judged)
            # The overwrite took time: judge the name again right before the unlink.
            final = lstat_at(name, dir_fd)
            if not same_file(final, judged):
                raise Refused(Outcome.SWAPPED)
        lease_fd = self._take_lease(name, dir_fd, final)
        try:
            return self._unlink_name(cursor, name, final)
        finally:
            if lease_fd is not None:
                os.close(lease_fd)  # drops the lease; an opener waiting on it goes on

    def _unlink_opened(
        self, cursor: Cursor, name: str, fd: int, expected: FileId | None, check: AgeCheck | None
    ) -> int:
        """Judge the file by the fd it was opened as (the file itself, where an lstat is only
        what the name referred to a moment before), lease it and unlink its name."""
        try:
            judged = judge(os.fstat(fd), cursor.base, _FILE_TYPES, expected, self.owner_uid)
            _check_use(judged, check)
            # Only a regular file gets here (judge refuses the rest): a lease asked of
            # anything else would be refused and turn the probe off.
            try:
                if self._lease is not None:
                    self._lease.hold(fd)  # False: no leases here from now on, sweep only
            except InUse:
                raise Refused(Outcome.IN_USE) from None
            return self._unlink_name(cursor, name, judged)
        finally:
            os.close(fd)  # drops the lease; an opener waiting on it goes on

    def _unlink_name(self, cursor: Cursor, name: str, final: os.stat_result) -> int:
        # Last check, also in a dry run so that it reports what a real run would do. It
        # comes last so that nothing separates it from the unlinkat: a directory moved
        # out of base_dir is the graver race. Inherent window: Linux cannot unlink by fd,
        # so a file renamed onto this name since the judging stat (a few system calls ago)
        # would still be removed; whoever can rename inside this directory could unlink that
        # name anyway.
        if not cursor.is_below_base():
            raise Moved
        if self.dry_run:
            return final.st_size
        try:
            os.unlink(name, dir_fd=cursor.fd)
        except OSError as e:
            raise refusal(e, swap_errnos=(errno.EISDIR,)) from e
        return final.st_size

    def _take_lease(self, name: str, dir_fd: int, judged: os.stat_result) -> int | None:
        """An fd holding a write lease on the judged regular file, or None without leases."""
        lease = self._lease
        if lease is None or lease.unavailable is not None or not stat.S_ISREG(judged.st_mode):
            return None
        try:
            fd = lease.open(name, dir_fd)
        except OSError as e:
            raise refusal(e, swap_errnos=(errno.ELOOP, errno.ENXIO, errno.EISDIR)) from e
        try:
            st = os.fstat(fd)
            # Checked before the lease: a FIFO swapped in would have it refused, probe off.
            if not same_file(st, judged) or not stat.S_ISREG(st.st_mode):
                raise Refused(Outcome.SWAPPED)
            if lease.hold(fd):
                return fd
        except InUse:
            os.close(fd)
            raise Refused(Outcome.IN_USE) from None
        except OSError as e:
            os.close(fd)
            raise refusal(e) from e
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def _overwrite(self, base: Base, dir_fd: int, name: str, judged: os.stat_result) -> None:
        zero_judged_file(base, dir_fd, name, judged)  # a method: tests race a swap around it

    def _rmdir(self, cursor: Cursor, name: str, newest_mtime: float) -> int:
        base, dir_fd = cursor.base, cursor.fd
        judged = judge(lstat_at(name, dir_fd), base, (stat.S_IFDIR,), None, self.owner_uid)
        try:
            fd = os.open(name, DIR_OPEN_FLAGS, dir_fd=dir_fd)
        except OSError as e:
            raise refusal(e, swap_errnos=(errno.ELOOP, errno.ENOTDIR)) from e
        try:
            self._judge_dir(base, fd, judged, newest_mtime)
        except OSError as e:
            raise refusal(e) from e
        finally:
            os.close(fd)
        if not same_file(lstat_at(name, dir_fd), judged):
            raise Refused(Outcome.SWAPPED)
        if not cursor.is_below_base():
            raise Moved
        if self.dry_run:
            return 0
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise Refused(Outcome.NOT_EMPTY) from e
            raise refusal(e, swap_errnos=(errno.ENOTDIR,)) from e
        return 0

    def _judge_dir(
        self, base: Base, fd: int, judged: os.stat_result, newest_mtime: float
    ) -> None:
        """Whether the directory open at `fd` may be removed; raise Refused if not."""
        st = os.fstat(fd)
        if not same_file(st, judged):
            raise Refused(Outcome.SWAPPED)
        if base.is_other_mount(fd, st):
            raise Refused(Outcome.OTHER_FS)
        if st.st_mtime > newest_mtime:
            raise Refused(Outcome.TOO_RECENT)
        if is_dir_locked(fd):
            raise Refused(Outcome.LOCKED)
        if self.dry_run and has_entries(fd):
            raise Refused(Outcome.NOT_EMPTY)
