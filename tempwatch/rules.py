"""Per-pattern rules inside a watched directory: which rule governs a path. Pure.

A directory's rules are tried in order and the first whose glob matches the path relative
to the directory (or one of its parent directories, as for `exclude`; see
`tempwatch.globs`) governs it; a path no rule matches is governed by the directory's own
settings. A rule may set its own `max_age`, per-file size limit and `age_by`, or
`keep = true`: such a file is never deleted. Kept files are not registered at all, so
they neither count against the directory's file count and quota nor get evicted.

Nothing here does I/O: `RuleSet.governing` maps an absolute path to the settings that
apply to it, and is tested with plain data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol, TypeVar

from tempwatch.age import AgeBy, FileTimes, scan_time_getter
from tempwatch.globs import GlobMatcher, compile_globs, matches_glob

__all__ = ["Governing", "Rule", "RuleSet", "ScannedFile", "rule_for"]


class ScannedFile(FileTimes, Protocol):
    """What a scan reports for a file (FileInfo): its path and timestamps."""

    @property
    def path(self) -> str: ...


_F = TypeVar("_F", bound=ScannedFile)


class Rule(NamedTuple):
    """One `[[directory.rule]]`: a glob and what it changes (None: the directory's value)."""

    match: str
    keep: bool = False
    max_age_seconds: float | None = None
    max_file_size_bytes: int | None = None
    age_by: AgeBy | None = None


class Governing(NamedTuple):
    """The settings that apply to one path: its rule's, else the directory's."""

    keep: bool
    max_age_seconds: float
    max_file_size_bytes: int  # 0: no per-file limit
    age_by: AgeBy | None  # None: the entry's time is trusted, no re-check (the library)
    rule_index: int | None  # which rule (0-based), None: the directory's own settings


def rule_for(rel_path: str, rules: Sequence[Rule]) -> int | None:
    """The index of the first rule matching `rel_path` (relative to the directory), or None."""
    for index, rule in enumerate(rules):
        if matches_glob(rel_path, compile_globs((rule.match,))):
            return index
    return None


class RuleSet:
    """A directory's rules compiled once, answering for absolute paths below `base_dir`."""

    __slots__ = ("_by_rule", "_default", "_matchers", "_prefix", "_scan_times", "rules")

    def __init__(
        self,
        base_dir: str,
        rules: Sequence[Rule],
        *,
        max_age_seconds: float,
        max_file_size_bytes: int,
        age_by: AgeBy | None,
    ) -> None:
        self.rules = tuple(rules)
        self._prefix = base_dir.rstrip("/") + "/"
        self._matchers: tuple[GlobMatcher, ...] = tuple(
            compile_globs((rule.match,)) for rule in self.rules
        )
        self._default = Governing(False, max_age_seconds, max_file_size_bytes, age_by, None)
        self._by_rule = tuple(
            Governing(
                rule.keep,
                max_age_seconds if rule.max_age_seconds is None else rule.max_age_seconds,
                max_file_size_bytes
                if rule.max_file_size_bytes is None
                else rule.max_file_size_bytes,
                age_by if rule.age_by is None else rule.age_by,
                index,
            )
            for index, rule in enumerate(self.rules)
        )
        self._scan_times: dict[AgeBy, Callable[[FileTimes], float]] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def default(self) -> Governing:
        """The directory's own settings."""
        return self._default

    def governing(self, path: str) -> Governing:
        """The settings for absolute `path`; the directory's own for a path outside it."""
        if not self.rules or not path.startswith(self._prefix):
            return self._default
        rel = path[len(self._prefix) :]
        for matcher, settings in zip(self._matchers, self._by_rule, strict=True):
            if matches_glob(rel, matcher):
                return settings
        return self._default

    def is_kept(self, path: str) -> bool:
        """Whether a `keep = true` rule governs `path`."""
        return bool(self.rules) and self.governing(path).keep

    def age_by_for(self, path: str) -> AgeBy | None:
        """The `age_by` that applies to `path`."""
        return self.governing(path).age_by

    def aged(self, files: Iterable[_F]) -> Iterator[tuple[_F, float]]:
        """Each scanned file not kept by a rule, with its `last_used_at` per its rule."""
        if not self.rules:
            getter = self._scan_time(self._default.age_by)
            for info in files:
                yield info, getter(info)
            return
        for info in files:
            settings = self.governing(info.path)
            if not settings.keep:
                yield info, self._scan_time(settings.age_by)(info)

    def _scan_time(self, age_by: AgeBy | None) -> Callable[[FileTimes], float]:
        if age_by is None:
            raise ValueError("files found by a scan need an age_by to be aged")
        getter = self._scan_times.get(age_by)
        if getter is None:
            getter = self._scan_times[age_by] = scan_time_getter(age_by)
        return getter
