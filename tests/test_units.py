from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tempwatch.errors import ConfigError
from tempwatch.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_size,
    render_value,
)

DURATION_HINT = 'expected a duration > 0 (seconds, or "90s", "5m", "1h", "7d")'
SIZE_HINT = 'expected a size >= 0 (bytes, or "512k", "100MiB", "1GB")'


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("0.5", 0.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("1h30m", 5400.0),
        (" 1h 30m ", 5400.0),
        ("2d3h", 2 * 86400.0 + 3 * 3600.0),
        ("1m30.5s", 90.5),
        ("10 s", 10.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    result = parse_duration(value, "cleanup.max_age")
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    [
        0,
        0.0,
        -1,
        -0.5,
        "0",
        "0s",
        "-5m",
        True,
        False,
        None,
        "ten",
        "",
        "   ",
        "5M",  # uppercase M could mean months; a deletion tool must not guess minutes
        "1H",
        "1m1m",
        "30s1m",
        "5 minutes",
        "1.",
        "inf",
        "nan",
        float("inf"),
        float("nan"),
        10**400,
        "1" * 400 + "d",
        "1h30",
        "٣s",  # non-ASCII digits
        [5],
    ],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "cleanup.max_age")
    message = str(caught.value)
    assert message.startswith(f"cleanup.max_age: {DURATION_HINT}, got ")
    assert "\n" not in message


def test_parse_duration_message_quotes_strings_and_not_numbers() -> None:
    with pytest.raises(ConfigError, match=r"^k: .*, got \"ten\"$"):
        parse_duration("ten", "k")
    with pytest.raises(ConfigError, match=r"^k: .*, got -3$"):
        parse_duration(-3, "k")


@pytest.mark.parametrize(
    ("value", "size_bytes"),
    [
        (0, 0),
        (512, 512),
        ("0", 0),
        ("512", 512),
        ("512 B", 512),
        ("512k", 512 * 1024),
        ("2K", 2048),
        ("1KB", 1000),
        ("1kb", 1000),
        ("10 KiB", 10 * 1024),
        ("100MiB", 100 * 1024**2),
        ("100mib", 100 * 1024**2),
        ("1GB", 10**9),
        ("1.5GiB", 3 * 2**29),
        ("1tib", 2**40),
        ("2T", 2 * 2**40),
        ("1.1KiB", 1126),  # 1126.4 rounds down to whole bytes
        (".5k", 512),
    ],
)
def test_parse_size_accepts(value: object, size_bytes: int) -> None:
    result = parse_size(value, "limits.max_file_size")
    assert result == size_bytes
    assert isinstance(result, int)


@pytest.mark.parametrize(
    "value",
    [-1, True, 1.5, 1024.0, "1.5", "1.5 B", "-1k", "1 XB", "10 KiBs", "ten", "", "1e3", None, [1]],
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_size(value, "limits.max_file_size")
    message = str(caught.value)
    assert message.startswith(f"limits.max_file_size: {SIZE_HINT}, got ")
    assert "\n" not in message


def test_render_value_quotes_strings_and_stays_on_one_line() -> None:
    assert render_value("ten") == '"ten"'
    assert render_value(-3) == "-3"
    assert render_value(1.5) == "1.5"
    assert render_value(True) == "True"
    assert render_value("a\nb") == '"a\\nb"'
    assert render_value('say "hi"') == '"say \\"hi\\""'
    long = render_value("x" * 1000)
    assert len(long) <= 120 and long.endswith("...")


@pytest.mark.parametrize(
    ("size_bytes", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (3 * 2**19, "1.5 MiB"),
        (100 * 1024**2, "100 MiB"),
        (1048575, "1 MiB"),  # rounds to 1024 KiB, said in the next unit
        (2**50, "1024 TiB"),
        (-1536, "-1.5 KiB"),
    ],
)
def test_format_size(size_bytes: int, text: str) -> None:
    assert format_size(size_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90, "1m30s"),
        (3600, "1h"),
        (3600.0, "1h"),
        (2 * 86400 + 3 * 3600, "2d3h"),
        (86400 + 1, "1d1s"),
        (0.25, "250ms"),
        (90.5, "1m30.5s"),
        (1.5, "1.5s"),
        (59.9996, "1m"),
        (0, "0s"),
        (-90, "-1m30s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=2**62))
def test_size_format_parse_round_trip_is_close(size_bytes: int) -> None:
    parsed = parse_size(format_size(size_bytes), "k")
    # Two decimals of a unit >= 1 are within 0.5% of the value, and parsing rounds down to
    # whole bytes (one more byte: 1111 B shows as "1.08 KiB", read back as 1105); plain bytes
    # are exact.
    assert abs(parsed - size_bytes) <= size_bytes * 0.005 + 1
    if size_bytes < 1024:
        assert parsed == size_bytes


@given(st.integers(min_value=0, max_value=1023), st.integers(min_value=0, max_value=4))
def test_size_format_parse_round_trip_is_exact_for_whole_units(count: int, power: int) -> None:
    size_bytes = count * 1024**power
    assert parse_size(format_size(size_bytes), "k") == size_bytes


@given(st.integers(min_value=1, max_value=10**12))
def test_duration_format_parse_round_trip_to_the_millisecond(milliseconds: int) -> None:
    seconds = milliseconds / 1000
    assert parse_duration(format_duration(seconds), "k") == seconds


@given(st.text(max_size=20))
def test_parsers_raise_only_config_errors_with_one_line(text: str) -> None:
    for parse in (parse_duration, parse_size):
        try:
            parse(text, "some.key")
        except ConfigError as e:
            assert "\n" not in str(e) and str(e).startswith("some.key: expected ")
