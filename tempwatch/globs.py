"""The glob language of `exclude` patterns and rules, relative to a watched directory.

A pattern without "/" matches a basename at any depth ("*.log"); a pattern with "/"
matches the whole relative path ("cache/*/tmp"), and so does one with a leading "/"
("/cache": only the top-level one). "*", "?" and "[...]" stay within one path component;
"**" crosses them ("build/**/*.o"). A trailing "/" is ignored. A matched directory
matches everything below it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

__all__ = ["GlobMatcher", "compile_globs", "is_excluded", "matches_glob"]


class GlobMatcher(NamedTuple):
    """Patterns compiled into at most two regexes: one per basename, one per path."""

    names: re.Pattern[str] | None
    paths: re.Pattern[str] | None

    def matches(self, name: str, rel_path: str) -> bool:
        return bool(
            (self.names is not None and self.names.fullmatch(name))
            or (self.paths is not None and self.paths.fullmatch(rel_path))
        )


def matches_glob(rel_path: str, matcher: GlobMatcher) -> bool:
    """Whether `rel_path` or one of its parent directories matches `matcher`."""
    parts = [p for p in rel_path.split("/") if p not in ("", ".")]
    for depth, name in enumerate(parts, start=1):
        if matcher.matches(name, "/".join(parts[:depth])):
            return True
    return False


def compile_globs(patterns: Sequence[str]) -> GlobMatcher:
    """`patterns` compiled once (cached), for `matches_glob` or a scan's hot loop."""
    return _compile(_patterns(patterns))


def is_excluded(rel_path: str, patterns: Sequence[str]) -> bool:
    """Whether `rel_path` (relative to base_dir) or one of its parent directories matches
    one of the exclude `patterns` (see the module docstring for the language)."""
    return matches_glob(rel_path, _compile(_patterns(patterns)))


def _patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):  # a lone str is a Sequence[str] of its characters
        raise TypeError("exclude patterns must be a sequence of str, not a str")
    return tuple(patterns)


@lru_cache(maxsize=32)
def _compile(patterns: tuple[str, ...]) -> GlobMatcher:
    names: list[str] = []
    paths: list[str] = []
    for raw in patterns:
        pattern = raw.strip("/")
        if not pattern:
            continue
        anchored = raw.startswith("/") or "/" in pattern
        (paths if anchored else names).append(_translate(pattern))
    return GlobMatcher(_join(names), _join(paths))


def _join(regexes: list[str]) -> re.Pattern[str] | None:
    if not regexes:
        return None
    return re.compile("|".join(f"(?:{r})" for r in regexes), re.DOTALL)


def _translate(pattern: str) -> str:
    """Glob to regex: "*", "?" and "[...]" never match "/", "**" does ("**/" may match nothing)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*" and pattern.startswith("*", i):
            i += 1
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
        elif c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = _class_end(pattern, i)
            if end < 0:
                out.append(re.escape(c))
            else:
                out.append(_class(pattern[i:end]))
                i = end + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the "]" closing a class whose body starts at `start`, or -1."""
    j = start
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a "]" right after the opening bracket is a literal member
    return pattern.find("]", j)


def _class(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    # Escape every member but the range dash, so "[[]" or "[&&]" are plain characters to re.
    members = "".join(ch if ch == "-" else re.escape(ch) for ch in body)
    return f"[^/{members}]" if negate else f"(?!/)[{members}]"
