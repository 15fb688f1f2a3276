"""The reconciling rescan on real files, including changes made between scan and reconcile."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from tempwatch.age import DEFAULT_AGE_BY
from tempwatch.registry import Registry
from tempwatch.rescan import ReconcileResult, reconcile, rescan
from tempwatch.scan import ScanResult, scan_tree


def make_file(path: Path, data: bytes = b"x", mtime: float = 1_000_000.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


MODIFIED = frozenset({"modified"})


def test_missing_files_are_added_with_their_mtime(base: Path) -> None:
    a = make_file(base / "a", b"abc", mtime=1_000_000)
    b = make_file(base / "sub" / "b", b"", mtime=2_000_000)
    registry = Registry()
    result = reconcile(registry, scan_tree(base), age_by=MODIFIED)
    assert result == ReconcileResult(added=2, removed=0, resized=0)
    assert registry.get(str(a)) == (1_000_000, 3, a.stat().st_ino)
    assert registry.get(str(b)) == (2_000_000, 0, b.stat().st_ino)
    assert [path for path, _ in registry.oldest_first()] == [str(a), str(b)]


def test_by_default_files_found_are_aged_from_their_last_change(base: Path) -> None:
    # An old mtime (tar, cp -p, mv) does not make a file found by a scan old: its ctime,
    # set when it was made or moved in, stands in for the registration nobody saw.
    a = make_file(base / "a", b"abc", mtime=1_000_000)
    registry = Registry()
    reconcile(registry, scan_tree(base))
    assert DEFAULT_AGE_BY >= {"modified", "changed"}
    assert registry.get(str(a)) == (a.lstat().st_ctime, 3, a.stat().st_ino)


def test_ghost_entries_are_removed_and_sizes_refreshed(base: Path) -> None:
    kept = make_file(base / "kept", b"12345")
    registry = Registry()
    registry.add(str(kept), 5.0, 1, kept.stat().st_ino)
    registry.add(str(base / "ghost"), 6.0, 10, 999)
    result = reconcile(registry, scan_tree(base))
    assert result == ReconcileResult(added=0, removed=1, resized=1)
    assert registry.get(str(kept)) == (5.0, 5, kept.stat().st_ino), "age kept, size refreshed"
    assert str(base / "ghost") not in registry
    assert registry.total_bytes == 5


def test_a_new_inode_under_a_known_name_is_a_new_file(base: Path) -> None:
    path = make_file(base / "f", mtime=3_000_000)
    registry = Registry()
    registry.add(str(path), 5.0, 1, path.stat().st_ino + 1)
    result = reconcile(registry, scan_tree(base), age_by=MODIFIED)
    assert result.added == 1
    assert registry.get(str(path)) == (3_000_000, 1, path.stat().st_ino)


def test_changes_after_the_scan_are_not_undone(base: Path) -> None:
    deleted_after_scan = make_file(base / "deleted")
    scan = scan_tree(base)
    deleted_after_scan.unlink()
    created_after_scan = make_file(base / "created")
    registry = Registry()
    # What the event handler did meanwhile: registered the new file at event time.
    registry.add(str(created_after_scan), 42.0, 1, created_after_scan.stat().st_ino)
    reconcile(registry, scan)
    assert str(deleted_after_scan) not in registry
    assert registry.get(str(created_after_scan)) == (42.0, 1, created_after_scan.stat().st_ino)


def test_entries_in_directories_the_scan_skipped_are_kept(base: Path) -> None:
    inside = make_file(base / "unread" / "f")
    registry = Registry()
    registry.add(str(inside), 7.0, 1, inside.stat().st_ino)
    reconcile(registry, scan_tree(base, exclude=["unread"]))  # as if unreadable
    assert str(inside) in registry


def test_symlinks_are_registered_as_clean_sees_them_and_own_files_never(base: Path) -> None:
    target = make_file(base / "target")
    os.symlink(target, base / "link")
    os.symlink(base / "nowhere", base / "dangling")
    lock = make_file(base / ".tempwatch.lock")
    registry = Registry()
    registry.add(str(lock), 1.0, 1, lock.stat().st_ino)
    reconcile(registry, scan_tree(base), skip_paths=[str(lock)])
    assert set(registry.times()) == {str(target), str(base / "link"), str(base / "dangling")}


def test_discrepancies_are_verified_under_the_registry_lock(base: Path) -> None:
    for i in range(5):
        make_file(base / f"f{i}")
    registry = Registry()
    held: list[bool] = []

    def lstat_probe(path: str) -> os.stat_result:
        grabbed: list[bool] = []
        prober = threading.Thread(
            target=lambda: grabbed.append(registry.lock.acquire(blocking=False))
        )
        prober.start()
        prober.join()
        if grabbed[0]:
            registry.lock.release()
        held.append(not grabbed[0])
        return os.lstat(path)

    result = reconcile(registry, scan_tree(base), lstat=lstat_probe, chunk_size=2)
    assert result.added == 5
    assert held == [True] * 5


def test_changes_during_the_scan_are_neither_lost_nor_ghosted(base: Path) -> None:
    kept = make_file(base / "kept")
    doomed = make_file(base / "doomed")
    grown = make_file(base / "grown")
    born = base / "born"
    registry = Registry()
    registry.add(str(kept), 1.0, 1, kept.stat().st_ino)
    registry.add(str(grown), 2.0, 1, grown.stat().st_ino)

    def scanner(*args: Any, **kwargs: Any) -> ScanResult:
        scan = scan_tree(*args, **kwargs)
        # After the listing, before the reconcile: changes on disk, and what the event
        # handler does about them (it discards a deleted path whether known or not).
        doomed.unlink()
        registry.discard(str(doomed))
        born.write_bytes(b"new")
        registry.add(str(born), 50.0, 3, born.stat().st_ino)
        grown.write_bytes(b"12345")
        registry.update_size(str(grown), 5)
        return scan

    result = rescan(registry, str(base), reason="test", scanner=scanner)
    assert str(doomed) not in registry, "deleted during the scan: not ghosted"
    assert registry.get(str(born)) == (50.0, 3, born.stat().st_ino), "created: not lost"
    assert registry.get(str(grown)) == (2.0, 5, grown.stat().st_ino), "grown: size not stale"
    assert set(registry.times()) == {str(kept), str(grown), str(born)}
    assert result == ReconcileResult(added=0, removed=0, resized=0)


def test_events_between_chunks_are_respected(base: Path) -> None:
    first = make_file(base / "first", mtime=1.0)
    second = make_file(base / "second", mtime=2.0)
    registry = Registry()
    chunks_done: list[int] = []

    def between_chunks() -> bool:
        chunks_done.append(len(chunks_done))
        if len(chunks_done) == 2:  # after "first" was added, before "second" is
            second.unlink()
            registry.discard(str(second))
        return False

    with registry.tracking() as touched:
        scan = scan_tree(base)
        result = reconcile(
            registry, scan, touched=touched, base_dir=str(base), chunk_size=1,
            should_stop=between_chunks,
        )
    assert set(registry.times()) == {str(first)}
    assert result.added == 1


def test_untouched_discrepancies_take_the_scans_word(base: Path) -> None:
    new = make_file(base / "new", b"abc", mtime=7.0)
    resized = make_file(base / "resized", b"12345")
    evented = base / "evented"
    registry = Registry()
    registry.add(str(resized), 3.0, 1, resized.stat().st_ino)
    registry.add(str(base / "ghost"), 4.0, 10, 999)
    lstat_calls: list[str] = []

    def counting_lstat(path: str) -> os.stat_result:
        lstat_calls.append(path)
        return os.lstat(path)

    with registry.tracking() as touched:
        scan = scan_tree(base)
        make_file(evented)  # created after the scan, registered by its event
        registry.add(str(evented), 60.0, 1, evented.stat().st_ino)
        result = reconcile(
            registry, scan, touched=touched, base_dir=str(base), lstat=counting_lstat,
            age_by=MODIFIED,
        )
    assert lstat_calls == [str(evented)], "only the touched path is looked at again"
    assert result == ReconcileResult(added=1, removed=1, resized=1)
    assert registry.get(str(new)) == (7.0, 3, new.stat().st_ino)
    assert registry.get(str(resized)) == (3.0, 5, resized.stat().st_ino)
    assert str(evented) in registry and str(base / "ghost") not in registry


def test_a_rescan_drops_unchecked_only_what_the_scan_vouches_for(base: Path) -> None:
    in_excluded_dir = make_file(base / "unread" / "f")
    excluded_name = make_file(base / "app.log")
    in_failed_listing = make_file(base / "partly" / "f")
    registry = Registry()
    for path in (in_excluded_dir, excluded_name, in_failed_listing):
        registry.add(str(path), 1.0, 1, path.stat().st_ino)
    registry.add(str(base / "ghost"), 2.0, 1, 999)
    registry.add(str(base / "partly" / "ghost"), 2.0, 1, 998)

    def scanner(*args: Any, **kwargs: Any) -> ScanResult:
        scan = scan_tree(*args, **kwargs)
        # As if listing "partly" had failed midway and missed "f".
        scan.files = [info for info in scan.files if info.path != str(in_failed_listing)]
        scan.errors.append((str(base / "partly"), "[Errno 5] Input/output error"))
        return scan

    result = rescan(
        registry, str(base), reason="test", exclude=["unread", "*.log"], scanner=scanner
    )
    assert set(registry.times()) == {str(in_excluded_dir), str(excluded_name),
                                     str(in_failed_listing)}
    assert result.removed == 2


def test_a_start_loads_directory_by_directory_as_a_reconcile_would(base: Path) -> None:
    for d in range(5):
        for i in range(40):
            make_file(base / f"d{d}" / f"f{i}", b"x" * i, mtime=1_000_000.0 + (i * 37 + d) % 97)
    (base / "link").symlink_to("missing")
    loaded, reconciled = Registry(), Registry()
    # The empty registry is filled as the scan lists each directory; a stand-in scanner
    # takes the path that collects the whole scan first. Both end the same.
    first = rescan(loaded, str(base), reason="start", age_by=MODIFIED)
    second = rescan(
        reconciled, str(base), reason="start", age_by=MODIFIED,
        scanner=lambda *a, **k: scan_tree(*a, **k),
    )
    assert first == second == ReconcileResult(added=201)
    assert sorted(loaded.oldest_first()) == sorted(reconciled.oldest_first())
    times = [entry.registered_at for _, entry in loaded.oldest_first()]
    assert times == sorted(times)
    assert loaded.total_bytes == reconciled.total_bytes == 5 * sum(range(40)) + len("missing")


def test_scan_tree_hands_over_each_directory_and_keeps_nothing(base: Path) -> None:
    for d in range(3):
        for i in range(5):
            make_file(base / f"d{d}" / f"f{i}")
    make_file(base / "top")
    batches: list[list[str]] = []
    scan = scan_tree(base, on_files=lambda files: batches.append([i.path for i in files]))
    assert scan.files == []
    assert sorted(len(batch) for batch in batches) == [1, 5, 5, 5]
    assert {os.path.dirname(p) for batch in batches[1:] for p in batch} <= {
        str(base / f"d{d}") for d in range(3)
    }
    assert sorted(p for batch in batches for p in batch) == sorted(
        info.path for info in scan_tree(base).files
    )
    assert len(scan.dirs) == 3
