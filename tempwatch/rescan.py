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
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from loguru import logger

from tempwatch.registry import Entry, Registry
from tempwatch.scan import FileInfo, ScanResult, scan_tree

__all__ = ["CHUNK_SIZE", "ROUTINE_REASONS", "ReconcileResult", "reconcile", "rescan"]

ROUTINE_REASONS = frozenset({"start", "periodic"})
"""Rescans that are expected; only unexpected ones, or ones that found changes, warn."""

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
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileResult:
    """Make `registry` equal to the regular files of `scan`, as confirmed by `lstat` now.

    Symlinks and `skip_paths` (the service's own files) are never registered. Directories
    the scan could not read lose no entries: every entry missing from the scan is dropped
    only if lstat says its file is gone. `should_stop` is asked between chunks; when it
    answers True the work done so far is kept and the rest is left for the next rescan.
    """
    skip = frozenset(skip_paths)
    on_disk: dict[str, FileInfo] = {
        os.fspath(info.path): info
        for info in scan.files
        if not info.is_symlink and os.fspath(info.path) not in skip
    }
    # Compared without the lock (each lookup is atomic): every discrepancy is rechecked under
    # it, and whatever the handler does meanwhile is either seen or rechecked.
    get = registry.get
    suspects = [path for path, info in on_disk.items() if _differs(get(path), info)]
    with registry.lock:
        registered = registry.times()  # a copy: taken after the scan
    suspects.extend(path for path in registered if path not in on_disk)
    added = removed = resized = 0
    for chunk in _chunks(suspects, chunk_size):
        if should_stop is not None and should_stop():
            break
        with registry.lock:
            for path in chunk:
                outcome = _verify(registry, path, lstat, skip)
                added += outcome == "added"
                removed += outcome == "removed"
                resized += outcome == "resized"
    return ReconcileResult(added, removed, resized)


def rescan(
    registry: Registry,
    base_dir: str,
    *,
    reason: str,
    recursive: bool = True,
    exclude: Sequence[str] = (),
    skip_paths: Collection[str] = (),
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileResult:
    """Scan `base_dir` and reconcile `registry` with it; log one line with what changed.

    The line is a warning (event "rescan") unless the rescan was routine and found the
    registry already right: changes found mean events were missed.
    """
    started = time.monotonic()
    scan = scan_tree(base_dir, recursive=recursive, exclude=exclude, skip_names=skip_paths)
    result = reconcile(registry, scan, skip_paths=skip_paths, should_stop=should_stop)
    quiet = reason == "start" or (reason in ROUTINE_REASONS and not result.changed)
    logger.bind(
        event="rescan",
        reason=reason,
        added=result.added,
        removed=result.removed,
        resized=result.resized,
        errors=len(scan.errors),
        files=len(registry),
        duration_seconds=round(time.monotonic() - started, 4),
    ).log(
        "DEBUG" if quiet else "WARNING",
        "rescan ({}): {} added, {} removed, {} resized; {} files registered",
        reason, result.added, result.removed, result.resized, len(registry),
    )
    return result


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
