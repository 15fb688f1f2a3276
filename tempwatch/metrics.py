"""Prometheus metrics: what the service did, as counters, histograms and gauges.

This is the only module that imports prometheus_client. `Metrics` hears what the service
does (it is a `CleanupListener`) and keeps its counters and histograms in a private
`CollectorRegistry`, never the global one, so that several services, or several tests,
can live in one process. What the service already counts (files and bytes registered,
pinned bytes, registrations, overflows, rescans, observer restarts) is not pushed per
event: it is read from the service's stats when Prometheus scrapes, so the event path
pays nothing for it. The `on_registered`, `on_overflow`, ... methods add to those figures
for callers that have no stats to offer.

`tempwatch.endpoint` serves them over HTTP with /healthz.
"""

from __future__ import annotations

import errno
import platform
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from tempwatch.cleaner import PassReport
from tempwatch.deleter import DeleteResult
from tempwatch.health import LEASE_AND_SWEEP
from tempwatch.lazylog import logger
from tempwatch.policy import Decision, Reason
from tempwatch.reclaim import PressureState

__all__ = [
    "AGE_BUCKETS_SECONDS",
    "DURATION_BUCKETS_SECONDS",
    "ERROR_LABELS",
    "LabelledMetrics",
    "Metrics",
    "ServiceFigures",
    "error_label",
]

AGE_BUCKETS_SECONDS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 86400, 604800)
"""Buckets of temp_file_age_seconds: from a second to a week, around the usual max_age."""

DURATION_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""Buckets of temp_file_cleanup_duration_seconds."""

ERROR_LABELS = frozenset(
    {
        "EPERM", "EACCES", "EBUSY", "EROFS", "EIO", "ENOTDIR", "EISDIR", "ELOOP",
        "ENAMETOOLONG", "ETXTBSY", "EXDEV", "ENOSPC", "EDQUOT", "EINVAL", "EMFILE",
        "ENFILE", "ENOMEM", "ESTALE", "ENOTEMPTY",
    }
)  # fmt: skip
"""errno names used as the `error` label as they are; any other failure is "other"."""

_ERRNO = re.compile(r"\[Errno (\d+)\]")
# Shown at 0 from the start: increase() cannot see the first error of a series that
# appears with it, and a failed file is retried every pass, so the rest come later.
_COMMON_ERRORS = ("EPERM", "EACCES", "EBUSY", "EROFS", "EIO", "other")


def error_label(error: str | None) -> str:
    """The `error` label for a failed deletion: its errno name (EPERM, ...) or "other".

    The set is closed so that an unusual error cannot create unbounded label values.
    """
    found = _ERRNO.match(error or "")
    name = errno.errorcode.get(int(found.group(1)), "") if found else ""
    return name if name in ERROR_LABELS else "other"


def _version() -> str:
    from tempwatch import __version__  # deferred: the package imports us while loading

    return __version__


class ServiceFigures(Protocol):
    """What the metrics read from the service at scrape time (`Service.stats` has it)."""

    @property
    def registered_files(self) -> int: ...
    @property
    def registered_bytes(self) -> int: ...
    @property
    def registered_total(self) -> int: ...
    @property
    def overflows(self) -> int: ...
    @property
    def rescans(self) -> int: ...
    @property
    def observer_restarts(self) -> int: ...
    @property
    def observer_kind(self) -> str | None: ...
    @property
    def pinned_bytes(self) -> int: ...
    @property
    def sweep_denied_processes(self) -> int: ...
    @property
    def in_use_check(self) -> str: ...
    @property
    def deleted_open_files(self) -> int: ...
    @property
    def deleted_open_bytes(self) -> int: ...
    @property
    def pressure(self) -> PressureState: ...


class Metrics:
    """The service's metrics in a private registry; a `CleanupListener`.

    `source` is called once per scrape (e.g. `lambda: service.stats`); its figures become
    the gauges and the service counters. Without it the gauges read 0, except pinned
    bytes, taken from the last `on_pass` report.
    """

    def __init__(
        self, *, source: Callable[[], ServiceFigures] | None = None, version: str | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self._pushed = {attr: 0 for attr, _, _ in _SERVICE_COUNTERS}
        self._last_pinned_bytes = 0
        self.registry.register(_ServiceCollector(self, source, version or _version()))
        reg = self.registry
        self._cleaned = Counter(
            "temp_files_cleaned", "Files deleted, by reason.", ["reason"], registry=reg
        )
        for reason in Reason:
            self._cleaned.labels(reason=reason.label)  # every reason shows, at 0
        self._age = Histogram(
            "temp_file_age_seconds", "Age of each file when it was deleted.",
            buckets=AGE_BUCKETS_SECONDS, registry=reg,
        )
        self._duration = Histogram(
            "temp_file_cleanup_duration_seconds", "Duration of each cleanup pass.",
            buckets=DURATION_BUCKETS_SECONDS, registry=reg,
        )
        self._skipped_open = Counter(
            "temp_files_skipped_open", "Files that would have gone but were open.", registry=reg
        )
        self._errors = Counter(
            "temp_files_cleanup_errors", "Failed deletions, by errno name.", ["error"],
            registry=reg,
        )
        for label in _COMMON_ERRORS:
            self._errors.labels(error=label)

    # -- CleanupListener ---------------------------------------------------------------

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        """A file was deleted (in a dry run: would have been)."""
        self._cleaned.labels(reason=decision.reason.label).inc()
        self._age.observe(max(decision.age_seconds, 0.0))

    def on_skipped_open(self, decision: Decision) -> None:
        """A file that would have gone was kept because it is open."""
        self._skipped_open.inc()

    def on_failed(self, decision: Decision, result: DeleteResult) -> None:
        """A deletion failed; counted under its errno name."""
        self._errors.labels(error=error_label(result.error)).inc()

    def on_pass(self, report: PassReport) -> None:
        """A cleanup pass ended."""
        self._duration.observe(report.duration_seconds)
        self._last_pinned_bytes = report.pinned_bytes

    # -- service events ----------------------------------------------------------------

    # Plain int additions: atomic enough under the GIL, and cheaper than a lock on the
    # observer thread.

    def on_registered(self, n: int = 1) -> None:
        """`n` files were registered."""
        self._pushed["registered_total"] += n

    def on_overflow(self) -> None:
        """The inotify queue overflowed: events were lost."""
        self._pushed["overflows"] += 1

    def on_rescan(self) -> None:
        """A reconciling rescan ran."""
        self._pushed["rescans"] += 1

    def on_observer_restart(self) -> None:
        """The observer was found dead and restarted."""
        self._pushed["observer_restarts"] += 1

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an HTTP Accept header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


# (ServiceFigures attribute, metric name without _total, help)
_SERVICE_COUNTERS = (
    ("registered_total", "temp_files_registered",
     "Files registered (created, moved in, or found by a scan)."),
    ("overflows", "tempwatch_inotify_overflows", "inotify event queue overflows."),
    ("rescans", "tempwatch_rescans", "Reconciling rescans of base_dir."),
    ("observer_restarts", "tempwatch_observer_restarts", "Observers found dead and restarted."),
)  # fmt: skip


class _ServiceCollector:
    """What the service counts, read when scraped, and the build info."""

    def __init__(
        self, metrics: Metrics, source: Callable[[], ServiceFigures] | None, version: str
    ) -> None:
        self._metrics = metrics
        self._source = source
        self._version = version

    def collect(self) -> Iterator[Metric]:
        figures: ServiceFigures | None = None
        if self._source is not None:
            try:
                figures = self._source()
            except Exception:  # a scrape must still answer with the rest
                logger.opt(exception=True).warning("metrics: could not read the service stats")
                return
        pushed = self._metrics._pushed
        for attr, name, text in _SERVICE_COUNTERS:
            total = pushed[attr] + (getattr(figures, attr) if figures is not None else 0)
            yield CounterMetricFamily(name, text, value=total)
        gauges = (
            ("temp_files_active", "Files registered now.",
             figures.registered_files if figures else 0),
            ("temp_files_bytes", "Total size of the files registered now.",
             figures.registered_bytes if figures else 0),
            ("tempwatch_pinned_bytes", "Bytes over a limit that stay because the files are open.",
             figures.pinned_bytes if figures else self._metrics._last_pinned_bytes),
            ("tempwatch_lease_in_force",
             "1 while the kernel lease keeps open files, hidden processes' too; 0 while the "
             "/proc sweep alone decides.",
             int(figures is not None and figures.in_use_check == LEASE_AND_SWEEP)),
            ("tempwatch_sweep_denied_processes",
             "Processes the last open-file sweep could not inspect: their open files look closed.",
             figures.sweep_denied_processes if figures else 0),
            ("tempwatch_deleted_open_files",
             "Files under base_dir already deleted but still held open (at the last pass).",
             figures.deleted_open_files if figures else 0),
            ("tempwatch_deleted_open_bytes",
             "Disk space those deleted but still open files keep from being freed.",
             figures.deleted_open_bytes if figures else 0),
        )  # fmt: skip
        for name, text, value in gauges:
            yield GaugeMetricFamily(name, text, value=value)
        yield from _pressure_gauges(figures.pressure if figures is not None else None)
        info = GaugeMetricFamily(
            "tempwatch_build_info",
            "Version of tempwatch and Python, and the observer in use.",
            labels=["version", "python", "observer"],
        )
        observer = (figures.observer_kind if figures else None) or ""
        info.add_metric([self._version, platform.python_version(), observer], 1)
        yield info


class LabelledMetrics:
    """Several directories' `Metrics` as one exposition, each sample labelled `directory`.

    `by_directory` is read at every scrape, so a directory added or removed by a reload
    shows or goes at once; the label's values are the configured directories only.
    """

    def __init__(self, by_directory: Callable[[], Mapping[str, Metrics]]) -> None:
        self._by_directory = by_directory
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for directory, metrics in sorted(self._by_directory().items()):
            for family in metrics.registry.collect():
                into = merged.get(family.name)
                if into is None:
                    into = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = into
                for sample in family.samples:
                    labels = {"directory": directory, **sample.labels}
                    into.samples.append(sample._replace(labels=labels))
        yield from merged.values()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for an HTTP Accept header: (body, content type)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def _pressure_gauges(state: PressureState | None) -> Iterator[Metric]:
    """The filesystem's free space as the service last saw it, and the watermarks in force.

    NaN until a watermark is set and the filesystem was read: no zero to alert on, and a
    comparison with NaN is never true.
    """
    usage = state.usage if state is not None else None
    targets = state.targets if state is not None else None
    values: tuple[float, ...] = (float("nan"),) * 7
    if state is not None and usage is not None and targets is not None:
        values = (
            usage.free_bytes, usage.free_inodes, usage.total_bytes, targets.min_free_bytes,
            targets.min_free_inodes, state.pinned_bytes, state.outside_bytes,
        )
    for (name, text), value in zip(_PRESSURE_GAUGES, values, strict=True):
        yield GaugeMetricFamily(name, text, value=value)


_PRESSURE_GAUGES = (
    ("tempwatch_fs_free_bytes", "Free bytes of base_dir's filesystem, as last seen."),
    ("tempwatch_fs_free_inodes", "Free inodes of base_dir's filesystem, as last seen."),
    ("tempwatch_fs_size_bytes", "Size of base_dir's filesystem."),
    ("tempwatch_fs_min_free_bytes", "The free-space watermark in bytes (0: off)."),
    ("tempwatch_fs_min_free_inodes", "The free-inode watermark (0: off)."),
    ("tempwatch_fs_pressure_pinned_bytes",
     "Bytes that would go to get back above the watermark but are open."),
    ("tempwatch_fs_outside_bytes",
     "The filesystem's use that is not a file of the watched directories."),
)  # fmt: skip
