"""The disk-pressure policy, with plain data: free-space and free-inode watermarks."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from tempwatch.policy import Reason
from tempwatch.pressure import (
    FreeAmount,
    FsUsage,
    Watermarks,
    plan_pressure,
    plan_shared_pressure,
)
from tempwatch.registry import Entry
from tempwatch.rules import Rule, RuleSet

NOW = 10_000.0
MiB = 1024**2
GiB = 1024**3


def entries(*rows: tuple[str, float, int]) -> list[tuple[str, Entry]]:
    """(path, age, size) rows, oldest first."""
    ordered = sorted(rows, key=lambda r: -r[1])
    return [(path, Entry(NOW - age, size, i + 1)) for i, (path, age, size) in enumerate(ordered)]


def usage(free_mib: int, *, total_mib: int = 100, free_inodes: int = 1000,
          total_inodes: int = 1000, block: int = 4096) -> FsUsage:
    return FsUsage(free_mib * MiB, total_mib * MiB, free_inodes, total_inodes, block)


def percent(value: float) -> FreeAmount:
    return FreeAmount(value, is_percent=True)


TEN_PERCENT = Watermarks(min_free_space=percent(10))


def test_nothing_goes_above_the_watermark() -> None:
    plan = plan_pressure(
        entries(("/b/a", 100, 50 * MiB)), usage=usage(10), watermarks=TEN_PERCENT, now=NOW,
        open_paths=set(),
    )
    assert not plan.is_pressed and plan.plan.deletions == ()


def test_below_the_watermark_the_oldest_go_until_the_reclaim_margin() -> None:
    # 100 MiB filesystem, 10% = 10 MiB wanted free; the margin (1 - 0.9) brings it to 11 MiB.
    rows = [(f"/b/{i}", 100 - i, MiB) for i in range(10)]
    plan = plan_pressure(
        entries(*rows), usage=usage(8), watermarks=TEN_PERCENT, now=NOW, open_paths=set()
    )
    assert plan.low_space and not plan.low_inodes and plan.is_met
    assert [d.path for d in plan.plan.deletions] == ["/b/0", "/b/1", "/b/2"]
    assert {d.reason for d in plan.plan.deletions} == {Reason.LOW_SPACE}
    assert plan.plan.deletions[0].age_seconds == 100


def test_exactly_at_the_watermark_is_not_below_it() -> None:
    plan = plan_pressure(
        entries(("/b/a", 10, MiB)), usage=usage(10), watermarks=TEN_PERCENT, now=NOW,
        open_paths=set(),
    )
    assert plan.plan.deletions == ()


def test_absolute_bytes_and_the_margin_follow_low_watermark() -> None:
    marks = Watermarks(min_free_space=FreeAmount(20 * MiB), low_watermark=0.5)
    targets = marks.targets(usage(0))
    assert (targets.min_free_bytes, targets.stop_free_bytes) == (20 * MiB, 30 * MiB)
    assert Watermarks(min_free_space=percent(12.5)).targets(usage(0, total_mib=8)).min_free_bytes \
        == MiB


def test_open_files_are_passed_over_and_pin_the_shortfall() -> None:
    rows = [("/b/open", 100, 5 * MiB), ("/b/closed", 50, MiB)]
    plan = plan_pressure(
        entries(*rows), usage=usage(5), watermarks=TEN_PERCENT, now=NOW, open_paths={"/b/open"}
    )
    assert [d.path for d in plan.plan.deletions] == ["/b/closed"]
    assert [d.path for d in plan.plan.pinned] == ["/b/open"]
    assert plan.plan.pinned_bytes == 5 * MiB
    # 5 MiB free + 1 MiB freed; 11 MiB wanted.
    assert plan.short_bytes == 5 * MiB and not plan.is_met


def test_open_files_passed_over_pin_nothing_once_the_target_is_met() -> None:
    rows = [("/b/open", 100, 5 * MiB), ("/b/closed", 50, 9 * MiB)]
    plan = plan_pressure(
        entries(*rows), usage=usage(5), watermarks=TEN_PERCENT, now=NOW, open_paths={"/b/open"}
    )
    assert plan.is_met and plan.plan.pinned == ()
    assert [d.path for d in plan.plan.skipped_open] == ["/b/open"]


def test_a_file_frees_its_size_rounded_up_to_blocks() -> None:
    # 1 MiB and 1 byte short of 11 MiB; 1-byte files hold a 256 KiB block each: five go.
    marks = Watermarks(min_free_space=FreeAmount(10 * MiB))
    rows = [(f"/b/{i}", 100 - i, 1) for i in range(10)]
    tight = FsUsage(10 * MiB - 1, 100 * MiB, 1000, 1000, block_bytes=256 * 1024)
    plan = plan_pressure(entries(*rows), usage=tight, watermarks=marks, now=NOW, open_paths=set())
    assert len(plan.plan.deletions) == 5


def test_empty_files_free_no_space() -> None:
    rows = [("/b/empty", 100, 0), ("/b/full", 50, 4 * MiB)]
    plan = plan_pressure(
        entries(*rows), usage=usage(8), watermarks=TEN_PERCENT, now=NOW, open_paths=set()
    )
    assert [d.path for d in plan.plan.deletions] == ["/b/full"]


def test_low_inodes_take_the_oldest_whatever_their_size() -> None:
    marks = Watermarks(min_free_inodes=percent(5))  # 50 of 1000; stops at 55
    rows = [(f"/b/{i}", 100 - i, 0) for i in range(10)]
    plan = plan_pressure(
        entries(*rows), usage=usage(50, free_inodes=49), watermarks=marks, now=NOW,
        open_paths=set(),
    )
    assert plan.low_inodes and not plan.low_space
    assert [d.path for d in plan.plan.deletions] == [f"/b/{i}" for i in range(6)]
    assert {d.reason for d in plan.plan.deletions} == {Reason.LOW_INODES}


def test_a_filesystem_without_an_inode_table_has_no_inode_watermark() -> None:
    marks = Watermarks(min_free_inodes=percent(5))
    plan = plan_pressure(
        entries(("/b/a", 100, 0)), usage=usage(50, free_inodes=0, total_inodes=0),
        watermarks=marks, now=NOW, open_paths=set(),
    )
    assert not plan.is_pressed


def test_both_watermarks_free_both() -> None:
    marks = Watermarks(min_free_space=percent(10), min_free_inodes=FreeAmount(10))
    rows = [("/b/big", 100, 3 * MiB)] + [(f"/b/{i}", 50 - i, 0) for i in range(20)]
    plan = plan_pressure(
        entries(*rows), usage=usage(9, free_inodes=5), watermarks=marks, now=NOW,
        open_paths=set(),
    )
    assert plan.is_met
    reasons = [d.reason for d in plan.plan.deletions]
    assert reasons[0] is Reason.LOW_SPACE
    # 11 inodes wanted free: 5 + 6 deletions.
    assert len(reasons) == 6


def test_only_pressed_directories_lose_files_and_by_age_across_them() -> None:
    tight = Watermarks(min_free_space=percent(20))  # stops at 22 MiB free
    loose = Watermarks(min_free_space=percent(5))  # not pressed at 15 MiB free
    a = entries(("/a/1", 90, 2 * MiB), ("/a/2", 70, 2 * MiB), ("/a/3", 50, 2 * MiB),
                ("/a/4", 30, 2 * MiB))
    b = entries(("/b/1", 100, 2 * MiB), ("/b/2", 80, 2 * MiB))
    plan = plan_shared_pressure([(tight, a), (loose, b)], usage=usage(15), now=NOW,
                                open_paths=set())
    assert [d.path for d in plan.plan.deletions] == ["/a/1", "/a/2", "/a/3", "/a/4"]
    both = Watermarks(min_free_space=percent(16))  # stops at 17.6 MiB
    plan = plan_shared_pressure([(tight, a), (both, b)], usage=usage(15), now=NOW,
                                open_paths=set())
    # Across both by age, until each directory's own target: after /b/1 and /a/1 free
    # space is 19 MiB, past b's 17.6, so /b/2 stays while a goes on to 22 MiB.
    assert [d.path for d in plan.plan.deletions] == ["/b/1", "/a/1", "/a/2", "/a/3"]


def test_ties_go_in_the_order_the_directories_are_given() -> None:
    marks = Watermarks(min_free_space=percent(10))
    a = entries(("/a/x", 100, MiB))
    b = entries(("/b/x", 100, MiB))
    first = plan_shared_pressure([(marks, a), (marks, b)], usage=usage(9), now=NOW,
                                 open_paths=set())
    again = plan_shared_pressure([(marks, b), (marks, a)], usage=usage(9), now=NOW,
                                 open_paths=set())
    assert [d.path for d in first.plan.deletions] == ["/a/x", "/b/x"]
    assert [d.path for d in again.plan.deletions] == ["/b/x", "/a/x"]


def test_only_the_entries_needed_are_read() -> None:
    read = 0

    def lazily() -> Iterator[tuple[str, Entry]]:
        nonlocal read
        for i in range(1_000_000):
            read += 1
            yield f"/b/{i}", Entry(float(i), MiB, i + 1)

    plan = plan_pressure(
        lazily(), usage=usage(9), watermarks=TEN_PERCENT, now=NOW, open_paths=set()
    )
    assert len(plan.plan.deletions) == 2 and read == 2


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=4 * MiB), max_size=40),
    free_mib=st.integers(min_value=0, max_value=30),
    opened=st.sets(st.integers(min_value=0, max_value=39)),
)
def test_evictions_stop_at_the_target_and_never_take_open_files(
    sizes: list[int], free_mib: int, opened: set[int]
) -> None:
    rows = [(f"/b/{i}", 1000 - i, size) for i, size in enumerate(sizes)]
    open_paths = {f"/b/{i}" for i in opened}
    use = usage(free_mib)
    plan = plan_pressure(entries(*rows), usage=use, watermarks=TEN_PERCENT, now=NOW,
                         open_paths=open_paths)
    chosen = [d.path for d in plan.plan.deletions]
    assert not set(chosen) & open_paths
    freed = sum(use.blocks_of(d.size_bytes) for d in plan.plan.deletions)
    target = TEN_PERCENT.targets(use).stop_free_bytes
    if chosen:  # one file fewer would not have reached the target
        last = use.blocks_of(plan.plan.deletions[-1].size_bytes)
        assert use.free_bytes + freed - last < target
    assert plan.is_met == (use.free_bytes + freed >= target or use.free_bytes >= 10 * MiB)
    # Oldest first: what went is a prefix of the closed, non-empty files.
    candidates = [p for p, e in entries(*rows) if p not in open_paths and e.size_bytes]
    assert chosen == candidates[: len(chosen)]


def test_files_a_keep_rule_governs_never_go() -> None:
    rules = RuleSet("/b", [Rule("keep/**", keep=True)], max_age_seconds=60,
                    max_file_size_bytes=0, age_by=None)
    marks = Watermarks(min_free_space=percent(10), rules=rules)
    rows = [("/b/keep/old", 100, 5 * MiB), ("/b/new", 10, 5 * MiB)]
    plan = plan_pressure(entries(*rows), usage=usage(5), watermarks=marks, now=NOW,
                         open_paths=set())
    assert [d.path for d in plan.plan.deletions] == ["/b/new"]


def test_each_decision_names_the_directory_it_came_from() -> None:
    marks = Watermarks(min_free_space=percent(20))
    a = entries(("/a/1", 90, 2 * MiB), ("/a/2", 50, 2 * MiB))
    b = entries(("/b/1", 100, 2 * MiB), ("/b/2", 70, 2 * MiB))
    plan = plan_shared_pressure([(marks, a), (marks, b)], usage=usage(15), now=NOW,
                                open_paths={"/b/2"})
    assert [d.path for d in plan.plan.deletions] == ["/b/1", "/a/1", "/a/2"]
    assert plan.deletion_owners == (1, 0, 0)
    assert [d.path for d in plan.plan.skipped_open] == ["/b/2"] and plan.skipped_owners == (1,)
