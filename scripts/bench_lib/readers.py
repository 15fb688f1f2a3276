"""The event readers compared by the event benchmarks, each run inside a child process.

- `tempwatch`: the service itself (`tempwatch.service.Service`), configured to keep files.
- `watchdog`: what a naive user writes: a default `Observer`, the default event mask, and a
  handler that puts each created file in a dict.
- `inotify`: the ceiling: inotify_simple read in a tight loop, counting IN_CREATE.

Each reports how many files it has registered, how many queue overflows it saw, and how
many rescans it needed; `paths()` gives what it holds, to check it against the disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["READERS", "Reader", "open_reader"]


class Reader(Protocol):
    def count(self) -> int: ...
    def paths(self) -> set[str]: ...
    def counters(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class _TempwatchReader:
    """The tempwatch service on `directory`, with limits and expiry out of the way."""

    def __init__(self, directory: str) -> None:
        from tempwatch.configload import load_config
        from tempwatch.service import Service

        config = load_config(
            None,
            overrides={
                "watch.base_dir": directory,
                "cleanup.max_age": "30d",
                "limits.max_files": 0,
                "limits.max_file_size": 0,
                "log.level": "WARNING",
            },
        )
        self._service = Service(config)
        self._service.__enter__()  # returns once the files already there are registered
        self.registry = self._service.registry
        self._rescans_at_start = self._service.stats.rescans  # the start's own reconcile

    def count(self) -> int:
        return len(self.registry)

    def paths(self) -> set[str]:
        return set(self.registry.times())

    def counters(self) -> dict[str, Any]:
        stats = self._service.stats
        return {
            "overflows": stats.overflows,
            "rescans": stats.rescans - self._rescans_at_start,
            "observer_restarts": stats.observer_restarts,
        }

    def close(self) -> None:
        self._service.__exit__(None, None, None)


class _OverflowCounter(logging.Handler):
    """watchdog reports a queue overflow only as a log warning: count those."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.overflows = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.overflows += 1


class _WatchdogReader:
    """A naive user's watchdog code: default observer, default mask, dict of created files."""

    def __init__(self, directory: str) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        files: dict[str, float] = {}
        self._files = files

        class Handler(FileSystemEventHandler):
            def on_created(self, event: FileSystemEvent) -> None:
                if not event.is_directory:
                    files[os.fsdecode(event.src_path)] = time.time()

        self._overflow = _OverflowCounter()
        self._logger = logging.getLogger("watchdog.observers.inotify_c")
        self._logger.addHandler(self._overflow)
        self._observer = Observer()
        self._observer.schedule(Handler(), directory, recursive=True)
        self._observer.start()

    def count(self) -> int:
        return len(self._files)

    def paths(self) -> set[str]:
        return set(self._files)

    def counters(self) -> dict[str, Any]:
        return {"overflows": self._overflow.overflows, "rescans": 0}

    def close(self) -> None:
        self._observer.stop()
        self._observer.join(10)
        self._logger.removeHandler(self._overflow)


class _InotifyReader:
    """inotify_simple on one directory, IN_CREATE only, read in a tight loop."""

    def __init__(self, directory: str) -> None:
        from inotify_simple import INotify, flags  # type: ignore[import-untyped]

        self._create = int(flags.CREATE)
        self._overflow = int(flags.Q_OVERFLOW)
        self._inotify = INotify()
        self._inotify.add_watch(directory, flags.CREATE)
        self._created = 0
        self._overflows = 0
        self._names: set[str] = set()
        self._prefix = directory.rstrip("/") + "/"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-inotify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for event in self._inotify.read(timeout=100):
                if event.mask & self._overflow:
                    self._overflows += 1
                elif event.mask & self._create:
                    self._created += 1

    def count(self) -> int:
        return self._created

    def paths(self) -> set[str]:
        raise NotImplementedError("the raw reader only counts")

    def counters(self) -> dict[str, Any]:
        return {"overflows": self._overflows, "rescans": 0}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._inotify.close()


READERS: dict[str, Callable[[str], Reader]] = {
    "tempwatch": _TempwatchReader,
    "watchdog": _WatchdogReader,
    "inotify": _InotifyReader,
}


def open_reader(kind: str, directory: str) -> Reader:
    """Start the reader `kind` on `directory`."""
    return READERS[kind](directory)
