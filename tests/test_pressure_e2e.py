"""Disk pressure on a real small tmpfs (root only): writers filling it while the service runs.

Each test mounts its own tmpfs with a size and an inode count small enough to fill in a
moment, runs the service on a directory inside it, and lets a child process write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import OnDeleted, event_lines, hold_open, wait_for

from tempwatch.cli import main
from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.configload import load_config
from tempwatch.directory import deleter_for, watermarks_of
from tempwatch.freespace import read_usage
from tempwatch.health import assess_service
from tempwatch.host import Host
from tempwatch.openfiles import NO_OPEN_FILES
from tempwatch.pressure import FreeAmount
from tempwatch.reclaim import Reclaimer
from tempwatch.registry import Registry
from tempwatch.service import Service

MiB = 1024**2
HOUR = 3600.0


def _cannot_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    if shutil.which("mount") is None:
        return "needs mount(8)"
    return None


pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(_cannot_mount() is not None, reason=_cannot_mount() or ""),
]


@contextmanager
def tmpfs(mount_point: Path, *, size: str, nr_inodes: int = 0) -> Iterator[Path]:
    """A tmpfs of `size` (and `nr_inodes`, 0: the default) at `mount_point` for the block."""
    mount_point.mkdir()
    options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    with event_lines("INFO") as lines:
        yield lines


def pressure_config(base: Path, **limits: object) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=HOUR),
        cleanup=CleanupConfig(max_age_seconds=HOUR, interval_seconds=HOUR),
        limits=LimitsConfig(max_files=0, max_file_size_bytes=0, **limits),  # type: ignore[arg-type]
    )


# A writer that writes `count` files of `size` bytes, each closed before the next; on ENOSPC
# it closes the file, pauses a moment and goes on with the next one. Prints how many
# ENOSPC errors it met.
_WRITER = r"""
import errno, os, sys, time
directory, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = b"x" * min(size, 1 << 20) if size else b""
full = 0
for i in range(count):
    while True:
        try:
            fd = os.open(os.path.join(directory, f"w{i:06d}"), os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            full += 1
            time.sleep(0.002)
            continue
        break
    try:
        left = size
        while left > 0:
            left -= os.write(fd, chunk[:left])
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        full += 1
        time.sleep(0.002)
    finally:
        os.close(fd)
print(full)
"""


def start_writer(directory: Path, count: int, size: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(count), str(size)],
        stdout=subprocess.PIPE, text=True,
    )


def finish(writer: subprocess.Popen[str]) -> int:
    """Wait for the writer; how many times it found the filesystem full."""
    out, _ = writer.communicate(timeout=50)
    assert writer.returncode == 0, f"the writer failed ({writer.returncode})"
    return int(out)


def test_space_comes_back_to_the_watermark_while_a_writer_fills_the_filesystem(
    tmp_path: Path, log_lines: list[str]
) -> None:
    with tmpfs(tmp_path / "fs", size="32m") as fs:
        base = fs / "tmp"
        base.mkdir()
        config = pressure_config(base, min_free_space=FreeAmount(10, is_percent=True))
        with Service(config) as service:
            # Four times what the filesystem holds: possible only if space comes back.
            writer = start_writer(base, 128, MiB)
            finish(writer)
            total = read_usage(str(fs)).total_bytes
            wait_for(lambda: read_usage(str(fs)).free_bytes >= total // 10,
                     message="free space back above 10%")
            assert service.watcher is not None and service.is_working
            stats = service.stats
        left = sorted(p.name for p in base.iterdir() if p.name.startswith("w"))
        assert left and left[-1] == "w000127"  # the newest stayed
        assert stats.pressure.targets is not None
        assert stats.pressure.targets.min_free_bytes == total // 10 + (total % 10 > 0)
    deleted = [line for line in log_lines if line.startswith("INFO pressure ")]
    assert deleted and "low free space" in deleted[0]


def test_inode_exhaustion_with_many_empty_files(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", size="64m", nr_inodes=400) as fs:
        base = fs / "tmp"
        base.mkdir()
        config = pressure_config(base, min_free_inodes=FreeAmount(20, is_percent=True))
        with Service(config) as service:
            writer = start_writer(base, 2000, 0)  # five times the inodes there are
            finish(writer)
            usage = read_usage(str(fs))
            wait_for(lambda: read_usage(str(fs)).free_inodes >= usage.total_inodes // 5,
                     message="free inodes back above 20%")
            assert service.is_working
        assert (base / "w001999").exists()


def test_open_files_are_pinned_and_reported(tmp_path: Path, log_lines: list[str]) -> None:
    with tmpfs(tmp_path / "fs", size="32m") as fs:
        base, other = fs / "tmp", fs / "other"
        base.mkdir()
        other.mkdir()
        (other / "outside").write_bytes(b"o" * (4 * MiB))
        big = base / "big"
        big.write_bytes(b"b" * (14 * MiB))
        config = pressure_config(base, min_free_space=FreeAmount(50, is_percent=True))
        with hold_open(big), Service(config) as service:
            # Written beside base_dir and moved in closed: a file the service sees while
            # it is still being written is (rightly) reported as open too.
            staged, small = other / "small", base / "small"
            staged.write_bytes(b"s" * MiB)
            staged.rename(small)
            wait_for(lambda: not small.exists(), message="the closed file evicted")

            def reported() -> bool:
                state = service.stats.pressure
                # The figures of a check made after the eviction: 4 MiB used outside.
                return (
                    state.pinned_files == 1
                    and state.problem is not None
                    and state.outside_bytes >= 4 * MiB
                )

            wait_for(reported, message="the open file reported as pinned")
            stats = service.stats
            health = assess_service(stats, config, now=stats.started_at, base_dir_exists=True)
            assert big.exists()
        state = stats.pressure
        assert state.pinned_bytes == 14 * MiB
        assert 4 * MiB <= state.outside_bytes < 5 * MiB  # the outside file and directories
        assert health.status == "degraded" and health.http_status == 200
        assert any(reason.startswith("disk pressure: free space") for reason in health.reasons)
        assert health.body["pressure_problem"] == state.problem
    pinned = [line for line in log_lines if line.startswith("WARNING pressure-pinned ")]
    assert len(pinned) == 1, pinned  # once per interval (an hour here), not once per check
    assert "1 files (14 MiB) that would go are open, " in pinned[0]
    assert "of the filesystem's use is outside the watched directories" in pinned[0]


def test_a_writer_hitting_enospc_does_not_crash_the_service(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", size="16m") as fs:
        base = fs / "tmp"
        base.mkdir()
        config = pressure_config(base, min_free_space=FreeAmount(4 * MiB))
        with Service(config) as service:
            # One file larger than the filesystem: open while written, so nothing can go
            # until the writer meets ENOSPC and closes it.
            writer = start_writer(base, 1, 32 * MiB)
            assert finish(writer) == 1
            wait_for(lambda: not (base / "w000000").exists(), message="the full file evicted")
            assert service.is_working
            wait_for(lambda: read_usage(str(fs)).free_bytes >= 4 * MiB,
                     message="free space back")
            wait_for(lambda: service.stats.pressure.problem is None,
                     message="the shortfall cleared")


def _six_files_of_2_mib(fs: Path) -> tuple[Path, Registry]:
    """fs/tmp with six files of 2 MiB, registered oldest first (12 of 16 MiB used)."""
    base = fs / "tmp"
    base.mkdir()
    registry = Registry()
    for i in range(6):
        path = base / f"f{i}"
        path.write_bytes(b"x" * (2 * MiB))
        registry.add(str(path), float(i), 2 * MiB, path.stat().st_ino)
    return base, registry


class FakeMonotonic:
    """A monotonic clock the test moves: the checks' delays, without waiting for them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def until_due(self, reclaimer: Reclaimer) -> None:
        """Move on to the reclaimer's next check."""
        self.now = max(self.now, reclaimer.next_check_at())


def test_a_read_only_filesystem_is_retried_with_a_growing_delay_then_recovers(
    tmp_path: Path, log_lines: list[str]
) -> None:
    # The reclaimer alone, with a real deleter: a tmpfs cannot be remounted read-only under
    # a file open for writing, and a running service holds its lock file so.
    with tmpfs(tmp_path / "fs", size="16m") as fs:
        base, registry = _six_files_of_2_mib(fs)
        config = pressure_config(base, min_free_space=FreeAmount(50, is_percent=True))
        watermarks = watermarks_of(config)
        clock = FakeMonotonic()
        reclaimer = Reclaimer(
            registry, base_dir=str(base), sweep=lambda _: NO_OPEN_FILES, clock=time.time,
            listener=None, act_lock=threading.Lock(), monotonic=clock,
        )
        deleter = deleter_for(config)
        remount(fs, "ro")
        try:
            delays = []
            for _ in range(5):
                clock.until_due(reclaimer)
                reclaimer.check(config, watermarks, deleter)
                delays.append(reclaimer.state.retry_seconds)
            assert delays == [0.2, 0.4, 0.8, 1.6, 3.2]
            assert reclaimer.wait_seconds(watermarks) == pytest.approx(3.2)
            reclaimer.note_written()  # writes do not cut a failure's delay short
            assert reclaimer.wait_seconds(watermarks) == pytest.approx(3.2)
            assert reclaimer.state.problem is not None
            assert "Read-only file system" in reclaimer.state.problem
            assert all((base / f"f{i}").exists() for i in range(6))
        finally:
            remount(fs, "rw")
        clock.until_due(reclaimer)
        report = reclaimer.check(config, watermarks, deleter)
        assert report is not None and len(report.deleted) == 3  # 4 MiB free + 6 = 10 >= 8.8
        assert reclaimer.state.error is None and reclaimer.state.problem is None
        clock.until_due(reclaimer)
        assert reclaimer.check(config, watermarks, deleter) is None
        assert not reclaimer.state.is_low
    errors = [line for line in log_lines if line.startswith("WARNING pressure-error ")]
    assert len(errors) == 1, errors  # said once, not once per attempt
    assert "Read-only file system" in errors[0]
    assert any(line.startswith("INFO pressure-over ") for line in log_lines)


class _Refill(OnDeleted):
    """A writer that writes a new file for each one evicted: still low after the eviction."""

    def __init__(self, base: Path, registry: Registry) -> None:
        self._base, self._registry, self.written = base, registry, 0

    def on_deleted(self, decision: object, result: object) -> None:
        self.written += 1
        path = self._base / f"new{self.written}"
        path.write_bytes(b"x" * (2 * MiB))
        self._registry.add(str(path), time.time(), 2 * MiB, path.stat().st_ino)


def test_after_an_eviction_a_writer_undid_the_next_check_is_due_at_once(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", size="16m") as fs:
        base, registry = _six_files_of_2_mib(fs)
        config = pressure_config(base, min_free_space=FreeAmount(50, is_percent=True))
        watermarks = watermarks_of(config)
        clock = FakeMonotonic()
        refill = _Refill(base, registry)
        reclaimer = Reclaimer(
            registry, base_dir=str(base), sweep=lambda _: NO_OPEN_FILES, clock=time.time,
            listener=refill, act_lock=threading.Lock(), monotonic=clock,
        )  # fmt: skip
        deleter = deleter_for(config)

        report = reclaimer.check(config, watermarks, deleter)
        assert report is not None and len(report.deleted) == 3 and refill.written == 3
        assert read_usage(str(base)).free_bytes < 8 * MiB  # the writer filled it again
        assert reclaimer.wait_seconds(watermarks) == 0  # not the timer: evict again now
        report = reclaimer.check(config, watermarks, deleter)
        assert report is not None and len(report.deleted) == 3

        refill.on_deleted = lambda decision, result: None  # type: ignore[method-assign]
        report = reclaimer.check(config, watermarks, deleter)
        assert report is not None and len(report.deleted) == 3
        assert read_usage(str(base)).free_bytes >= 8 * MiB
        assert reclaimer.wait_seconds(watermarks) == 0  # one more look, then the timer
        assert reclaimer.check(config, watermarks, deleter) is None
        assert reclaimer.wait_seconds(watermarks) > 0


def test_a_filesystem_that_cannot_be_read_is_retried(tmp_path: Path) -> None:
    base = tmp_path / "gone"
    config = pressure_config(tmp_path, min_free_space=FreeAmount(MiB))
    clock = FakeMonotonic()
    reclaimer = Reclaimer(
        Registry(), base_dir=str(base), sweep=lambda _: NO_OPEN_FILES, clock=time.time,
        listener=None, act_lock=threading.Lock(), monotonic=clock,
    )
    assert reclaimer.check(config, watermarks_of(config), deleter_for(config)) is None
    error = f"cannot read the free space of {base}: No such file or directory"
    assert reclaimer.state.error == error
    assert reclaimer.state.retry_seconds == 0.2
    base.mkdir()
    clock.until_due(reclaimer)
    assert reclaimer.check(config, watermarks_of(config), deleter_for(config)) is None
    assert reclaimer.state.error is None and reclaimer.state.usage is not None


def test_status_shows_free_space_against_the_watermarks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tmpfs(tmp_path / "fs", size="16m", nr_inodes=500) as fs:
        base = fs / "tmp"
        base.mkdir()
        for i in range(10):
            (base / f"f{i}").write_bytes(b"x" * MiB)
            os.utime(base / f"f{i}", (1000.0 + i, 1000.0 + i))
        config = tmp_path / "tempwatch.toml"
        config.write_text(
            f'[watch]\nbase_dir = "{base}"\n'
            '[limits]\nmin_free_space = "50%"\nmin_free_inodes = "10%"\n'
        )
        capsys.readouterr()
        assert main(["status", "-c", str(config)]) == 0
        out = capsys.readouterr().out
        assert main(["status", "-c", str(config), "--json"]) == 0
        figures = json.loads(capsys.readouterr().out)["pressure"]
        assert main(["explain", "-c", str(config), str(base / "f0"), str(base / "f9")]) == 0
        explained = capsys.readouterr().out
        assert sorted(p.name for p in base.iterdir()) == [f"f{i}" for i in range(10)]
    assert "free space: 6 MiB of 16 MiB (37.5%), watermark 8 MiB" in out
    assert "free inodes: " in out and ", watermark 50" in out
    assert "an eviction for free space now would remove 3 files (3 MiB)" in out
    assert (figures["low_space"], figures["would_remove"]) == (True, 3)
    assert (
        f"{base / 'f0'}: would delete: low-space: among the oldest files while the "
        "filesystem's free space is below its watermark"
    ) in explained
    assert f"{base / 'f9'}: kept: " in explained


def is_registered(service: Service, path: Path) -> Callable[[], bool]:
    return lambda: str(path) in service.registry


def test_two_directories_on_one_filesystem_evict_by_age_across_them(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", size="32m") as fs:
        a, b, other = fs / "a", fs / "b", fs / "other"
        for directory in (a, b, other):
            directory.mkdir()
        config_file = tmp_path / "tempwatch.toml"
        # Aged by mtime alone: each directory has its own watcher thread, so ages counted
        # from registration (or a close seen late) could interleave the two directories.
        config_file.write_text(
            '[cleanup]\ninterval = "1h"\nage_by = ["modified"]\n'
            '[limits]\nmax_files = 0\nmax_file_size = 0\nmin_free_space = "50%"\n'
            f'[[directory]]\npath = "{a}"\n[[directory]]\npath = "{b}"\n'
        )
        with Host(load_config(config_file, env={})) as host:
            services = host.services
            created = []
            oldest = time.time() - 60  # well within max_age: only the pressure evicts
            for i in range(8):  # a0, b0, a1, b1, ...: oldest first, alternating
                for directory in (a, b):
                    # Written beside, aged, and moved in: registered with its final mtime.
                    name = f"{directory.name}{i}"
                    staged, path = other / name, directory / name
                    staged.write_bytes(b"x" * MiB)
                    os.utime(staged, (oldest + len(created), oldest + len(created)))
                    staged.rename(path)
                    created.append(path)
                    wait_for(is_registered(services[str(directory)], path),
                             message=f"{path} registered")
            # 16 MiB in a and b, 4 MiB beside them: 12 MiB free, below 16 MiB.
            (other / "filler").write_bytes(b"o" * (4 * MiB))
            wait_for(lambda: read_usage(str(fs)).free_bytes >= 16 * MiB,
                     message="free space back above 50%")
            gone = [path for path in created if not path.exists()]
        assert gone == created[: len(gone)], f"not the oldest across both directories: {gone}"
        assert {path.parent for path in gone} == {a, b}
        assert len(gone) < len(created)
