"""The pure policy, with plain data and a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tempwatch.policy import EVERY_PATH, Limits, Reason, plan_evictions, plan_pass
from tempwatch.registry import Entry

NOW = 10_000.0


def entries(*rows: tuple[str, float, int]) -> list[tuple[str, Entry]]:
    """(path, age, size) rows, oldest first."""
    ordered = sorted(rows, key=lambda r: -r[1])
    return [(path, Entry(NOW - age, size, i + 1)) for i, (path, age, size) in enumerate(ordered)]


def test_expired_files_go_with_their_age() -> None:
    plan = plan_pass(
        entries(("/b/old", 100, 5), ("/b/new", 10, 5)),
        now=NOW,
        limits=Limits(max_age_seconds=50),
        open_paths=set(),
    )
    assert [(d.path, d.reason, d.age_seconds) for d in plan.deletions] == [
        ("/b/old", Reason.EXPIRED, 100)
    ]


def test_a_file_exactly_at_max_age_stays() -> None:
    plan = plan_pass(entries(("/b/f", 50, 1)), now=NOW, limits=Limits(50), open_paths=set())
    assert plan.deletions == ()


def test_open_files_are_skipped_not_deleted() -> None:
    plan = plan_pass(
        entries(("/b/open", 100, 1), ("/b/closed", 100, 1)),
        now=NOW,
        limits=Limits(max_age_seconds=50),
        open_paths={"/b/open"},
    )
    assert [d.path for d in plan.deletions] == ["/b/closed"]
    assert [d.path for d in plan.skipped_open] == ["/b/open"]


def test_oversize_is_a_reason_of_its_own() -> None:
    plan = plan_pass(
        entries(("/b/big", 1, 2000), ("/b/small", 1, 10)),
        now=NOW,
        limits=Limits(max_age_seconds=50, max_file_size_bytes=1000),
        open_paths=set(),
    )
    assert [(d.path, d.reason) for d in plan.deletions] == [("/b/big", Reason.OVERSIZE)]


def test_force_takes_every_file_but_open_ones() -> None:
    plan = plan_pass(
        entries(("/b/a", 1, 1), ("/b/b", 2, 1)),
        now=NOW,
        limits=Limits(max_age_seconds=50),
        open_paths={"/b/a"},
        forced=EVERY_PATH,
    )
    assert [(d.path, d.reason) for d in plan.deletions] == [("/b/b", Reason.FORCED)]


def test_forced_paths_ignore_age_and_the_rest_go_by_age() -> None:
    plan = plan_pass(
        entries(("/b/old", 100, 1), ("/b/mine", 2, 1), ("/b/theirs", 1, 1)),
        now=NOW,
        limits=Limits(max_age_seconds=50),
        open_paths=set(),
        forced={"/b/mine"},
    )
    assert [(d.path, d.reason) for d in plan.deletions] == [
        ("/b/old", Reason.EXPIRED),
        ("/b/mine", Reason.FORCED),
    ]


def test_count_limit_evicts_oldest_first_down_to_the_low_watermark() -> None:
    rows = [(f"/b/{i}", 100 - i, 1) for i in range(12)]  # /b/0 is the oldest
    plan = plan_pass(
        entries(*rows),
        now=NOW,
        limits=Limits(max_age_seconds=1000, max_files=10, low_watermark=0.5),
        open_paths=set(),
    )
    assert [d.path for d in plan.deletions] == [f"/b/{i}" for i in range(7)]
    assert {d.reason for d in plan.deletions} == {Reason.OVER_COUNT}


def test_eviction_passes_over_open_files_and_reports_pinned_ones() -> None:
    rows = [(f"/b/{i}", 100 - i, 10) for i in range(4)]
    plan = plan_pass(
        entries(*rows),
        now=NOW,
        limits=Limits(max_age_seconds=1000, max_files=2, low_watermark=0.5),
        open_paths={"/b/0", "/b/2", "/b/3"},
    )
    assert [d.path for d in plan.deletions] == ["/b/1"]
    assert (plan.pinned_files, plan.pinned_bytes) == (3, 30)
    assert plan.is_limit_pinned


def test_files_expired_while_open_still_pin_the_limits() -> None:
    # 25 files held open, all older than max_age, over a count of 20: they cannot go, so
    # the count stays exceeded, and every one of them is what holds it there.
    rows = [(f"/b/{i}", 500 - i, 4096) for i in range(25)]
    held = {path for path, _, _ in rows}
    plan = plan_pass(
        entries(*rows), now=NOW, limits=Limits(max_age_seconds=60, max_files=20),
        open_paths=held,
    )
    assert plan.deletions == ()
    assert (plan.pinned_files, plan.pinned_bytes) == (25, 25 * 4096)
    # Each is listed once as skipped, with the reason it first met: expiry.
    assert [d.path for d in plan.skipped_open] == [path for path, _, _ in rows]
    assert {d.reason for d in plan.skipped_open} == {Reason.EXPIRED}


def test_closed_files_go_and_the_expired_open_ones_are_what_pins() -> None:
    rows = [("/b/held1", 500, 10), ("/b/held2", 400, 20), ("/b/young", 10, 30)]
    plan = plan_pass(
        entries(*rows), now=NOW, limits=Limits(max_age_seconds=60, max_files=1,
                                               low_watermark=1.0),
        open_paths={"/b/held1", "/b/held2"},
    )
    assert [(d.path, d.reason) for d in plan.deletions] == [("/b/young", Reason.OVER_COUNT)]
    assert [d.path for d in plan.pinned] == ["/b/held1", "/b/held2"]
    assert plan.pinned_bytes == 30


def test_quota_evicts_by_bytes_and_skips_empty_files() -> None:
    rows = [("/b/empty", 100, 0), ("/b/a", 90, 600), ("/b/b", 80, 600), ("/b/c", 70, 600)]
    plan = plan_pass(
        entries(*rows),
        now=NOW,
        limits=Limits(max_age_seconds=1000, max_total_size_bytes=1000, low_watermark=1.0),
        open_paths=set(),
    )
    assert [(d.path, d.reason) for d in plan.deletions] == [
        ("/b/a", Reason.OVER_QUOTA),
        ("/b/b", Reason.OVER_QUOTA),
    ]


def test_expired_files_count_towards_meeting_the_limits() -> None:
    rows = [("/b/old", 100, 1), ("/b/x", 5, 1), ("/b/y", 4, 1)]
    plan = plan_pass(
        entries(*rows),
        now=NOW,
        limits=Limits(max_age_seconds=50, max_files=2, low_watermark=1.0),
        open_paths=set(),
    )
    assert [d.reason for d in plan.deletions] == [Reason.EXPIRED]


def test_evictions_read_only_what_they_need() -> None:
    consumed = 0

    def oldest_first() -> object:
        nonlocal consumed
        for path, entry in entries(*[(f"/b/{i}", 1000 - i, 1) for i in range(1000)]):
            consumed += 1
            yield path, entry

    plan = plan_evictions(
        oldest_first(),  # type: ignore[arg-type]
        count=1000,
        total_bytes=1000,
        now=NOW,
        limits=Limits(max_age_seconds=1, max_files=999, low_watermark=0.99),
        open_paths=set(),
    )
    assert len(plan.deletions) == 11
    assert consumed <= 12


def test_an_unset_limit_never_evicts() -> None:
    plan = plan_evictions(
        entries(*[(f"/b/{i}", 1, 10**9) for i in range(50)]),
        count=50,
        total_bytes=50 * 10**9,
        now=NOW,
        limits=Limits(max_age_seconds=100),
        open_paths=set(),
    )
    assert plan.deletions == ()


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=1000), max_size=60),
    max_files=st.integers(min_value=0, max_value=40),
    quota=st.integers(min_value=0, max_value=20_000),
    watermark=st.floats(min_value=0.05, max_value=1.0),
    open_mask=st.lists(st.booleans(), max_size=60),
)
def test_limits_are_met_unless_pinned_and_open_files_never_go(
    sizes: list[int], max_files: int, quota: int, watermark: float, open_mask: list[bool]
) -> None:
    rows = [(f"/b/{i}", 1000 - i, size) for i, size in enumerate(sizes)]
    opened = {f"/b/{i}" for i, is_open in enumerate(open_mask) if is_open and i < len(sizes)}
    limits = Limits(
        max_age_seconds=10**6, max_files=max_files, max_total_size_bytes=quota,
        low_watermark=watermark,
    )
    plan = plan_pass(entries(*rows), now=NOW, limits=limits, open_paths=opened)
    gone = {d.path for d in plan.deletions}
    assert not gone & opened
    remaining = [(p, s) for p, _, s in rows if p not in gone]
    ages = {p: a for p, a, _ in rows}
    if not plan.is_limit_pinned:
        if max_files and len(rows) > max_files:
            assert len(remaining) <= limits.count_target()
        if quota and sum(sizes) > quota:
            assert sum(s for _, s in remaining) <= limits.bytes_target()
    # Oldest first: no evicted file is younger than a surviving, closed, non-empty one
    # that could have gone instead.
    for path in gone:
        for other, size in remaining:
            if other not in opened and size > 0:
                assert ages[path] >= ages[other] or plan.is_limit_pinned
