"""The one definition of a file's age, with plain data; and the pieces that act on it."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tempwatch.age import (
    AGE_SOURCES,
    DEFAULT_AGE_BY,
    AgeBy,
    AgeCheck,
    age_by_of,
    file_age_seconds,
    last_used_at,
    scan_time_getter,
    stat_last_used_at,
    unwatched_last_used_at,
)
from tempwatch.deleter import Deleter, Outcome
from tempwatch.policy import Limits, Reason, plan_pass
from tempwatch.registry import Entry, Registry

TIMES = {"registered_at": 400.0, "mtime": 100.0, "ctime": 200.0, "atime": 300.0}
EVERY_AGE_BY = [
    frozenset(combo)
    for size in range(1, len(AGE_SOURCES) + 1)
    for combo in itertools.combinations(AGE_SOURCES, size)
]


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (["modified"], 100.0),
        (["changed"], 200.0),
        (["accessed"], 300.0),
        (["registered"], 400.0),
        (["modified", "changed"], 200.0),
        (["modified", "accessed"], 300.0),
        (list(AGE_SOURCES), 400.0),
    ],
)
def test_the_newest_selected_timestamp_counts(sources: list[str], expected: float) -> None:
    assert last_used_at(age_by_of(sources), **TIMES) == expected


def test_the_default_keeps_written_moved_in_and_extracted_files_young() -> None:
    assert DEFAULT_AGE_BY == {"registered", "modified", "changed"}
    old, now = 1_000.0, 9_000.0
    written = last_used_at(DEFAULT_AGE_BY, registered_at=old, mtime=now, ctime=now)
    moved_in = last_used_at(DEFAULT_AGE_BY, registered_at=now, mtime=old, ctime=now)
    extracted = last_used_at(DEFAULT_AGE_BY, mtime=old, ctime=now)  # tar keeps mtimes
    assert written == moved_in == extracted == now
    assert last_used_at(DEFAULT_AGE_BY, mtime=old, ctime=old, atime=now) == old, "atime opt-in"


def test_an_unknown_registration_is_stood_in_for_by_ctime() -> None:
    registered = frozenset({"registered"})
    assert last_used_at(registered, mtime=100.0, ctime=200.0, atime=300.0) == 200.0


def test_the_library_knows_only_registration_times() -> None:
    assert last_used_at(frozenset({"modified"}), registered_at=5.0) == 5.0
    with pytest.raises(ValueError):
        last_used_at(DEFAULT_AGE_BY)


def test_age_is_now_minus_the_last_use() -> None:
    assert file_age_seconds(1_000.0, last_used_at(DEFAULT_AGE_BY, registered_at=400.0)) == 600.0


@pytest.mark.parametrize("age_by", EVERY_AGE_BY, ids=lambda a: "+".join(sorted(a)))
def test_the_fast_scan_key_agrees_with_the_definition(age_by: AgeBy) -> None:
    info = SimpleNamespace(mtime=100.0, ctime=200.0, atime=300.0)
    expected = last_used_at(age_by, mtime=100.0, ctime=200.0, atime=300.0)
    assert scan_time_getter(age_by)(info) == expected  # type: ignore[arg-type]
    stat_like = SimpleNamespace(st_mtime=100.0, st_ctime=200.0, st_atime=300.0)
    assert unwatched_last_used_at(stat_like, age_by) == expected  # type: ignore[arg-type]
    by_stat = age_by - {"registered"}
    recheck = last_used_at(by_stat, mtime=100.0, ctime=200.0, atime=300.0) if by_stat else None
    assert stat_last_used_at(stat_like, age_by) == recheck  # type: ignore[arg-type]


def test_the_deleters_recheck_leaves_registration_out() -> None:
    st = SimpleNamespace(st_mtime=100.0, st_ctime=200.0, st_atime=300.0)
    assert stat_last_used_at(st, frozenset({"registered"})) is None  # type: ignore[arg-type]
    assert stat_last_used_at(st, DEFAULT_AGE_BY) == 200.0  # type: ignore[arg-type]
    check = AgeCheck(DEFAULT_AGE_BY, cutoff=150.0)
    assert check.used_since(st) == 200.0  # type: ignore[arg-type]
    assert AgeCheck(DEFAULT_AGE_BY, cutoff=250.0).used_since(st) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[], ["born"], ["modified", "mtime"]])
def test_bad_sources_are_refused(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        age_by_of(bad)


# --- what acts on the definition ----------------------------------------------------------


def test_expiries_carry_an_age_check_only_when_the_limits_ask_for_it() -> None:
    entries = [("/b/old", Entry(100.0, 10, 1)), ("/b/big", Entry(950.0, 10**6, 2))]
    limits = Limits(max_age_seconds=60, max_file_size_bytes=1000, age_by=DEFAULT_AGE_BY)
    plan = plan_pass(entries, now=1_000.0, limits=limits, open_paths=set())
    by_reason = {d.reason: d for d in plan.deletions}
    assert by_reason[Reason.EXPIRED].age_check == AgeCheck(DEFAULT_AGE_BY, 940.0)
    assert by_reason[Reason.OVERSIZE].age_check is None, "size, not age: no re-check"
    trusting = Limits(max_age_seconds=60)
    plan = plan_pass(entries[:1], now=1_000.0, limits=trusting, open_paths=set())
    assert plan.deletions[0].age_check is None


def test_renew_moves_an_entry_forward_in_age_order() -> None:
    registry = Registry()
    for index, name in enumerate("abc"):
        registry.add(f"/b/{name}", float(index), 1, index + 1)
    assert registry.renew("/b/a", 10.0)
    assert not registry.renew("/b/b", 0.5), "never back in time"
    assert not registry.renew("/b/missing", 10.0)
    assert [path for path, _ in registry.oldest_first()] == ["/b/b", "/b/c", "/b/a"]
    assert registry.get("/b/a") == (10.0, 1, 1)
    assert registry.total_bytes == 3


def test_the_deleter_keeps_a_file_used_since_the_cutoff(base: Path) -> None:
    path = base / "f"
    path.write_bytes(b"abc")
    os.utime(path, (1_000, 1_000))  # mtime old; ctime is now
    st = path.lstat()
    deleter = Deleter(base)
    result = deleter.delete(path, age_check=AgeCheck(DEFAULT_AGE_BY, cutoff=st.st_ctime - 1))
    assert result.outcome is Outcome.TOO_RECENT and result.last_used_at == st.st_ctime
    assert path.exists()
    by_mtime = AgeCheck(frozenset({"modified"}), cutoff=2_000)
    assert deleter.delete(path, age_check=by_mtime).outcome is Outcome.DELETED
    assert not path.exists()
