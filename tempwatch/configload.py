"""The one loader that builds a Config, from the layers a setting can come from.

Precedence, lowest to highest: built-in defaults < TOML file < environment < overrides
(the command line). Every value from every layer is validated, so a broken config file
is reported even when the environment happens to override the broken key. The loader
reads files and stats paths, but never logs, exits, creates or deletes anything.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tempwatch.basedir import refuse_protected
from tempwatch.config import (
    CleanupConfig,
    Config,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    WatchConfig,
    default_base_dir,
)
from tempwatch.configkeys import KEYS, SECTIONS, Origin, closest, invalid, to_base_dir
from tempwatch.errors import ConfigError
from tempwatch.rules import Rule
from tempwatch.units import render_value

if TYPE_CHECKING:
    from tempwatch.directories import RawDirectory

__all__ = [
    "CONFIG_PATH_ENV",
    "ENV_VARS",
    "SYSTEM_CONFIG_PATH",
    "find_config_file",
    "load_config",
    "parse_effective_config",
]

CONFIG_PATH_ENV = "TEMPWATCH_CONFIG"
"""Environment variable naming the config file when no path is passed to load_config."""

SYSTEM_CONFIG_PATH = Path("/etc/tempwatch/config.toml")
"""The config file the command line reads when neither --config nor $TEMPWATCH_CONFIG names one."""

ENV_VARS: Mapping[str, str] = {
    "TEMP_FILE_BASE_DIR": "watch.base_dir",
    "TEMP_FILE_ALLOW_SYSTEM_DIR": "watch.allow_system_dir",
    "TEMP_FILE_MAX_AGE": "cleanup.max_age",
    "TEMP_FILE_AGE_BY": "cleanup.age_by",
    "TEMP_FILE_CLEANUP_INTERVAL": "cleanup.interval",
    "MAX_TEMP_FILES": "limits.max_files",
    "TEMP_FILE_MIN_FREE_SPACE": "limits.min_free_space",
    "TEMP_FILE_MIN_FREE_INODES": "limits.min_free_inodes",
    "TEMP_FILE_SIZE_LIMIT": "limits.max_file_size",
    "TEMP_FILE_SECURE_DELETE": "cleanup.secure_delete",
    "TEMP_FILE_PERMISSION_MASK": "cleanup.permission_mask",
    "TEMP_FILE_OWNER_CHECK": "cleanup.owner_check",
    "LOG_LEVEL": "log.level",
    "LOG_FORMAT": "log.format",
    "LOG_FILE": "log.file",
    "ENABLE_TEMP_FILE_METRICS": "metrics.enabled",
    "PROMETHEUS_PORT": "metrics.port",
    "TEMP_FILE_CLEANUP_BATCH_SIZE": "cleanup.batch_size",
    "TEMP_FILE_CLEANUP_THREADS": "cleanup.threads",
    "TEMP_FILE_CLEANUP_TIMEOUT": "cleanup.pass_timeout",
    "METRICS_BACKEND": "metrics.backend",
}
"""Environment variable -> the TOML key it overrides."""



def _toml() -> ModuleType:
    # Imported when a file is read: with no config file (`status --base-dir DIR`, a
    # container configured by its environment) the parser and datetime are never loaded.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - the tomli backport has the same API
        import tomli as tomllib
    return tomllib


# --- the layers ----------------------------------------------------------------------------


def _unknown(kind: str, name: str, suggestion: str | None) -> ConfigError:
    hint = f' (did you mean "{suggestion}"?)' if suggestion else ""
    return ConfigError(f"unknown {kind} {render_value(name)}{hint}")


def _suggest_key(name: str) -> str | None:
    # A right key in the wrong section ("cleanup.max_files") or without one ("port") is
    # a likelier mistake than a typo, so the last part is compared first.
    by_leaf = {key.rpartition(".")[2]: key for key in KEYS}
    leaf = name.rpartition(".")[2]
    if leaf in by_leaf:
        return by_leaf[leaf]
    close = closest(name, KEYS)
    if close is None and (leaf_match := closest(leaf, by_leaf)) is not None:
        close = by_leaf[leaf_match]
    return close


def _convert(key: str, value: object, label: str, origin: Origin) -> tuple[str, object]:
    spec = KEYS.get(key)
    if spec is None:
        raise _unknown("key", key, _suggest_key(key))
    return key, spec.convert(value, label, origin)


def _read_toml(path: Path, shown: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {shown}") from e
    except OSError as e:
        raise ConfigError(f"cannot read config file {shown}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{shown}: invalid TOML: not UTF-8 ({e.reason})") from e
    tomllib = _toml()
    try:
        tables: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{shown}: invalid TOML: {' '.join(str(e).split())}") from e
    return tables


def _from_toml(path: Path, shown: str) -> tuple[dict[str, object], list[RawDirectory] | None]:
    return _from_tables(_read_toml(path, shown), Origin(relative_to=path.parent))


def _from_tables(
    tables: dict[str, Any], origin: Origin
) -> tuple[dict[str, object], list[RawDirectory] | None]:
    values: dict[str, object] = {}
    directories: list[RawDirectory] | None = None
    for section, table in tables.items():
        if section == "directory":
            from tempwatch.directories import parse_directories  # only for [[directory]]

            directories = parse_directories(table, origin)
            continue
        if section in SECTIONS and not isinstance(table, dict):
            raise invalid(section, f"a table ([{section}])", table)
        if not isinstance(table, dict):
            raise _unknown("key", section, _suggest_key(section))
        if section not in SECTIONS:
            raise _unknown("section", section, closest(section, SECTIONS))
        for key, value in table.items():
            dotted = f"{section}.{key}"
            values.update([_convert(dotted, value, dotted, origin)])
    return values, directories


def _from_env(env: Mapping[str, str], cwd: Path) -> dict[str, object]:
    origin = Origin(relative_to=cwd, from_env=True)
    values: dict[str, object] = {}
    for variable, key in ENV_VARS.items():
        raw = env.get(variable, "")
        if raw.strip():
            values.update([_convert(key, raw, f"{variable} (environment)", origin)])
    return values


def _from_overrides(
    overrides: Mapping[str, object], cwd: Path, labels: Mapping[str, str]
) -> dict[str, object]:
    origin = Origin(relative_to=cwd)
    # None means "flag not given", so the CLI can pass every option it has.
    return dict(
        _convert(key, value, labels.get(key, key), origin)
        for key, value in overrides.items()
        if value is not None
    )


def find_config_file(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    *,
    system_path: Path = SYSTEM_CONFIG_PATH,
) -> tuple[Path | None, str]:
    """The config file to read, and why: `path`, else $TEMPWATCH_CONFIG, else `system_path`
    if it exists, else none. The reason is for people ("--config", "$TEMPWATCH_CONFIG", ...).
    """
    environ = os.environ if env is None else env
    if path is not None:
        return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))), "--config"
    if environ.get(CONFIG_PATH_ENV, "").strip():
        found = _config_file(None, environ)
        return (None if found is None else found[0]), f"${CONFIG_PATH_ENV}"
    if system_path.is_file():
        return system_path, "the default location"
    return None, f"none given (no --config, no ${CONFIG_PATH_ENV}, no {system_path})"


def _config_file(path: str | Path | None, env: Mapping[str, str]) -> tuple[Path, str] | None:
    given = os.fspath(path) if path is not None else env.get(CONFIG_PATH_ENV, "").strip()
    if not given:
        return None
    expanded = os.path.expanduser(given)
    return Path(os.path.abspath(expanded)), expanded


def _build(
    values: Mapping[str, object],
    source: Path | None,
    cwd: Path,
    base_dir_label: str,
    rules: tuple[Rule, ...] = (),
) -> Config:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        sections[key.partition(".")[0]][KEYS[key].field] = value
    if "base_dir" not in sections["watch"]:
        origin = Origin(relative_to=cwd)
        sections["watch"]["base_dir"] = to_base_dir(default_base_dir(), "watch.base_dir", origin)
    watch = WatchConfig(**sections["watch"])
    refuse_protected(watch.base_dir, base_dir_label, allow_system_dir=watch.allow_system_dir)
    return Config(
        watch=watch,
        cleanup=CleanupConfig(**sections["cleanup"]),
        limits=LimitsConfig(**sections["limits"]),
        log=LogConfig(**sections["log"]),
        metrics=MetricsConfig(**sections["metrics"]),
        source=source,
        rules=rules,
    )


def _build_directories(
    toml: Mapping[str, object],
    entries: list[RawDirectory],
    later: Mapping[str, object],
    source: Path | None,
    cwd: Path,
) -> Config:
    """One Config per [[directory]]: top-level sections < its own keys < env and flags.

    `later` (environment and command line) beats a directory's own keys: a flag such as
    --max-age means "for every directory". --base-dir keeps only the directory it names
    (or one with the top-level settings, if it names none).
    """
    if "watch.base_dir" in toml:
        raise ConfigError(
            "watch.base_dir: cannot be combined with [[directory]] entries: "
            "make it a [[directory]] with its path"
        )
    wanted = later.get("watch.base_dir")
    later = {key: value for key, value in later.items() if key != "watch.base_dir"}
    directories = [
        _build(
            {**toml, **entry.values, **later, "watch.base_dir": entry.path},
            source, cwd, f"{entry.label}.path", entry.rules,
        )
        for entry in entries
    ]
    directories = _separate_nested(directories)
    if wanted is not None:
        for directory in directories:
            if directory.watch.base_dir == wanted:
                return directory
        return _build({**toml, **later, "watch.base_dir": wanted}, source, cwd, "watch.base_dir")
    top = _build(
        {**toml, **later, "watch.base_dir": directories[0].watch.base_dir},
        source, cwd, "watch.base_dir",
    )
    return dataclasses.replace(top, directories=tuple(directories))


def _separate_nested(directories: list[Config]) -> list[Config]:
    """A directory configured inside another is excluded from the outer one: each path is
    governed by the innermost directory's entry only, and never cleaned twice."""
    out = []
    for outer in directories:
        base = outer.watch.base_dir
        inner = sorted(
            "/" + os.path.relpath(d.watch.base_dir, base)
            for d in directories
            if d.watch.base_dir != base and d.watch.base_dir.is_relative_to(base)
        )
        exclude = tuple(dict.fromkeys([*outer.watch.exclude, *inner]))
        if exclude != outer.watch.exclude:
            outer = dataclasses.replace(
                outer, watch=dataclasses.replace(outer.watch, exclude=exclude)
            )
        out.append(outer)
    return out


def parse_effective_config(text: str) -> Config:
    """A Config from `Config.to_toml`'s output, as it stands: no environment, no flags.

    For the running service's own config, which it reports on its health socket. Raises
    ConfigError, one line, if the text is not a valid config.
    """
    tomllib = _toml()
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"effective config: invalid TOML: {' '.join(str(e).split())}") from e
    root = Path("/")
    values, entries = _from_tables(tables, Origin(relative_to=root))
    if entries is None:
        return _build(values, None, root, "watch.base_dir")
    return _build_directories(values, entries, {}, None, root)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Config:
    """Build the effective Config: defaults < TOML file < environment < overrides.

    The file is `path`, else $TEMPWATCH_CONFIG, else none. `env=None` reads os.environ.
    `overrides` are TOML keys in dotted form ({"cleanup.max_age": "5m"}) checked like TOML
    values; a None value is ignored. Relative paths in the file are taken from the file's
    directory, others from the current directory. Raises ConfigError, one line, naming the
    key (or environment variable) and the bad value; `labels` names an override's key
    differently in that message ({"limits.max_files": "--max-files"}).
    """
    environ = os.environ if env is None else env
    cwd = Path.cwd()
    config_file = _config_file(path, environ)
    values: dict[str, object] = {}
    entries: list[RawDirectory] | None = None
    if config_file is not None:
        toml, entries = _from_toml(*config_file)
        values.update(toml)
    source = None if config_file is None else config_file[0]
    from_env = _from_env(environ, cwd)
    values.update(from_env)
    labels = labels or {}
    from_overrides = _from_overrides(overrides or {}, cwd, labels)
    if entries is not None:
        if "watch.base_dir" in from_env and "watch.base_dir" not in from_overrides:
            raise ConfigError(
                "TEMP_FILE_BASE_DIR (environment): the config file names its directories "
                "([[directory]]): unset it, or pass --base-dir for just one of them"
            )
        return _build_directories(values, entries, {**from_env, **from_overrides}, source, cwd)
    values.update(from_overrides)
    base_dir_label = "watch.base_dir"
    if "watch.base_dir" in from_overrides:
        base_dir_label = labels.get("watch.base_dir", base_dir_label)
    elif "watch.base_dir" in from_env:
        base_dir_label = "TEMP_FILE_BASE_DIR (environment)"
    return _build(values, source, cwd, base_dir_label)
