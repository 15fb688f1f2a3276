"""Faults a production service meets: a filesystem gone read-only, deletions refused with
each errno the metrics name, a killed observer thread, inotify's instance and watch limits.

Each is recovered, and visible in the log and in /healthz or /metrics. Root-only cases
(mounts, chattr, user namespaces) skip with a reason elsewhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import wait_for
from test_base_identity import mounted, needs_mounts
from test_deep_paths import NAME, deep_chain, write_at
from test_ops_e2e import REPO, free_port, healthz, make_config, metric, running, scrape

from tempwatch.longpath import MAX_PATH_BYTES

HOUR = 3600.0


class ShiftedClock:
    """Real time plus an offset the test moves: files age without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def fresh_files(directory: Path, count: int) -> list[Path]:
    paths = [directory / f"f{i:03}" for i in range(count)]
    for path in paths:
        path.write_bytes(b"x")
    return paths


def errors(url: str, name: str) -> float:
    return metric(url, "temp_files_cleanup_errors_total", error=name)


def failing_passes(log_lines: list[str], count: int) -> list[str]:
    return [line for line in log_lines
            if line.startswith("INFO pass ") and f", {count} errors," in line]


# -- deletions refused ------------------------------------------------------------------


@needs_mounts
@pytest.mark.root
def test_a_read_only_remount_fails_once_per_pass_and_cleaning_resumes(
    base: Path, log_lines: list[str]
) -> None:
    clock = ShiftedClock()
    with mounted("-t", "tmpfs", "tempwatch-test", str(base)):
        paths = fresh_files(base, 30)
        config = make_config(base, interval_seconds=0.05)
        with running(config, clock=clock) as (service, url):
            wait_for(lambda: len(service.registry) == 30, message="registered")
            subprocess.run(["mount", "-o", "remount,ro", str(base)], check=True)
            try:
                clock.offset = 2 * HOUR  # every file expired
                wait_for(lambda: len(failing_passes(log_lines, 30)) >= 3,
                         message="three passes failing on the read-only filesystem")
                assert errors(url, "EROFS") >= 90
            finally:
                subprocess.run(["mount", "-o", "remount,rw", str(base)], check=True)
            assert len(service.registry) >= 30 - 0, "the files stay registered"
            wait_for(lambda: not any(p.exists() for p in paths), message="cleaning resumed")
            wait_for(lambda: len(service.registry) == 0, message="entries dropped")
    passes = len(failing_passes(log_lines, 30))
    warned = [line for line in log_lines if line.startswith("WARNING failed ")]
    # One line per failing pass, with the count, not one per file per pass.
    assert len(warned) == passes, warned[:3]
    assert all("could not delete 30 files: [Errno 30] Read-only file system" in line
               for line in warned)


def _chattr() -> str | None:
    return shutil.which("chattr") if os.geteuid() == 0 else None


@pytest.mark.root
@pytest.mark.skipif(_chattr() is None, reason="needs root and chattr (an immutable file)")
def test_an_immutable_file_fails_with_eperm_stays_registered_and_is_retried(
    base: Path, log_lines: list[str]
) -> None:
    clock = ShiftedClock()
    (stuck,) = fresh_files(base, 1)
    result = subprocess.run(["chattr", "+i", str(stuck)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"no immutable files here: {result.stderr.strip()}")
    try:
        with running(make_config(base, interval_seconds=0.05), clock=clock) as (service, url):
            clock.offset = 2 * HOUR
            wait_for(lambda: errors(url, "EPERM") >= 2, message="EPERM counted, retried")
            assert str(stuck) in service.registry
            subprocess.run(["chattr", "-i", str(stuck)], check=True)
            wait_for(lambda: not stuck.exists(), message="deleted once it may be")
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
    assert any("[Errno 1] Operation not permitted" in line for line in log_lines)


@needs_mounts
@pytest.mark.root
def test_a_file_with_a_mount_on_it_fails_with_ebusy_and_is_retried(base: Path) -> None:
    clock = ShiftedClock()
    (busy,) = fresh_files(base, 1)
    with running(make_config(base, interval_seconds=0.05), clock=clock) as (service, url):
        # The file bound over itself: the same file by its name, and unlink says EBUSY.
        with mounted("--bind", str(busy), str(busy)):
            clock.offset = 2 * HOUR
            wait_for(lambda: errors(url, "EBUSY") >= 2, message="EBUSY counted, retried")
            assert str(busy) in service.registry
        wait_for(lambda: not busy.exists(), message="deleted once unmounted")


# -- a service in a user namespace of its own: its own inotify limits ------------------


def _userns() -> str | None:
    if shutil.which("unshare") is None:
        return "needs unshare(1)"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a user namespace: {probe.stderr.strip()}"
    return None


needs_userns = pytest.mark.skipif(
    os.geteuid() != 0 or _userns() is not None,
    reason="needs root and user namespaces" if os.geteuid() != 0 else (_userns() or ""),
)


class NamespacedRun:
    """`tempwatch run` in a new user namespace, with its own inotify limits set first.

    The limits (/proc/sys/user/max_inotify_*) belong to the namespace: nothing else on
    the machine is affected.
    """

    def __init__(self, config: Path, *, instances: int | None = None,
                 watches: int | None = None) -> None:
        settings = []
        if instances is not None:
            settings.append(f"echo {instances} > /proc/sys/user/max_inotify_instances")
        if watches is not None:
            settings.append(f"echo {watches} > /proc/sys/user/max_inotify_watches")
        script = " && ".join([*settings, 'exec "$0" -m tempwatch run -c "$1"'])
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "sh", "-c", script,
             sys.executable, str(config)],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="userns-stderr")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        self.lines.extend(line.rstrip("\n") for line in self.proc.stderr)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


@contextmanager
def namespaced(
    base: Path, tmp_path: Path, *, max_age: str = "1h", interval: str = "1h",
    rescan: str = "1h", **limits: int,
) -> Iterator[tuple[NamespacedRun, str]]:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text("\n".join([
        "[watch]", f'base_dir = "{base}"', f'rescan_interval = "{rescan}"',
        "[cleanup]", f'max_age = "{max_age}"', f'interval = "{interval}"',
        "[metrics]", "enabled = true", 'address = "127.0.0.1"', f"port = {port}",
        "[log]", 'level = "INFO"',
    ]) + "\n")
    url = f"http://127.0.0.1:{port}"
    child = NamespacedRun(config, **limits)

    def up() -> bool:
        assert child.proc.poll() is None, "\n".join(child.lines[-20:])
        try:
            return healthz(url)[0] in (200, 503)
        except OSError:
            return False

    try:
        wait_for(up, timeout=20, message="the namespaced service answering")
        yield child, url
    finally:
        assert child.stop() == 0, "\n".join(child.lines[-20:])


@needs_userns
@pytest.mark.root
def test_a_directory_the_service_may_not_write_fails_with_eacces_and_is_retried(
    base: Path, tmp_path: Path
) -> None:
    # In its own user namespace the service's root has no power over a directory owned by
    # a user the namespace does not map: unlink there is refused with EACCES.
    locked = base / "locked"
    locked.mkdir(mode=0o755)
    (stuck,) = fresh_files(locked, 1)
    os.utime(stuck, (1_000_000, 1_000_000))  # expired at the first pass
    os.chown(locked, 54321, 54321)
    with namespaced(base, tmp_path, max_age="1s", interval="100ms") as (child, url):
        wait_for(lambda: errors(url, "EACCES") >= 2, message="EACCES counted, retried")
        assert metric(url, "temp_files_active") == 1, "it stays registered"
        os.chown(locked, 0, 0)
        wait_for(lambda: not stuck.exists(), message="deleted once it may be")
    assert child.said("[Errno 13] Permission denied")


@needs_userns
@pytest.mark.root
def test_the_inotify_instance_limit_at_start_falls_back_to_polling(
    base: Path, tmp_path: Path
) -> None:
    with namespaced(base, tmp_path, instances=0) as (child, url):
        assert child.said("falling back to polling")
        status, body = healthz(url)
        assert status == 200 and body["status"] == "degraded", body
        assert any("polling" in str(reason) for reason in body["reasons"]), body
        (base / "seen").write_text("")
        wait_for(lambda: metric(url, "temp_files_active") == 1, message="polled in")


@needs_userns
@pytest.mark.root
def test_the_watch_limit_mid_run_is_reported_and_rescanned_promptly(
    base: Path, tmp_path: Path
) -> None:
    # Two watches: base_dir and one subdirectory; the rest cannot be watched.
    with namespaced(base, tmp_path, watches=2) as (child, url):
        (base / "a").mkdir()
        (base / "a" / "f").write_text("")
        wait_for(lambda: metric(url, "temp_files_active") == 1, message="a/f by its event")
        for name in ("b", "c", "d"):  # made outside, files and all, then moved in
            (tmp_path / name).mkdir()
            (tmp_path / name / "f").write_text("")
            (tmp_path / name).rename(base / name)
        # No event reaches files in b, c and d: the prompt rescan registers them (the
        # periodic one is an hour away).
        wait_for(lambda: metric(url, "temp_files_active") == 4, message="rescanned promptly")
        # Below PATH_MAX too: a deep chain moved in cannot be watched, and is rescanned.
        (tmp_path / "deep").mkdir()
        with deep_chain(tmp_path / "deep", 24) as (_, fd):
            write_at(fd, "bottom")
        (tmp_path / "deep").rename(base / "deep")
        wait_for(lambda: metric(url, "temp_files_active") == 5, message="the deep file")
        assert child.said("could not watch new directory")
        status, body = healthz(url)
        assert status == 200 and body["status"] == "degraded", body
        assert any("not watched" in str(reason) for reason in body["reasons"]), body
        wait_for(lambda: scrape(url)[("tempwatch_rescans_total", frozenset())] >= 2,
                 message="the prompt rescan (the periodic one is an hour away)")


@needs_userns
@pytest.mark.root
@pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter(1)")
def test_directories_left_unwatched_are_watched_once_the_limit_is_raised(
    base: Path, tmp_path: Path
) -> None:
    with namespaced(base, tmp_path, watches=2, rescan="1s") as (child, url):
        for name in ("a", "b", "c"):
            (base / name).mkdir()
        wait_for(lambda: healthz(url)[1]["unwatched_dirs"] == 2, message="two unwatched")
        raised = subprocess.run(
            ["nsenter", "--user", "--target", str(child.proc.pid), "sh", "-c",
             "echo 100 > /proc/sys/user/max_inotify_watches"], capture_output=True, text=True,
        )
        assert raised.returncode == 0, raised.stderr
        # The next periodic rescan tries them again, and the re-walk watches them.
        wait_for(lambda: healthz(url)[1]["unwatched_dirs"] == 0, message="all watched again")
        reasons = healthz(url)[1]["reasons"]
        assert isinstance(reasons, list)
        assert not any("not watched" in str(reason) for reason in reasons), reasons


@needs_userns
@pytest.mark.root
def test_a_directory_below_path_max_over_the_watch_limit_is_reported_and_found(
    base: Path, tmp_path: Path
) -> None:
    # Every level of the chain whose path fits in PATH_MAX gets a watch; a tree moved in
    # below it is over the limit: it must be reported unwatched like any other (its path is
    # too long for a plain stat), and its file found all the same.
    fits = sum(1 for level in range(1, 40)
               if len(str(base)) + level * (len(NAME) + 1) < MAX_PATH_BYTES)
    staging = tmp_path / "staging"
    staging.mkdir()
    with deep_chain(staging, 3) as (_, fd):
        write_at(fd, "bottom")
    with namespaced(base, tmp_path, watches=1 + fits) as (child, url):
        with deep_chain(base, fits) as (_, fd):
            os.rename(staging / NAME, NAME, dst_dir_fd=fd)
            wait_for(lambda: healthz(url)[1]["unwatched_dirs"] >= 1, message="reported")
            wait_for(lambda: metric(url, "temp_files_active") == 1, message="the file found")
        assert child.said("could not watch new directory")


# -- the inotify reader thread killed ---------------------------------------------------


class FailingRead:
    """`os.read` on the inotify fd; once armed, its next call raises `errno` instead (the
    kernel refusing the read), which ends the reader thread."""

    def __init__(self, error: int) -> None:
        self.error = error
        self.armed = threading.Event()
        self.failures = 0

    def __call__(self, fd: int, size: int) -> bytes:
        if self.armed.is_set():
            self.armed.clear()
            self.failures += 1
            raise OSError(self.error, os.strerror(self.error))
        return os.read(fd, size)


@pytest.mark.parametrize("error", [errno.EIO, errno.EBADF])
def test_a_failed_inotify_reader_is_restarted_and_what_it_missed_is_found(
    base: Path, log_lines: list[str], error: int
) -> None:
    read = FailingRead(error)
    with running(make_config(base), inotify_read=read) as (service, url):
        first = service.watcher
        read.armed.set()
        (base / "missed").write_bytes(b"x")  # its events are never read: the reader dies
        wait_for(lambda: read.failures == 1, message="the read failed")
        wait_for(lambda: metric(url, "tempwatch_observer_restarts_total") == 1,
                 message="the observer restarted")
        assert service.watcher is first and first is not None and first.is_alive
        wait_for(lambda: str(base / "missed") in service.registry,
                 message="the missed file found by the rescan after the restart")
        (base / "after").write_bytes(b"")
        wait_for(lambda: str(base / "after") in service.registry, message="events flow again")
        status, body = healthz(url)
        assert (status, body["observer_alive"], body["observer_restarts"]) == (200, True, 1), body
        assert not any("observer" in str(reason) for reason in body["reasons"]), body
        said = f"inotify reader failed: OSError: [Errno {error}] {os.strerror(error)}"
        assert str(body["observer_failure"]).startswith(said), body
    assert len([line for line in log_lines if line.startswith("ERROR inotify-reader-failed")]) == 1
    died = [line for line in log_lines if line.startswith("ERROR observer-died")]
    assert len(died) == 1 and said in died[0], died
    assert any(line.startswith("WARNING rescan") for line in log_lines)
