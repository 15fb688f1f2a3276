"""The library ages files as `run` and `clean` do: by last use, per `age_by`.

The manager's clock is a fake that starts ahead of the real one (see FakeClock): files made
here have real lstat times before it starts, and a use at a given fake time is written
into the file's timestamps with os.utime (mtime and atime; ctime cannot be set back, so
a test that wants a file old by ctime moves the clock past it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from tempwatch import ConfigError, TempFileManager
from tempwatch.age import DEFAULT_AGE_BY


class FakeClock:
    """A settable clock a minute ahead of the real one, in whole seconds."""

    def __init__(self) -> None:
        self.now = float(int(time.time()) + 60)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _file(path: Path, data: bytes = b"x") -> Path:
    path.write_bytes(data)
    return path


def _used_at(path: Path, when: float, *, accessed: float | None = None) -> None:
    """As if `path` was written at `when` (and read at `accessed`, by default `when`)."""
    os.utime(path, (when if accessed is None else accessed, when))


def test_the_default_is_the_config_default(base: Path) -> None:
    assert TempFileManager(base).age_by == DEFAULT_AGE_BY


def test_a_file_written_after_registration_is_kept_until_max_age_after_the_write(
    base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=100, clock=clock)
    path = _file(base / "log")
    registered = clock.now
    assert manager.register_file(path)
    clock.now += 90
    _used_at(path, clock.now)  # written at 90 s
    clock.now += 20  # 110 s since registration, 20 s since the write
    assert manager.get_file_age(path) == 20
    assert manager.cleanup() == 0
    assert path.exists()
    # The deleter's lstat found the write: the entry now counts from it.
    assert manager.files[str(path)] == registered + 90
    clock.now += 80
    assert manager.cleanup() == 0  # 100 s since the write: not older than max_age yet
    clock.now += 1
    assert manager.cleanup() == 1
    assert not path.exists()


def test_registration_alone_ages_as_the_library_used_to(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=100, age_by=["registered"], clock=clock)
    path = _file(base / "log")
    manager.register_file(path)
    clock.now += 90
    _used_at(path, clock.now)
    clock.now += 11
    assert manager.get_file_age(path) == 101
    assert manager.cleanup() == 1


def test_by_modification_a_file_with_an_old_mtime_is_old_when_registered(
    base: Path, clock: FakeClock
) -> None:
    # As `clean` judges a file with a 2 h old mtime moved in, when registration is left out.
    manager = TempFileManager(base, max_age=3600, age_by=("modified",), clock=clock)
    path = _file(base / "moved-in")
    _used_at(path, clock.now - 7200)
    manager.register_file(path)
    assert manager.get_file_age(path) == 7200
    assert manager.cleanup() == 1
    assert not path.exists()


def test_by_default_a_file_with_an_old_mtime_counts_from_its_registration(
    base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=3600, clock=clock)
    path = _file(base / "moved-in")
    _used_at(path, clock.now - 7200)
    manager.register_file(path)
    assert manager.get_file_age(path) == 0
    assert manager.cleanup() == 0
    assert path.exists()


def test_by_change_time_a_file_ages_from_its_ctime(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=100, age_by=["changed"], clock=clock)
    path = _file(base / "f")
    ctime = os.lstat(path).st_ctime
    manager.register_file(path)
    age = manager.get_file_age(path)
    assert age is not None and age == pytest.approx(clock.now - ctime)
    clock.now = ctime + 99
    assert manager.cleanup() == 0
    clock.now = ctime + 101
    assert manager.cleanup() == 1


@pytest.mark.parametrize(
    ("age_by", "kept"),
    [
        (("accessed",), True),
        (("modified",), False),
        (("registered",), False),
        (("registered", "modified", "changed"), False),
        (("modified", "accessed"), True),
    ],
)
def test_a_read_keeps_a_file_only_when_access_time_is_chosen(
    base: Path, clock: FakeClock, age_by: tuple[str, ...], kept: bool
) -> None:
    manager = TempFileManager(base, max_age=100, age_by=age_by, clock=clock)
    path = _file(base / "read")
    manager.register_file(path)
    _used_at(path, clock.now - 1000, accessed=clock.now + 150)  # read at 150 s
    clock.now += 200
    assert manager.cleanup() == (0 if kept else 1)
    assert path.exists() is kept


def test_force_and_exit_ignore_every_timestamp(base: Path, clock: FakeClock) -> None:
    with TempFileManager(base, max_age=100, clock=clock) as manager:
        path = _file(base / "mine")
        manager.register_file(path)
        _used_at(path, clock.now + 1000)  # a use in the future keeps it from age alone
        clock.now += 500
        assert manager.cleanup() == 0
    assert not path.exists()


def test_a_file_gone_behind_its_back_keeps_its_entry_age(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=100, clock=clock)
    path = _file(base / "gone")
    manager.register_file(path)
    path.unlink()
    clock.now += 30
    assert manager.get_file_age(path) == 30


@pytest.mark.parametrize(
    ("value", "error", "words"),
    [
        ("modified", TypeError, "not str"),
        (5, TypeError, "not int"),
        ([], ValueError, "at least one"),
        (["modified", "birth"], ValueError, "'birth'"),
        ([None], ValueError, "None"),
    ],
)
def test_age_by_is_checked_as_the_config_checks_it(
    base: Path, value: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        TempFileManager(base, age_by=value)  # type: ignore[arg-type]
    message = str(caught.value)
    assert words in message
    assert '"registered", "modified", "changed", "accessed"' in message
    assert "\n" not in message


# -- per-pattern rules, as in a config's [[directory.rule]] ---------------------------------


def test_a_keep_rule_refuses_the_file_and_a_watcher_never_registers_it(
    base: Path, log_records: list[Any]
) -> None:
    rules = [{"match": "*.pid", "keep": True}]
    with TempFileManager(base, max_age=100, rules=rules, watch=True) as manager:
        pid = _file(base / "app.pid")
        other = _file(base / "app.txt")
        wait_for(lambda: manager.is_temp_file(other), message="the watcher registering app.txt")
        assert not manager.is_temp_file(pid)
        assert manager.register_file(pid) is False
        assert manager.clear_all() == 0
    assert pid.exists()
    warnings = [str(r["message"]) for r in log_records if r["level"].name == "WARNING"]
    assert f'not registering {pid}: kept by rules[1] ("*.pid")' in warnings


def test_first_matching_rule_sets_max_age_age_by_and_size(base: Path, clock: FakeClock) -> None:
    rules: list[dict[str, object]] = [
        {"match": "keep-long/*.log", "max_age": "1000s"},
        {"match": "*.log", "max_age": 50},
        {"match": "*.bin", "age_by": ["modified"]},
        {"match": "*.big", "max_file_size": "1KiB"},
    ]
    manager = TempFileManager(base, max_age=100, rules=rules, clock=clock)
    (base / "keep-long").mkdir()
    long_log = _file(base / "keep-long" / "a.log")
    short_log = _file(base / "a.log")
    plain = _file(base / "plain")
    by_mtime = _file(base / "a.bin")
    _used_at(by_mtime, clock.now - 150)
    big = _file(base / "a.big", b"x" * 2048)
    for path in (long_log, short_log, plain, by_mtime, big):
        assert manager.register_file(path)
    assert manager.get_file_age(by_mtime) == 150, "its rule's age_by: mtime alone"
    assert manager.cleanup() == 2  # a.bin by its mtime, a.big over its size
    assert not by_mtime.exists() and not big.exists()
    clock.now += 51
    assert manager.cleanup() == 1 and not short_log.exists()
    clock.now += 50
    assert manager.cleanup() == 1 and not plain.exists()
    clock.now += 899
    assert manager.cleanup() == 0
    clock.now += 1
    assert manager.cleanup() == 1 and not long_log.exists()


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ([{"keep": True}], 'rules[1].match: expected a glob relative to the directory'),
        ([{"match": "/abs/*.pid", "keep": True}], "rules[1].match: expected a glob"),
        ([{"match": "*.pid", "kept": True}], 'rules[1]: unknown key "kept" (did you mean'),
        ([{"match": "*.pid", "keep": True, "max_age": "1h"}], "rules[1]: keep = true never"),
        ([{"match": "*.a", "max_age": "1h"}, {"match": "*.b", "age_by": ["birth"]}],
         "rules[2].age_by: expected a non-empty list of"),
        ({"match": "*.pid"}, "rules: expected a list of rule tables"),
    ],
)
def test_a_bad_rule_is_one_line_naming_it_and_nothing_is_created(
    tmp_path: Path, rules: object, words: str
) -> None:
    missing = tmp_path / "not-yet"
    with pytest.raises(ConfigError) as caught:
        TempFileManager(missing, rules=rules)  # type: ignore[arg-type]
    assert str(caught.value).startswith(words)
    assert "\n" not in str(caught.value)
    assert not missing.exists()
