"""One directory's configuration turned into what acts on it, for every entry point.

`run` (each directory's service), `clean`, `status` and `explain` all build their pieces
here, so that they judge a file alike: the directory's rules, limits and watermarks (the
policy's input), its files as on disk, its deleter, its open-file check, the pacing of its
passes, and the files that are tempwatch's own there (never registered, never deleted).

`status` and `explain` only judge: the deleter and the pacing are imported by the
functions that build them, so that those commands do not load what only deletes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, NamedTuple

from tempwatch.config import Config
from tempwatch.errors import TempwatchError
from tempwatch.instance import LOCK_FILE_NAME, SOCKET_NAME
from tempwatch.lazylog import logger
from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles, OpenFiles, sweep_open_files
from tempwatch.policy import Limits
from tempwatch.pressure import Watermarks
from tempwatch.registry import Registry
from tempwatch.rules import RuleSet
from tempwatch.scan import DirInfo, ScanResult, scan_tree

if TYPE_CHECKING:
    from tempwatch.deleter import Deleter
    from tempwatch.dirfd import DirIdentity
    from tempwatch.pacing import Pace

__all__ = [
    "DiskState",
    "deleter_for",
    "limits_of",
    "open_files_for",
    "own_files",
    "pace_of",
    "read_disk",
    "remove_empty_dirs",
    "rules_of",
    "scan_of",
    "watermarks_of",
]


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


def watermarks_of(config: Config) -> Watermarks:
    """The pressure settings of a configuration."""
    limits = config.limits
    rules = rules_of(config)
    return Watermarks(
        limits.min_free_space, limits.min_free_inodes, limits.low_watermark,
        rules if rules else None,
    )


class DiskState(NamedTuple):
    """What a scan found, as a registry keyed by path, each file aged by its last use."""

    registry: Registry
    scan: ScanResult


def read_disk(config: Config) -> DiskState:
    """Scan base_dir into a registry, oldest first by last use. Raises TempwatchError if it
    is missing."""
    scan = scan_of(config)
    registry = Registry()
    registry.add_many(
        (info.path, at, info.size_bytes, info.ino) for info, at in rules_of(config).aged(scan.files)
    )
    return DiskState(registry, scan)


def scan_of(config: Config) -> ScanResult:
    """base_dir as on disk, tempwatch's own files left out. Raises TempwatchError if it is
    missing."""
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


def pace_of(config: Config) -> Pace:
    """How passes and eviction rounds are paced, from the configuration."""
    from tempwatch.pacing import Pace

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


def deleter_for(config: Config, identity: DirIdentity | None = None) -> Deleter:
    """The deleter the configuration asks for; with `identity`, bound to that directory."""
    from tempwatch.deleter import Deleter

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
