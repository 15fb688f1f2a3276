"""What changed in a registry while a rescan looked at the disk.

A rescan opens a window (`Registry.tracking`) before it scans and closes it after its
reconcile; every update the event handler makes meanwhile records its path here (or, for
a whole subtree moved or removed, the subtree's prefix). A path not recorded is as the
scan saw it; a recorded one is checked again (tempwatch.rescan).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Touched"]


class Touched:
    """The paths changed by `Registry` updates while a `tracking` window was open."""

    __slots__ = ("paths", "trees")

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self.trees: set[str] = set()  # "dir/" prefixes of discard_tree/move_tree

    def __contains__(self, path: object) -> bool:
        if path in self.paths:
            return True
        if not self.trees or not isinstance(path, str):
            return False
        # One lookup per ancestor, however many trees an `rm -rf` touched.
        end = path.find("/")
        while end >= 0:
            if path[: end + 1] in self.trees:
                return True
            end = path.find("/", end + 1)
        return False

    def __len__(self) -> int:
        return len(self.paths) + len(self.trees)

    def among(self, paths: Iterable[str]) -> set[str]:
        """Those of `paths` touched so far (cheap while nothing was)."""
        if self.trees:
            return {path for path in paths if path in self}
        return self.paths.intersection(paths) if self.paths else set()
