"""`status`'s free-space lines: the figures next to the watermarks, and what would go now."""

from __future__ import annotations

import errno
import os

from tempwatch.freespace import pressure_lines, pressure_status
from tempwatch.pressure import FreeAmount, FsUsage, Watermarks
from tempwatch.registry import Entry

MiB = 1024**2
NOW = 1000.0
ENTRIES = [(f"/b/f{i}", Entry(float(i), MiB, i + 1)) for i in range(10)]


def usage_of(free_mib: int) -> FsUsage:
    return FsUsage(free_mib * MiB, 16 * MiB, 480, 500, 4096)


def test_no_watermark_no_lines() -> None:
    figures = pressure_status("/b", ENTRIES, watermarks=Watermarks(), now=NOW,
                              open_paths=set(), usage_of=lambda _: usage_of(1))
    assert figures is None and pressure_lines(figures) == []


def test_below_the_watermark_says_what_would_go_and_what_is_open() -> None:
    marks = Watermarks(min_free_space=FreeAmount(50, is_percent=True))
    figures = pressure_status("/b", ENTRIES, watermarks=marks, now=NOW,
                              open_paths={"/b/f0"}, usage_of=lambda _: usage_of(6))
    assert figures is not None
    assert (figures["would_remove"], figures["would_remove_bytes"]) == (3, 3 * MiB)
    assert pressure_lines(figures) == [
        "free space: 6 MiB of 16 MiB (37.5%), watermark 8 MiB",
        "free inodes: 480 of 500 (96.0%), no watermark",
        "an eviction for free space now would remove 3 files (3 MiB)",
    ]


def test_pinned_files_are_named_with_their_bytes() -> None:
    marks = Watermarks(min_free_space=FreeAmount(50, is_percent=True))
    held = {path for path, _ in ENTRIES}
    figures = pressure_status("/b", ENTRIES, watermarks=marks, now=NOW, open_paths=held,
                              usage_of=lambda _: usage_of(6))
    assert pressure_lines(figures)[2:] == [
        "below a watermark, and nothing that could go",
        "10 files (10 MiB) that would go to get back above the watermark are open",
    ]


def test_above_the_watermark_nothing_would_go() -> None:
    marks = Watermarks(min_free_inodes=FreeAmount(10))
    figures = pressure_status("/b", ENTRIES, watermarks=marks, now=NOW, open_paths=set(),
                              usage_of=lambda _: usage_of(12))
    assert pressure_lines(figures) == [
        "free space: 12 MiB of 16 MiB (75.0%), no watermark",
        "free inodes: 480 of 500 (96.0%), watermark 10",
        "an eviction for free space now would remove nothing",
    ]


def test_an_unreadable_filesystem_is_one_line() -> None:
    def fails(path: str) -> FsUsage:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    marks = Watermarks(min_free_inodes=FreeAmount(10))
    figures = pressure_status("/b", ENTRIES, watermarks=marks, now=NOW, open_paths=set(),
                              usage_of=fails)
    assert pressure_lines(figures) == [
        "free space: cannot read the free space of /b: Input/output error"
    ]
