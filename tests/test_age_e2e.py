"""Age by last use on a real filesystem: the service, `clean` and `status` agree on it."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from support import wait_for

from tempwatch.age import DEFAULT_AGE_BY, AgeBy
from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.oneshot import clean_once
from tempwatch.openfiles import NO_OPEN_FILES
from tempwatch.service import Service
from tempwatch.status import gather_status

DAY = 86400.0
MODIFIED: AgeBy = frozenset({"modified"})


def make_config(
    base: Path,
    *,
    max_age_seconds: float = 3600.0,
    interval_seconds: float = 3600.0,
    age_by: AgeBy = DEFAULT_AGE_BY,
    dry_run: bool = False,
) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=3600.0),
        cleanup=CleanupConfig(
            max_age_seconds=max_age_seconds,
            interval_seconds=interval_seconds,
            age_by=age_by,
            dry_run=dry_run,
            skip_open_files=False,
        ),
        limits=LimitsConfig(max_files=0, max_file_size_bytes=0),
    )


def _old(path: Path, age_seconds: float = 2 * DAY) -> Path:
    then = time.time() - age_seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def _extract_old_archive(base: Path, count: int = 5) -> list[Path]:
    """What `tar x` leaves: files whose mtime is the archive's (old), ctime the extraction."""
    paths = [base / f"member{index}" for index in range(count)]
    for path in paths:
        path.write_bytes(b"data")
        _old(path)
    return paths


def test_a_file_kept_alive_by_writes_survives_every_pass_and_goes_after_its_last(
    base: Path,
) -> None:
    passes: list[float] = []
    config = make_config(base, max_age_seconds=0.6, interval_seconds=0.1)
    path = base / "log"
    stop = threading.Event()
    with Service(config) as service:
        path.write_bytes(b"start\n")
        wait_for(lambda: str(path) in service.registry, message="the file registered")
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # four max_ages of steady use
            with open(path, "ab") as handle:
                handle.write(b"line\n")  # closed between writes, as a logger might
            last_write = time.time()
            assert path.exists(), "deleted while in steady use"
            if service.stats.last_pass_at is not None:
                passes.append(service.stats.last_pass_at)
            stop.wait(0.15)  # paces the writer; the answer is the assert above
        assert len(set(passes)) >= 5, "several passes ran while it was in use"
        wait_for(lambda: not path.exists(), timeout=10, message="expired after its last write")
        gone_at = time.time()
    assert gone_at - last_write >= 0.6, "it went max_age after its last write, not before"


def test_a_file_written_since_its_registration_is_kept_and_its_entry_renewed(
    base: Path,
) -> None:
    # A touch sends no event the watcher hears: only the deleter's lstat finds the use.
    config = make_config(base, max_age_seconds=0.3)
    path = base / "f"
    path.write_bytes(b"x")
    with Service(config) as service:
        entry = service.registry.get(str(path))
        assert entry is not None
        wait_for(lambda: time.time() > entry.registered_at + 0.4, message="past max_age")
        os.utime(path)  # used now: no event the watcher subscribes to
        used_at = path.lstat().st_ctime
        report = service.run_pass_now()
        assert report.used_since == 1 and not report.deleted
        assert path.exists()
        assert service.registry.get(str(path)) == (used_at, 1, path.lstat().st_ino)


def test_an_old_file_moved_in_is_young_for_run_clean_and_status(
    base: Path, outside: Path
) -> None:
    source, moved = outside / "moved", base / "moved"
    source.write_bytes(b"m")
    _old(source)
    config = make_config(base)
    with Service(config) as service:
        source.rename(moved)
        wait_for(lambda: str(moved) in service.registry, message="moved in: registered")
        assert service.run_pass_now().deleted == []
    assert time.time() - moved.stat().st_mtime > DAY, "its mtime is still two days old"
    assert gather_status(config, open_paths=NO_OPEN_FILES).would_remove == {}
    report, _ = clean_once(make_config(base, dry_run=True))
    assert report.deleted == []
    assert moved.exists()


def test_an_extracted_old_archive_is_young_by_default_and_old_by_mtime(base: Path) -> None:
    paths = _extract_old_archive(base)
    report, _ = clean_once(make_config(base))
    assert report.deleted == [] and all(p.exists() for p in paths)
    report, _ = clean_once(make_config(base, age_by=MODIFIED))
    assert sorted(d.path for d, _ in report.deleted) == sorted(map(str, paths))


def test_each_age_by_choice(base: Path) -> None:
    path = base / "f"
    path.write_bytes(b"x")
    now = time.time()
    os.utime(path, (now, now - 2 * DAY))  # read just now, written two days ago
    expected = {
        "modified": True,  # old by mtime: goes
        "accessed": False,  # read just now
        "changed": False,  # ctime is now
        "registered": False,  # nobody watched: ctime stands in
    }
    for source, goes in expected.items():
        config = make_config(base, age_by=frozenset({source}), dry_run=True)  # type: ignore[arg-type]
        report, _ = clean_once(config)
        assert bool(report.deleted) is goes, source
        status = gather_status(config, open_paths=NO_OPEN_FILES)
        assert bool(status.would_remove) is goes, f"status disagrees with clean on {source}"


def test_symlinks_are_removed_by_age_alike_in_run_and_clean(base: Path, outside: Path) -> None:
    target = outside / "target"
    target.write_bytes(b"precious")
    for name, points_to in (("live", target), ("dangling", outside / "nowhere")):
        os.symlink(points_to, base / name)
        _old(base / name)
    clean_base = base.parent / "clean-base"
    shutil.copytree(base, clean_base, symlinks=True)
    for name in ("live", "dangling"):
        _old(clean_base / name)
    report, _ = clean_once(make_config(clean_base, age_by=MODIFIED))
    assert len(report.deleted) == 2 and os.listdir(clean_base) == []
    with Service(make_config(base, age_by=MODIFIED)) as service:
        assert len(service.registry) == 2, "the service knows the links, as clean does"
        assert len(service.run_pass_now().deleted) == 2
    assert [p for p in os.listdir(base) if p != ".tempwatch.lock"] == []
    assert target.read_bytes() == b"precious", "a link's target is never touched"


def test_run_clean_and_status_agree_on_the_same_tree(base: Path) -> None:
    young = base / "young"
    young.write_bytes(b"y")
    written_long_ago = base / "old-by-mtime"
    written_long_ago.write_bytes(b"o")
    _old(written_long_ago)
    extracted = _extract_old_archive(base, count=2)
    for age_by in (DEFAULT_AGE_BY, MODIFIED):
        config = make_config(base, age_by=age_by, dry_run=True)
        status = gather_status(config, open_paths=NO_OPEN_FILES)
        report, _ = clean_once(config)
        by_clean = sorted(d.path for d, _ in report.deleted)
        with Service(config) as service:
            by_run = sorted(d.path for d, _ in service.run_pass_now().deleted)
        assert by_run == by_clean, f"run and clean disagree ({sorted(age_by)})"
        assert sum(status.would_remove.values()) == len(by_clean), "status disagrees"
        if age_by == MODIFIED:
            assert by_clean == sorted(map(str, [*extracted, written_long_ago]))
        else:
            assert by_clean == []
    assert young.exists()
