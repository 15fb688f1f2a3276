"""The library API: `TempFileManager` for programs that manage their own temp files.

It keeps a registry of the files a program registered (or, with `watch=True`, of every
file created under base_dir) and removes them by age through the same safe deleter and
open-file check the service uses. A file's age is the one `run`, `clean`, `status` and
`explain` use (`tempwatch.age`): now minus its last use, the newest of the timestamps
`age_by` selects. base_dir passes the same check as the config's.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from tempwatch.age import (
    AGE_SOURCES,
    DEFAULT_AGE_BY,
    AgeBy,
    age_by_of,
    last_used_at,
    stat_last_used_at,
)
from tempwatch.basedir import check_base_dir
from tempwatch.deleter import Deleter
from tempwatch.directories import parse_rules
from tempwatch.errors import ConfigError
from tempwatch.instance import InstanceLock, ensure_base_dir
from tempwatch.lazylog import logger
from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles, OpenFiles, sweep_open_files
from tempwatch.policy import Limits
from tempwatch.registry import Registry
from tempwatch.rounds import run_pass
from tempwatch.rules import Rule, RuleSet
from tempwatch.units import parse_duration

if TYPE_CHECKING:
    from tempwatch.watcher import Watcher

__all__ = ["TempFileManager"]

_MIN_INTERVAL_SECONDS = 1.0
_MAX_INTERVAL_SECONDS = 300.0


def _normalize(path: str | os.PathLike[str]) -> str:
    """Absolute, with the parent directory's symlinks resolved but not the final name's."""
    absolute = os.path.abspath(os.fspath(path))
    head, tail = os.path.split(absolute)
    return os.path.join(os.path.realpath(head), tail)


def _seconds(value: object, name: str) -> float:
    """A duration argument: seconds as a number, or text as in the config ("90s", "1h")."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(
            f'{name} must be seconds (int or float) or a duration like "1h", '
            f"not {type(value).__name__}"
        )
    if not isinstance(value, str):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        return float(value)
    try:
        return parse_duration(value, name)
    except ConfigError as e:
        raise ValueError(str(e)) from e


def _age_by(value: Iterable[str] | None) -> AgeBy:
    """The `age_by` argument checked as the config's `age_by` is (DEFAULT_AGE_BY for None)."""
    if value is None:
        return DEFAULT_AGE_BY
    choices = ", ".join(f'"{source}"' for source in AGE_SOURCES)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(
            f"age_by must be a non-empty collection of {choices}, not {type(value).__name__}"
        )
    try:
        return age_by_of(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"age_by must be a non-empty collection of {choices}: {e}") from e


def _default_interval(max_age_seconds: float) -> float:
    """A quarter of max_age, within 1 s and 5 min: a file outlives max_age by at most that."""
    return min(max(max_age_seconds / 4, _MIN_INTERVAL_SECONDS), _MAX_INTERVAL_SECONDS)


class TempFileManager:
    """A thread-safe register of temp files under `base_dir`, removed once older than `max_age`.

    `max_age` and `cleanup_interval` are seconds or durations as in the config ("90s", "1h").
    A file's age counts from its last use, as `tempwatch run` and `clean` judge it: the
    newest of the timestamps in `age_by` ("registered": when it was registered or, with
    `watch=True`, seen created or moved in; "modified", "changed", "accessed": its mtime,
    ctime and atime). The default, ("registered", "modified", "changed"), keeps young a
    file written or moved in recently; the file's lstat right before its deletion decides,
    so a file used since it was judged is kept.
    base_dir must pass the config's check: its parent exists, and a system or home
    directory (`/`, `/etc`, `/home`, `~`, ...) is refused with ConfigError unless
    `allow_system_dir=True`. A missing base_dir is created with mode 0700.

    `cleanup()` never deletes a file that a visible process holds open, with or without
    `force`: force only ignores the age. Open files stay registered and go in a later
    cleanup, once closed.

    With `watch=True` every file created under base_dir is registered, the manager takes
    the same per-directory lock as `tempwatch run` (AlreadyRunningError names the holder's
    pid), and a background thread expires files every `cleanup_interval` (by default a
    quarter of max_age, between 1 s and 5 min). `close()` stops both.

    `rules` are per-pattern rules as in a config's `[[directory.rule]]` tables, first match
    wins: `{"match": "*.pid", "keep": True}` (never deleted, never registered),
    `{"match": "*.log", "max_age": "7d"}`, or a rule's own `max_file_size` or `age_by`. A
    bad rule raises ConfigError naming `rules[n]` and the key.

    Used as a context manager, exit clears only the files this program registered itself
    with `register_file`, whatever their age; files seen by watching are governed by age
    only, never cleared on exit. The same holds for `clear_all()` and `cleanup(force=True)`.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        max_age: float | str = 3600,
        *,
        skip_open_files: bool = True,
        secure_delete: bool = False,
        watch: bool = False,
        cleanup_interval: float | str | None = None,
        allow_system_dir: bool = False,
        age_by: Iterable[str] | None = None,
        rules: Sequence[Mapping[str, object]] = (),
        clock: Callable[[], float] = time.time,
        sweep: Callable[[str], OpenFiles] = sweep_open_files,
    ) -> None:
        self.max_age = _seconds(max_age, "max_age")
        self.age_by: AgeBy = _age_by(age_by)
        interval = (
            None if cleanup_interval is None else _seconds(cleanup_interval, "cleanup_interval")
        )
        resolved = check_base_dir(
            base_dir, "base_dir", allow_system_dir=allow_system_dir, opt_in="allow_system_dir=True"
        )
        self.rules: tuple[Rule, ...] = parse_rules(rules, "rules")
        ensure_base_dir(str(resolved))
        self.base_dir = resolved
        self._rules = RuleSet(
            str(resolved), self.rules, max_age_seconds=self.max_age, max_file_size_bytes=0,
            age_by=self.age_by,
        )
        self._registry = Registry()
        self.lock = self._registry.lock
        self._owned: set[str] = set()  # registered by this program: cleared on exit
        self._cleanup_lock = threading.Lock()
        self._clock = clock
        self._sweep = sweep
        self._skip_open_files = skip_open_files
        self._deleter = Deleter(self.base_dir, secure_delete=secure_delete)
        self._watcher: Watcher | None = None
        self._instance: InstanceLock | None = None
        self._stop = threading.Event()
        self._expirer: threading.Thread | None = None
        if watch:
            self._start_watching(interval or _default_interval(self.max_age))
        elif interval is not None:
            self._start_expirer(interval)

    def _start_watching(self, interval_seconds: float) -> None:
        from tempwatch.watcher import Watcher  # only watch=True pays for watchdog's import

        instance = InstanceLock(self.base_dir)
        instance.acquire()  # AlreadyRunningError if a service or another manager watches
        try:
            lock_file = [str(instance.path)]
            watcher = Watcher(
                str(self.base_dir),
                self._registry,
                clock=self._clock,
                skip_paths=lock_file,
                age_by=self.age_by,
                rules=self._rules if self._rules else None,
            )
            watcher.start()
        except BaseException:
            instance.release()
            raise
        self._instance, self._watcher = instance, watcher
        self._start_expirer(interval_seconds)

    def _start_expirer(self, interval_seconds: float) -> None:
        thread = threading.Thread(
            target=self._expire_until_stopped,
            args=(interval_seconds,),
            name="tempwatch-manager-cleanup",
            daemon=True,  # a program that forgets close() must still be able to exit
        )
        self._expirer = thread
        thread.start()

    def _expire_until_stopped(self, interval_seconds: float) -> None:
        while not self._stop.wait(interval_seconds):
            try:
                self.cleanup()
            except Exception:  # one bad pass must not end expiry for the program's lifetime
                logger.opt(exception=True).bind(event="pass-failed").error(
                    "background cleanup of {} failed", self.base_dir
                )

    @property
    def files(self) -> Mapping[str, float]:
        """A read-only snapshot: absolute path -> the time its age counts from, as last known
        (seconds since the epoch): its registration, or a later use found since."""
        return MappingProxyType(self._registry.times())

    def register_file(self, path: str | os.PathLike[str]) -> bool:
        """Register a regular file below base_dir; False (with a warning) if it is refused.

        Refused: a missing path, a directory, a symlink, a FIFO, socket or device,
        anything that resolves outside base_dir, and a file a `keep` rule governs.
        Registering again keeps the original time. A registered file is this program's own:
        `clear_all()` and exit remove it. Its age counts from the newest of its registration
        and its lstat times, per `age_by` (its rule's, if it sets one).
        """
        normalized = _normalize(path)
        checked = self._check(normalized)
        if isinstance(checked, str):
            logger.bind(event="refused", path=normalized).warning(
                "not registering {}: {}", normalized, checked
            )
            return False
        used_at = last_used_at(
            self._age_by_for(normalized),
            registered_at=self._clock(),
            mtime=checked.st_mtime,
            ctime=checked.st_ctime,
            atime=checked.st_atime,
        )
        with self._registry.lock:
            self._registry.add(normalized, used_at, checked.st_size, checked.st_ino)
            self._owned.add(normalized)
        logger.bind(event="registered", path=normalized).debug("registered {}", normalized)
        return True

    def _age_by_for(self, normalized: str) -> AgeBy:
        return self._rules.governing(normalized).age_by or self.age_by

    def _check(self, normalized: str) -> os.stat_result | str:
        """The file's lstat if it may be registered, else why not."""
        base = str(self.base_dir)
        if normalized == base or os.path.commonpath([base, normalized]) != base:
            return f"outside {base}"
        governing = self._rules.governing(normalized)
        if governing.keep:
            assert governing.rule_index is not None
            rule = self.rules[governing.rule_index]
            return f'kept by rules[{governing.rule_index + 1}] ("{rule.match}")'
        try:
            st = os.lstat(normalized)
        except FileNotFoundError:
            return "no such file"
        except OSError as e:
            return e.strerror or str(e)
        except ValueError:  # an embedded NUL byte: no file can have that name
            return "not a valid path"
        if stat.S_ISLNK(st.st_mode):
            return "a symlink"
        if stat.S_ISDIR(st.st_mode):
            return "a directory"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        return st

    def get_file_age(self, path: str | os.PathLike[str]) -> float | None:
        """Seconds since `path` was last used (per `age_by`), or None if it is not registered.

        The registration (or last use known) and the file's lstat now, as `cleanup()` and
        the deleter's last check judge it.
        """
        normalized = _normalize(path)
        entry = self._registry.get(normalized)
        if entry is None:
            return None
        used_at = entry.registered_at
        try:
            st = os.lstat(normalized)
        except (OSError, ValueError):
            st = None  # gone: the entry's time is all there is
        if st is not None and st.st_ino == entry.ino:
            by_stat = stat_last_used_at(st, self._age_by_for(normalized))
            if by_stat is not None and by_stat > used_at:
                used_at = by_stat
        return self._clock() - used_at

    def is_temp_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether `path` is registered."""
        return _normalize(path) in self._registry

    def cleanup(self, force: bool = False) -> int:
        """Delete registered files older than max_age, and with `force` this program's own
        files whatever their age (files seen only by watching still go by age).

        Returns how many were actually deleted. A file already gone is dropped and not
        counted; a failed deletion keeps its entry for a retry; an open file is skipped.
        """
        limits = Limits(
            max_age_seconds=self.max_age,
            age_by=self.age_by,
            rules=self._rules if self._rules else None,
        )
        open_paths = (
            LazyOpenFiles(str(self.base_dir), self._sweep)
            if self._skip_open_files
            else NO_OPEN_FILES
        )
        with self._cleanup_lock:
            with self._registry.lock:
                forced = frozenset(self._owned) if force else frozenset()
            report = run_pass(
                self._registry,
                self._deleter,
                limits,
                open_paths=open_paths,
                clock=self._clock,
                forced=forced,
            )
            with self._registry.lock:  # forget what is gone (deleted, moved, removed)
                self._owned = {path for path in self._owned if path in self._registry}
        return len(report.deleted)

    def clear_all(self) -> int:
        """`cleanup(force=True)`: every file this program registered that is not open."""
        return self.cleanup(force=True)

    def close(self) -> None:
        """Stop the watcher and background cleanup, if any. Files stay on disk and registered."""
        self._stop.set()
        if self._expirer is not None:
            self._expirer.join(timeout=10)
            self._expirer = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._instance is not None:
            self._instance.release()
            self._instance = None

    def __enter__(self) -> TempFileManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.clear_all()
        finally:
            self.close()

    def __len__(self) -> int:
        return len(self._registry)
