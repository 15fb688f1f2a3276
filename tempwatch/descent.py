"""Walking down from base_dir one directory fd at a time: the deleter's footing.

`Cursor` holds an fd on base_dir and one on the directory a batch is working in, and can
prove before each unlink that this directory still hangs below base_dir. `enter_dir` opens
one directory component without following a symlink and refuses another mount. Problems
are raised as `Refused(outcome)`, which the deleter turns into its result.
"""

from __future__ import annotations

import errno
import os
import stat
from enum import Enum

from tempwatch.dirfd import DIR_OPEN_FLAGS, DirIdentity, fd_mount_id, stat_ancestor, up_path
from tempwatch.inuse import is_dir_locked

__all__ = [
    "Base",
    "Cursor",
    "Moved",
    "Outcome",
    "Refused",
    "enter_dir",
    "judge",
    "lstat_at",
    "reason",
    "refusal",
    "same_file",
    "split_below",
]


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
    BASE_CHANGED = "base-changed"  # base_dir is no longer the directory it was checked to be
    NOT_EMPTY = "not-empty"  # remove_empty_dir: the directory has entries
    TOO_RECENT = "too-recent"  # used (a dir: modified) more recently than the age limit allows
    IN_USE = "in-use"  # the kernel refused a write lease: the file is open somewhere
    LOCKED = "locked"  # the file's directory, or one above it, holds a BSD lock (flock)


# Refusals a directory kept open since an earlier file can cause by being renamed or removed.


class Refused(Exception):
    """Ends one deletion early with an outcome; never escapes the deleter."""

    def __init__(self, outcome: Outcome, error: str | None = None) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome
        self.error = error


def reason(e: OSError) -> str:
    # Built without the filename: a name may hold newlines and the error must stay one line.
    return f"[Errno {e.errno}] {e.strerror}"


def refusal(e: OSError, *, swap_errnos: tuple[int, ...] = ()) -> Refused:
    if e.errno == errno.ENOENT:
        return Refused(Outcome.VANISHED)
    if e.errno in swap_errnos:
        return Refused(Outcome.SWAPPED)
    return Refused(Outcome.FAILED, reason(e))


def lstat_at(name: str, dir_fd: int) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as e:
        raise refusal(e) from e


def judge(
    st: os.stat_result,
    base: Base,
    kinds: tuple[int, ...],
    expected: tuple[int, int] | None,
    owner_uid: int | None,
) -> os.stat_result:
    """Whether the file `st` describes may go; raise Refused if not.

    `expected` is the (st_dev, st_ino) the caller judged before, if any.
    """
    # Identity first: a different file in the name's place is a swap, whatever its type.
    if expected is not None and (st.st_dev, st.st_ino) != expected:
        raise Refused(Outcome.SWAPPED)
    if stat.S_IFMT(st.st_mode) not in kinds:
        raise Refused(Outcome.SPECIAL)
    if st.st_dev != base.dev:
        raise Refused(Outcome.OTHER_FS)
    if owner_uid is not None and st.st_uid != owner_uid:
        raise Refused(Outcome.NOT_OWNER)
    return st


def split_below(
    prefix: str, path: str | bytes | os.PathLike[str] | os.PathLike[bytes]
) -> tuple[str, str | None]:
    """Absolute path and its part below `prefix` (base_dir and a slash), or None if not
    strictly below."""
    if isinstance(path, str) and path.startswith(prefix):
        rest = path[len(prefix) :]
        # Already absolute and below base_dir; with no "." component nor empty one it is
        # also normalised, which is what the callers' paths (from scans, events) are.
        if rest and "//" not in rest and "/." not in rest and not rest.startswith("."):
            if not rest.endswith("/"):
                return path, rest
    # fsdecode uses surrogateescape, so non-UTF-8 names round-trip to the same bytes.
    abs_path = os.path.abspath(os.fsdecode(path))
    if abs_path.startswith("//"):
        # POSIX lets "//" mean something else; on Linux it is "/", so compare it as such.
        abs_path = "/" + abs_path.lstrip("/")
    # abspath has already collapsed "..", so a lexical prefix test cannot be escaped.
    if not abs_path.startswith(prefix) or len(abs_path) == len(prefix):
        return abs_path, None
    return abs_path, abs_path[len(prefix) :]


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_dev == b.st_dev and a.st_ino == b.st_ino


class Base:
    """An open fd on base_dir with its identity and (lazily read) mount id."""

    __slots__ = ("dev", "fd", "ino", "_mount_id")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        st = os.fstat(fd)
        self.dev = st.st_dev
        self.ino = st.st_ino
        self._mount_id: int | None = -1

    def mount_id(self) -> int | None:
        # Read once per Base, i.e. once per delete() or delete_many() call, and only when a
        # subdirectory is entered: a deleter kept for the service's lifetime must notice
        # base_dir being mounted over (a self bind mount, say), so it is not cached longer.
        if self._mount_id == -1:
            self._mount_id = fd_mount_id(self.fd)
        return self._mount_id

    def is_identical(self, expected: DirIdentity) -> bool:
        """Whether this is the directory `expected` describes (mount included)."""
        return DirIdentity(self.dev, self.ino, self.mount_id()).same_as(expected)

    def is_other_mount(self, fd: int, st: os.stat_result) -> bool:
        if st.st_dev != self.dev:
            return True
        base_mount = self.mount_id()
        return base_mount is not None and fd_mount_id(fd) != base_mount


class Cursor:
    """base_dir's fd and an fd on the directory last acted in, kept while items share it.

    Keeping a directory open across many unlinks is what makes a batch cheap, and it is
    only safe because `is_below_base` is asked before every unlink: the directory may have
    been renamed out of base_dir since it was entered. Only the innermost fd is kept, never
    one per level, so a batch holds two fds whatever the depth.
    """

    __slots__ = ("base", "depth", "fd", "rel", "up")

    def __init__(self, base_dir: str, expected: DirIdentity | None = None) -> None:
        try:
            fd = os.open(base_dir, DIR_OPEN_FLAGS)
        except OSError as e:
            if expected is not None and e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Refused(Outcome.BASE_CHANGED) from e  # a symlink or file in its place
            raise refusal(e) from e
        try:
            self.base = Base(fd)
            if expected is not None and not self.base.is_identical(expected):
                raise Refused(Outcome.BASE_CHANGED)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.rel = ""  # the directory at `fd`, relative to base_dir ("" for base_dir itself)
        self.depth = 0
        self.up = ""  # "../..", as many as `depth` (for a depth that fits in one path)

    def close(self) -> None:
        self.leave()
        os.close(self.base.fd)

    def leave(self) -> None:
        """Go back to base_dir, closing the subdirectory fd if one is open."""
        fd = self.fd
        if fd != self.base.fd:
            self.fd, self.rel, self.depth, self.up = self.base.fd, "", 0, ""
            os.close(fd)

    def enter(self, rel: str) -> bool:
        """Make `fd` the directory `rel` below base_dir; True if it was kept from before.

        base_dir itself never counts as kept: its fd is the reference, not a descent.
        """
        if rel == self.rel:
            return self.depth > 0
        self.leave()
        if not rel:
            return False
        names = rel.split(os.sep)
        base_fd = fd = self.base.fd
        try:
            for name in names:
                child = enter_dir(self.base, fd, name)
                if fd != base_fd:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != base_fd:
                os.close(fd)
            raise
        self.fd, self.rel, self.depth = fd, rel, len(names)
        self.up = up_path(self.depth)
        return False

    def is_below_base(self) -> bool:
        """Whether the directory at `fd` still hangs `depth` levels below base_dir.

        One fstatat of "../.." (as many as `depth`) against base_dir's identity: it follows
        the directory's real parents, not names, so a rename of it or of any directory above
        it out of base_dir is seen; a rename that keeps it at the same depth below base_dir
        keeps it inside, which is all the check is for.
        """
        if not self.depth:
            return True
        try:
            if self.up:
                st = os.stat(self.up, dir_fd=self.fd, follow_symlinks=False)
            else:
                st = stat_ancestor(self.fd, self.depth)
        except OSError:
            return False  # e.g. ENOENT: the directory itself was removed
        return st.st_ino == self.base.ino and st.st_dev == self.base.dev


class Moved(Exception):
    """The kept directory no longer hangs below base_dir: descend again from base_dir."""




def enter_dir(base: Base, parent_fd: int, name: str) -> int:
    """Open directory `name` below `parent_fd` and return its fd (the caller closes both)."""
    try:
        fd = os.open(name, DIR_OPEN_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused(Outcome.SYMLINK_PARENT) from e
        raise refusal(e) from e
    try:
        # The mount id is read here, once per directory entered, not per file: a batch keeps
        # the fd while its items stay in this directory. Reading the fd's own mount id (rather
        # than a mount table read once per batch) also sees a mount made a moment ago.
        st = os.fstat(fd)
        if base.is_other_mount(fd, st):
            raise Refused(Outcome.OTHER_FS)
        # The fd is a real directory whatever happens next; this catches a swap of the
        # name between the open and now, so that we act on what the name refers to.
        if not same_file(lstat_at(name, parent_fd), st):
            raise Refused(Outcome.SWAPPED)
        # systemd's convention: a program keeps a subtree from being cleaned by holding a
        # BSD lock on its directory. One call per directory entered, never per file.
        if is_dir_locked(fd):
            raise Refused(Outcome.LOCKED)
    except BaseException:
        os.close(fd)
        raise
    return fd
