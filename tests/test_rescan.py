"""The reconciling rescan on real files, including changes made between scan and reconcile."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tempwatch.registry import Registry
from tempwatch.rescan import ReconcileResult, reconcile
from tempwatch.scan import scan_tree


@pytest.fixture
def base(tmp_path: Path) -> Path:
    directory = (tmp_path / "base").resolve()
    directory.mkdir()
    return directory


def make_file(path: Path, data: bytes = b"x", mtime: float = 1_000_000.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def test_missing_files_are_added_with_their_mtime(base: Path) -> None:
    a = make_file(base / "a", b"abc", mtime=1_000_000)
    b = make_file(base / "sub" / "b", b"", mtime=2_000_000)
    registry = Registry()
    result = reconcile(registry, scan_tree(base))
    assert result == ReconcileResult(added=2, removed=0, resized=0)
    assert registry.get(str(a)) == (1_000_000, 3, a.stat().st_ino)
    assert registry.get(str(b)) == (2_000_000, 0, b.stat().st_ino)
    assert [path for path, _ in registry.oldest_first()] == [str(a), str(b)]


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
    result = reconcile(registry, scan_tree(base))
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


def test_symlinks_and_own_files_are_never_registered(base: Path) -> None:
    target = make_file(base / "target")
    os.symlink(target, base / "link")
    lock = make_file(base / ".tempwatch.lock")
    registry = Registry()
    registry.add(str(lock), 1.0, 1, lock.stat().st_ino)
    reconcile(registry, scan_tree(base), skip_paths=[str(lock)])
    assert set(registry.times()) == {str(target)}


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
