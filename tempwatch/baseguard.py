"""base_dir's identity while the service runs: noticed when it changes, adopted again when safe.

At start the service verifies base_dir (a real directory at its resolved path, locked by
this instance) and records its identity: device, inode and mount id. A directory is then
cleaned only while it is still that very directory. `BaseGuard.poll` compares, and when
base_dir has become something else it says what, once:

- gone (removed, or renamed away);
- a symlink (to wherever it points) or not a directory;
- another mount over it (a bind mount, or another filesystem): its files are never cleaned,
  as mounts below base_dir are never entered;
- another directory in its place (removed and recreated, say).

While changed, the service cleans nothing there, and /healthz answers unhealthy with the
reason. A directory that later stands at base_dir is adopted when it passes the checks made
at start: a real directory (not a symlink, its path still resolving to itself), on the same
filesystem and mount as the one verified at start; the service then takes the instance lock
in it again, restarts the observer and rescans. The original directory coming back (a
mount over it removed) is simply resumed.
"""

from __future__ import annotations

import errno
import os
import stat
from enum import Enum

from tempwatch.dirfd import DirIdentity, dir_identity
from tempwatch.lazylog import logger

__all__ = ["BaseGuard", "BaseState", "describe_change"]


class BaseState(Enum):
    """What `BaseGuard.poll` found."""

    SAME = "same"  # still the directory verified at start (or last adopted)
    CHANGED = "changed"  # it just became something else: stop watching and cleaning
    STILL_CHANGED = "still-changed"  # nothing to adopt yet
    RETURNED = "returned"  # the very directory adopted before is back (a mount over it gone)
    ADOPTABLE = "adoptable"  # another directory there passes the start checks


def describe_change(path: str, expected: DirIdentity) -> str | None:
    """What the directory at `path` has become, on one line; None if it is still `expected`."""
    try:
        now = dir_identity(path)
    except OSError as e:
        return _unopenable(path, e)
    if now.same_as(expected):
        return None
    return _mount_change(now, expected) or (
        f"was replaced by another directory (inode {now.ino}, was {expected.ino})"
    )


def _mount_change(now: DirIdentity, before: DirIdentity) -> str | None:
    if now.dev != before.dev:
        return f"has another filesystem mounted over it (device {now.dev:#x})"
    if now.mount_id is not None and before.mount_id is not None and (
        now.mount_id != before.mount_id
    ):
        return f"has another mount over it (mount id {now.mount_id})"
    return None


def _unopenable(path: str, e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "is gone"
    try:
        st = os.lstat(path)
    except OSError:
        return "is gone"
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"is now a symlink (to {target!r})"
    if not stat.S_ISDIR(st.st_mode):
        return "is no longer a directory"
    return f"cannot be opened ({e.strerror})"


class BaseGuard:
    """Tracks whether `path` is still the directory verified at start.

    `verify_start()` records the identity; `poll()` says what changed; `adopted(...)` and
    `refused(...)` report what the service did about it. Called from one thread only (the
    service's monitor), save `problem` and `identity`, which any thread may read.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity: DirIdentity | None = None
        self.problem: str | None = None
        self._start: DirIdentity | None = None
        self._start_real = path

    def verify_start(self) -> DirIdentity:
        """Record the identity of the directory the service starts on. Raises OSError."""
        self._start = self.identity = dir_identity(self.path)
        self._start_real = os.path.realpath(self.path)
        self.problem = None
        return self.identity

    def poll(self) -> BaseState:
        """Compare base_dir with the identity in force; log a change once."""
        expected = self.identity
        if expected is None:
            return BaseState.SAME
        if self.problem is None:
            change = describe_change(self.path, expected)
            if change is None:
                return BaseState.SAME
            self.problem = change
            logger.bind(event="base-dir-changed", path=self.path, change=change).error(
                "base_dir {} {}: it is no longer the directory checked at start; nothing is "
                "cleaned there until a directory that passes the start checks stands there",
                self.path, change,
            )
            return BaseState.CHANGED
        if describe_change(self.path, expected) is None:
            return BaseState.RETURNED
        refusal = self._adoption_refusal()
        if refusal is None:
            return BaseState.ADOPTABLE
        self.refused(refusal)
        return BaseState.STILL_CHANGED

    def adopted(self, identity: DirIdentity, *, returned: bool) -> None:
        """The service adopted the directory now at base_dir (or resumed the old one)."""
        was = self.problem
        self.identity = identity
        self.problem = None
        logger.bind(event="base-dir-adopted", path=self.path, was=was).warning(
            "base_dir {} {}; cleaning resumes", self.path,
            "is the directory checked at start again" if returned
            else "was recreated and passes the start checks: adopted",
        )

    def refused(self, reason: str) -> None:
        """base_dir stays unadopted for `reason`; logged when the reason changes."""
        if reason == self.problem:
            return
        self.problem = reason
        logger.bind(event="base-dir-refused", path=self.path, reason=reason).error(
            "base_dir {}: not adopted: {}", self.path, reason
        )

    def _adoption_refusal(self) -> str | None:
        """Why the directory at base_dir now cannot be adopted; None if it can."""
        start = self._start
        assert start is not None
        try:
            now = dir_identity(self.path)
        except OSError as e:
            return _unopenable(self.path, e)
        real = os.path.realpath(self.path)
        if real != self._start_real:
            return f"now resolves to {real}"
        return _mount_change(now, start)
