from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempwatch.config import (
    CleanupConfig,
    Config,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    WatchConfig,
    default_base_dir,
)
from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS, load_config
from tempwatch.errors import ConfigError
from tempwatch.pressure import FreeAmount

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def write_config(directory: Path, text: str, name: str = "config.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(
    path: Path | None = None,
    *,
    env: dict[str, str],
    overrides: dict[str, object] | None = None,
) -> str:
    """Load, expecting a ConfigError; return its message, checked to be one line."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env, overrides=overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- defaults and the TOML layer -------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(env={})
    assert config == Config(watch=WatchConfig())
    assert config.source is None
    assert config.watch.base_dir == default_base_dir()
    assert config.watch.base_dir == Path(os.path.realpath(tempfile.gettempdir())) / "tempwatch"
    assert config.cleanup == CleanupConfig(max_age_seconds=3600.0, interval_seconds=300.0)
    assert config.cleanup.permission_mask == 0o077
    assert config.limits == LimitsConfig(max_files=10000, max_file_size_bytes=100 * 1024**2)
    assert config.limits.max_total_size_bytes == 0 and config.limits.low_watermark == 0.9
    assert config.log == LogConfig(level="INFO", format="text", file=None)
    assert config.metrics == MetricsConfig(enabled=False, address="127.0.0.1", port=8328)


EVERY_KEY_TOML = """
[watch]
base_dir = "watched"
recursive = false
observer = "POLLING"
rescan_interval = "90s"
exclude = ["*.lock", "keep/**"]
allow_system_dir = true

[cleanup]
max_age = "1.5h"
age_by = ["accessed", "modified"]
interval = 30
skip_open_files = false
lease_probe = false
secure_delete = true
owner_check = true
dry_run = true
remove_empty_dirs = true
permission_mask = "0o027"
batch_size = 100
batch_pause = "10ms"
pass_timeout = "30s"
threads = 4

[limits]
max_files = 0
max_file_size = "1GB"
max_total_size = "2GiB"
low_watermark = 0.5
min_free_space = "12.5%"
min_free_inodes = 5000

[log]
level = "debug"
format = "json"
file = "logs/tempwatch.log"
rotation = "10 MB"
retention = 5

[metrics]
enabled = true
address = "0.0.0.0"
port = 0
backend = "Prometheus"
"""


def test_every_toml_key_sets_its_field(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", EVERY_KEY_TOML)
    config = load_config(path, env={})
    assert config == Config(
        watch=WatchConfig(
            base_dir=tmp_path / "etc" / "watched",
            recursive=False,
            observer="polling",
            rescan_interval_seconds=90.0,
            exclude=("*.lock", "keep/**"),
            allow_system_dir=True,
        ),
        cleanup=CleanupConfig(
            max_age_seconds=5400.0,
            age_by=frozenset({"accessed", "modified"}),
            interval_seconds=30.0,
            skip_open_files=False,
            lease_probe=False,
            secure_delete=True,
            owner_check=True,
            dry_run=True,
            remove_empty_dirs=True,
            permission_mask=0o027,
            batch_size=100,
            batch_pause_seconds=0.01,
            pass_timeout_seconds=30.0,
            threads=4,
        ),
        limits=LimitsConfig(
            max_files=0,
            max_file_size_bytes=10**9,
            max_total_size_bytes=2 * 1024**3,
            low_watermark=0.5,
            min_free_space=FreeAmount(12.5, is_percent=True),
            min_free_inodes=FreeAmount(5000),
        ),
        log=LogConfig(
            level="DEBUG",
            format="json",
            file=tmp_path / "etc" / "logs" / "tempwatch.log",
            rotation="10 MB",
            retention="5",
        ),
        metrics=MetricsConfig(enabled=True, address="0.0.0.0", port=0),
    )
    assert config.source == path
    # No key is silently ignored: every field moved away from its default (but the one
    # metrics backend, which has no other value to move to).
    defaults = load_config(env={})
    for section in ("watch", "cleanup", "limits", "log", "metrics"):
        loaded, default = getattr(config, section), getattr(defaults, section)
        for field in dataclasses.fields(loaded):
            if field.name != "backend":
                assert getattr(loaded, field.name) != getattr(default, field.name), field.name


def test_loader_creates_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path / "etc", EVERY_KEY_TOML)
    load_config(path, env={})
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.toml", "etc"]


@pytest.mark.parametrize(
    "literal", ['"077"', '"0o077"', '"0O077"', "0o077", "63", '" 077 "', '"0077"']
)
def test_permission_mask_forms(tmp_path: Path, literal: str) -> None:
    path = write_config(tmp_path, f"[cleanup]\npermission_mask = {literal}\n")
    assert load_config(path, env={}).cleanup.permission_mask == 0o077


# --- precedence: default < TOML < environment < overrides --------------------------------------


def test_toml_beats_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cleanup]\nmax_age = "2h"\n')
    assert load_config(path, env={}).cleanup.max_age_seconds == 7200.0


def test_environment_beats_toml(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cleanup]\nmax_age = "2h"\n')
    config = load_config(path, env={"TEMP_FILE_MAX_AGE": "3h"})
    assert config.cleanup.max_age_seconds == 10800.0


def test_overrides_beat_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cleanup]\nmax_age = "2h"\n')
    config = load_config(
        path, env={"TEMP_FILE_MAX_AGE": "3h"}, overrides={"cleanup.max_age": "4h"}
    )
    assert config.cleanup.max_age_seconds == 14400.0


def test_none_override_means_not_given(tmp_path: Path) -> None:
    config = load_config(env={"TEMP_FILE_MAX_AGE": "3h"}, overrides={"cleanup.max_age": None})
    assert config.cleanup.max_age_seconds == 10800.0


def test_a_broken_file_value_is_reported_even_when_overridden(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cleanup]\nmax_age = "soon"\n')
    message = config_error(path, env={"TEMP_FILE_MAX_AGE": "3h"})
    assert message.startswith("cleanup.max_age: ")


@pytest.mark.parametrize(
    ("variable", "raw", "section", "field", "expected"),
    [
        ("TEMP_FILE_MAX_AGE", "2m", "cleanup", "max_age_seconds", 120.0),
        ("TEMP_FILE_CLEANUP_INTERVAL", "45", "cleanup", "interval_seconds", 45.0),
        ("MAX_TEMP_FILES", "25", "limits", "max_files", 25),
        ("TEMP_FILE_SIZE_LIMIT", "1MiB", "limits", "max_file_size_bytes", 1024**2),
        ("TEMP_FILE_SECURE_DELETE", "true", "cleanup", "secure_delete", True),
        ("TEMP_FILE_PERMISSION_MASK", "027", "cleanup", "permission_mask", 0o027),
        ("TEMP_FILE_PERMISSION_MASK", "0o007", "cleanup", "permission_mask", 0o007),
        ("TEMP_FILE_OWNER_CHECK", "yes", "cleanup", "owner_check", True),
        ("LOG_LEVEL", "warning", "log", "level", "WARNING"),
        ("LOG_FORMAT", "JSON", "log", "format", "json"),
        ("ENABLE_TEMP_FILE_METRICS", "on", "metrics", "enabled", True),
        ("PROMETHEUS_PORT", "9100", "metrics", "port", 9100),
        ("TEMP_FILE_CLEANUP_BATCH_SIZE", "100", "cleanup", "batch_size", 100),
        ("TEMP_FILE_CLEANUP_THREADS", "4", "cleanup", "threads", 4),
        ("TEMP_FILE_CLEANUP_TIMEOUT", "30", "cleanup", "pass_timeout_seconds", 30.0),
        ("TEMP_FILE_CLEANUP_TIMEOUT", "1m30s", "cleanup", "pass_timeout_seconds", 90.0),
        ("TEMP_FILE_MIN_FREE_SPACE", "10%", "limits", "min_free_space", FreeAmount(10, True)),
        ("TEMP_FILE_MIN_FREE_SPACE", "5GiB", "limits", "min_free_space",
         FreeAmount(5 * 1024**3)),
        ("TEMP_FILE_MIN_FREE_INODES", "2.5 %", "limits", "min_free_inodes",
         FreeAmount(2.5, True)),
        ("TEMP_FILE_MIN_FREE_INODES", "1000", "limits", "min_free_inodes", FreeAmount(1000)),
    ],
)
def test_each_environment_variable(
    variable: str, raw: str, section: str, field: str, expected: object
) -> None:
    config = load_config(env={variable: raw})
    assert getattr(getattr(config, section), field) == expected
    assert getattr(getattr(load_config(env={}), section), field) != expected


def test_environment_paths_are_taken_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={"TEMP_FILE_BASE_DIR": "watched", "LOG_FILE": "t.log"})
    assert config.watch.base_dir == tmp_path / "watched"
    assert config.log.file == tmp_path / "t.log"


@pytest.mark.parametrize(
    ("word", "expected"),
    [("true", True), ("TRUE", True), ("1", True), (" Yes ", True), ("on", True)]
    + [("false", False), ("False", False), ("0", False), ("no", False), ("OFF", False)],
)
def test_environment_booleans(word: str, expected: bool) -> None:
    config = load_config(env={"TEMP_FILE_SECURE_DELETE": word, "TEMP_FILE_OWNER_CHECK": word})
    assert config.cleanup.secure_delete is expected
    assert config.cleanup.owner_check is expected


@pytest.mark.parametrize("blank", ["", "  "])
def test_empty_environment_variable_is_unset(tmp_path: Path, blank: str) -> None:
    path = write_config(tmp_path, '[cleanup]\nmax_age = "2h"\n')
    env = {variable: blank for variable in [*ENV_VARS, CONFIG_PATH_ENV]}
    assert load_config(path, env=env) == load_config(path, env={})


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENV_VARS, CONFIG_PATH_ENV]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TEMP_FILE_MAX_AGE", "2m")
    assert load_config().cleanup.max_age_seconds == 120.0


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cleanup]\nmax_age = "2h"\n')
    config = load_config(env={CONFIG_PATH_ENV: str(path)})
    assert config.cleanup.max_age_seconds == 7200.0
    assert config.source == path


def test_path_argument_beats_environment_config_path(tmp_path: Path) -> None:
    chosen = write_config(tmp_path / "a", '[cleanup]\nmax_age = "2h"\n')
    other = write_config(tmp_path / "b", '[cleanup]\nmax_age = "3h"\n')
    config = load_config(chosen, env={CONFIG_PATH_ENV: str(other)})
    assert config.cleanup.max_age_seconds == 7200.0


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_missing_config_file(tmp_path: Path, via: str) -> None:
    missing = tmp_path / "config.toml"
    if via == "argument":
        message = config_error(missing, env={})
    else:
        message = config_error(env={CONFIG_PATH_ENV: str(missing)})
    assert message == f"config file not found: {missing}"


def test_unreadable_config_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, env={})
    assert message.startswith(f"cannot read config file {tmp_path}: ")


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[log]\nlevel = "\xff"\n')
    assert config_error(path, env={}).startswith(f"{path}: invalid TOML: not UTF-8")


# --- invalid values ------------------------------------------------------------------------


INVALID_TOML_VALUES = [
    ("watch.base_dir", "5", "5"),
    ("watch.base_dir", '""', '""'),
    ("watch.recursive", '"yes"', '"yes"'),
    ("watch.recursive", "1", "1"),
    ("watch.observer", '"fsevents"', '"fsevents"'),
    ("watch.rescan_interval", "0", "0"),
    ("watch.rescan_interval", '"-5m"', '"-5m"'),
    ("watch.exclude", '"*.lock"', '"*.lock"'),
    ("watch.exclude", "[1, 2]", "[1, 2]"),
    ("watch.exclude", '["/abs/*"]', "['/abs/*']"),
    ("watch.exclude", '[""]', "['']"),
    ("cleanup.max_age", "0", "0"),
    ("cleanup.age_by", "[]", "[]"),
    ("cleanup.age_by", '"modified"', '"modified"'),
    ("cleanup.age_by", '["born"]', "['born']"),
    ("cleanup.max_age", "-1", "-1"),
    ("cleanup.max_age", '"0s"', '"0s"'),
    ("cleanup.max_age", '"soon"', '"soon"'),
    ("cleanup.max_age", "true", "True"),
    ("cleanup.max_age", "inf", "inf"),
    ("cleanup.interval", "0", "0"),
    ("cleanup.interval", '"-1s"', '"-1s"'),
    ("cleanup.skip_open_files", '"true"', '"true"'),
    ("cleanup.secure_delete", "0", "0"),
    ("cleanup.owner_check", '"no"', '"no"'),
    ("cleanup.dry_run", "1", "1"),
    ("cleanup.remove_empty_dirs", '"false"', '"false"'),
    ("cleanup.permission_mask", '"abc"', '"abc"'),
    ("cleanup.permission_mask", '"1000"', '"1000"'),
    ("cleanup.permission_mask", "512", "512"),
    ("cleanup.permission_mask", "-1", "-1"),
    ("cleanup.permission_mask", "true", "True"),
    ("cleanup.permission_mask", '"000"', '"000"'),  # would create world-writable files
    ("cleanup.permission_mask", "77", "77"),  # decimal 77 is 0o115: world-writable
    ("limits.max_files", "-1", "-1"),
    ("limits.max_files", "true", "True"),
    ("limits.max_files", '"10"', '"10"'),  # strings for ints only via the environment
    ("limits.max_files", "1.5", "1.5"),
    ("limits.max_file_size", "-1", "-1"),
    ("limits.max_file_size", '"-1MiB"', '"-1MiB"'),
    ("limits.max_file_size", '"10 XB"', '"10 XB"'),
    ("limits.max_total_size", "-5", "-5"),
    ("limits.max_total_size", '"lots"', '"lots"'),
    ("limits.low_watermark", "0", "0"),
    ("limits.low_watermark", "1.5", "1.5"),
    ("limits.low_watermark", "-0.1", "-0.1"),
    ("limits.low_watermark", "nan", "nan"),
    ("limits.low_watermark", "true", "True"),
    ("limits.low_watermark", '"0.9"', '"0.9"'),
    ("limits.min_free_space", '"100%"', '"100%"'),
    ("limits.min_free_space", '"0%"', '"0%"'),
    ("limits.min_free_space", '"-5%"', '"-5%"'),
    ("limits.min_free_space", '"ten percent"', '"ten percent"'),
    ("limits.min_free_space", "-1", "-1"),
    ("limits.min_free_space", "0.5", "0.5"),
    ("limits.min_free_space", "true", "True"),
    ("limits.min_free_inodes", '"5GiB"', '"5GiB"'),
    ("limits.min_free_inodes", '"150%"', '"150%"'),
    ("limits.min_free_inodes", "-3", "-3"),
    ("limits.min_free_inodes", "2.5", "2.5"),
    ("limits.min_free_inodes", "false", "False"),
    ("log.level", '"verbose"', '"verbose"'),
    ("log.level", "10", "10"),
    ("log.format", '"xml"', '"xml"'),
    ("log.file", '""', '""'),
    ("log.file", "5", "5"),
    ("log.rotation", '""', '""'),
    ("log.rotation", "5", "5"),
    ("log.retention", '"  "', '"  "'),
    ("log.retention", "0", "0"),
    ("log.retention", "true", "True"),
    ("metrics.enabled", '"true"', '"true"'),
    ("metrics.address", '""', '""'),
    ("metrics.address", "127", "127"),
    ("metrics.port", "70000", "70000"),
    ("metrics.port", "-1", "-1"),
    ("metrics.port", '"8328"', '"8328"'),
    ("metrics.port", "true", "True"),
    ("metrics.backend", '"statsd"', '"statsd"'),
    ("metrics.backend", "1", "1"),
    ("cleanup.batch_size", "-1", "-1"),
    ("cleanup.batch_size", '"100"', '"100"'),
    ("cleanup.batch_size", "1.5", "1.5"),
    ("cleanup.batch_pause", "-1", "-1"),
    ("cleanup.batch_pause", '"soon"', '"soon"'),
    ("cleanup.pass_timeout", '"-30s"', '"-30s"'),
    ("cleanup.pass_timeout", "inf", "inf"),
    ("cleanup.pass_timeout", "true", "True"),
    ("cleanup.threads", "0", "0"),
    ("cleanup.threads", "65", "65"),
    ("cleanup.threads", '"4"', '"4"'),
]


@pytest.mark.parametrize(("key", "literal", "shown"), INVALID_TOML_VALUES)
def test_invalid_toml_value(tmp_path: Path, key: str, literal: str, shown: str) -> None:
    section, _, name = key.partition(".")
    path = write_config(tmp_path, f"[{section}]\n{name} = {literal}\n")
    message = config_error(path, env={})
    assert message.startswith(f"{key}: expected ")
    assert message.endswith(f"got {shown}")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("cleanup.max_age", "soon"),
        ("limits.max_files", "10"),  # the CLI must pass ints, as TOML does
        ("cleanup.dry_run", "yes"),
        ("metrics.port", 65536),
        ("watch.base_dir", "/tmp/a\0b"),
    ],
)
def test_invalid_override_value(key: str, value: object) -> None:
    message = config_error(env={}, overrides={key: value})
    assert message.startswith(f"{key}: expected ")
    assert message.endswith(f"got {json.dumps(value)}")


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TEMP_FILE_MAX_AGE", "soon"),
        ("TEMP_FILE_MAX_AGE", "0"),
        ("TEMP_FILE_CLEANUP_INTERVAL", "-5s"),
        ("MAX_TEMP_FILES", "-5"),
        ("MAX_TEMP_FILES", "ten"),
        ("MAX_TEMP_FILES", "1.5"),
        ("TEMP_FILE_SIZE_LIMIT", "big"),
        ("TEMP_FILE_SECURE_DELETE", "maybe"),
        ("TEMP_FILE_OWNER_CHECK", "2"),
        ("TEMP_FILE_PERMISSION_MASK", "999"),
        ("TEMP_FILE_PERMISSION_MASK", "0o660"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("ENABLE_TEMP_FILE_METRICS", "enabled"),
        ("PROMETHEUS_PORT", "70000"),
        ("PROMETHEUS_PORT", "http"),
        ("TEMP_FILE_BASE_DIR", "/"),
        ("TEMP_FILE_CLEANUP_BATCH_SIZE", "-1"),
        ("TEMP_FILE_CLEANUP_BATCH_SIZE", "lots"),
        ("TEMP_FILE_CLEANUP_THREADS", "0"),
        ("TEMP_FILE_CLEANUP_THREADS", "many"),
        ("TEMP_FILE_CLEANUP_TIMEOUT", "-30"),
        ("TEMP_FILE_CLEANUP_TIMEOUT", "30 seconds"),
        ("METRICS_BACKEND", "statsd"),
    ],
)
def test_invalid_environment_value_names_the_variable(variable: str, raw: str) -> None:
    message = config_error(env={variable: raw})
    assert message.startswith(f"{variable} (environment): expected ")
    assert f'got "{raw}"' in message


def test_the_original_deployments_advanced_settings_are_taken() -> None:
    env = {
        "TEMP_FILE_CLEANUP_BATCH_SIZE": "100",
        "TEMP_FILE_CLEANUP_THREADS": "4",
        "TEMP_FILE_CLEANUP_TIMEOUT": "30",
        "METRICS_BACKEND": "prometheus",
    }
    config = load_config(env=env)
    assert (config.cleanup.batch_size, config.cleanup.threads) == (100, 4)
    assert config.cleanup.pass_timeout_seconds == 30.0
    assert config.metrics.backend == "prometheus"


def test_zero_means_none_for_the_pass_timeout_and_the_pause(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[cleanup]\npass_timeout = "0s"\nbatch_pause = 0\n')
    config = load_config(path, env={"TEMP_FILE_CLEANUP_TIMEOUT": "0"})
    assert config.cleanup.pass_timeout_seconds == 0.0
    assert config.cleanup.batch_pause_seconds == 0.0
    assert "pass_timeout = 0\n" in config.to_toml()


def test_metrics_backend_error_names_the_variable_and_the_accepted_value() -> None:
    message = config_error(env={"METRICS_BACKEND": "statsd"})
    assert message == (
        'METRICS_BACKEND (environment): expected "prometheus" (the only metrics backend),'
        ' got "statsd"'
    )


def test_pass_timeout_error_in_full() -> None:
    message = config_error(env={"TEMP_FILE_CLEANUP_TIMEOUT": "-30"})
    assert message == (
        'TEMP_FILE_CLEANUP_TIMEOUT (environment): expected a duration >= 0 (seconds, or'
        ' "250ms", "30s", "5m"; 0 = none), got "-30"'
    )


def test_environment_error_message_in_full() -> None:
    message = config_error(env={"TEMP_FILE_MAX_AGE": "soon"})
    assert message == (
        'TEMP_FILE_MAX_AGE (environment): expected a duration > 0 (seconds, or "90s", "5m",'
        ' "1h", "7d"), got "soon"'
    )


# --- unknown keys and TOML syntax ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[watch]\nrecursve = true\n",
            'unknown key "watch.recursve" (did you mean "watch.recursive"?)',
        ),
        (
            "[cleanup]\nmax_files = 5\n",
            'unknown key "cleanup.max_files" (did you mean "limits.max_files"?)',
        ),
        ('base_dir = "/x"\n', 'unknown key "base_dir" (did you mean "watch.base_dir"?)'),
        ("[wach]\nrecursive = true\n", 'unknown section "wach" (did you mean "watch"?)'),
        ("[watch]\nzzz = 1\n", 'unknown key "watch.zzz"'),
        ("[qqqq]\n", 'unknown section "qqqq"'),
        (
            "[watch.extra]\nx = 1\n",
            'unknown key "watch.extra" (did you mean "watch.exclude"?)',
        ),
        ("watch = 5\n", "watch: expected a table ([watch]), got 5"),
    ],
)
def test_unknown_keys_and_sections(tmp_path: Path, text: str, message: str) -> None:
    assert config_error(write_config(tmp_path, text), env={}) == message


def test_unknown_override_key_with_suggestion() -> None:
    message = config_error(env={}, overrides={"cleanup.max_agee": "5m"})
    assert message == 'unknown key "cleanup.max_agee" (did you mean "cleanup.max_age"?)'


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[watch]\nrecursive = true\nobserver = \n[log]\nlevel = "INFO"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert re.search(r"\(at line 3, column \d+\)$", message)
    assert "\n" not in message
    assert type(caught.value.__cause__).__name__ == "TOMLDecodeError"


# --- base_dir -----------------------------------------------------------------------------


def test_base_dir_root_is_rejected(tmp_path: Path) -> None:
    message = config_error(env={}, overrides={"watch.base_dir": "/"})
    assert message == 'watch.base_dir: expected a directory other than the root directory, got "/"'


def test_base_dir_resolving_to_root_is_rejected(tmp_path: Path) -> None:
    up_to_root = str(tmp_path) + "/.." * len(tmp_path.parts)
    message = config_error(env={}, overrides={"watch.base_dir": up_to_root})
    assert message.startswith("watch.base_dir: expected a directory other than the root")
    assert json.dumps(up_to_root) in message


@pytest.mark.parametrize("through_symlink", [False, True])
def test_base_dir_that_is_a_regular_file(tmp_path: Path, through_symlink: bool) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    given = target
    if through_symlink:
        given = tmp_path / "link"
        given.symlink_to(target)
    message = config_error(env={}, overrides={"watch.base_dir": str(given)})
    assert message == (
        f'watch.base_dir: expected a directory, got "{given}" (it exists and is not a directory)'
    )


def test_base_dir_whose_parent_is_missing(tmp_path: Path) -> None:
    given = tmp_path / "missing" / "watched"
    message = config_error(env={}, overrides={"watch.base_dir": str(given)})
    assert message == (
        f'watch.base_dir: expected a directory whose parent exists, got "{given}"'
        f' (parent directory "{tmp_path / "missing"}" does not exist)'
    )


def test_base_dir_may_not_exist_yet_and_is_not_created(tmp_path: Path) -> None:
    config = load_config(env={}, overrides={"watch.base_dir": str(tmp_path / "new")})
    assert config.watch.base_dir == tmp_path / "new"
    assert not (tmp_path / "new").exists()


def test_base_dir_is_resolved_through_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    config = load_config(env={}, overrides={"watch.base_dir": str(tmp_path / "link" / "x")})
    assert config.watch.base_dir == tmp_path / "real" / "x"


def test_relative_base_dir_in_toml_is_taken_from_the_file_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path / "etc", '[watch]\nbase_dir = "../watched"\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_config(path, env={}).watch.base_dir == tmp_path / "watched"


def test_relative_base_dir_in_overrides_is_taken_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={}, overrides={"watch.base_dir": "watched"})
    assert config.watch.base_dir == tmp_path / "watched"


def test_base_dir_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_config(tmp_path / "etc", '[watch]\nbase_dir = "~/watched"\n')
    assert load_config(path, env={}).watch.base_dir == tmp_path / "watched"


# --- the shipped config.toml -----------------------------------------------------------------


def test_shipped_config_equals_defaults_except_base_dir() -> None:
    shipped = load_config(SHIPPED_CONFIG, env={})
    defaults = load_config(env={})
    assert shipped.watch.base_dir == Path(os.path.realpath("/tmp/tempwatch"))
    assert dataclasses.replace(shipped, watch=defaults.watch) == defaults
    assert dataclasses.replace(shipped.watch, base_dir=defaults.watch.base_dir) == defaults.watch


def test_shipped_config_names_every_key_and_environment_variable() -> None:
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S))
    full = Config(
        watch=WatchConfig(),
        log=LogConfig(file=Path("/x.log"), rotation="1 day", retention="5"),
    )
    for section, table in full.to_dict().items():
        assert isinstance(table, dict)
        for key in table:
            assert re.search(rf"^(# )?{key} = ", sections[section], flags=re.M), key
    for variable, key in ENV_VARS.items():
        section = key.partition(".")[0]
        assert f"Env: {variable}" in sections[section], variable


# --- to_dict and to_toml -------------------------------------------------------------------


def test_to_dict_uses_toml_keys_and_human_units(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "etc", EVERY_KEY_TOML), env={})
    as_dict = config.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["cleanup"] == {
        "max_age": "1h30m",
        "age_by": ["modified", "accessed"],
        "interval": "30s",
        "skip_open_files": False,
        "lease_probe": False,
        "secure_delete": True,
        "owner_check": True,
        "dry_run": True,
        "remove_empty_dirs": True,
        "permission_mask": "0o027",
        "batch_size": 100,
        "batch_pause": "10ms",
        "pass_timeout": "30s",
        "threads": 4,
    }
    assert as_dict["limits"] == {
        "max_files": 0,
        "max_file_size": 10**9,  # not a whole number of MiB: bytes, exactly
        "max_total_size": "2 GiB",
        "low_watermark": 0.5,
        "min_free_space": "12.5%",
        "min_free_inodes": 5000,
    }
    log_table = load_config(env={}).to_dict()["log"]
    assert isinstance(log_table, dict) and "file" not in log_table


def reload(config: Config, directory: Path) -> Config:
    return load_config(write_config(directory, config.to_toml(), name="effective.toml"), env={})


def test_to_toml_round_trip_of_defaults(tmp_path: Path) -> None:
    config = load_config(env={})
    assert reload(config, tmp_path) == config


def test_to_toml_round_trip_of_every_key(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "etc", EVERY_KEY_TOML), env={})
    assert reload(config, tmp_path / "elsewhere") == config


def test_to_toml_round_trip_of_awkward_strings(tmp_path: Path) -> None:
    awkward = 'we"ird\\ dir\n\t\x01\x7fé'
    (tmp_path / awkward).mkdir()
    path = write_config(tmp_path / awkward, "")
    config = load_config(
        path,
        env={},
        overrides={
            "watch.base_dir": str(tmp_path / awkward / "watched"),
            "watch.exclude": ['a"b', "c\\d", "é*"],
            "log.file": str(tmp_path / awkward / "t.log"),
            "log.retention": "1 week",
        },
    )
    assert config.source is not None and "\n" in str(config.source)
    # Reloading parses the whole text, so the comment naming the source must stay valid too.
    assert reload(config, tmp_path) == config


@settings(max_examples=50, deadline=None)
@given(
    max_age=st.floats(min_value=1e-6, max_value=1e10, allow_nan=False),
    max_file_size=st.integers(min_value=0, max_value=2**62),
    low_watermark=st.floats(min_value=1e-9, max_value=1.0, exclude_min=True),
    mask=st.integers(min_value=0, max_value=0o777).map(lambda mask: mask | 0o002),
)
def test_to_toml_round_trip_of_numbers(
    max_age: float, max_file_size: int, low_watermark: float, mask: int
) -> None:
    config = Config(
        watch=WatchConfig(),
        cleanup=CleanupConfig(max_age_seconds=max_age, permission_mask=mask),
        limits=LimitsConfig(max_file_size_bytes=max_file_size, low_watermark=low_watermark),
    )
    with tempfile.TemporaryDirectory() as directory:
        assert reload(config, Path(directory)) == config


def test_base_dir_through_another_users_symlink_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a symlink owned by another user")
    target = tmp_path / "victim"
    target.mkdir()
    link = tmp_path / "planted"
    link.symlink_to(target)
    os.lchown(link, 12345, 12345)
    with pytest.raises(ConfigError, match="symlink owned by another user") as raised:
        load_config(env={}, overrides={"watch.base_dir": str(link)})
    assert "\n" not in str(raised.value)
    os.lchown(link, os.geteuid(), os.getegid())
    assert load_config(env={}, overrides={"watch.base_dir": str(link)}).watch.base_dir == target


def test_free_watermarks_are_off_by_default_and_at_zero(tmp_path: Path) -> None:
    defaults = load_config(env={})
    assert defaults.limits.min_free_space is None and defaults.limits.min_free_inodes is None
    path = write_config(tmp_path, "[limits]\nmin_free_space = 0\nmin_free_inodes = 0\n")
    assert load_config(path, env={}).limits == defaults.limits
    table = defaults.to_dict()["limits"]
    assert isinstance(table, dict)
    assert (table["min_free_space"], table["min_free_inodes"]) == (0, 0)  # 0 is off, as in TOML


def test_free_space_in_bytes_round_trips(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[limits]\nmin_free_space = "5GiB"\nmin_free_inodes = "5%"\n')
    config = load_config(path, env={})
    assert config.limits.min_free_space == FreeAmount(5 * 1024**3)
    table = config.to_dict()["limits"]
    assert isinstance(table, dict) and table["min_free_space"] == "5 GiB"
    assert reload(config, tmp_path / "again") == config
    message = config_error(write_config(tmp_path, '[limits]\nmin_free_space = "99.9.9%"\n'),
                           env={})
    assert message == (
        'limits.min_free_space: expected a percentage above 0% and below 100%, like "10%", '
        'got "99.9.9%"'
    )


def test_free_watermarks_are_set_per_directory(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path = write_config(
        tmp_path,
        '[limits]\nmin_free_space = "10%"\n'
        f'[[directory]]\npath = "{tmp_path / "a"}"\nmin_free_inodes = 500\n'
        f'[[directory]]\npath = "{tmp_path / "b"}"\nmin_free_space = "2GiB"\n',
    )
    a, b = load_config(path, env={}).each_directory()
    assert (a.limits.min_free_space, a.limits.min_free_inodes) == (
        FreeAmount(10, is_percent=True), FreeAmount(500))
    assert (b.limits.min_free_space, b.limits.min_free_inodes) == (FreeAmount(2 * 1024**3), None)
    entry = f'[[directory]]\npath = "{tmp_path / "a"}"\nmin_free_space = "x"\n'
    bad = write_config(tmp_path, entry)
    assert "min_free_space" in config_error(bad, env={})
