"""The library API: `TempFileManager` for programs that manage their own temp files.

It keeps a registry of the files a program registered (or, with `watch=True`, of every
file created under base_dir) and removes them by age through the same safe deleter and
open-file check the service uses.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING

from loguru import logger

from tempwatch.cleaner import run_pass
from tempwatch.deleter import Deleter
from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles, OpenFiles, sweep_open_files
from tempwatch.policy import Limits
from tempwatch.registry import Registry

if TYPE_CHECKING:
    from tempwatch.watcher import Watcher

__all__ = ["TempFileManager"]


def _normalize(path: str | os.PathLike[str]) -> str:
    """Absolute, with the parent directory's symlinks resolved but not the final name's."""
    absolute = os.path.abspath(os.fspath(path))
    head, tail = os.path.split(absolute)
    return os.path.join(os.path.realpath(head), tail)


class TempFileManager:
    """A thread-safe register of temp files under `base_dir`, removed once older than `max_age`.

    `cleanup()` never deletes a file that a visible process holds open, with or without
    `force`: force only ignores the age. Open files stay registered and go in a later
    cleanup, once closed. Use it as a context manager to clear everything on exit.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        max_age: float = 3600,
        *,
        skip_open_files: bool = True,
        secure_delete: bool = False,
        watch: bool = False,
        clock: Callable[[], float] = time.time,
        sweep: Callable[[str], OpenFiles] = sweep_open_files,
    ) -> None:
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 seconds, got {max_age!r}")
        os.makedirs(base_dir, mode=0o700, exist_ok=True)
        self.base_dir = Path(os.path.realpath(base_dir))
        self.max_age = float(max_age)
        self._registry = Registry()
        self.lock = self._registry.lock
        self._cleanup_lock = threading.Lock()
        self._clock = clock
        self._sweep = sweep
        self._skip_open_files = skip_open_files
        self._deleter = Deleter(self.base_dir, secure_delete=secure_delete)
        self._watcher: Watcher | None = None
        if watch:
            self._watcher = self._start_watcher()

    def _start_watcher(self) -> Watcher:
        from tempwatch.watcher import Watcher  # only watch=True pays for watchdog's import

        watcher = Watcher(str(self.base_dir), self._registry, clock=self._clock)
        watcher.start()
        return watcher

    @property
    def files(self) -> Mapping[str, float]:
        """A read-only snapshot: absolute path -> registration time (seconds since the epoch)."""
        return MappingProxyType(self._registry.times())

    def register_file(self, path: str | os.PathLike[str]) -> bool:
        """Register a regular file below base_dir; False (with a warning) if it is refused.

        Refused: a missing path, a directory, a symlink, a FIFO, socket or device, and
        anything that resolves outside base_dir. Registering again keeps the original time.
        """
        normalized = _normalize(path)
        checked = self._check(normalized)
        if isinstance(checked, str):
            logger.bind(event="refused", path=normalized).warning(
                "not registering {}: {}", normalized, checked
            )
            return False
        self._registry.add(normalized, self._clock(), checked.st_size, checked.st_ino)
        logger.bind(event="registered", path=normalized).debug("registered {}", normalized)
        return True

    def _check(self, normalized: str) -> os.stat_result | str:
        """The file's lstat if it may be registered, else why not."""
        base = str(self.base_dir)
        if normalized == base or os.path.commonpath([base, normalized]) != base:
            return f"outside {base}"
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
        """Seconds since `path` was registered, or None if it is not registered."""
        entry = self._registry.get(_normalize(path))
        return None if entry is None else self._clock() - entry.registered_at

    def is_temp_file(self, path: str | os.PathLike[str]) -> bool:
        """Whether `path` is registered."""
        return _normalize(path) in self._registry

    def cleanup(self, force: bool = False) -> int:
        """Delete registered files older than max_age (all of them with `force`).

        Returns how many were actually deleted. A file already gone is dropped and not
        counted; a failed deletion keeps its entry for a retry; an open file is skipped.
        """
        limits = Limits(max_age_seconds=self.max_age)
        open_paths = (
            LazyOpenFiles(str(self.base_dir), self._sweep)
            if self._skip_open_files
            else NO_OPEN_FILES
        )
        with self._cleanup_lock:
            report = run_pass(
                self._registry,
                self._deleter,
                limits,
                open_paths=open_paths,
                clock=self._clock,
                force=force,
            )
        return len(report.deleted)

    def clear_all(self) -> int:
        """`cleanup(force=True)`: every registered file that is not open."""
        return self.cleanup(force=True)

    def close(self) -> None:
        """Stop the watcher, if any. Files stay on disk and registered."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

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
