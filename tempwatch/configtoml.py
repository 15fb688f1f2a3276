"""The effective configuration rendered as the TOML file it could have come from.

`Config.to_dict` and `Config.to_toml` call these: `tempwatch check-config` prints the
result, and `load_config` reads it back to an equal Config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tempwatch.age import AGE_SOURCES
from tempwatch.directories import DIRECTORY_KEYS
from tempwatch.errors import ConfigError
from tempwatch.pressure import FreeAmount
from tempwatch.rules import Rule
from tempwatch.units import format_duration, format_size, parse_duration, parse_size

if TYPE_CHECKING:
    from tempwatch.config import Config

__all__ = ["config_to_dict", "config_to_toml"]


def config_to_dict(config: Config) -> dict[str, object]:
    """The effective config as a nested dict keyed like the TOML file (JSON-serialisable).

    Durations and sizes use human units when that is exact; unset optional values
    are left out, as TOML has no null.
    """
    tables: dict[str, object] = dict(_tables(config))
    if config.directories:
        tables["directory"] = [_directory_table(d) for d in config.directories]
    return tables


def config_to_toml(config: Config) -> str:
    """The effective config as TOML; load_config reads it back to an equal Config."""
    lines = ["# Effective tempwatch configuration."]
    if config.source is not None:
        lines.append(f"# Loaded from {_toml_value(str(config.source))}.")
    for section, table in _tables(config).items():
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    for directory in config.directories:
        table = _directory_table(directory)
        rules = table.pop("rule", [])
        lines += ["", "[[directory]]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        for rule in rules if isinstance(rules, list) else []:
            lines += ["", "[[directory.rule]]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in rule.items()]
    return "\n".join(lines) + "\n"


def _directory_table(config: Config) -> dict[str, object]:
    """One [[directory]] entry: its path, every per-directory key flat, then its rules."""
    tables = _tables(config)
    table: dict[str, object] = {"path": str(config.watch.base_dir)}
    for key, dotted in DIRECTORY_KEYS.items():
        section, _, leaf = dotted.partition(".")
        table[key] = tables[section][leaf]
    if config.rules:
        table["rule"] = [_rule_table(rule) for rule in config.rules]
    return table


def _rule_table(rule: Rule) -> dict[str, object]:
    table: dict[str, object] = {"match": rule.match}
    if rule.keep:
        table["keep"] = True
    if rule.max_age_seconds is not None:
        table["max_age"] = _human_duration(rule.max_age_seconds)
    if rule.max_file_size_bytes is not None:
        table["max_file_size"] = _human_size(rule.max_file_size_bytes)
    if rule.age_by is not None:
        table["age_by"] = [source for source in AGE_SOURCES if source in rule.age_by]
    return table


def _tables(config: Config) -> dict[str, dict[str, object]]:
    watch, cleanup, limits, log = config.watch, config.cleanup, config.limits, config.log
    log_table = {
        "level": log.level,
        "format": log.format,
        "file": None if log.file is None else str(log.file),
        "rotation": log.rotation,
        "retention": log.retention,
    }
    watch_table: dict[str, object] = {} if config.directories else {
        "base_dir": str(watch.base_dir)
    }
    return {
        "watch": {
            **watch_table,
            "recursive": watch.recursive,
            "observer": watch.observer,
            "rescan_interval": _human_duration(watch.rescan_interval_seconds),
            # Patterns with a leading "/" are the directories nested in this one, added by
            # the loader (a user's patterns are relative): it adds them again on reading.
            "exclude": [p for p in watch.exclude if not p.startswith("/")],
            "allow_system_dir": watch.allow_system_dir,
        },
        "cleanup": {
            "max_age": _human_duration(cleanup.max_age_seconds),
            "age_by": [source for source in AGE_SOURCES if source in cleanup.age_by],
            "interval": _human_duration(cleanup.interval_seconds),
            "skip_open_files": cleanup.skip_open_files,
            "lease_probe": cleanup.lease_probe,
            "secure_delete": cleanup.secure_delete,
            "owner_check": cleanup.owner_check,
            "dry_run": cleanup.dry_run,
            "remove_empty_dirs": cleanup.remove_empty_dirs,
            "permission_mask": f"0o{cleanup.permission_mask:03o}",
            "batch_size": cleanup.batch_size,
            "batch_pause": _human_duration_or_zero(cleanup.batch_pause_seconds),
            "pass_timeout": _human_duration_or_zero(cleanup.pass_timeout_seconds),
            "threads": cleanup.threads,
        },
        "limits": {
            "max_files": limits.max_files,
            "max_file_size": _human_size(limits.max_file_size_bytes),
            "max_total_size": _human_size(limits.max_total_size_bytes),
            "low_watermark": limits.low_watermark,
            "min_free_space": _free_space(limits.min_free_space),
            "min_free_inodes": _free_inodes(limits.min_free_inodes),
        },
        "log": {key: value for key, value in log_table.items() if value is not None},
        "metrics": {
            "enabled": config.metrics.enabled,
            "address": config.metrics.address,
            "port": config.metrics.port,
            "backend": config.metrics.backend,
        },
    }


def _human_duration(seconds: float) -> str | float:
    text = format_duration(seconds)
    try:
        return text if parse_duration(text, "") == seconds else seconds
    except ConfigError:
        return seconds


def _human_duration_or_zero(seconds: float) -> str | float | int:
    return 0 if seconds == 0 else _human_duration(seconds)


def _free_space(amount: FreeAmount | None) -> str | int:
    if amount is None:
        return 0  # off
    return str(amount) if amount.is_percent else _human_size(int(amount.value))


def _free_inodes(amount: FreeAmount | None) -> str | int:
    if amount is None:
        return 0  # off
    return str(amount) if amount.is_percent else int(amount.value)


def _human_size(size_bytes: int) -> str | int:
    if size_bytes == 0:
        return 0  # reads as "unlimited" better than "0 B"
    text = format_size(size_bytes)
    return text if parse_size(text, "") == size_bytes else size_bytes


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    chars = (
        _TOML_ESCAPES.get(char)
        or (f"\\u{ord(char):04X}" if ord(char) < 0x20 or ord(char) == 0x7F else char)
        for char in text
    )
    return '"' + "".join(chars) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")
