"""Durations and sizes with human units: parsing config values, and formatting for people."""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

from tempwatch.errors import ConfigError

if TYPE_CHECKING:
    from fractions import Fraction

__all__ = [
    "count",
    "printable",
    "format_age",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
    "render_value",
]

_DURATION_HINT = 'a duration > 0 (seconds, or "90s", "5m", "1h", "7d")'
_DURATION_OR_ZERO_HINT = 'a duration >= 0 (seconds, or "250ms", "30s", "5m"; 0 = none)'
_SIZE_HINT = 'a size >= 0 (bytes, or "512k", "100MiB", "1GB")'

# Largest unit first; compound durations ("1h30m") must list units in this order, so a
# repeated or shuffled unit ("1m1m", "30s1m") is treated as a typo rather than summed.
# In milliseconds, so that the sum stays exact.
_DURATION_UNIT_MS: dict[str, int] = {
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1000,
    "ms": 1,
}
_UNIT_LIST = "d (days), h (hours), m (minutes), s (seconds), ms (milliseconds)"
_DURATION_RANK = {unit: rank for rank, unit in enumerate(_DURATION_UNIT_MS)}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+"
# Units are lowercase only: "1M" could be meant as a month, and reading it as a minute
# would make a deletion tool expire files far too early.
_DURATION_SEGMENT = re.compile(rf"\s*({_NUMBER})\s*(ms|d|h|m|s)\s*")
_PLAIN_NUMBER = re.compile(rf"\s*({_NUMBER})\s*")

# Lowercased unit -> bytes. A bare letter ("512k") means binary, as in most tools' flags.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    **{letter: 1024**power for power, letter in enumerate("kmgt", start=1)},
    **{f"{letter}ib": 1024**power for power, letter in enumerate("kmgt", start=1)},
    **{f"{letter}b": 1000**power for power, letter in enumerate("kmgt", start=1)},
}
_SIZE_TEXT = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]*)\s*")
_BINARY_NAMES = ("B", "KiB", "MiB", "GiB", "TiB")

_MAX_RENDER_CHARS = 120


def render_value(value: object) -> str:
    """Render a config value for an error message: strings in double quotes, others as-is.

    The result is always a single line, so every ConfigError message stays one line.
    """
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = " ".join(repr(value).splitlines())
    if len(text) > _MAX_RENDER_CHARS:
        text = text[: _MAX_RENDER_CHARS - 3] + "..."
    return text


def _invalid(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {render_value(value)}")


def _duration_from_text(text: str) -> Fraction | None:
    # Exact arithmetic for text only: numbers and the status and help paths never load it.
    from fractions import Fraction

    plain = _PLAIN_NUMBER.fullmatch(text)
    if plain:
        return Fraction(plain.group(1))
    total_ms, position, last_rank = Fraction(0), 0, -1
    while position < len(text):
        segment = _DURATION_SEGMENT.match(text, position)
        if segment is None:
            return None
        rank = _DURATION_RANK[segment.group(2)]
        if rank <= last_rank:
            return None
        total_ms += Fraction(segment.group(1)) * _DURATION_UNIT_MS[segment.group(2)]
        position, last_rank = segment.end(), rank
    return total_ms / 1000 if position else None


def _duration_seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            exact = _duration_from_text(value)
            return None if exact is None else float(exact)
    except OverflowError:
        return None
    return None


def parse_duration(value: object, key: str, *, allow_zero: bool = False) -> float:
    """Seconds from a config value: a number of seconds, or text like "90s", "1.5h", "1h30m".

    Units are ms, s, m, h and d (lowercase). The result must be finite and > 0 (>= 0 with
    `allow_zero`, for settings where 0 means "none"); anything else raises ConfigError
    naming `key` and the value.
    """
    seconds = _duration_seconds(value)
    if seconds is None or not math.isfinite(seconds) or seconds < 0 or (
        seconds == 0 and not allow_zero
    ):
        error = _invalid(key, _DURATION_OR_ZERO_HINT if allow_zero else _DURATION_HINT, value)
        if isinstance(value, str) and value != value.lower():
            error = ConfigError(f"{error}; units are lowercase: {_UNIT_LIST}")
        raise error
    return seconds


def _size_from_text(text: str) -> int | None:
    match = _SIZE_TEXT.fullmatch(text)
    if match is None:
        return None
    multiplier = _SIZE_UNITS.get(match.group(2).lower())
    if multiplier is None:
        return None
    from fractions import Fraction

    exact = Fraction(match.group(1)) * multiplier
    # "1.1KiB" means about 1126 bytes, but a fractional count of plain bytes is a mistake.
    if multiplier == 1 and exact.denominator != 1:
        return None
    return math.floor(exact)


def parse_size(value: object, key: str) -> int:
    """Bytes from a config value: an int >= 0, or text like "512k", "10 KiB", "1.5GiB", "1GB".

    KB/MB/GB/TB are powers of 1000; KiB/MiB/GiB/TiB and the single letters K/M/G/T are
    powers of 1024; units are case-insensitive. Fractions round down to whole bytes.
    """
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        size = _size_from_text(value)
    if size is None or size < 0:
        raise _invalid(key, _SIZE_HINT, value)
    return size


def count(n: int, singular: str, plural: str | None = None) -> str:
    """A number and a noun that agrees with it: "1 file", "2 files", "0 entries"."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def format_size(n: int) -> str:
    """A byte count for people, in binary units with at most two decimals: "512 B", "1.5 MiB"."""
    if n < 0:
        return "-" + format_size(-n)
    if n < 1024:
        return f"{n} B"  # the common case in a temp dir, kept cheap for per-file lines
    power = 0
    while power < len(_BINARY_NAMES) - 1 and n >= 1024 ** (power + 1):
        power += 1
    hundredths = _hundredths(n, 1024**power)
    if hundredths >= 1024 * 100 and power < len(_BINARY_NAMES) - 1:
        # 1048575 bytes rounds to "1024 KiB"; say "1 MiB" instead.
        power += 1
        hundredths = _hundredths(n, 1024**power)
    whole, fraction = divmod(hundredths, 100)
    digits = f"{whole}.{fraction:02d}".rstrip("0").rstrip(".")
    return f"{digits} {_BINARY_NAMES[power]}"


def _hundredths(n: int, unit: int) -> int:
    """n / unit in hundredths, rounded half to even as `round` does: exact, in integers."""
    quotient, remainder = divmod(n * 100, unit)
    if 2 * remainder > unit or (2 * remainder == unit and quotient % 2):
        quotient += 1
    return quotient


def format_duration(seconds: float) -> str:
    """A duration for people, largest units first: 90 -> "1m30s", 3600 -> "1h", 0.25 -> "250ms".

    Rounded to the millisecond; the output parses back with parse_duration.
    """
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    total_ms = round(seconds * 1000)
    if total_ms == 0:
        return "0s" if seconds == 0 else f"{seconds:.3g}s"
    minutes_ms, ms = divmod(total_ms, 60_000)
    days, rest = divmod(minutes_ms, 1440)
    hours, minutes = divmod(rest, 60)
    whole_seconds, ms = divmod(ms, 1000)
    larger = ((days, "d"), (hours, "h"), (minutes, "m"))
    parts = [f"{count}{unit}" for count, unit in larger if count]
    if ms and not parts and not whole_seconds:
        parts.append(f"{ms}ms")
    elif ms:
        parts.append(f"{whole_seconds}.{ms:03d}".rstrip("0") + "s")
    elif whole_seconds:
        parts.append(f"{whole_seconds}s")
    return "".join(parts)


def format_age(seconds: float) -> str:
    """An age for people, whole seconds from ten seconds on: "4.2s", "1h2m5s", "3d"."""
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds >= 0 else "-" + format_age(-seconds)
    days, rest = divmod(round(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    # Written out rather than joined from a generator: `clean` formats one age per file.
    text = f"{days}d" if days else ""
    if hours:
        text += f"{hours}h"
    if minutes:
        text += f"{minutes}m"
    return text + f"{secs}s" if secs else text


_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def printable(text: str) -> str:
    """`text` safe for one line of a terminal or log: control characters and undecodable
    bytes (held as surrogates) are shown as backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROL)
