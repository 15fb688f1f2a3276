"""The service on real directories: real observers, real child processes, real deletions."""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import hold_open, small_inotify_queue, wait_for

from tempwatch.age import DEFAULT_AGE_BY, AgeBy
from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.errors import AlreadyRunningError, TempwatchError
from tempwatch.instance import LOCK_FILE_NAME, InstanceLock
from tempwatch.openfiles import OpenFiles, sweep_open_files
from tempwatch.service import Service

HOUR = 3600.0


def make_config(
    base: Path,
    *,
    max_age_seconds: float = HOUR,
    interval_seconds: float = HOUR,
    rescan_interval_seconds: float = HOUR,
    age_by: AgeBy = DEFAULT_AGE_BY,
    **limits: object,
) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=rescan_interval_seconds),
        cleanup=CleanupConfig(
            max_age_seconds=max_age_seconds, interval_seconds=interval_seconds, age_by=age_by
        ),
        limits=dataclasses.replace(LimitsConfig(), **limits),  # type: ignore[arg-type]
    )


class TickingClock:
    """Real time plus one millisecond per reading: registration order is strict."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return time.time() + next(self._ticks) / 1000


def files_in(directory: Path) -> set[str]:
    return {
        os.path.join(root, name)
        for root, _, names in os.walk(directory)
        for name in names
        if name != LOCK_FILE_NAME
    }


def create_in_order(service: Service, paths: list[Path], size_bytes: int = 0) -> None:
    for path in paths:
        path.write_bytes(b"x" * size_bytes)
        wait_for(lambda p=path: str(p) in service.registry, message=f"{path.name} registered")


def test_existing_files_are_registered_with_their_mtime(base: Path) -> None:
    old = base / "sub" / "old.tmp"
    old.parent.mkdir()
    old.write_bytes(b"abc")
    os.utime(old, (1_000_000, 1_000_000))
    with Service(make_config(base, age_by=frozenset({"modified"}))) as service:
        entry = service.registry.get(str(old))
        assert entry is not None
        assert entry.registered_at == 1_000_000 and entry.size_bytes == 3
        assert service.stats.registered_total == 1
        assert str(base / LOCK_FILE_NAME) not in service.registry


def test_expiry_deletes_files_older_than_max_age(base: Path) -> None:
    config = make_config(base, max_age_seconds=0.3, interval_seconds=0.1)
    with Service(config) as service:
        path = base / "a.tmp"
        created = time.time()
        path.write_bytes(b"x")
        wait_for(lambda: not path.exists(), message="expired file deleted")
        assert time.time() - created >= 0.3
        wait_for(lambda: str(path) not in service.registry, message="entry dropped")
        assert (base / LOCK_FILE_NAME).exists(), "the lock file is never deleted"
        assert service.stats.last_pass_report is not None


def test_open_file_is_kept_until_closed(base: Path) -> None:
    config = make_config(base, max_age_seconds=0.2, interval_seconds=0.1)
    path = base / "held.tmp"
    path.write_bytes(b"x")
    # Held open before the service starts: a holder started after the file was written
    # could come up (a new Python process, slow on a loaded machine) after it expired.
    holder = hold_open(path, "r")
    holder.__enter__()
    try:
        with Service(config) as service:

            def skipped() -> bool:
                report = service.stats.last_pass_report
                return report is not None and any(
                    d.path == str(path) for d in report.skipped_open
                )

            wait_for(skipped, message="a pass skipped the open file")
            assert path.exists()
            closing, holder = holder, None
            closing.__exit__(None, None, None)
            wait_for(lambda: not path.exists(), message="deleted once closed")
    finally:
        if holder is not None:
            holder.__exit__(None, None, None)


def test_count_limit_evicts_oldest_first_down_to_low_watermark(base: Path) -> None:
    config = make_config(base, max_files=10, low_watermark=0.5)
    with Service(config, clock=TickingClock()) as service:
        paths = [base / f"f{i:02}" for i in range(11)]
        create_in_order(service, paths[:10])
        assert all(p.exists() for p in paths[:10]), "at the limit, nothing goes"
        paths[10].write_bytes(b"")
        wait_for(lambda: len(files_in(base)) == 5, message="evicted down to 5 files")
        assert files_in(base) == {str(p) for p in paths[6:]}
        wait_for(lambda: len(service.registry) == 5, message="registry follows")


def test_count_eviction_skips_open_files(base: Path) -> None:
    config = make_config(base, max_files=4, low_watermark=0.5)
    with Service(config, clock=TickingClock()) as service:
        paths = [base / f"f{i}" for i in range(5)]
        create_in_order(service, paths[:4])
        with hold_open(paths[0]):
            paths[4].write_bytes(b"")
            wait_for(lambda: len(files_in(base)) == 2, message="evicted down to 2")
            assert files_in(base) == {str(paths[0]), str(paths[4])}


def test_quota_evicts_oldest_first(base: Path) -> None:
    config = make_config(base, max_total_size_bytes=1000, low_watermark=0.5)
    with Service(config, clock=TickingClock()) as service:
        paths = [base / f"q{i}" for i in range(4)]
        create_in_order(service, paths[:3], size_bytes=300)
        wait_for(lambda: service.registry.total_bytes == 900, message="sizes known at close")
        assert all(p.exists() for p in paths[:3])
        paths[3].write_bytes(b"x" * 300)
        wait_for(lambda: files_in(base) == {str(paths[3])}, message="quota: down to 500 bytes")
        wait_for(lambda: service.registry.total_bytes == 300, message="registry bytes follow")


def test_oversize_file_is_removed_once_closed(base: Path) -> None:
    config = make_config(base, max_file_size_bytes=1000)
    with Service(config) as service:
        small = base / "small"
        small.write_bytes(b"x" * 10)
        big = base / "big"
        with big.open("wb") as f:
            f.write(b"x" * 2000)
            f.flush()
            wait_for(lambda: str(big) in service.registry, message="big registered")
            create_in_order(service, [base / "probe"])
            assert big.exists(), "not removed while being written"
        wait_for(lambda: not big.exists(), message="oversize file removed after close")
        assert small.exists()


def test_pinned_limit_backs_off_and_logs_once(base: Path, log_lines: list[str]) -> None:
    sweeps = itertools.count()

    def counting_sweep(base_dir: str) -> OpenFiles:
        next(sweeps)
        return sweep_open_files(base_dir)

    config = make_config(base, max_total_size_bytes=1000, low_watermark=1.0, interval_seconds=60)
    with Service(config, sweep=counting_sweep, clock=TickingClock()) as service:
        big = base / "big"
        big.write_bytes(b"")
        with hold_open(big):
            big.write_bytes(b"x" * 2000)
            wait_for(lambda: service.stats.pinned_files == 1, message="quota pinned by big")
            assert service.stats.pinned_bytes == 2000
            # Each of these wakes the enforcer (still over quota) yet frees nothing.
            empties = [base / f"empty{i}" for i in range(100)]
            for path in empties:
                path.write_bytes(b"")
            wait_for(lambda: all(str(p) in service.registry for p in empties),
                     message="the empty files registered")
            swept = next(sweeps)
            assert big.exists()
        # Backing off, it sweeps about once a second at most, not once per event: even a
        # machine slowed down for tens of seconds stays far below 100.
        assert swept < 50, f"swept {swept} times for 100 events while pinned"
    assert sum(line.startswith("WARNING pinned") for line in log_lines) == 1


@pytest.mark.root
@pytest.mark.slow
def test_burst_larger_than_the_inotify_queue_ends_exact(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("lowering max_queued_events needs root")
    config = make_config(base, max_files=0)
    with small_inotify_queue(64):
        service = Service(config)
        service.start()
    try:
        # Create (and delete some) until the overflow is seen: how soon depends on the load.
        stop_marker = base.parent / "stop-burst"
        code = (
            "import os, sys\n"
            "d, stop = sys.argv[1], sys.argv[2]\n"
            "for i in range(200000):\n"
            "    if i % 500 == 0 and os.path.exists(stop):\n"
            "        break\n"
            "    sub = os.path.join(d, f'd{i % 50}')\n"
            "    os.makedirs(sub, exist_ok=True)\n"
            "    os.close(os.open(os.path.join(sub, f'f{i}'), os.O_CREAT | os.O_WRONLY, 0o600))\n"
            "    if i % 7 == 0:\n"
            "        os.unlink(os.path.join(sub, f'f{i}'))\n"
        )
        writer = subprocess.Popen([sys.executable, "-c", code, str(base), str(stop_marker)])
        try:
            wait_for(lambda: service.stats.overflows > 0, timeout=30, message="overflow noticed")
        finally:
            stop_marker.write_bytes(b"")
            writer.wait(timeout=30)
        on_disk = files_in(base)
        wait_for(lambda: set(service.registry.times()) == on_disk, timeout=30,
                 message="registry equal to the directory")
        # The start, then at least one after the overflow (the events seen meanwhile may
        # have made the registry right before that rescan is counted).
        wait_for(lambda: service.stats.rescans >= 2, timeout=30, message="rescan after overflow")
    finally:
        service.stop()


def test_second_instance_on_the_same_directory_is_refused(base: Path) -> None:
    with Service(make_config(base)):
        with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}.*{base}"):
            Service(make_config(base)).start()
    with Service(make_config(base)):  # released on stop
        pass


# The test kills watchdog's dispatcher thread on purpose; pytest reports the thread's death.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_observer_is_restarted_and_missed_files_recovered(
    base: Path, log_lines: list[str]
) -> None:
    calls = itertools.count()

    def fatal_once() -> float:
        if next(calls) == 1:  # the first reading is the start time
            raise SystemExit
        return time.time()

    with Service(make_config(base), clock=fatal_once) as service:
        (base / "kills-the-observer").write_bytes(b"")
        wait_for(lambda: service.stats.observer_restarts == 1, message="observer restarted")
        wait_for(lambda: str(base / "kills-the-observer") in service.registry,
                 message="the file is recovered by the rescan after the restart")
        (base / "after").write_bytes(b"")
        wait_for(lambda: str(base / "after") in service.registry, message="events flow again")
        assert service.stats.observer_alive
    assert any(line.startswith("ERROR observer-died") for line in log_lines)
    assert any(line.startswith("WARNING rescan") for line in log_lines)


def test_reload_applies_new_limits_and_keeps_base_dir(base: Path, tmp_path: Path) -> None:
    with Service(make_config(base), clock=TickingClock()) as service:
        paths = [base / f"r{i}" for i in range(6)]
        create_in_order(service, paths)
        other = tmp_path / "other"
        new = make_config(other, max_files=4, low_watermark=0.5, max_age_seconds=HOUR)
        service.reload(new)
        assert service.config.watch.base_dir == base
        assert service.config.limits.max_files == 4
        # The new limit applies at once, not at the next event.
        wait_for(lambda: len(files_in(base)) == 2, message="evicted under the new limit")
        assert files_in(base) == {str(paths[4]), str(paths[5])}
        assert not other.exists()


def test_reload_of_watch_settings_replaces_the_observer(base: Path) -> None:
    with Service(make_config(base), polling_interval_seconds=0.05) as service:
        create_in_order(service, [base / "app.log", base / "data"])
        config = service.config
        new = dataclasses.replace(
            config,
            watch=dataclasses.replace(config.watch, observer="polling", exclude=("*.log",)),
        )
        service.reload(new)
        assert service.stats.observer_kind == "polling"
        assert set(service.registry.times()) == {str(base / "data")}, "now excluded: dropped"
        create_in_order(service, [base / "after"])
        (base / "more.log").write_bytes(b"")
        create_in_order(service, [base / "sentinel"])
        assert str(base / "more.log") not in service.registry


def test_stop_leaves_no_thread(base: Path) -> None:
    service = Service(make_config(base, interval_seconds=0.05, rescan_interval_seconds=0.05))
    service.start()
    (base / "x").write_bytes(b"")
    service.stop()
    # Every thread ended within the stop's own deadline (no timing assert here: the
    # service's deadline is the contract, and it says so in the log when it is missed).
    assert not [t for t in threading.enumerate() if t.name.startswith("tempwatch-")]
    assert not (base / LOCK_FILE_NAME).exists()


@contextmanager
def running(config: Config) -> Iterator[Service]:
    with Service(config, polling_interval_seconds=0.05) as service:
        yield service


def test_polling_service_registers_and_expires(base: Path) -> None:
    config = make_config(base, max_age_seconds=0.3, interval_seconds=0.1)
    config = dataclasses.replace(
        config, watch=dataclasses.replace(config.watch, observer="polling")
    )
    with running(config) as service:
        assert service.stats.observer_kind == "polling"
        path = base / "p.tmp"
        path.write_bytes(b"x")
        wait_for(lambda: str(path) in service.registry, message="polling: registered")
        wait_for(lambda: not path.exists(), message="polling: expired")


def test_missing_base_dir_is_created_private(tmp_path: Path) -> None:
    base = tmp_path / "new"
    with Service(make_config(base)) as service:
        assert base.is_dir()
        assert base.stat().st_mode & 0o777 == 0o700
        (base / "f").write_bytes(b"")
        wait_for(lambda: str(base / "f") in service.registry, message="registered")


def test_lock_file_planted_as_symlink_is_refused(base: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, base / LOCK_FILE_NAME)
    with pytest.raises(TempwatchError, match="symlink"):
        InstanceLock(base).acquire()
    assert victim.read_text() == "precious"


def test_lock_file_with_another_hard_link_is_refused(base: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.link(victim, base / LOCK_FILE_NAME)
    with pytest.raises(TempwatchError, match="hard links"):
        InstanceLock(base).acquire()
    assert victim.read_text() == "precious"


def test_stale_lock_file_of_a_dead_process_is_taken_over(base: Path) -> None:
    (base / LOCK_FILE_NAME).write_text("999999\n")
    with InstanceLock(base) as lock:
        assert lock.is_held
        assert (base / LOCK_FILE_NAME).read_text() == f"{os.getpid()}\n"
    assert not (base / LOCK_FILE_NAME).exists()


def test_start_registers_existing_files_oldest_first(base: Path) -> None:
    # Listing order is not age order: the start's bulk load must still come out sorted.
    mtimes = [5_000.0, 1_000.0, 3_000.0, 2_000.0, 4_000.0, 1_500.0]
    for index, mtime in enumerate(mtimes):
        path = base / f"d{index % 2}" / f"f{index}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * index)
        os.utime(path, (mtime, mtime))
    with Service(make_config(base, age_by=frozenset({"modified"}))) as service:
        listed = service.registry.oldest_first()
        assert [entry.registered_at for _, entry in listed] == sorted(mtimes)
        assert service.registry.total_bytes == sum(range(len(mtimes)))


def test_the_garbage_collector_is_left_as_it_was_found(base: Path) -> None:
    (base / "f").write_bytes(b"x")
    assert gc.isenabled()
    with Service(make_config(base)) as service:
        assert str(base / "f") in service.registry
        assert gc.isenabled(), "paused for the start's rescan only"
    gc.disable()
    try:
        with Service(make_config(base)) as service:
            assert not gc.isenabled(), "a program that turned it off keeps it off"
    finally:
        gc.enable()
