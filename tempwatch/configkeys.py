"""The TOML keys of the configuration and how each value is checked.

Every key maps to the dataclass field it sets and a converter that validates a value
from a TOML file, the environment (strings) or the command line, raising a one-line
ConfigError that names the key, the bad value and what is expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from tempwatch.age import AGE_SOURCES, AgeBy, age_by_of
from tempwatch.basedir import resolve_base_dir
from tempwatch.errors import ConfigError
from tempwatch.pressure import FreeAmount
from tempwatch.units import parse_duration, parse_size, render_value

__all__ = [
    "KEYS",
    "LOG_LEVELS",
    "SECTIONS",
    "LogFormat",
    "MAX_THREADS",
    "MetricsBackend",
    "ObserverKind",
    "Origin",
    "closest",
    "invalid",
    "parse_mask",
    "to_base_dir",
]

ObserverKind = Literal["auto", "inotify", "polling"]
LogFormat = Literal["text", "json"]
MetricsBackend = Literal["prometheus"]

_OBSERVER_KINDS: tuple[ObserverKind, ...] = ("auto", "inotify", "polling")
_LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
MAX_THREADS = 64
"""cleanup.threads above this is a typo rather than a plan: each thread holds two fds."""


# --- validation of single values -----------------------------------------------------------


class Origin(NamedTuple):
    """Where a value came from: relative paths are taken from `relative_to`."""

    relative_to: Path
    from_env: bool = False


_Converter = Callable[[object, str, Origin], Any]
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})
_ENV_INT = re.compile(r"\s*[0-9]+\s*")
_OCTAL_MASK = re.compile(r"\s*(?:0[oO])?([0-7]{1,4})\s*")


def invalid(label: str, expected: str, value: object, note: str = "") -> ConfigError:
    return ConfigError(f"{label}: expected {expected}, got {render_value(value)}{note}")


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word` (a misspelt key or section), for a "did you mean" hint."""
    import difflib  # only to word an error message

    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def _to_bool(value: object, label: str, origin: Origin) -> bool:
    if isinstance(value, bool):
        return value
    if not origin.from_env:
        raise invalid(label, "true or false", value)
    word = value.strip().lower() if isinstance(value, str) else ""
    if word in _TRUE_WORDS or word in _FALSE_WORDS:
        return word in _TRUE_WORDS
    raise invalid(label, "true/false, 1/0, yes/no or on/off", value)


def _int_between(low: int, high: int | None) -> _Converter:
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def convert(value: object, label: str, origin: Origin) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif origin.from_env and isinstance(value, str) and _ENV_INT.fullmatch(value):
            number = int(value)
        if number is None or number < low or (high is not None and number > high):
            raise invalid(label, expected, value)
        return number

    return convert


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> _Converter:
    expected = "one of " + ", ".join(f'"{choice}"' for choice in choices)

    def convert(value: object, label: str, origin: Origin) -> str:
        if isinstance(value, str):
            word = value.strip().upper() if upper else value.strip().lower()
            if word in choices:
                return word
        raise invalid(label, expected, value)

    return convert


def _to_duration(value: object, label: str, origin: Origin) -> float:
    return parse_duration(value, label)


def _to_duration_or_zero(value: object, label: str, origin: Origin) -> float:
    return parse_duration(value, label, allow_zero=True)


def _to_metrics_backend(value: object, label: str, origin: Origin) -> str:
    if isinstance(value, str) and value.strip().lower() == "prometheus":
        return "prometheus"
    raise invalid(label, '"prometheus" (the only metrics backend)', value)


def _to_size(value: object, label: str, origin: Origin) -> int:
    return parse_size(value, label)


def _to_watermark(value: object, label: str, origin: Origin) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    raise invalid(label, "a number in (0, 1]", value)


_PERCENT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*%\s*")


def _percent(value: object) -> FreeAmount | None:
    """A percentage of the filesystem ("10%"), strictly between 0 and 100; None if not one."""
    match = _PERCENT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    percent = float(match.group(1))
    return FreeAmount(percent, is_percent=True) if 0 < percent < 100 else None


def _to_free_space(value: object, label: str, origin: Origin) -> FreeAmount | None:
    if isinstance(value, str) and "%" in value:
        amount = _percent(value)
        if amount is None:
            raise invalid(label, 'a percentage above 0% and below 100%, like "10%"', value)
        return amount
    try:
        size = parse_size(value, label)
    except ConfigError as e:
        expected = 'a size (bytes, or "512MiB", "5GiB") or a percentage like "10%"; 0 is off'
        raise invalid(label, expected, value) from e
    return FreeAmount(size) if size else None


def _to_free_inodes(value: object, label: str, origin: Origin) -> FreeAmount | None:
    amount = _percent(value)
    if amount is not None:
        return amount
    count: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and _ENV_INT.fullmatch(value):
        count = int(value)
    if count is None or count < 0:
        expected = 'an inode count >= 0 or a percentage like "5%"; 0 is off'
        raise invalid(label, expected, value)
    return FreeAmount(count) if count else None


def _to_text(value: object, label: str, origin: Origin) -> str:
    if isinstance(value, str) and value.strip() and value.isprintable():
        return value.strip()
    raise invalid(label, "a non-empty string", value)


def _to_retention(value: object, label: str, origin: Origin) -> str:
    # A file count is naturally written `retention = 5` in TOML; it is kept as the string
    # "5" (the field's type), which the log setup must hand to loguru as an int.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.strip() and value.isprintable():
        return value.strip()
    raise invalid(label, 'a non-empty string like "7 days", or a file count > 0', value)


def _to_exclude(value: object, label: str, origin: Origin) -> tuple[str, ...]:
    if isinstance(value, list | tuple) and all(_is_relative_glob(item) for item in value):
        return tuple(value)
    raise invalid(label, "a list of glob patterns relative to base_dir", value)


def _is_relative_glob(item: object) -> bool:
    return isinstance(item, str) and bool(item) and not os.path.isabs(item)


def _to_age_by(value: object, label: str, origin: Origin) -> AgeBy:
    if isinstance(value, str) and origin.from_env:  # "modified,changed"
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple | frozenset) and value:
        try:
            return age_by_of(value)
        except (TypeError, ValueError):
            pass
    choices = ", ".join(f'"{source}"' for source in AGE_SOURCES)
    raise invalid(label, f"a non-empty list of {choices}", value)


def _to_mask(value: object, label: str, origin: Origin) -> int:
    return parse_mask(value, label)


def parse_mask(value: object, label: str) -> int:
    """A umask-style permission mask ("077", 0o077) that keeps files from being world-writable."""
    mask: int | None = None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        mask = value
    elif isinstance(value, str) and (digits := _OCTAL_MASK.fullmatch(value)):
        mask = int(digits.group(1), 8)
    # Files the library creates in a shared temp dir must never be writable by others.
    if mask is None or mask > 0o777 or not mask & 0o002:
        expected = 'an octal mask like "077" that sets 0o002 (no world-writable files)'
        raise invalid(label, expected, value)
    return mask


def _path_text(value: object, label: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise invalid(label, "a path", value)
    return os.path.expanduser(value)


def _to_log_file(value: object, label: str, origin: Origin) -> Path:
    return Path(os.path.abspath(origin.relative_to / _path_text(value, label)))


def to_base_dir(value: object, label: str, origin: Origin) -> Path:
    return resolve_base_dir(_path_text(value, label), label, origin.relative_to, value)


class _Key(NamedTuple):
    """One TOML key: the dataclass field it sets and how its value is checked."""

    field: str
    convert: _Converter


KEYS: dict[str, _Key] = {
    "watch.base_dir": _Key("base_dir", to_base_dir),
    "watch.recursive": _Key("recursive", _to_bool),
    "watch.observer": _Key("observer", _one_of(_OBSERVER_KINDS)),
    "watch.rescan_interval": _Key("rescan_interval_seconds", _to_duration),
    "watch.exclude": _Key("exclude", _to_exclude),
    "watch.allow_system_dir": _Key("allow_system_dir", _to_bool),
    "cleanup.max_age": _Key("max_age_seconds", _to_duration),
    "cleanup.age_by": _Key("age_by", _to_age_by),
    "cleanup.interval": _Key("interval_seconds", _to_duration),
    "cleanup.skip_open_files": _Key("skip_open_files", _to_bool),
    "cleanup.lease_probe": _Key("lease_probe", _to_bool),
    "cleanup.secure_delete": _Key("secure_delete", _to_bool),
    "cleanup.owner_check": _Key("owner_check", _to_bool),
    "cleanup.dry_run": _Key("dry_run", _to_bool),
    "cleanup.remove_empty_dirs": _Key("remove_empty_dirs", _to_bool),
    "cleanup.permission_mask": _Key("permission_mask", _to_mask),
    "cleanup.batch_size": _Key("batch_size", _int_between(0, None)),
    "cleanup.batch_pause": _Key("batch_pause_seconds", _to_duration_or_zero),
    "cleanup.pass_timeout": _Key("pass_timeout_seconds", _to_duration_or_zero),
    "cleanup.threads": _Key("threads", _int_between(1, MAX_THREADS)),
    "limits.max_files": _Key("max_files", _int_between(0, None)),
    "limits.max_file_size": _Key("max_file_size_bytes", _to_size),
    "limits.max_total_size": _Key("max_total_size_bytes", _to_size),
    "limits.low_watermark": _Key("low_watermark", _to_watermark),
    "limits.min_free_space": _Key("min_free_space", _to_free_space),
    "limits.min_free_inodes": _Key("min_free_inodes", _to_free_inodes),
    "log.level": _Key("level", _one_of(LOG_LEVELS, upper=True)),
    "log.format": _Key("format", _one_of(_LOG_FORMATS)),
    "log.file": _Key("file", _to_log_file),
    "log.rotation": _Key("rotation", _to_text),
    "log.retention": _Key("retention", _to_retention),
    "metrics.enabled": _Key("enabled", _to_bool),
    "metrics.address": _Key("address", _to_text),
    "metrics.port": _Key("port", _int_between(0, 65535)),
    "metrics.backend": _Key("backend", _to_metrics_backend),
}
SECTIONS = tuple(dict.fromkeys(key.partition(".")[0] for key in KEYS))
