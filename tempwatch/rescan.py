"""Reconciling rescan: after it, the registry holds exactly the regular files on disk.

Events can be lost (an inotify queue overflow, a directory inotify could not watch, a
dead observer). A rescan recovers them: files on disk that are not registered are added,
with their mtime as registration time (so a file found late is never younger than it
is); entries whose file is gone are dropped; sizes and inodes are refreshed, and a changed
inode is a new file under an old name.

The event handler keeps running during a rescan, so the scan is already stale when it is
compared with the registry. Each discrepancy is therefore checked again with one lstat,
while the registry lock is held, and acted on only if the lstat confirms it: a file created
after the scan passed its directory is not dropped, one deleted after is not added. The
lock is taken per chunk of paths so the handler is never held up for long.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

from tempwatch.registry import Entry, Registry
from tempwatch.scan import FileInfo, ScanResult

__all__ = ["CHUNK_SIZE", "ReconcileResult", "reconcile"]

CHUNK_SIZE = 1000
"""Discrepancies verified per hold of the registry lock."""


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What a reconcile changed: files added (new, or a new inode), removed, resized."""

    added: int = 0
    removed: int = 0
    resized: int = 0

    @property
    def changed(self) -> int:
        """How many entries the rescan had to fix."""
        return self.added + self.removed + self.resized


def reconcile(
    registry: Registry,
    scan: ScanResult,
    *,
    lstat: Callable[[str], os.stat_result] = os.lstat,
    skip_paths: Collection[str] = (),
    chunk_size: int = CHUNK_SIZE,
) -> ReconcileResult:
    """Make `registry` equal to the regular files of `scan`, as confirmed by `lstat` now.

    Symlinks and `skip_paths` (the service's own files) are never registered. Directories
    the scan could not read lose no entries: every entry missing from the scan is dropped
    only if lstat says its file is gone.
    """
    skip = frozenset(skip_paths)
    on_disk: dict[str, FileInfo] = {
        os.fspath(info.path): info
        for info in scan.files
        if not info.is_symlink and os.fspath(info.path) not in skip
    }
    # Snapshot after the scan: whatever the handler did meanwhile is in it or is rechecked.
    with registry.lock:
        registered = dict(registry.oldest_first())
    suspects = [path for path, info in on_disk.items() if _differs(registered.get(path), info)]
    suspects.extend(path for path in registered if path not in on_disk)
    added = removed = resized = 0
    for chunk in _chunks(suspects, chunk_size):
        with registry.lock:
            for path in chunk:
                outcome = _verify(registry, path, lstat, skip)
                added += outcome == "added"
                removed += outcome == "removed"
                resized += outcome == "resized"
    return ReconcileResult(added, removed, resized)


def _differs(entry: Entry | None, info: FileInfo) -> bool:
    return entry is None or entry.ino != info.ino or entry.size_bytes != info.size_bytes


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def _verify(
    registry: Registry, path: str, lstat: Callable[[str], os.stat_result], skip: frozenset[str]
) -> str:
    """Bring one path in line with what lstat says now. Call with the registry lock held."""
    try:
        st = None if path in skip else lstat(path)
    except OSError:
        st = None
    entry = registry.get(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        if entry is None:
            return ""
        registry.discard(path)
        return "removed"
    if entry is None or entry.ino != st.st_ino:
        # add() keeps the age of an entry whose inode was never known (0).
        return "added" if registry.add(path, st.st_mtime, st.st_size, st.st_ino) else "resized"
    if entry.size_bytes != st.st_size:
        registry.update_size(path, st.st_size)
        return "resized"
    return ""
