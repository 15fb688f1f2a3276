"""Passes and eviction rounds in batches: the time limit, the pause, the lock between batches.

Real files and a real registry; the time is a fake timer the test moves, so a pass
"runs out of time" exactly where the test says.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tempwatch.deleter import Deleter, DeleteResult
from tempwatch.openfiles import NO_OPEN_FILES
from tempwatch.pacing import Budget, Pace, Pacer, batches
from tempwatch.policy import Decision, Limits, Reason, plan_evictions
from tempwatch.registry import Entry, Registry
from tempwatch.rounds import run_eviction, run_pass, run_pass_over

NOW = 1_000_000.0
HOUR = 3600.0


class FakeTimer:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A listener that counts deletions and can move the fake timer on each one."""

    def __init__(self, timer: FakeTimer | None = None, seconds_per_file: float = 0.0) -> None:
        self.deleted: list[str] = []
        self.skipped: list[str] = []
        self.passes = 0
        self._timer = timer
        self._step = seconds_per_file

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        self.deleted.append(decision.path)
        if self._timer is not None:
            self._timer.now += self._step

    def on_skipped_open(self, decision: Decision) -> None:
        self.skipped.append(decision.path)

    def on_failed(self, decision: Decision, result: DeleteResult) -> None:
        raise AssertionError(f"failed: {decision.path}: {result.error}")

    def on_pass(self, report: object) -> None:
        self.passes += 1


class Pauses:
    """Records every pause between batches and what the files on disk were at that point."""

    def __init__(self, base: Path, stop_after: int | None = None) -> None:
        self.base = base
        self.seen: list[tuple[float, int]] = []
        self._stop_after = stop_after

    def __call__(self, seconds: float) -> bool:
        self.seen.append((seconds, _count(self.base)))
        return self._stop_after is not None and len(self.seen) >= self._stop_after


def _count(base: Path) -> int:
    return sum(1 for p in base.rglob("*") if p.is_file())


def _files(base: Path, count: int, *, dirs: int = 1, age: float = 2 * HOUR) -> Registry:
    """`count` files over `dirs` directories, registered `age` before NOW, oldest first."""
    registry = Registry()
    for n in range(count):
        directory = base / f"d{n % dirs}"
        directory.mkdir(exist_ok=True)
        path = directory / f"f{n:04}"
        path.write_bytes(b"x" * 10)
        registry.add(str(path), NOW - age + n, 10, path.stat().st_ino)
    return registry


def _clock() -> float:
    return NOW


def test_batches_and_the_budget() -> None:
    assert list(batches([1, 2, 3, 4, 5], 2)) == [[1, 2], [3, 4], [5]]
    assert list(batches([1, 2, 3], 0)) == [[1, 2, 3]]
    assert list(batches([], 3)) == []
    timer = FakeTimer()
    budget = Budget(5.0, timer)
    assert not budget.is_spent()
    timer.now = 4.9
    assert not budget.is_spent() and budget.elapsed_seconds() == 4.9
    timer.now = 5.0
    assert budget.is_spent()
    unlimited = Budget(0.0, timer)
    timer.now = 1e12
    assert not unlimited.is_spent()


@pytest.mark.parametrize("batch_size", [0, 3])
def test_a_pass_stopped_by_its_time_limit_is_finished_by_the_next(
    base: Path, batch_size: int, log_lines: list[str]
) -> None:
    registry = _files(base, 10, dirs=2)
    timer = FakeTimer()
    recorder = Recorder(timer, seconds_per_file=1.0)
    pacer = Pacer(Pace(batch_size=batch_size, timeout_seconds=4.0), timer=timer)
    limits = Limits(max_age_seconds=HOUR)

    first = run_pass(
        registry, Deleter(base), limits, open_paths=NO_OPEN_FILES, clock=_clock,
        listener=recorder, pacer=pacer,
    )  # fmt: skip
    assert (len(first.deleted), first.unfinished, first.stopped) == (4, 6, "time limit")
    assert _count(base) == 6 and len(registry) == 6
    stopped = [line for line in log_lines if " pass-stopped " in line]
    assert len(stopped) == 1 and stopped[0].startswith("WARNING")
    assert "time limit (cleanup.pass_timeout 4s)" in stopped[0]
    assert "6 planned deletions left for the next pass" in stopped[0]

    second = run_pass(
        registry, Deleter(base), limits, open_paths=NO_OPEN_FILES, clock=_clock,
        listener=recorder, pacer=pacer,
    )  # fmt: skip
    assert (len(second.deleted), second.unfinished) == (4, 2)
    third = run_pass(
        registry, Deleter(base), limits, open_paths=NO_OPEN_FILES, clock=_clock,
        listener=recorder, pacer=pacer,
    )  # fmt: skip
    assert (len(third.deleted), third.unfinished, third.stopped) == (2, 0, None)
    assert _count(base) == 0 and len(registry) == 0
    assert sorted(recorder.deleted) == sorted(set(recorder.deleted))  # none twice


def test_batches_with_a_pause_are_counted(base: Path) -> None:
    registry = _files(base, 25, dirs=3)
    pauses = Pauses(base)
    recorder = Recorder()
    pacer = Pacer(Pace(batch_size=10, batch_pause_seconds=0.25), pause=pauses)
    report = run_pass(
        registry, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=NO_OPEN_FILES,
        clock=_clock, listener=recorder, pacer=pacer,
    )  # fmt: skip
    assert len(report.deleted) == 25 and report.unfinished == 0
    # Three batches of 10, 10 and 5, with a 0.25 s pause after each of the first two.
    assert pauses.seen == [(0.25, 15), (0.25, 5)]
    assert report.batches == 3
    assert _count(base) == 0


def test_a_stop_request_during_a_pause_ends_the_pass(base: Path, log_lines: list[str]) -> None:
    registry = _files(base, 12)
    pacer = Pacer(Pace(batch_size=5, batch_pause_seconds=10), pause=Pauses(base, stop_after=1))
    report = run_pass(
        registry, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=NO_OPEN_FILES,
        clock=_clock, pacer=pacer,
    )  # fmt: skip
    assert (len(report.deleted), report.unfinished, report.stopped) == (5, 7, "stop requested")
    assert _count(base) == 7
    (summary,) = [line for line in log_lines if line.startswith("INFO pass ")]
    assert summary.rstrip().endswith("stopped early, 7 files left for the next pass")


def test_a_one_shot_pass_is_paced_too(base: Path) -> None:
    registry = _files(base, 9, dirs=3)
    entries = registry.oldest_first()
    timer = FakeTimer()
    pauses = Pauses(base)
    pacer = Pacer(Pace(batch_size=4, timeout_seconds=6.0), timer=timer, pause=pauses)
    report = run_pass_over(
        entries, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=NO_OPEN_FILES,
        clock=_clock, listener=Recorder(timer, 1.0), pacer=pacer,
    )  # fmt: skip
    assert (len(report.deleted), report.unfinished, report.stopped) == (6, 3, "time limit")
    assert [files for _, files in pauses.seen] == [5]


def test_eviction_rounds_of_a_batch_each_log_a_limit_still_exceeded(
    base: Path, log_lines: list[str]
) -> None:
    registry = _files(base, 30, dirs=2, age=60)  # young: only the count limit applies
    pauses = Pauses(base)
    limits = Limits(max_age_seconds=HOUR, max_files=20, low_watermark=0.5)
    pacer = Pacer(Pace(batch_size=8, batch_pause_seconds=0.01, timeout_seconds=1.0),
                  timer=FakeTimer(), pause=pauses)  # fmt: skip
    report = run_eviction(
        registry, Deleter(base), limits, open_paths=NO_OPEN_FILES, clock=_clock, pacer=pacer
    )
    # Down to the watermark (10 files) in batches of 8, 8 and 4; never beyond it.
    assert len(report.deleted) == 20 and _count(base) == 10 and len(registry) == 10
    assert [files for _, files in pauses.seen] == [22, 14]
    still = [line for line in log_lines if " batch-limit " in line]
    assert len(still) == 2
    assert "22 files > limits.max_files 20" in still[0]
    assert "above the low watermark" in still[1]  # 14 files: under the limit, not yet at 10
    kept = sorted(p.name for p in base.rglob("f*"))
    assert kept == [f"f{n:04}" for n in range(20, 30)]  # the oldest went


def test_the_enforcer_is_not_bound_by_the_time_limit(base: Path) -> None:
    registry = _files(base, 30, age=60)
    timer = FakeTimer()
    pacer = Pacer(Pace(batch_size=5, timeout_seconds=1.0), timer=timer)
    report = run_eviction(
        registry, Deleter(base), Limits(max_age_seconds=HOUR, max_files=10, low_watermark=1.0),
        open_paths=NO_OPEN_FILES, clock=_clock, listener=Recorder(timer, 10.0), pacer=pacer,
    )  # fmt: skip
    assert len(report.deleted) == 20 and report.stopped is None and _count(base) == 10


def test_a_pass_releases_its_lock_between_batches(base: Path) -> None:
    registry = _files(base, 6)
    lock = threading.Lock()
    held_in_pause: list[bool] = []

    def pause(seconds: float) -> bool:
        held_in_pause.append(lock.locked())
        return False

    pacer = Pacer(Pace(batch_size=2), pause=pause, lock=lock)
    run_pass(
        registry, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=NO_OPEN_FILES,
        clock=_clock, pacer=pacer,
    )  # fmt: skip
    assert held_in_pause and not any(held_in_pause)
    assert not lock.locked()


def test_evictions_are_planned_per_round_so_none_is_done_twice(base: Path) -> None:
    """Another eviction between two batches of a pass (the enforcer's) is not repeated."""
    registry = _files(base, 30, age=60)
    limits = Limits(max_age_seconds=HOUR, max_files=20, low_watermark=0.5)
    deleter = Deleter(base)
    rounds = 0

    def pause(seconds: float) -> bool:
        nonlocal rounds
        rounds += 1
        if rounds == 1:  # the enforcer's turn: it finishes the eviction itself
            run_eviction(registry, deleter, limits, open_paths=NO_OPEN_FILES, clock=_clock)
        return False

    report = run_pass(
        registry, deleter, limits, open_paths=NO_OPEN_FILES, clock=_clock,
        pacer=Pacer(Pace(batch_size=5), pause=pause),
    )  # fmt: skip
    assert len(report.deleted) == 5
    assert _count(base) == 10 and len(registry) == 10  # the watermark, not 5 below it


def test_a_file_opened_during_a_paced_pass_is_spared(base: Path) -> None:
    registry = _files(base, 6)
    timer = FakeTimer()
    opened: set[str] = set()

    def pause(seconds: float) -> bool:
        timer.now += 2.0  # more than a second: the next batch sweeps again
        opened.add(str(base / "d0" / "f0005"))  # the newest, in the second batch
        return False

    recorder = Recorder()
    report = run_pass(
        registry, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=set(),
        clock=_clock, listener=recorder, pacer=Pacer(Pace(batch_size=3), timer=timer, pause=pause),
        reopen=lambda: set(opened),
    )  # fmt: skip
    assert len(report.deleted) == 5
    assert recorder.skipped == [str(base / "d0" / "f0005")]
    assert (base / "d0" / "f0005").exists()


@pytest.mark.parametrize("threads", [1, 4])
def test_a_pass_with_threads_deletes_what_one_thread_does(base: Path, threads: int) -> None:
    registry = _files(base, 200, dirs=8)
    young = base / "d0" / "young"
    young.write_bytes(b"")
    registry.add(str(young), NOW, 0, young.stat().st_ino)
    recorder = Recorder()
    report = run_pass(
        registry, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=NO_OPEN_FILES,
        clock=_clock, listener=recorder, pacer=Pacer(Pace(batch_size=50, threads=threads)),
    )  # fmt: skip
    assert len(report.deleted) == 200 and len(recorder.deleted) == 200
    assert [p.name for p in base.rglob("*") if p.is_file()] == ["young"]
    assert registry.paths() == [str(young)]
    expired = {d.reason for d, _ in report.deleted}
    assert expired == {Reason.EXPIRED}


def test_a_dry_run_in_batches_ends_and_evicts_each_file_once(base: Path) -> None:
    registry = _files(base, 30, age=60)
    registry.add(str(base / "d0" / "old"), NOW - 2 * HOUR, 0, 0)
    (base / "d0" / "old").write_bytes(b"")
    limits = Limits(max_age_seconds=HOUR, max_files=20, low_watermark=0.5)
    recorder = Recorder()
    for run in (run_pass, run_eviction):
        recorder.deleted.clear()
        report = run(
            registry, Deleter(base, dry_run=True), limits, open_paths=NO_OPEN_FILES,
            clock=_clock, listener=recorder, dry_run=True, pacer=Pacer(Pace(batch_size=4)),
        )  # fmt: skip
        assert len(recorder.deleted) == len(set(recorder.deleted))
        assert len(report.deleted) == 21  # 1 expired (or over-count) + 20 over-count
    assert _count(base) == 31 and len(registry) == 31


def test_an_eviction_plan_capped_at_a_batch_and_one_under_way() -> None:
    entries = [(f"/b/f{n}", Entry(float(n), 10, n + 1)) for n in range(30)]
    limits = Limits(max_age_seconds=HOUR, max_files=20, low_watermark=0.5)

    def plan(count: int, cap: int, under_way: tuple[Reason, ...] = ()) -> tuple[int, bool]:
        made = plan_evictions(
            entries[30 - count :], count=count, total_bytes=10 * count, now=100.0,
            limits=limits, open_paths=set(), max_deletions=cap, under_way=under_way,
        )  # fmt: skip
        return len(made.deletions), made.capped

    assert plan(30, 0) == (20, False)
    assert plan(30, 8) == (8, True)
    assert plan(15, 8) == (0, False)  # under the limit and nothing under way: nothing
    assert plan(15, 8, (Reason.OVER_COUNT,)) == (5, False)  # under way: to the watermark
    assert plan(15, 8, (Reason.OVER_QUOTA,)) == (0, False)  # no quota set: nothing
    assert limits.is_exceeded(21, 0) and not limits.is_exceeded(20, 10**12)


def test_the_pass_summary_names_its_directory(base: Path, log_lines: list[str]) -> None:
    # Several directories in one process each log a summary per pass: say whose it is.
    registry = _files(base, 3)
    run_pass(
        registry, Deleter(base), Limits(max_age_seconds=HOUR), open_paths=NO_OPEN_FILES,
        clock=_clock,
    )  # fmt: skip
    (summary,) = [line for line in log_lines if line.startswith("INFO pass ")]
    assert summary.startswith(f"INFO pass cleanup pass in {base.resolve()}: deleted 3 files")
