"""The `[[directory]]` entries of a config file: several directories, each with its rules.

Each entry names its `path` and any key of [watch], [cleanup] or [limits] written flat
(`max_age = "10d"`, `max_total_size = "2GiB"`); what it leaves out comes from those
sections at the top of the file, which act as defaults for every directory. Its
`[[directory.rule]]` tables are its per-pattern rules, first match wins. Settings that can
only be process-wide (the [log] and [metrics] sections) are refused inside a directory.

This module reads and checks the raw TOML values; `tempwatch.configload` builds the Configs.
Every error is one line naming the entry (`directory[2]`, counted from 1) and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from tempwatch.configkeys import KEYS, Origin, closest, invalid, to_base_dir
from tempwatch.errors import ConfigError
from tempwatch.globs import compile_globs
from tempwatch.rules import Rule
from tempwatch.units import render_value

__all__ = ["DIRECTORY_KEYS", "RawDirectory", "parse_directories", "parse_rules"]

_PER_DIRECTORY_SECTIONS = ("watch", "cleanup", "limits")
DIRECTORY_KEYS: Mapping[str, str] = {
    key.partition(".")[2]: key
    for key in KEYS
    if key.partition(".")[0] in _PER_DIRECTORY_SECTIONS and key != "watch.base_dir"
}
"""Flat key inside a [[directory]] -> the dotted key it sets."""

_PROCESS_WIDE = {key.partition(".")[2]: key for key in KEYS if key.startswith(("log.", "metrics."))}
_RULE_KEYS: Mapping[str, str] = {
    "max_age": "cleanup.max_age",
    "max_file_size": "limits.max_file_size",
    "age_by": "cleanup.age_by",
}


class RawDirectory(NamedTuple):
    """One checked [[directory]] entry: its resolved path, its own values, its rules."""

    label: str  # "directory[2]"
    path: Path
    values: dict[str, object]  # dotted key -> converted value, only what the entry sets
    rules: tuple[Rule, ...]


def parse_directories(raw: object, origin: Origin) -> list[RawDirectory]:
    """Check the value of the file's `directory` key (an array of tables)."""
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise invalid("directory", "[[directory]] tables", raw)
    if not raw:
        raise ConfigError("directory: at least one [[directory]] entry, each with a path")
    entries = [_parse_entry(entry, f"directory[{n}]", origin) for n, entry in enumerate(raw, 1)]
    seen: dict[Path, str] = {}
    for entry in entries:
        if entry.path in seen:
            raise ConfigError(
                f"{entry.label}.path: {render_value(str(entry.path))} is already "
                f"{seen[entry.path]}: give each directory one entry"
            )
        seen[entry.path] = entry.label
    return entries


def _parse_entry(entry: dict[str, object], label: str, origin: Origin) -> RawDirectory:
    if "path" not in entry:
        raise ConfigError(f"{label}: every [[directory]] needs a path")
    path = to_base_dir(entry["path"], f"{label}.path", origin)
    shown = f"{label} ({path})"
    values: dict[str, object] = {}
    rules: tuple[Rule, ...] = ()
    for key, value in entry.items():
        if key == "path":
            continue
        if key == "rule":
            rules = _parse_rules(value, label, origin)
            continue
        dotted = DIRECTORY_KEYS.get(key)
        if dotted is None:
            raise _bad_key(shown, key)
        values[dotted] = KEYS[dotted].convert(value, f"{shown}.{key}", origin)
    return RawDirectory(label, path, values, rules)


def _bad_key(shown: str, key: str) -> ConfigError:
    if key in _PROCESS_WIDE:
        section = _PROCESS_WIDE[key].partition(".")[0]
        return ConfigError(
            f"{shown}: {render_value(key)} is process-wide: set it in [{section}] at the top"
        )
    if key == "base_dir":
        return ConfigError(f'{shown}: a directory is named by "path", not "base_dir"')
    close = closest(key, [*DIRECTORY_KEYS, "path", "rule"])
    hint = f' (did you mean "{close}"?)' if close else ""
    return ConfigError(f"{shown}: unknown key {render_value(key)}{hint}")


def _parse_rules(raw: object, label: str, origin: Origin) -> tuple[Rule, ...]:
    if not isinstance(raw, list) or not all(isinstance(rule, dict) for rule in raw):
        raise invalid(f"{label}.rule", "[[directory.rule]] tables", raw)
    return parse_rules(raw, f"{label}.rule", origin)


def parse_rules(raw: object, label: str, origin: Origin | None = None) -> tuple[Rule, ...]:
    """Rule tables, as `[[directory.rule]]` and the library's `rules=` give them, checked
    into Rules; a ConfigError names `label[n]` (counted from 1) and the key."""
    origin = origin if origin is not None else Origin(Path.cwd())
    if not isinstance(raw, list | tuple) or not all(isinstance(rule, Mapping) for rule in raw):
        raise invalid(label, 'a list of rule tables like {"match": "*.pid", "keep": true}', raw)
    return tuple(
        _parse_rule(dict(rule), f"{label}[{n}]", origin) for n, rule in enumerate(raw, 1)
    )


def _parse_rule(raw: dict[str, object], label: str, origin: Origin) -> Rule:
    match = raw.get("match")
    if not _is_glob(match):
        raise invalid(f"{label}.match", "a glob relative to the directory, like \"*.log\"", match)
    assert isinstance(match, str)
    compile_globs((match,))
    keep = raw.get("keep", False)
    if not isinstance(keep, bool):
        raise invalid(f"{label}.keep", "true or false", keep)
    settings: dict[str, object] = {}
    for key, value in raw.items():
        if key in ("match", "keep"):
            continue
        dotted = _RULE_KEYS.get(key)
        if dotted is None:
            close = closest(key, [*_RULE_KEYS, "match", "keep"])
            hint = f' (did you mean "{close}"?)' if close else ""
            raise ConfigError(f"{label}: unknown key {render_value(key)}{hint}")
        settings[key] = KEYS[dotted].convert(value, f"{label}.{key}", origin)
    if keep and settings:
        raise ConfigError(f"{label}: keep = true never deletes: drop {', '.join(settings)}")
    if not keep and not settings:
        raise ConfigError(f"{label}: a rule sets keep = true, max_age, max_file_size or age_by")
    return Rule(
        match,
        keep=keep,
        max_age_seconds=_float_or_none(settings.get("max_age")),
        max_file_size_bytes=_int_or_none(settings.get("max_file_size")),
        age_by=settings.get("age_by"),  # type: ignore[arg-type]  # checked by its converter
    )


def _is_glob(value: object) -> bool:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        return False
    return not os.path.isabs(value) and ".." not in value.split("/")


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
