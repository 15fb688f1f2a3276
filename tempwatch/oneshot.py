"""One pass over base_dir as it is on disk, without the service: `tempwatch clean`.

A file's age is its age by last use (`tempwatch.age`, as the service judges it), from the
timestamps the scan's lstat gave. The same policy, open-file check and deleter as the
service decide and delete; the limits apply too, oldest first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass

from loguru import logger

from tempwatch.blindspots import warn_denied
from tempwatch.cleaner import CleanupListener, PassReport
from tempwatch.config import Config
from tempwatch.deleter import Deleter
from tempwatch.dirfd import DirIdentity
from tempwatch.errors import TempwatchError
from tempwatch.healthsocket import SOCKET_NAME
from tempwatch.instance import LOCK_FILE_NAME
from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles, OpenFiles, sweep_open_files
from tempwatch.pacing import Pace, Pacer
from tempwatch.policy import Limits
from tempwatch.registry import Entry, Registry
from tempwatch.rounds import run_pass_over
from tempwatch.rules import RuleSet
from tempwatch.scan import DirInfo, ScanResult, collector_paused, scan_tree

__all__ = [
    "DiskState",
    "clean_once",
    "deleter_for",
    "limits_of",
    "open_files_for",
    "own_files",
    "pace_of",
    "read_disk",
    "remove_empty_dirs",
    "rules_of",
]


@dataclass(slots=True)
class DiskState:
    """What a scan found, as a registry keyed by path with mtimes as registration times."""

    registry: Registry
    scan: ScanResult


def rules_of(config: Config) -> RuleSet:
    """The directory's rules, with its own settings for the paths no rule matches."""
    return RuleSet(
        str(config.watch.base_dir),
        config.rules,
        max_age_seconds=config.cleanup.max_age_seconds,
        max_file_size_bytes=config.limits.max_file_size_bytes,
        age_by=config.cleanup.age_by,
    )


def limits_of(config: Config) -> Limits:
    """The policy's limits from the configuration."""
    rules = rules_of(config)
    return Limits(
        max_age_seconds=config.cleanup.max_age_seconds,
        max_files=config.limits.max_files,
        max_file_size_bytes=config.limits.max_file_size_bytes,
        max_total_size_bytes=config.limits.max_total_size_bytes,
        low_watermark=config.limits.low_watermark,
        age_by=config.cleanup.age_by,
        rules=rules if rules else None,
    )


def pace_of(config: Config) -> Pace:
    """How passes and eviction rounds are paced, from the configuration."""
    cleanup = config.cleanup
    return Pace(
        batch_size=cleanup.batch_size,
        batch_pause_seconds=cleanup.batch_pause_seconds,
        timeout_seconds=cleanup.pass_timeout_seconds,
        threads=cleanup.threads,
    )


def open_files_for(
    config: Config, sweep: Callable[[str], OpenFiles] = sweep_open_files
) -> Callable[[], Container[str]]:
    """What makes the set of files held open, swept lazily (on the first question), for
    every entry point alike; with skip_open_files off, nothing is ever open."""
    base = str(config.watch.base_dir)

    def open_files() -> Container[str]:
        if not config.cleanup.skip_open_files:
            return NO_OPEN_FILES
        return LazyOpenFiles(base, sweep)

    return open_files


def own_files(config: Config) -> frozenset[str]:
    """tempwatch's own files that may sit in base_dir: never registered, never deleted."""
    base = str(config.watch.base_dir)
    own = {os.path.join(base, LOCK_FILE_NAME), os.path.join(base, SOCKET_NAME)}
    if config.log.file is not None:
        own.add(os.path.realpath(config.log.file))
    return frozenset(own)


def read_disk(config: Config) -> DiskState:
    """Scan base_dir into a registry, oldest first by last use. Raises TempwatchError if it
    is missing."""
    scan = _scan(config)
    registry = Registry()
    registry.add_many(
        (info.path, at, info.size_bytes, info.ino) for info, at in rules_of(config).aged(scan.files)
    )
    return DiskState(registry, scan)


def clean_once(
    config: Config,
    *,
    listener: CleanupListener | None = None,
    clock: Callable[[], float] = time.time,
    sweep: Callable[[str], OpenFiles] = sweep_open_files,
) -> tuple[PassReport, ScanResult]:
    """Scan, decide and delete once. Returns what was done and what the scan found.

    Raises TempwatchError if base_dir is missing.
    """
    with collector_paused():
        return _clean_once(config, listener, clock, sweep)


def _clean_once(
    config: Config,
    listener: CleanupListener | None,
    clock: Callable[[], float],
    sweep: Callable[[str], OpenFiles],
) -> tuple[PassReport, ScanResult]:
    scan = _scan(config)
    # No registry: it would be filled from the scan, read back sorted and emptied again,
    # a locked call per file each time, only to be thrown away.
    aged = rules_of(config).aged(scan.files)
    entries = [(i.path, Entry(at, i.size_bytes, i.ino)) for i, at in aged]
    entries.sort(key=_time_of)
    cleanup = config.cleanup
    deleter = deleter_for(config)
    reopen = open_files_for(config, sweep)
    open_paths = reopen()
    report = run_pass_over(
        entries,
        deleter,
        limits_of(config),
        open_paths=open_paths,
        clock=clock,
        listener=listener,
        dry_run=cleanup.dry_run,
        pacer=Pacer(pace_of(config)),
        reopen=reopen,
    )
    if isinstance(open_paths, LazyOpenFiles) and open_paths.result is not None:
        warn_denied(
            open_paths.result.processes_denied,
            str(config.watch.base_dir),
            "clean",
            lease_in_force=cleanup.lease_probe and deleter.lease_unavailable is None,
        )
    if cleanup.remove_empty_dirs and not cleanup.dry_run:
        remove_empty_dirs(deleter, scan.dirs, cleanup.max_age_seconds, clock())
    return report, scan


def _scan(config: Config) -> ScanResult:
    base = config.watch.base_dir
    if not base.is_dir():
        raise TempwatchError(
            f"base_dir {base} does not exist: create it or set watch.base_dir (--base-dir)"
        )
    return scan_tree(
        base,
        recursive=config.watch.recursive,
        exclude=config.watch.exclude,
        skip_names=own_files(config),
    )


def _time_of(item: tuple[str, Entry]) -> float:
    return item[1].registered_at


def deleter_for(config: Config, identity: DirIdentity | None = None) -> Deleter:
    """The deleter the configuration asks for; with `identity`, bound to that directory."""
    cleanup = config.cleanup
    return Deleter(
        config.watch.base_dir,
        secure_delete=cleanup.secure_delete,
        owner_uid=os.geteuid() if cleanup.owner_check else None,
        dry_run=cleanup.dry_run,
        identity=identity,
        lease_probe=cleanup.skip_open_files and cleanup.lease_probe,
    )


def remove_empty_dirs(
    deleter: Deleter,
    dirs: Iterable[DirInfo],
    max_age_seconds: float,
    now: float,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Remove the empty directories older than max_age, deepest first; return how many.

    `should_stop` is asked before each directory: True ends the work there.
    """
    removed = 0
    for directory in dirs:
        if should_stop is not None and should_stop():
            break
        if not directory.is_empty:
            continue
        result = deleter.remove_empty_dir(directory.path, max_age_seconds, now)
        if result.ok:
            removed += 1
            logger.info(
                "removed empty directory {path}", event="deleted-dir", path=directory.path
            )
    return removed
