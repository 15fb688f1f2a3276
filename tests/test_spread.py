"""Deletions spread over threads: the same result as one thread, and the same safety."""

from __future__ import annotations

import itertools
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from tempwatch.cleaner import execute_plan
from tempwatch.deleter import Deleter, DeleteResult, FileId, Outcome
from tempwatch.descent import Cursor
from tempwatch.policy import Decision, Plan, Reason
from tempwatch.spread import delete_spread, shards


def _tree(base: Path, outside: Path) -> list[tuple[str, FileId | None]]:
    """A tree with plain files in 12 directories and, among them, every trap the deleter
    knows: a symlinked directory, a symlink to outside, a file swapped after the scan,
    a path outside, a dotdot escape, a FIFO and a file already gone."""
    items: list[tuple[str, FileId | None]] = []
    for d in range(12):
        directory = base / f"d{d}" / "sub"
        directory.mkdir(parents=True)
        for f in range(20):
            path = directory / f"f{f}"
            path.write_bytes(b"x" * f)
            st = os.lstat(path)
            items.append((str(path), FileId(st.st_dev, st.st_ino)))
    (outside / "victim").write_text("outside")
    (base / "d0" / "linkdir").symlink_to(outside)
    items.append((str(base / "d0" / "linkdir" / "victim"), None))
    (base / "d1" / "link").symlink_to(outside / "victim")
    items.append((str(base / "d1" / "link"), None))
    swapped = base / "d2" / "swapped"
    swapped.write_text("judged")
    st = os.lstat(swapped)
    judged = FileId(st.st_dev, st.st_ino)
    (base / "d2" / "incoming").write_text("swapped in")
    os.replace(base / "d2" / "incoming", swapped)
    items.append((str(swapped), judged))
    items.append((str(outside / "victim"), None))
    items.append((f"{base}/d3/../../outside/victim", None))
    os.mkfifo(base / "d4" / "fifo")
    items.append((str(base / "d4" / "fifo"), None))
    items.append((str(base / "d5" / "gone"), None))
    return items


def _dirs_of_files(base: Path, dirs: int, files: int) -> list[tuple[str, FileId | None]]:
    """`dirs` directories of `files` empty files each, as items without identities."""
    items: list[tuple[str, FileId | None]] = []
    for d in range(dirs):
        (base / f"d{d}").mkdir()
        for f in range(files):
            (base / f"d{d}" / f"f{f}").write_bytes(b"")
            items.append((str(base / f"d{d}" / f"f{f}"), None))
    return items


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _outcomes(
    base: Path, items: list[tuple[str, FileId | None]], threads: int
) -> dict[str, Outcome]:
    results = dict(delete_spread(Deleter(base), items, threads=threads))
    assert sorted(results) == list(range(len(items)))  # one result per item, none twice
    return {
        os.path.relpath(items[i][0], base): result.outcome for i, result in results.items()
    }


def test_shards_deal_whole_directories_to_the_least_loaded_thread() -> None:
    paths = [f"/b/a/{n}" for n in range(6)] + [f"/b/c/{n}" for n in range(3)]
    paths += [f"/b/d/{n}" for n in range(3)] + ["/b/e"]
    parts = shards(paths, 3)
    assert len(parts) == 3
    assert sorted(i for part in parts for i in part) == list(range(len(paths)))
    by_dir = [{paths[i].rpartition("/")[0] for i in part} for part in parts]
    assert by_dir[0] == {"/b/a"}  # the biggest directory alone
    assert sum(len(dirs) for dirs in by_dir) == 4  # no directory split over two threads
    assert shards(paths, 1) == [list(range(len(paths)))]
    assert shards(["/b/x/1", "/b/x/2"], 4) == [[0, 1]]  # one directory: one thread
    assert shards([], 4) == []


def test_four_threads_delete_the_same_tree_as_one_with_the_same_outcomes(
    tmp_path: Path,
) -> None:
    found = {}
    for threads in (1, 4):
        base, outside = tmp_path / f"t{threads}" / "base", tmp_path / f"t{threads}" / "outside"
        base.mkdir(parents=True)
        outside.mkdir()
        outcomes = _outcomes(base, _tree(base, outside), threads)
        found[threads] = (outcomes, _listing(base), _listing(outside))
        assert (outside / "victim").read_text() == "outside"
        assert (base / "d2" / "swapped").read_text() == "swapped in"
    assert found[4] == found[1]
    outcomes = found[4][0]
    assert Counter(outcomes.values())[Outcome.DELETED] == 12 * 20 + 1  # and the symlink
    assert outcomes["d0/linkdir/victim"] is Outcome.SYMLINK_PARENT
    assert outcomes["d2/swapped"] is Outcome.SWAPPED
    assert outcomes["d4/fifo"] is Outcome.SPECIAL


def test_directories_moved_out_mid_batch_are_not_followed_by_any_thread(
    tmp_path: Path, base: Path, outside: Path
) -> None:
    """While four threads delete, an attacker moves directories out of base_dir and puts
    symlinks to them in their place: whatever the timing, nothing outside is touched."""
    items = _dirs_of_files(base, 16, 100)
    started = threading.Event()
    moved: list[Path] = []

    def attack() -> None:
        started.wait(10)
        for d in range(0, 16, 2):
            target = outside / f"moved{d}"
            os.rename(base / f"d{d}", target)
            (base / f"d{d}").symlink_to(target)
            moved.append(target)

    attacker = threading.Thread(target=attack)
    attacker.start()
    results: list[tuple[int, DeleteResult]] = []
    try:
        for pair in delete_spread(Deleter(base), items, threads=4):
            started.set()
            results.append(pair)
    finally:
        started.set()
        attacker.join(10)
    assert len(results) == len(items)
    # The files still in a moved directory were either deleted before the move, or refused.
    survivors = {str(p) for target in moved for p in target.iterdir()}
    for index, result in results:
        relative = os.path.relpath(items[index][0], base)
        d, name = relative.split("/")
        if int(d[1:]) % 2 == 0 and result.outcome is not Outcome.DELETED:
            assert result.outcome in (Outcome.SYMLINK_PARENT, Outcome.SWAPPED, Outcome.VANISHED)
            assert str(outside / f"moved{d[1:]}" / name) in survivors


def test_a_stop_request_starts_no_further_file(base: Path) -> None:
    items = _dirs_of_files(base, 4, 50)
    results = list(delete_spread(Deleter(base), items, threads=4, should_stop=lambda: True))
    assert results == []
    assert len(list(base.rglob("f*"))) == 200


def test_execute_plan_counts_what_a_stop_left_undone(base: Path) -> None:
    items = _dirs_of_files(base, 4, 30)
    decisions = [Decision(path, Reason.EXPIRED, 10.0, 0, 0) for path, _ in items]
    started = itertools.count()
    lock = threading.Lock()

    def should_stop() -> bool:  # asked once before each file, from every thread
        with lock:
            return next(started) >= 50

    report = execute_plan(
        Plan(tuple(decisions)), None, Deleter(base), threads=4, should_stop=should_stop
    )
    assert (len(report.deleted), report.unfinished) == (50, 70)
    assert len(list(base.rglob("f*"))) == 70


class _FailingDeleter(Deleter):
    """A deleter whose descent breaks with a programming error in one directory."""

    def _act(self, cursor: Cursor, abs_path: str, rel: str, *args: object) -> DeleteResult:
        if rel.startswith("d2/"):
            raise RuntimeError("a bug in the deleter")
        return super()._act(cursor, abs_path, rel, *args)  # type: ignore[arg-type]


def test_an_error_on_a_worker_thread_reaches_the_caller(base: Path) -> None:
    items = _dirs_of_files(base, 4, 5)
    with pytest.raises(RuntimeError, match="a bug in the deleter"):
        list(delete_spread(_FailingDeleter(base), items, threads=4))
    # (the autouse fixture checks that every worker was joined)


def test_leaving_the_results_early_stops_and_joins_the_workers(base: Path) -> None:
    items = _dirs_of_files(base, 4, 300)
    results = delete_spread(Deleter(base), items, threads=4)
    first = next(results)
    results.close()
    assert first[1].outcome is Outcome.DELETED
    assert len(list(base.rglob("f*"))) > 0
