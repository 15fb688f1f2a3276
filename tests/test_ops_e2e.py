"""Operations end to end: a running service scraped over HTTP, /healthz, and sd_notify.

The first tests run `Service` in this process with the metrics and health endpoint wired
to it the way `tempwatch run` wires them; the last ones run `python -m tempwatch run` as
a child process and talk to it only from outside: HTTP and the notify socket.
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import hold_open, is_healthy_but_for_hidden_processes, wait_for

from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.endpoint import MetricsServer
from tempwatch.health import Health, assess_service
from tempwatch.metrics import Metrics
from tempwatch.openfiles import OpenFiles, sweep_open_files
from tempwatch.service import Service

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers --------------------------------------------------------------------------------


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(url: str, name: str, **labels: str) -> float:
    samples = scrape(url)
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} missing from the scrape"
    return samples[key]


def healthz(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def make_config(base: Path, **changes: object) -> Config:
    cleanup = {k: v for k, v in changes.items() if k in CleanupConfig.__dataclass_fields__}
    limits = {k: v for k, v in changes.items() if k in LimitsConfig.__dataclass_fields__}
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=HOUR),
        cleanup=dataclasses.replace(
            CleanupConfig(max_age_seconds=HOUR, interval_seconds=HOUR), **cleanup
        ),
        limits=dataclasses.replace(LimitsConfig(max_file_size_bytes=0), **limits),
    )


@contextmanager
def running(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    monitor_seconds: float = 0.5,
    inotify_read: Callable[[int, int], bytes] = os.read,
) -> Iterator[tuple[Service, str]]:
    """The service with metrics and /healthz on a free port, wired as `tempwatch run` does."""
    started: list[Service] = []
    metrics = Metrics(source=lambda: started[0].stats)
    base_dir = str(config.watch.base_dir)
    with Service(
        config, listener=metrics, clock=clock, monitor_interval_seconds=monitor_seconds,
        inotify_read=inotify_read,
    ) as service:
        started.append(service)

        def health() -> Health:
            return assess_service(
                service.stats, service.config, now=time.time(),
                base_dir_exists=os.path.isdir(base_dir),
            )

        with MetricsServer(metrics, port=0, health=health) as server:
            yield service, server.url


def write(path: Path, size_bytes: int) -> None:
    path.write_bytes(b"x" * size_bytes)


# -- in process -----------------------------------------------------------------------------


def test_a_scrape_follows_creations_evictions_oversize_and_expiry(base: Path) -> None:
    config = make_config(
        base, max_age_seconds=3.0, interval_seconds=0.2, max_files=5, max_file_size_bytes=1024
    )
    with running(config) as (service, url):
        assert metric(url, "temp_files_active") == 0
        assert metric(url, "tempwatch_rescans_total") == 1  # the initial scan
        # Six small files: the sixth takes the count over 5, and the two oldest go
        # (down to 90 % of the limit).
        for i in range(6):
            write(base / f"f{i}", 10)
            wait_for(lambda i=i: str(base / f"f{i}") in service.registry or i >= 5,
                     message=f"f{i} registered")
        wait_for(lambda: metric(url, "temp_files_cleaned_total", reason="over_count") == 2,
                 message="two evictions over the count")
        assert not (base / "f0").exists() and not (base / "f1").exists()
        # One file over max_file_size goes once closed.
        write(base / "big", 2048)
        wait_for(lambda: metric(url, "temp_files_cleaned_total", reason="oversize") == 1,
                 message="the oversize file deleted")
        samples = scrape(url)
        assert samples[("temp_files_registered_total", frozenset())] == 7
        assert samples[("temp_files_active", frozenset())] == 4
        assert samples[("temp_files_bytes", frozenset())] == 40
        # Then the four left expire.
        wait_for(lambda: metric(url, "temp_files_cleaned_total", reason="expired") == 4,
                 message="four expiries")
        samples = scrape(url)
        assert samples[("temp_files_active", frozenset())] == 0
        assert samples[("temp_files_bytes", frozenset())] == 0
        assert samples[("temp_file_age_seconds_count", frozenset())] == 7
        assert samples[("temp_file_age_seconds_sum", frozenset())] > 4 * 3.0
        assert samples[("temp_file_cleanup_duration_seconds_count", frozenset())] >= 1
        assert samples[("temp_files_skipped_open_total", frozenset())] == 0
        assert samples[("tempwatch_observer_restarts_total", frozenset())] == 0
        info = [k for k in samples if k[0] == "tempwatch_build_info"]
        assert ("observer", "inotify") in info[0][1]
        status, body = healthz(url)
        assert (status, body["active_files"]) == (200, 0)
        assert is_healthy_but_for_hidden_processes(body)
        assert body["last_pass_at"] is not None


def test_files_held_open_are_skipped_pinned_and_degrade_health(
    base: Path, tmp_path: Path
) -> None:
    config = make_config(base, interval_seconds=0.2, max_files=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("a", "b", "c"):
        write(outside / name, 100)
    with running(config) as (service, url):
        with hold_open(outside / "a"), hold_open(outside / "b"), hold_open(outside / "c"):
            # Moved in while already open, so that no sweep can find one of them closed.
            for name in ("a", "b", "c"):
                os.rename(outside / name, base / name)
            wait_for(lambda: metric(url, "tempwatch_pinned_bytes") == 300,
                     message="300 bytes pinned over the count")
            assert metric(url, "temp_files_skipped_open_total") >= 3
            assert metric(url, "temp_files_cleaned_total", reason="over_count") == 0
            status, body = healthz(url)
            assert (status, body["status"], body["limit_pinned"]) == (200, "degraded", True)
        # Closed now: the next pass evicts and the pin is gone. The holders exit one by
        # one, so a pass may come between them and find only "c" closed: then "c" alone
        # goes, and the count (2) no longer exceeds the limit.
        wait_for(lambda: metric(url, "tempwatch_pinned_bytes") == 0, message="unpinned")
        evicted = metric(url, "temp_files_cleaned_total", reason="over_count")
        assert evicted in (1, 2)
        assert metric(url, "temp_files_active") == 3 - evicted
        assert is_healthy_but_for_hidden_processes(healthz(url)[1])


_WRITER = r"""
import os, sys
size = int(sys.argv[1])
fds = [os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600) for path in sys.argv[2:]]
for fd in fds:  # written after the create, never closed: no close event tells the size
    os.write(fd, b"x" * size)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
"""


@contextmanager
def writing_and_holding(paths: list[Path], size_bytes: int) -> Iterator[None]:
    """A child process that creates `paths`, writes `size_bytes` to each and keeps them open."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(size_bytes), *map(str, paths)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_files_held_open_past_max_age_stay_pinned_with_their_bytes_on_disk(base: Path) -> None:
    max_age = 1.0
    config = make_config(base, max_age_seconds=max_age, interval_seconds=0.2, max_files=2)
    paths = [base / f"held{i}" for i in range(3)]
    with running(config) as (service, url):
        with writing_and_holding(paths, 4096):
            written_at = time.time()
            on_disk = sum(path.stat().st_size for path in paths)
            assert on_disk == 3 * 4096
            # Held longer than max_age: expired, still open, still over the count.
            def expired_and_pinned() -> bool:
                stats = service.stats
                return (stats.last_pass_at or 0) > written_at + max_age + 0.5 and (
                    stats.pinned_files, stats.pinned_bytes) == (3, on_disk)

            wait_for(expired_and_pinned, message="3 files and their bytes on disk pinned by "
                     "a pass after they expired")
            assert metric(url, "tempwatch_pinned_bytes") == on_disk  # what is on disk
            assert metric(url, "temp_files_bytes") == on_disk  # the registry caught up
            assert metric(url, "temp_files_cleaned_total", reason="expired") == 0
            status, body = healthz(url)
            assert (status, body["status"], body["limit_pinned"]) == (200, "degraded", True)
            assert all(path.exists() for path in paths)
        # Closed: they expire at the next pass, and nothing is pinned any more.
        wait_for(lambda: metric(url, "temp_files_active") == 0, message="the held files expired")
        wait_for(lambda: metric(url, "tempwatch_pinned_bytes") == 0, message="unpinned")
        assert not healthz(url)[1]["limit_pinned"]


def _leases_work(directory: Path) -> bool:
    probe = directory / ".lease-probe"
    fd = os.open(probe, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        probe.unlink()


def test_a_file_opened_after_the_enforcers_sweep_is_not_evicted(base: Path) -> None:
    # The sweep looks, then a file is created and opened before the eviction plans: the
    # sweep's answer says nothing about it. The lease taken before each unlink must keep it.
    # (With lease_probe = false it is evicted: the sweep alone cannot close that window.)
    if not _leases_work(base):
        pytest.skip("file leases are not supported on this filesystem")
    late = base / "opened-after-the-sweep"
    held: list[int] = []
    services: list[Service] = []

    def sweep_then_open(base_dir: str) -> OpenFiles:
        found = sweep_open_files(base_dir)
        if len(held) == 3 and len(services[0].registry) == 3:
            held.append(os.open(late, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            wait_for(lambda: str(late) in services[0].registry, message="the late file registered")
        return found

    config = make_config(base, interval_seconds=HOUR, max_files=2)
    try:
        with Service(config, sweep=sweep_then_open) as service:
            services.append(service)
            # Older files held open: the eviction passes over them and reaches the late one.
            for name in ("a", "b", "c"):
                held.append(os.open(base / name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC))
            wait_for(lambda: len(held) == 4 and service.stats.pinned_files > 0,
                     message="the count pinned")
            assert late.exists(), "a file opened after the sweep was evicted"
            assert str(late) in service.registry
    finally:
        for fd in held:
            os.close(fd)


# The test kills watchdog's dispatcher thread on purpose; pytest reports the thread's death.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_observer_is_unhealthy_until_restarted(base: Path) -> None:
    calls = itertools.count()

    def fatal_once() -> float:
        if next(calls) == 1:  # the first reading is the start time; the second kills
            raise SystemExit
        return time.time()

    statuses: list[int] = []
    with running(make_config(base), clock=fatal_once, monitor_seconds=1.0) as (service, url):
        assert healthz(url)[0] == 200
        (base / "kills-the-observer").write_bytes(b"")

        def restarted() -> bool:
            status, body = healthz(url)
            statuses.append(status)
            if status == 503:
                assert body["observer_alive"] is False and body["status"] == "unhealthy"
            return metric(url, "tempwatch_observer_restarts_total") == 1

        wait_for(restarted, message="the observer restarted")
        assert 503 in statuses, "the dead observer was never reported"
        wait_for(lambda: healthz(url)[0] == 200, message="healthy again")


def test_a_removed_base_dir_is_unhealthy_until_it_is_back(base: Path) -> None:
    with running(make_config(base)) as (service, url):
        (base / "file").write_bytes(b"")
        shutil.rmtree(base)
        status, body = healthz(url)
        assert (status, body["status"], body["base_dir_exists"]) == (503, "unhealthy", False)
        reasons = body["reasons"]
        assert isinstance(reasons, list) and any(str(base) in reason for reason in reasons)
        base.mkdir()
        # The observer died with the directory; the monitor brings it back.
        wait_for(lambda: healthz(url)[0] == 200, timeout=15, message="healthy once recreated")


# -- `tempwatch run` as a child process -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, base: Path, port: int, **cleanup: str) -> None:
    lines = ["[watch]", f'base_dir = "{base}"', "[cleanup]"]
    lines += [f'{key} = "{value}"' for key, value in cleanup.items()]
    lines += ["[limits]", "max_files = 5", 'max_file_size = "1KiB"']
    lines += ["[metrics]", "enabled = true", 'address = "127.0.0.1"', f"port = {port}"]
    lines += ["[log]", 'level = "DEBUG"']
    path.write_text("\n".join(lines) + "\n")


class Child:
    """`python -m tempwatch run -c CONFIG` with its stderr kept for failure messages."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tempwatch", "run", "-c", str(config)],
            cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="child-stderr")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        self.lines.extend(line.rstrip("\n") for line in self.proc.stderr)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def log(self) -> str:
        return "\n".join(self.lines[-40:])


def wait_up(child: Child, url: str) -> None:
    def up() -> bool:
        assert child.proc.poll() is None, f"tempwatch exited:\n{child.log()}"
        try:
            return healthz(url)[0] == 200
        except OSError:
            return False

    wait_for(up, timeout=60, message=f"{url}/healthz answering")


def test_run_serves_metrics_that_follow_what_happens(base: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    write_config(config, base, port, max_age="2s", interval="200ms")
    url = f"http://127.0.0.1:{port}"
    child = Child(config)
    try:
        wait_up(child, url)
        for i in range(6):
            write(base / f"f{i}", 10)
        write(base / "big", 2048)
        wait_for(lambda: metric(url, "temp_files_cleaned_total", reason="oversize") == 1,
                 message="oversize deletion")
        wait_for(lambda: metric(url, "temp_files_cleaned_total", reason="over_count") >= 1,
                 message="evictions over the count")
        wait_for(lambda: metric(url, "temp_files_active") == 0, message="everything expired")
        samples = scrape(url)
        cleaned = sum(v for (name, _), v in samples.items() if name == "temp_files_cleaned_total")
        assert samples[("temp_files_registered_total", frozenset())] == 7
        assert cleaned == 7
        assert samples[("temp_file_age_seconds_count", frozenset())] == 7
        for name in (
            "temp_file_cleanup_duration_seconds_count", "temp_files_bytes",
            "temp_files_skipped_open_total", "tempwatch_inotify_overflows_total",
            "tempwatch_rescans_total", "tempwatch_observer_restarts_total",
            "tempwatch_pinned_bytes",
        ):
            assert (name, frozenset()) in samples, name
        assert any(name == "tempwatch_build_info" for name, _ in samples)
        assert any(name == "temp_files_cleanup_errors_total" for name, _ in samples)
    finally:
        assert child.stop() == 0, child.log()
    with pytest.raises(OSError):
        healthz(url)  # the endpoint went away with the service


def test_run_speaks_sd_notify(base: Path, tmp_path: Path) -> None:
    for i in range(3):
        write(base / f"old{i}", 1)  # present before start: READY=1 comes after their scan
    port = free_port()
    config = tmp_path / "config.toml"
    write_config(config, base, port, max_age="1h", interval="1h")
    url = f"http://127.0.0.1:{port}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(20)
        # 300 ms: pings every 150 ms, far more often than the 1 h cleanup interval.
        child = Child(config, env={"NOTIFY_SOCKET": str(tmp_path / "notify"),
                                   "WATCHDOG_USEC": "300000"})
        try:
            message: list[str] = []
            while "READY=1" not in message:
                message = sock.recv(4096).decode().split("\n")
            status, body = healthz(url)
            assert (status, body["active_files"]) == (200, 3)  # the initial scan is done
            pings = 0
            while pings < 3:  # the socket's own timeout fails the test if they stop
                message = sock.recv(4096).decode().split("\n")
                pings += "WATCHDOG=1" in message
        finally:
            code = child.stop()
        assert code == 0, child.log()
        seen: list[str] = []
        while "STOPPING=1" not in seen:
            seen = sock.recv(4096).decode().split("\n")  # pings may come before it
