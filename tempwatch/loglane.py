"""The per-deletion line's fast lane: made once, handed straight to the CLI's JSON sinks.

A burst of evictions logs a line per file, and loguru spends most of that line's cost on
the record itself (the caller's frame, thread, process, an aware timestamp) and then again
on each sink (a copy of the record, the format, a lock). When the sinks are exactly the
JSON sinks `configure_logging` installed, `log` builds the line itself, once, and writes it
to each sink whose level admits it: the same line, field for field, that loguru would have
written. In every other case (text format, a sink someone else added, the library without
sinks) it is an ordinary `logger.log` call, so whoever listens to loguru hears every line.
`is_heard` tells a caller, before it builds a record's fields, that no sink would take it:
only while the sinks `configure_logging` installed (JSON or text) are the only ones.

`log_deletion` is the line of every deletion, the one a burst writes a hundred thousand
times: through the lane it is written field by field (the fields are known, so nothing is
asked of a general encoder), with the time's text kept for the second it stands for. It is
the very line `json_line` would make of the same fields (tests/test_logsinks.py compares).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Collection, Mapping, Sequence

from tempwatch.lazylog import logger
from tempwatch.logsinks import LineBatcher

__all__ = [
    "DELETION_TEMPLATE", "install", "is_heard", "json_line", "log", "log_deletion", "uninstall",
]  # fmt: skip

DELETION_TEMPLATE = "{verb} {path} ({reason}, age {age_seconds:.0f}s, {size_bytes} bytes)"
"""The message of a deletion's line; its fields are also the record's extra, in this order."""

_LEVELS = {
    "TRACE": 5, "DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50,
}
# Lists and tables (the settings at start, the changes at a reload) stay JSON; anything odd
# inside them is written as its str().
_PLAIN_TYPES = frozenset({int, float, str, bool, type(None), list, tuple, dict})


def json_line(time: str, level: str, message: str, extra: Mapping[str, object]) -> str:
    """One JSON log line (no newline): time, level, message, then every public field.

    Used by the loguru format and by the fast lane alike, so both write the same lines.
    """
    fields: dict[str, object] = {"time": time, "level": level, "message": message}
    for key, value in extra.items():
        if key[0] != "_":
            fields[key] = value if type(value) in _PLAIN_TYPES else str(value)
    # ASCII escapes keep a non-UTF-8 file name (held as surrogates) writable and readable.
    return json.dumps(fields, ensure_ascii=True, default=str)


class _Lane:
    __slots__ = ("_core", "floor", "_handler_ids", "_json", "_seen", "_sinks")

    def __init__(
        self,
        sinks: Sequence[tuple[int, LineBatcher]],
        handler_ids: Collection[int],
        *,
        writes_json: bool,
    ) -> None:
        self._sinks = tuple(sinks)
        self._handler_ids = frozenset(handler_ids)
        self._json = writes_json
        self.floor = min((levelno for levelno, _ in self._sinks), default=0)
        # Asked once: the root logger's core lives as long as the process, and asking the
        # lazy logger for it on every line would cost a call.
        self._core = getattr(logger, "_core", None)
        self._seen: object = None

    def is_sole(self) -> bool:
        """Whether loguru's sinks are still exactly these (none added, none removed)."""
        handlers = getattr(self._core, "handlers", None)
        # loguru replaces its handler dict on every add and remove: one seen to hold exactly
        # ours need not be compared again (asked once per line of a burst).
        if handlers is not self._seen:
            if not isinstance(handlers, dict) or handlers.keys() != self._handler_ids:
                return False
            self._seen = handlers
        for _, sink in self._sinks:
            if sink.is_stopped:
                return False
        return True

    @property
    def writes_json(self) -> bool:
        return self._json

    def is_heard(self, levelno: int) -> bool:
        if levelno >= self.floor:
            return True
        return not self.is_sole()

    def emit(self, level: str, template: str, fields: dict[str, object]) -> None:
        levelno = _LEVELS[level]
        line = ""
        for sink_levelno, sink in self._sinks:
            if levelno < sink_levelno:
                continue
            if not line:
                message = template.format(**fields)
                line = json_line(_stamp(), level, message, fields) + "\n"
            sink.write(line)

    def emit_line(self, levelno: int, line: str) -> None:
        """A line made already, to each sink whose level admits it."""
        for sink_levelno, sink in self._sinks:
            if levelno >= sink_levelno:
                sink.write(line)


_zone: tuple[float, dt.tzinfo | None] = (float("-inf"), None)
_ZONE_SECONDS = 60.0
_second: tuple[int, str, str] = (-1, "", "")  # a second, its text and the zone's offset


def _local_zone() -> dt.tzinfo | None:
    """The local zone, as loguru stamps records with it.

    Asking for it costs more than the rest of a line, so it is asked once a minute (a change
    of offset shows within a minute)."""
    global _zone
    asked_at, zone = _zone
    now = time.monotonic()
    if zone is None or now - asked_at > _ZONE_SECONDS:
        zone = dt.datetime.now().astimezone().tzinfo
        _zone = (now, zone)
    return zone


def _stamp() -> str:
    """Now, as `datetime.isoformat()` writes the local time with its offset (microseconds
    left out when they are 0). The text of the second is made once for all its lines."""
    global _second
    ns = time.time_ns()
    second, micro = divmod(ns // 1000, 1_000_000)
    seen, head, offset = _second
    if second != seen:
        text = dt.datetime.fromtimestamp(second, _local_zone()).isoformat()
        head, offset = text[:19], text[19:]
        _second = (second, head, offset)
    return f"{head}.{micro:06d}{offset}" if micro else head + offset


_lane: _Lane | None = None


def install(
    sinks: Sequence[tuple[int, LineBatcher]],
    handler_ids: Collection[int],
    *,
    writes_json: bool = True,
) -> None:
    """Use the lane while loguru's handlers are exactly `handler_ids`, writing JSON lines
    to `sinks` (each with its level number). With `writes_json` False the sinks format text
    through loguru: the lane then only tells which levels no sink would write."""
    global _lane
    _lane = _Lane(sinks, handler_ids, writes_json=writes_json)


def is_heard(level: str) -> bool:
    """Whether a record at `level` may reach a sink: False only when the installed sinks are
    the only ones and all are above it, so a caller can skip building its fields (`clean`
    writes its own line per file and keeps the terminal log to warnings)."""
    lane = _lane
    return lane is None or lane.is_heard(_LEVELS[level])


def uninstall() -> None:
    """Back to plain loguru calls."""
    global _lane
    _lane = None


def log_deletion(
    level: str,
    verb: str,
    event: str,
    path: str,
    reason: str,
    age_seconds: float,
    size_bytes: int,
) -> None:
    """The line of one deletion (or, in a dry run, of one that would be): `log` of
    DELETION_TEMPLATE with these fields, not even built when no sink would take it."""
    lane = _lane
    if lane is not None and lane.writes_json and lane.is_sole():
        levelno = _LEVELS[level]
        if levelno < lane.floor:
            return
        if type(age_seconds) in _NUMBERS and math.isfinite(age_seconds):
            lane.emit_line(
                levelno, _deletion_line(level, verb, event, path, reason, age_seconds, size_bytes)
            )
            return
    elif not is_heard(level):
        return
    log(
        level, DELETION_TEMPLATE, verb=verb, event=event, path=path, reason=reason,
        age_seconds=age_seconds, size_bytes=size_bytes,
    )  # fmt: skip


_NUMBERS = (float, int)
_quoted = json.encoder.encode_basestring_ascii  # json.dumps' own, ASCII escapes and all


def _deletion_line(
    level: str,
    verb: str,
    event: str,
    path: str,
    reason: str,
    age_seconds: float,
    size_bytes: int,
) -> str:
    # json_line's output for these fields, written directly: a number's JSON is its repr.
    message = f"{verb} {path} ({reason}, age {age_seconds:.0f}s, {size_bytes} bytes)"
    return (
        f'{{"time": "{_stamp()}", "level": {_quoted(level)}, "message": {_quoted(message)}, '
        f'"verb": {_quoted(verb)}, "event": {_quoted(event)}, "path": {_quoted(path)}, '
        f'"reason": {_quoted(reason)}, "age_seconds": {age_seconds!r}, '
        f'"size_bytes": {int(size_bytes)!r}}}\n'
    )


def log(level: str, template: str, **fields: object) -> None:
    """`logger.log(level, template, **fields)`, through the fast lane when it applies.

    `level` is a standard level name; the fields are the record's extra, as keywords to
    loguru are.
    """
    lane = _lane
    if lane is None or not lane.writes_json or not lane.is_sole():
        logger.log(level, template, **fields)
        return
    lane.emit(level, template, fields)
