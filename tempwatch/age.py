"""A file's age: the one definition used by `run`, `clean`, `status` and the library.

A file's age is now minus its *last use*: the newest of the timestamps `age_by` selects.

- "registered": when the watcher saw the file created or moved in (the library: when it
  was registered). Where nothing watched the file (`clean`, `status`, the scan at start),
  its ctime stands in: creating a file and moving it in both set it.
- "modified": st_mtime, set by writes (and by `touch`, and kept old by tar and cp -p).
- "changed": st_ctime, set by writes, renames, chmod, chown and by extracting an archive;
  no program can set it back.
- "accessed": st_atime. Opt-in: noatime/relatime mounts keep it stale, and scanners that
  read everything keep it fresh.

The default, ("registered", "modified", "changed"), keeps young a file written recently, a
file moved in recently (whatever its mtime) and a file extracted from an old archive (tar
keeps the archive's mtimes, but the extraction sets ctime).

Everything here is pure: the callers do the lstat (the deleter's own, right before the
unlink, so judging by last use costs no extra system call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from operator import attrgetter
from typing import Literal, NamedTuple, Protocol

__all__ = [
    "AGE_SOURCES",
    "DEFAULT_AGE_BY",
    "AgeBy",
    "AgeCheck",
    "AgeSource",
    "FileTimes",
    "age_by_of",
    "file_age_seconds",
    "last_used_at",
    "scan_time_getter",
    "stat_last_used_at",
    "unwatched_last_used_at",
]

AgeSource = Literal["registered", "modified", "changed", "accessed"]
AGE_SOURCES: tuple[AgeSource, ...] = ("registered", "modified", "changed", "accessed")

AgeBy = frozenset[AgeSource]
"""The timestamps a file's age counts from (never empty)."""

DEFAULT_AGE_BY: AgeBy = frozenset(("registered", "modified", "changed"))


class StatTimes(Protocol):
    """What an os.stat_result offers for the age (anything with these three works)."""

    @property
    def st_mtime(self) -> float: ...
    @property
    def st_ctime(self) -> float: ...
    @property
    def st_atime(self) -> float: ...


class FileTimes(Protocol):
    """What a scan's FileInfo offers for the age."""

    @property
    def mtime(self) -> float: ...
    @property
    def ctime(self) -> float: ...
    @property
    def atime(self) -> float: ...


def age_by_of(sources: Iterable[str]) -> AgeBy:
    """`sources` checked and frozen; raises ValueError naming a bad or missing source."""
    chosen: set[AgeSource] = set()
    for source in sources:
        if source not in AGE_SOURCES:
            raise ValueError(f"unknown age source {source!r}")
        chosen.add(source)
    if not chosen:
        raise ValueError("age_by needs at least one source")
    return frozenset(chosen)


def last_used_at(
    age_by: AgeBy,
    *,
    registered_at: float | None = None,
    mtime: float | None = None,
    ctime: float | None = None,
    atime: float | None = None,
) -> float:
    """The newest of the timestamps `age_by` selects: the moment a file's age counts from.

    An unknown `registered_at` (None) is stood in for by `ctime`. A selected timestamp that
    is unknown is left out; if every selected one is unknown, the newest known one is used
    (a file not lstat'd has only its registration). Raises ValueError if none is known.
    """
    if registered_at is None and "registered" in age_by:
        registered_at = ctime
    known = {"registered": registered_at, "modified": mtime, "changed": ctime, "accessed": atime}
    chosen = [t for source, t in known.items() if t is not None and source in age_by]
    if not chosen:
        chosen = [t for t in known.values() if t is not None]
    if not chosen:
        raise ValueError("no timestamp known for the file")
    return max(chosen)


def file_age_seconds(now: float, last_used: float) -> float:
    """A file's age at `now`, from its `last_used_at`."""
    return now - last_used


def stat_last_used_at(st: StatTimes, age_by: AgeBy) -> float | None:
    """`last_used_at` from an lstat alone, leaving registration out (None if only it counts).

    The deleter's re-check: a file younger by this than the registry said was used since.
    Equal to `last_used_at(age_by - {"registered"}, mtime=..., ctime=..., atime=...)`;
    specialised because the deleter asks it once per file it is about to expire.
    """
    getter = _stat_getter(age_by)
    return None if getter is None else getter(st)


_STAT_FIELDS = {"modified": "st_mtime", "changed": "st_ctime", "accessed": "st_atime"}


@lru_cache(maxsize=32)
def _stat_getter(age_by: AgeBy) -> Callable[[StatTimes], float] | None:
    names = sorted(_STAT_FIELDS[source] for source in age_by if source != "registered")
    if not names:
        return None
    if names == ["st_ctime", "st_mtime"]:
        return _newer_of_ctime_mtime
    if len(names) == 1:
        (name,) = names

        def one(st: StatTimes) -> float:
            value: float = getattr(st, name)
            return value

        return one
    get = attrgetter(*names)

    def newest(st: StatTimes) -> float:
        times: tuple[float, ...] = get(st)
        return max(times)

    return newest


def _newer_of_ctime_mtime(st: StatTimes) -> float:
    c, m = st.st_ctime, st.st_mtime
    return c if c > m else m


def unwatched_last_used_at(st: StatTimes, age_by: AgeBy) -> float:
    """`last_used_at` of a file nobody saw arrive, from its lstat (ctime stands in)."""
    return last_used_at(age_by, mtime=st.st_mtime, ctime=st.st_ctime, atime=st.st_atime)


def scan_time_getter(age_by: AgeBy) -> Callable[[FileTimes], float]:
    """`last_used_at` for files nobody watched (a scan's FileInfo), as a fast key function.

    Equal to `last_used_at(age_by, mtime=..., ctime=..., atime=...)`; specialised because a
    scan of a million files calls it a million times.
    """
    fields = {"modified": "mtime", "changed": "ctime", "accessed": "atime"}
    names = sorted({fields[s] for s in age_by if s != "registered"})
    if "registered" in age_by and "ctime" not in names:
        names.append("ctime")  # registration unknown: ctime stands in
    if names == ["ctime", "mtime"] or names == ["mtime", "ctime"]:
        return _mtime_ctime
    if len(names) == 1:
        return _single(names[0])

    def newest(info: FileTimes) -> float:
        newest_time: float = max(getattr(info, name) for name in names)
        return newest_time

    return newest


def _mtime_ctime(info: FileTimes) -> float:
    m, c = info.mtime, info.ctime
    return m if m > c else c


def _single(name: str) -> Callable[[FileTimes], float]:
    def one(info: FileTimes) -> float:
        value: float = getattr(info, name)
        return value

    return one


class AgeCheck(NamedTuple):
    """The deleter's last word on an expiry: keep the file if it was used after `cutoff`."""

    age_by: AgeBy
    cutoff: float

    def used_since(self, st: StatTimes) -> float | None:
        """The file's last use per its lstat if later than `cutoff`, else None."""
        getter = _stat_getter(self.age_by)
        if getter is None:
            return None
        used = getter(st)
        return used if used > self.cutoff else None
