"""Metrics: values move with the events, scraped over real HTTP from a server on port 0."""

from __future__ import annotations

import array
import fcntl
import math
import os
import platform
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import tempwatch
from tempwatch.cleaner import PassReport
from tempwatch.deleter import Deleter, DeleteResult, Outcome
from tempwatch.endpoint import MetricsServer
from tempwatch.errors import TempwatchError
from tempwatch.health import LEASE_AND_SWEEP
from tempwatch.metrics import Metrics, error_label
from tempwatch.policy import Decision, Limits, Reason
from tempwatch.pressure import FsUsage, Targets
from tempwatch.reclaim import PressureState
from tempwatch.registry import Registry
from tempwatch.rounds import run_pass

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"{name}{labels} not in the scrape"
    return samples[key]


def decision(reason: Reason = Reason.EXPIRED, age_seconds: float = 5.0) -> Decision:
    return Decision("/tmp/x/f", reason, age_seconds, 10, 1)


def deleted(size_bytes: int = 10) -> DeleteResult:
    return DeleteResult("/tmp/x/f", Outcome.DELETED, size_bytes)


def failed(error: str | None) -> DeleteResult:
    return DeleteResult("/tmp/x/f", Outcome.FAILED, error=error)


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics()
    with MetricsServer(metrics, port=0) as server:
        yield metrics, server


def test_counters_move_with_the_listener_events(served: tuple[Metrics, MetricsServer]) -> None:
    metrics, server = served
    before = scrape(server.url)
    assert value(before, "temp_files_registered_total") == 0
    metrics.on_registered()
    metrics.on_registered(4)
    metrics.on_deleted(decision(Reason.EXPIRED), deleted())
    metrics.on_deleted(decision(Reason.EXPIRED), deleted())
    metrics.on_deleted(decision(Reason.OVER_COUNT), deleted())
    metrics.on_deleted(decision(Reason.OVER_QUOTA), deleted())
    metrics.on_skipped_open(decision())
    metrics.on_failed(decision(), failed("[Errno 1] Operation not permitted"))
    metrics.on_failed(decision(), failed("[Errno 13] Permission denied"))
    metrics.on_failed(decision(), failed("path contains a NUL byte"))
    metrics.on_overflow()
    metrics.on_rescan()
    metrics.on_rescan()
    metrics.on_observer_restart()
    after = scrape(server.url)
    assert value(after, "temp_files_registered_total") == 5
    assert value(after, "temp_files_cleaned_total", reason="expired") == 2
    assert value(after, "temp_files_cleaned_total", reason="over_count") == 1
    assert value(after, "temp_files_cleaned_total", reason="over_quota") == 1
    assert value(after, "temp_files_cleaned_total", reason="oversize") == 0
    assert value(after, "temp_files_cleaned_total", reason="forced") == 0
    assert value(after, "temp_files_skipped_open_total") == 1
    assert value(after, "temp_files_cleanup_errors_total", error="EPERM") == 1
    assert value(after, "temp_files_cleanup_errors_total", error="EACCES") == 1
    assert value(after, "temp_files_cleanup_errors_total", error="other") == 1
    assert value(after, "tempwatch_inotify_overflows_total") == 1
    assert value(after, "tempwatch_rescans_total") == 2
    assert value(after, "tempwatch_observer_restarts_total") == 1


def test_every_reason_and_common_errors_are_exported_at_zero(
    served: tuple[Metrics, MetricsServer],
) -> None:
    # A rate() over a series that appears only at the first deletion misses that deletion.
    samples = scrape(served[1].url)
    for reason in ("expired", "oversize", "over_count", "over_quota", "forced"):
        assert value(samples, "temp_files_cleaned_total", reason=reason) == 0
    for error in ("EPERM", "EACCES", "EBUSY", "EROFS", "EIO", "other"):
        assert value(samples, "temp_files_cleanup_errors_total", error=error) == 0


def test_age_is_observed_at_deletion_and_duration_per_pass(
    served: tuple[Metrics, MetricsServer],
) -> None:
    metrics, server = served
    metrics.on_deleted(decision(age_seconds=30.0), deleted())
    metrics.on_deleted(decision(age_seconds=4000.0), deleted())
    metrics.on_skipped_open(decision(age_seconds=9.0))  # kept: not an age at deletion
    metrics.on_pass(PassReport(duration_seconds=0.02))
    samples = scrape(server.url)
    assert value(samples, "temp_file_age_seconds_count") == 2
    assert value(samples, "temp_file_age_seconds_sum") == 4030.0
    assert value(samples, "temp_file_age_seconds_bucket", le="10.0") == 0
    assert value(samples, "temp_file_age_seconds_bucket", le="60.0") == 1
    assert value(samples, "temp_file_age_seconds_bucket", le="7200.0") == 2
    assert value(samples, "temp_file_cleanup_duration_seconds_count") == 1
    assert value(samples, "temp_file_cleanup_duration_seconds_bucket", le="0.01") == 0
    assert value(samples, "temp_file_cleanup_duration_seconds_bucket", le="0.05") == 1


@dataclass
class Figures:
    """A stand-in for Service.stats that the test changes between scrapes."""

    registered_files: int = 0
    registered_bytes: int = 0
    registered_total: int = 0
    overflows: int = 0
    rescans: int = 0
    observer_restarts: int = 0
    observer_kind: str | None = None
    pinned_bytes: int = 0
    sweep_denied_processes: int = 0
    in_use_check: str = LEASE_AND_SWEEP
    deleted_open_files: int = 0
    deleted_open_bytes: int = 0
    pressure: PressureState = PressureState()


def test_service_figures_are_read_when_scraped() -> None:
    figures = Figures(registered_files=3, registered_bytes=300, observer_kind="inotify")
    metrics = Metrics(source=lambda: figures)
    with MetricsServer(metrics, port=0) as server:
        first = scrape(server.url)
        figures = Figures(
            registered_files=7, registered_bytes=9000, registered_total=12, overflows=2,
            rescans=3, observer_restarts=1, observer_kind="polling", pinned_bytes=512,
            sweep_denied_processes=4, in_use_check="the /proc sweep alone",
            deleted_open_files=2, deleted_open_bytes=4096,
        )
        second = scrape(server.url)
    assert value(first, "temp_files_active") == 3
    assert value(first, "temp_files_bytes") == 300
    assert value(first, "tempwatch_pinned_bytes") == 0
    assert value(first, "temp_files_registered_total") == 0
    assert value(second, "temp_files_active") == 7
    assert value(second, "temp_files_bytes") == 9000
    assert value(second, "tempwatch_pinned_bytes") == 512
    assert value(first, "tempwatch_sweep_denied_processes") == 0
    assert value(second, "tempwatch_sweep_denied_processes") == 4
    assert value(first, "tempwatch_lease_in_force") == 1
    assert value(second, "tempwatch_lease_in_force") == 0
    assert value(second, "temp_files_registered_total") == 12
    assert value(second, "tempwatch_inotify_overflows_total") == 2
    assert value(second, "tempwatch_rescans_total") == 3
    assert value(second, "tempwatch_observer_restarts_total") == 1
    assert value(second, "tempwatch_deleted_open_files") == 2
    assert value(second, "tempwatch_deleted_open_bytes") == 4096
    build = {"version": tempwatch.__version__, "python": platform.python_version()}
    assert value(first, "tempwatch_build_info", **build, observer="inotify") == 1
    assert value(second, "tempwatch_build_info", **build, observer="polling") == 1


def test_pushed_events_add_to_the_service_figures() -> None:
    metrics = Metrics(source=lambda: Figures(registered_total=10, rescans=1))
    metrics.on_registered(2)
    metrics.on_rescan()
    with MetricsServer(metrics, port=0) as server:
        samples = scrape(server.url)
    assert value(samples, "temp_files_registered_total") == 12
    assert value(samples, "tempwatch_rescans_total") == 2


def test_pinned_bytes_default_to_the_last_pass_report(
    served: tuple[Metrics, MetricsServer],
) -> None:
    metrics, server = served
    metrics.on_pass(PassReport(pinned_files=2, pinned_bytes=4096))
    assert value(scrape(server.url), "tempwatch_pinned_bytes") == 4096
    metrics.on_pass(PassReport())
    assert value(scrape(server.url), "tempwatch_pinned_bytes") == 0


def test_a_failing_source_does_not_break_the_scrape() -> None:
    def broken() -> Figures:
        raise RuntimeError("service gone")

    metrics = Metrics(source=broken)
    metrics.on_deleted(decision(), deleted())
    with MetricsServer(metrics, port=0) as server:
        samples = scrape(server.url)
    assert ("temp_files_active", frozenset()) not in samples
    assert value(samples, "temp_files_cleaned_total", reason="expired") == 1


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.on_registered(3)
    with MetricsServer(first, port=0) as a, MetricsServer(second, port=0) as b:
        assert a.port != b.port
        assert value(scrape(a.url), "temp_files_registered_total") == 3
        assert value(scrape(b.url), "temp_files_registered_total") == 0
    assert REGISTRY.get_sample_value("temp_files_registered_total") is None


@pytest.mark.parametrize(
    ("error", "label"),
    [
        ("[Errno 1] Operation not permitted", "EPERM"),
        ("[Errno 13] Permission denied", "EACCES"),
        ("[Errno 16] Device or resource busy", "EBUSY"),
        ("[Errno 30] Read-only file system", "EROFS"),
        ("[Errno 99] Cannot assign requested address", "other"),  # valid errno, not in the set
        ("[Errno 99999] no such errno", "other"),
        ("path contains a NUL byte", "other"),
        (None, "other"),
    ],
)
def test_error_labels_are_errno_names_from_a_closed_set(error: str | None, label: str) -> None:
    assert error_label(error) == label


def _set_immutable(path: Path, on: bool) -> None:
    fs_ioc_getflags, fs_ioc_setflags, fs_immutable_fl = 0x80086601, 0x40086602, 0x10
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, fs_ioc_getflags, flags, True)
        flags[0] = flags[0] | fs_immutable_fl if on else flags[0] & ~fs_immutable_fl
        fcntl.ioctl(fd, fs_ioc_setflags, flags, True)
    finally:
        os.close(fd)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory immutable")
def test_a_real_pass_feeds_the_metrics(tmp_path: Path) -> None:
    old, locked_dir = tmp_path / "old", tmp_path / "locked"
    locked_dir.mkdir()
    old.write_bytes(b"x" * 100)
    stuck = locked_dir / "stuck"
    stuck.write_bytes(b"y" * 50)
    registry = Registry()
    now = time.time()
    registry.add(str(old), now - 120, 100, old.stat().st_ino)
    registry.add(str(stuck), now - 90, 50, stuck.stat().st_ino)
    metrics = Metrics(
        source=lambda: Figures(
            registered_files=len(registry), registered_bytes=registry.total_bytes
        )
    )
    _set_immutable(locked_dir, True)  # even root cannot unlink in it: EPERM
    try:
        report = run_pass(
            registry,
            Deleter(tmp_path),
            Limits(max_age_seconds=60),
            open_paths=frozenset(),
            clock=lambda: now,
            listener=metrics,
        )
    finally:
        _set_immutable(locked_dir, False)
    assert not old.exists() and stuck.exists()
    with MetricsServer(metrics, port=0) as server:
        samples = scrape(server.url)
    assert value(samples, "temp_files_cleaned_total", reason="expired") == 1
    assert value(samples, "temp_files_cleanup_errors_total", error="EPERM") == 1
    assert value(samples, "temp_file_age_seconds_sum") == pytest.approx(120.0)
    assert value(samples, "temp_file_cleanup_duration_seconds_sum") == pytest.approx(
        report.duration_seconds
    )
    assert value(samples, "temp_files_active") == 1  # the stuck file stays registered
    assert value(samples, "temp_files_bytes") == 50


def test_openmetrics_is_served_when_asked(served: tuple[Metrics, MetricsServer]) -> None:
    request = urllib.request.Request(
        served[1].url + "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_unknown_paths_and_healthz_without_a_source_are_404(
    served: tuple[Metrics, MetricsServer],
) -> None:
    for path in ("/", "/nope", "/healthz"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(served[1].url + path, timeout=5)
        assert caught.value.code == 404
        caught.value.close()


def test_port_zero_binds_a_free_port_and_stop_joins_the_server_thread() -> None:
    before = set(threading.enumerate())
    server = MetricsServer(Metrics(), address="127.0.0.1", port=0)
    server.start()
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    scrape(server.url)
    assert set(threading.enumerate()) - before, "the server runs on a thread of its own"
    server.stop()
    assert set(threading.enumerate()) - before == set()  # joined, not left to die
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/metrics", timeout=2)
    server.stop()  # a second stop is harmless


def test_ipv6_address_is_served() -> None:
    with MetricsServer(Metrics(), address="::1", port=0) as server:
        assert server.url == f"http://[::1]:{server.port}"
        assert value(scrape(server.url), "temp_files_registered_total") == 0


def test_a_busy_port_is_a_tempwatch_error_naming_it() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = MetricsServer(Metrics(), port=port)
        with pytest.raises(TempwatchError, match=f"127.0.0.1:{port}"):
            server.start()
        server.stop()


def test_free_space_gauges_are_nan_until_read_then_the_last_figures() -> None:
    figures = Figures()
    metrics = Metrics(source=lambda: figures)
    with MetricsServer(metrics, port=0) as server:
        unknown = scrape(server.url)
        usage = FsUsage(free_bytes=300, total_bytes=1000, free_inodes=7, total_inodes=50)
        targets = Targets(min_free_bytes=100, stop_free_bytes=110, min_free_inodes=5,
                          stop_free_inodes=6)
        figures = Figures(pressure=PressureState(usage, targets, pinned_bytes=40,
                                                 outside_bytes=500))
        known = scrape(server.url)
    assert math.isnan(value(unknown, "tempwatch_fs_free_bytes"))
    assert math.isnan(value(unknown, "tempwatch_fs_min_free_bytes"))
    assert value(known, "tempwatch_fs_free_bytes") == 300
    assert value(known, "tempwatch_fs_free_inodes") == 7
    assert value(known, "tempwatch_fs_size_bytes") == 1000
    assert value(known, "tempwatch_fs_min_free_bytes") == 100
    assert value(known, "tempwatch_fs_min_free_inodes") == 5
    assert value(known, "tempwatch_fs_pressure_pinned_bytes") == 40
    assert value(known, "tempwatch_fs_outside_bytes") == 500
    assert value(known, "temp_files_cleaned_total", reason="low_space") == 0
