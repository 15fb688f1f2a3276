"""Reconciling rescan: after it, the registry holds exactly the regular files and symlinks on disk.

Events can be lost (an inotify queue overflow, a directory inotify could not watch, a
dead observer). A rescan recovers them: files on disk that are not registered are added,
aged from their last use as their timestamps tell it (`tempwatch.age`: a file found late
is never younger than it is); entries whose file is gone are dropped; sizes and inodes are
refreshed, and a changed inode is a new file under an old name.

The event handler keeps running during a rescan, so the scan is already stale when it is
compared with the registry. `rescan` therefore opens a `Registry.tracking` window before
the scan and keeps it open through the reconcile: a path that no event touched meanwhile
is as the scan saw it (its lstat is as good as a new one), and a registered path the scan
did not find in a directory it listed completely is gone. Only touched paths, and entries
the scan cannot vouch for (a directory it could not read, an excluded name), are checked
again with one lstat. Every change is made under the registry lock, taken per chunk of
paths so the handler is never held up for long; a path the handler touches after the
check is then the handler's to settle.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tempwatch.age import DEFAULT_AGE_BY, AgeBy, scan_time_getter, unwatched_last_used_at
from tempwatch.globs import is_excluded
from tempwatch.lazylog import logger
from tempwatch.longpath import lstat_any
from tempwatch.registry import Registry
from tempwatch.rules import RuleSet
from tempwatch.scan import FileInfo, ScanResult, collector_paused, scan_tree
from tempwatch.touched import Touched

__all__ = ["CHUNK_SIZE", "ROUTINE_REASONS", "ReconcileResult", "Scanner", "reconcile", "rescan"]

ROUTINE_REASONS = frozenset({"start", "periodic"})
"""Rescans that are expected; only unexpected ones, or ones that found changes, warn."""

CHUNK_SIZE = 1000
"""Discrepancies settled per hold of the registry lock."""

Scanner = Callable[..., ScanResult]
"""`scan_tree` or a stand-in with its signature."""

_Lstat = Callable[[str], os.stat_result]
_T = TypeVar("_T")


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


@dataclass(slots=True)
class _Counts:
    added: int = 0
    removed: int = 0
    resized: int = 0

    def note(self, outcome: str) -> None:
        if outcome == "added":
            self.added += 1
        elif outcome == "removed":
            self.removed += 1
        elif outcome == "resized":
            self.resized += 1


def reconcile(
    registry: Registry,
    scan: ScanResult,
    *,
    touched: Touched | None = None,
    base_dir: str | None = None,
    exclude: Sequence[str] = (),
    lstat: _Lstat = lstat_any,
    skip_paths: Collection[str] = (),
    chunk_size: int = CHUNK_SIZE,
    should_stop: Callable[[], bool] | None = None,
    age_by: AgeBy = DEFAULT_AGE_BY,
    rules: RuleSet | None = None,
) -> ReconcileResult:
    """Make `registry` equal to the regular files of `scan`.

    `touched`: the paths events changed since before the scan began (see
    `Registry.tracking`). A discrepancy on any other path is settled with what the scan saw;
    a touched one is checked again with `lstat` now. Without `touched`, every discrepancy is
    checked. An entry missing from the scan is dropped unchecked only if it is untouched and
    its directory was listed completely: `base_dir` (the scan's resolved root) or one the
    scan entered, without an error, the name not matching `exclude`. So directories the scan
    could not read lose no entries.

    A file added is aged from its last use per `age_by`, or per its rule's with `rules`
    (registration unknown: its ctime stands in); files a `keep` rule governs are never
    registered. `skip_paths` (the service's own files) are never registered. `should_stop`
    is asked between chunks; when it answers True the work done so far is kept and the rest
    is left for the next rescan.
    """
    skip = frozenset(skip_paths)
    files, governed, is_kept = _governed(scan.files, age_by, rules)
    registered = len(registry)  # after the scan: none at a start, so no ghosts either
    # Compared under the lock a chunk at a time (an entry's figures read as one), every
    # change decided under it again; a path an event changed since is in `touched`.
    if registered:
        matches = registry.matches
        missing = []
        for chunk in _chunks(files, chunk_size):
            with registry.lock:
                missing += [
                    i for i in chunk if not (i.path in skip or matches(i.path, i.size_bytes, i.ino))
                ]
    else:  # the start: whatever an event registered since is in `touched`
        missing = [i for i in files if i.path not in skip] if skip else list(files)
    # Oldest first: added in time order, they extend the registry's order instead of all
    # landing in its side table of late entries.
    used_at = _time_getter(missing, age_by, rules)
    missing.sort(key=used_at)
    ghosts: list[str] = []
    if registered:
        on_disk = {i.path for i in files if i.path not in skip}
        # Paths registered since by events are in `touched`: checked again before dropped.
        ghosts = registry.paths_not_in(on_disk)
        del on_disk
    counts = _Counts()
    for infos in _chunks(missing, chunk_size):
        if should_stop is not None and should_stop():
            return _result(counts)
        _settle_missing(registry, infos, touched, used_at, counts, lstat, skip, governed, is_kept)
    vouched = _Vouched(scan, base_dir, exclude, skip)
    for paths in _chunks(ghosts, chunk_size):
        if should_stop is not None and should_stop():
            break
        with registry.lock:
            for path in paths:
                if touched is None or path in touched or not vouched(path):
                    counts.note(_verify(registry, path, lstat, skip, governed, is_kept))
                elif registry.discard(path) is not None:
                    counts.removed += 1
    return _result(counts)


def _settle_missing(
    registry: Registry,
    infos: list[FileInfo],
    touched: Touched | None,
    used_at: Callable[[FileInfo], float],
    counts: _Counts,
    lstat: _Lstat,
    skip: frozenset[str],
    governed: Callable[[str], AgeBy | None],
    is_kept: Callable[[str], bool],
    *,
    directory: str | None = None,
) -> None:
    """Register files the registry lacks (or holds with another size or inode), under one
    hold of the lock; those an event touched since the scan are checked with lstat.
    They come oldest first, or with `directory`: all in it, in no time order, inside the
    rescan's window (given to the registry by name, in columns)."""
    with registry.lock:
        unsure = None if touched is None else touched.among(i.path for i in infos)
        if unsure is None:
            unsure = {i.path for i in infos}
        sure = [i for i in infos if i.path not in unsure] if unsure else infos
        if directory is None:
            added = registry.add_many((i.path, used_at(i), i.size_bytes, i.ino) for i in sure)
        else:
            cut = len(directory) + 1
            added = registry.load_directory(
                directory, [i.path[cut:] for i in sure], [used_at(i) for i in sure],
                [i.size_bytes for i in sure], [i.ino for i in sure],
            )  # fmt: skip
        # Each of them differed from its entry: if not new, it was resized (or its inode
        # learnt).
        counts.added += added
        counts.resized += len(sure) - added
        for path in unsure:
            counts.note(_verify(registry, path, lstat, skip, governed, is_kept))


def _load(
    registry: Registry,
    base_dir: str,
    touched: Touched,
    *,
    recursive: bool,
    exclude: Sequence[str],
    skip_paths: Collection[str],
    should_stop: Callable[[], bool] | None,
    age_by: AgeBy,
    rules: RuleSet | None,
) -> tuple[ScanResult, ReconcileResult]:
    """Fill a registry that was empty when the rescan began, directory by directory as the
    scan lists them: nothing registered can be a ghost, so no full list of the scan is
    needed, and no per-file object of it outlives its directory."""
    skip = frozenset(skip_paths)
    counts = _Counts()

    def take(files: list[FileInfo]) -> None:
        if should_stop is not None and should_stop():
            return  # the rest is left for the next rescan
        infos, governed, is_kept = _governed(files, age_by, rules)
        if skip:
            infos = [i for i in infos if i.path not in skip]
        if not infos:
            return
        # Directories come in no time order: the registry sorts once, at the window's end.
        used_at = _time_getter(infos, age_by, rules)
        directory = infos[0].path.rpartition("/")[0]  # one directory's files a call
        for chunk in _chunks(infos, CHUNK_SIZE):
            _settle_missing(
                registry, chunk, touched, used_at, counts, lstat_any, skip, governed, is_kept,
                directory=directory,
            )

    scan = scan_tree(
        base_dir, recursive=recursive, exclude=exclude, skip_names=skip_paths, on_files=take
    )
    return scan, _result(counts)


def rescan(
    registry: Registry,
    base_dir: str,
    *,
    reason: str,
    recursive: bool = True,
    exclude: Sequence[str] = (),
    skip_paths: Collection[str] = (),
    should_stop: Callable[[], bool] | None = None,
    scanner: Scanner = scan_tree,
    age_by: AgeBy = DEFAULT_AGE_BY,
    rules: RuleSet | None = None,
) -> ReconcileResult:
    """Scan `base_dir` and reconcile `registry` with it; log one line with what changed.

    The registry tracks what events touch from before the scan to the end of the reconcile
    (`Registry.tracking`), and sorts the entries the rescan added once, at the end.
    The line is a warning (event "rescan") unless the rescan was routine and found the
    registry already right: changes found mean events were missed.
    """
    started = time.monotonic()
    # Empty before the window opens (a start): the registry is filled as the scan goes.
    load = scanner is scan_tree and not len(registry)
    with collector_paused(), registry.tracking() as touched:
        if load:
            scan, result = _load(
                registry, base_dir, touched, recursive=recursive, exclude=exclude,
                skip_paths=skip_paths, should_stop=should_stop, age_by=age_by, rules=rules,
            )
        else:
            scan = scanner(
                base_dir, recursive=recursive, exclude=exclude, skip_names=skip_paths
            )
            result = reconcile(
                registry, scan, touched=touched, base_dir=os.path.realpath(base_dir),
                exclude=exclude, skip_paths=skip_paths, should_stop=should_stop,
                age_by=age_by, rules=rules,
            )
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


class _Vouched:
    """Whether the scan vouches that a path it did not report is not there."""

    def __init__(
        self, scan: ScanResult, base_dir: str | None, exclude: Sequence[str], skip: frozenset[str]
    ) -> None:
        errors = {path for path, _ in scan.errors}
        listed = {info.path for info in scan.dirs}
        if base_dir is not None:
            listed.add(base_dir.rstrip("/") or "/")
        self._listed = listed - errors
        self._errors = errors
        self._prefix = None if base_dir is None else base_dir.rstrip("/") + "/"
        self._exclude = exclude
        self._skip = skip

    def __call__(self, path: str) -> bool:
        if path in self._skip:
            return True  # never registered, whatever is on disk
        if path in self._errors or path.rpartition("/")[0] not in self._listed:
            return False
        if not self._exclude:
            return True
        prefix = self._prefix
        return (
            prefix is not None
            and path.startswith(prefix)
            and not is_excluded(path[len(prefix) :], self._exclude)
        )


def _time_getter(
    files: list[FileInfo], age_by: AgeBy, rules: RuleSet | None
) -> Callable[[FileInfo], float]:
    if not rules:
        return scan_time_getter(age_by)
    times = {info.path: at for info, at in rules.aged(files)}
    return lambda info: times[info.path]


def _governed(
    files: list[FileInfo], age_by: AgeBy, rules: RuleSet | None
) -> tuple[list[FileInfo], Callable[[str], AgeBy | None], Callable[[str], bool]]:
    """The files to register, each path's age_by, and which paths a keep rule governs."""
    if rules:
        return [i for i in files if not rules.is_kept(i.path)], rules.age_by_for, rules.is_kept
    return files, lambda _: age_by, _never


def _never(path: str) -> bool:
    return False


def _verify(
    registry: Registry,
    path: str,
    lstat: _Lstat,
    skip: frozenset[str],
    governed: Callable[[str], AgeBy | None],
    is_kept: Callable[[str], bool],
) -> str:
    """Bring one path in line with what lstat says now. Call with the registry lock held."""
    try:
        st = None if path in skip or is_kept(path) else lstat(path)
    except OSError:
        st = None
    if st is None or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return "removed" if registry.discard(path) is not None else ""
    age_by = governed(path) or DEFAULT_AGE_BY
    return _apply(registry, path, st.st_size, st.st_ino, unwatched_last_used_at(st, age_by))


def _apply(registry: Registry, path: str, size_bytes: int, ino: int, used_at: float) -> str:
    """Make the entry of an existing file say `size_bytes` and `ino`."""
    entry = registry.get(path)
    if entry is None or entry.ino != ino:
        # add() keeps the age of an entry whose inode was never known (0).
        return "added" if registry.add(path, used_at, size_bytes, ino) else "resized"
    if entry.size_bytes != size_bytes:
        registry.update_size(path, size_bytes)
        return "resized"
    return ""


def _chunks(items: list[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def _result(counts: _Counts) -> ReconcileResult:
    return ReconcileResult(counts.added, counts.removed, counts.resized)
