"""The typed, frozen configuration: one Config per directory served, and how two compare.

`tempwatch.configload` builds it from the defaults, a TOML file, the environment and the
command line; `tempwatch.configkeys` checks each value; `tempwatch.configtoml` renders it
back as TOML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tempwatch.age import DEFAULT_AGE_BY, AgeBy
from tempwatch.configkeys import LOG_LEVELS, LogFormat, MetricsBackend, ObserverKind
from tempwatch.pressure import FreeAmount
from tempwatch.rules import Rule

__all__ = [
    "LOG_LEVELS",
    "CleanupConfig",
    "Config",
    "LimitsConfig",
    "changed_settings",
    "LogConfig",
    "LogFormat",
    "MetricsConfig",
    "ObserverKind",
    "WatchConfig",
    "default_base_dir",
]


def default_base_dir() -> Path:
    """The directory watched when nothing says otherwise: <system temp dir>/tempwatch, resolved."""
    import tempfile  # with random and shutil: not loaded when the directory is given

    return Path(os.path.realpath(Path(tempfile.gettempdir()) / "tempwatch"))


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """What to watch. `base_dir` is absolute and resolved when built by load_config."""

    base_dir: Path = field(default_factory=default_base_dir)
    recursive: bool = True
    observer: ObserverKind = "auto"
    rescan_interval_seconds: float = 600.0
    exclude: tuple[str, ...] = ()
    allow_system_dir: bool = False


@dataclass(frozen=True, slots=True)
class CleanupConfig:
    """When files expire and how they are removed.

    `permission_mask` is umask-style, for files the library creates: mode = 0o666 & ~mask.
    `batch_size` (0 = unlimited), `batch_pause_seconds`, `pass_timeout_seconds` (0 = none)
    and `threads` pace the deletions of a pass or an eviction round (see tempwatch.pacing).
    """

    max_age_seconds: float = 3600.0
    age_by: AgeBy = DEFAULT_AGE_BY  # the timestamps a file's age counts from (tempwatch.age)
    interval_seconds: float = 300.0
    skip_open_files: bool = True
    lease_probe: bool = True
    secure_delete: bool = False
    owner_check: bool = False
    dry_run: bool = False
    remove_empty_dirs: bool = False
    permission_mask: int = 0o077
    batch_size: int = 0
    batch_pause_seconds: float = 0.0
    pass_timeout_seconds: float = 0.0
    threads: int = 1


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Eviction limits; 0 means unlimited. Eviction stops at low_watermark * limit.

    `min_free_space` and `min_free_inodes` (None: off) are what the filesystem holding
    base_dir must keep free, absolute or as a percentage of it: see `tempwatch.pressure`.
    """

    max_files: int = 10000
    max_file_size_bytes: int = 100 * 1024**2
    max_total_size_bytes: int = 0
    low_watermark: float = 0.9
    min_free_space: FreeAmount | None = None
    min_free_inodes: FreeAmount | None = None


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Log level (stored upper case), format and the optional file sink (loguru options)."""

    level: str = "INFO"
    format: LogFormat = "text"
    file: Path | None = None
    rotation: str | None = None
    retention: str | None = None


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The Prometheus endpoint; port 0 means any free port. Prometheus is the one backend."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 8328
    backend: MetricsBackend = "prometheus"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. `source` is the TOML file it came from (not compared)."""

    watch: WatchConfig
    cleanup: CleanupConfig = CleanupConfig()
    limits: LimitsConfig = LimitsConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    source: Path | None = field(default=None, compare=False)
    rules: tuple[Rule, ...] = ()  # the directory's per-pattern rules, first match wins
    # With [[directory]] entries: one Config per directory (watch, cleanup, limits and rules
    # its own, log and metrics the process's). The top-level sections are then the defaults
    # every directory started from, with the first directory's path as base_dir.
    directories: tuple[Config, ...] = ()

    def each_directory(self) -> tuple[Config, ...]:
        """The Config of every directory to serve: the entries, or this one alone."""
        return self.directories or (self,)

    def to_dict(self) -> dict[str, object]:
        """The effective config as a nested dict keyed like the TOML file (JSON-serialisable).

        Durations and sizes use human units when that is exact; unset optional values
        are left out, as TOML has no null.
        """
        from tempwatch.configtoml import config_to_dict

        return config_to_dict(self)

    def settings(self) -> dict[str, object]:
        """The effective config flat, keyed by dotted TOML key ({"cleanup.max_age": "1h"};
        "directory.2.base_dir" for the second [[directory]]), as logged at start;
        `changed_settings` compares two of them for a reload."""
        flat: dict[str, object] = {}
        for section, table in self.to_dict().items():
            if isinstance(table, dict):
                flat.update((f"{section}.{key}", value) for key, value in table.items())
            elif isinstance(table, list):
                for number, entry in enumerate(table, start=1):
                    items = entry.items() if isinstance(entry, dict) else ()
                    flat.update((f"{section}.{number}.{key}", value) for key, value in items)
        return flat

    def to_toml(self) -> str:
        """The effective config as TOML; load_config reads it back to an equal Config."""
        from tempwatch.configtoml import config_to_toml

        return config_to_toml(self)


def changed_settings(old: Config, new: Config) -> dict[str, tuple[object, object]]:
    """Dotted key -> (old value, new value) of each setting that differs; unset is None."""
    before, after = old.settings(), new.settings()
    return {
        key: (before.get(key), after.get(key))
        for key in dict.fromkeys([*before, *after])
        if before.get(key) != after.get(key)
    }
