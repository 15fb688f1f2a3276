"""One pass over base_dir as it is on disk, without the service: `tempwatch clean`.

A file's age is its age by last use (`tempwatch.age`, as the service judges it), from the
timestamps the scan's lstat gave. The same policy, open-file check and deleter as the
service decide and delete; the limits apply too, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tempwatch.blindspots import warn_denied
from tempwatch.cleaner import CleanupListener, PassReport
from tempwatch.config import Config
from tempwatch.directory import (
    deleter_for,
    limits_of,
    open_files_for,
    pace_of,
    remove_empty_dirs,
    rules_of,
    scan_of,
)
from tempwatch.openfiles import LazyOpenFiles, OpenFiles, sweep_open_files
from tempwatch.pacing import Pacer
from tempwatch.registry import Entry
from tempwatch.rounds import run_pass_over
from tempwatch.scan import ScanResult, collector_paused

__all__ = ["clean_once"]


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
    scan = scan_of(config)
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


def _time_of(item: tuple[str, Entry]) -> float:
    return item[1].registered_at
