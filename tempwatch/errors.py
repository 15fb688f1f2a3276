"""Typed exceptions of the library. Only the CLI turns them into messages and exit codes."""

from __future__ import annotations

__all__ = [
    "AlreadyRunningError",
    "ConfigError",
    "OutsideBaseDirError",
    "TempFileError",
    "TempwatchError",
]


class TempwatchError(Exception):
    """Base class of every error tempwatch raises on purpose."""


class ConfigError(TempwatchError):
    """A configuration value is invalid: the message names the key, the value, what is expected."""


class OutsideBaseDirError(TempwatchError):
    """A path resolves outside the directory tempwatch is allowed to touch."""


class AlreadyRunningError(TempwatchError):
    """Another tempwatch service already watches this base_dir."""


class TempFileError(TempwatchError):
    """Creating or removing a temporary file failed; the message says which file and why."""
