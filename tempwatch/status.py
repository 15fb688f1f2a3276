"""`tempwatch status`: what is in base_dir, how old, and what a clean would remove now."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Container
from typing import NamedTuple

from tempwatch.config import Config
from tempwatch.configload import parse_effective_config
from tempwatch.directory import limits_of, read_disk, watermarks_of
from tempwatch.errors import ConfigError
from tempwatch.freespace import pressure_lines, pressure_status
from tempwatch.instance import LOCK_FILE_NAME
from tempwatch.openfiles import LazyOpenFiles, OpenFiles, describe_holders
from tempwatch.policy import plan_pass
from tempwatch.units import count, format_age, format_size, printable

__all__ = [
    "AgeBucket",
    "HeldDeleted",
    "StatusReport",
    "gather_status",
    "render_text",
    "running_service",
]

# Upper bounds of the age histogram's buckets, in seconds.
_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1m", 60),
    ("1m-10m", 600),
    ("10m-1h", 3600),
    ("1h-6h", 6 * 3600),
    ("6h-1d", 86400),
    ("1d-7d", 7 * 86400),
    (">= 7d", float("inf")),
)
_BAR_WIDTH = 30
_DELETED_SHOWN = 10


class AgeBucket(NamedTuple):
    """Files and bytes whose age falls in one range."""

    label: str
    files: int = 0
    size_bytes: int = 0


class HeldDeleted(NamedTuple):
    """A file unlinked under base_dir that processes still hold open."""

    path: str
    size_bytes: int
    holders: list[str]


class StatusReport(NamedTuple):
    """Everything `status` shows, JSON-serialisable with `to_json`."""

    base_dir: str
    files: int
    total_bytes: int
    oldest_path: str | None
    oldest_age_seconds: float | None
    buckets: list[AgeBucket]
    would_remove: dict[str, int]  # reason -> files
    would_remove_bytes: int
    skipped_open: int
    scan_errors: int
    deleted_open_files: int  # unlinked under base_dir but held open: space not freed
    deleted_open_bytes: int
    deleted_open: list[HeldDeleted]  # the largest few
    service_pid: int | None  # the running service, if one holds the lock
    service: dict[str, object] | None  # its health answer (socket, else /healthz)
    config_from: str  # "service": judged with the running service's own config, else "file"
    pressure: dict[str, object] | None  # free space vs the watermarks, when set

    def to_json(self) -> str:
        """The report as one JSON object."""
        fields = self._asdict()
        fields["buckets"] = [bucket._asdict() for bucket in self.buckets]
        fields["deleted_open"] = [item._asdict() for item in self.deleted_open]
        return json.dumps(fields, indent=2)


def gather_status(
    config: Config, *, open_paths: Container[str], clock: Callable[[], float] = time.time
) -> StatusReport:
    """Scan base_dir and ask the policy what a clean would do, deleting nothing.

    When a service runs on the directory, its own config for it (told on its socket) is
    the one judged with, not this process's reading of the config file.
    """
    pid, health = running_service(config)
    served = _served_config(health, config)
    config = served if served is not None else config
    state = read_disk(config)
    now = clock()
    entries = state.registry.oldest_first()
    files = [0] * len(_BUCKETS)
    sizes = [0] * len(_BUCKETS)
    for _, entry in entries:
        age = now - entry.registered_at
        index = next(i for i, (_, bound) in enumerate(_BUCKETS) if age < bound)
        files[index] += 1
        sizes[index] += entry.size_bytes
    buckets = [
        AgeBucket(label, files[i], sizes[i]) for i, (label, _) in enumerate(_BUCKETS)
    ]
    plan = plan_pass(entries, now=now, limits=limits_of(config), open_paths=open_paths)
    oldest = entries[0] if entries else None
    deleted = open_paths.deleted if isinstance(open_paths, LazyOpenFiles | OpenFiles) else ()
    largest = sorted(deleted, key=lambda d: -d.size_bytes)[:_DELETED_SHOWN]
    return StatusReport(
        base_dir=str(config.watch.base_dir),
        files=len(entries),
        total_bytes=state.registry.total_bytes,
        oldest_path=oldest[0] if oldest else None,
        oldest_age_seconds=round(now - oldest[1].registered_at, 3) if oldest else None,
        buckets=buckets,
        would_remove=dict(Counter(d.reason.value for d in plan.deletions)),
        would_remove_bytes=sum(d.size_bytes for d in plan.deletions),
        skipped_open=len(plan.skipped_open),
        scan_errors=len(state.scan.errors),
        deleted_open_files=len(deleted),
        deleted_open_bytes=sum(d.size_bytes for d in deleted),
        deleted_open=[
            HeldDeleted(d.path, d.size_bytes, [str(h) for h in describe_holders(d.pids)])
            for d in largest
        ],
        service_pid=pid,
        service=health,
        config_from="service" if served is not None else "file",
        pressure=pressure_status(
            str(config.watch.base_dir), entries, watermarks=watermarks_of(config), now=now,
            open_paths=open_paths,
        ),
    )


def _served_config(health: dict[str, object] | None, config: Config) -> Config | None:
    """The running service's config for this directory, if its answer carries one."""
    text = None if health is None else health.pop("config_toml", None)
    if not isinstance(text, str):
        return None
    try:
        told = parse_effective_config(text)
    except ConfigError:
        return None
    for directory in told.each_directory():
        if directory.watch.base_dir == config.watch.base_dir:
            return dataclasses.replace(directory, log=config.log, metrics=config.metrics)
    return None


def running_service(config: Config) -> tuple[int | None, dict[str, object] | None]:
    """The pid of the service holding base_dir's lock, and its /healthz answer if it serves one.

    The health endpoint is the service's own account (registry size, last pass, observer);
    without metrics, only the pid is known.
    """
    pid = _lock_holder(os.path.join(config.watch.base_dir, LOCK_FILE_NAME))
    if pid is None:
        return pid, None
    from tempwatch.healthsocket import ServiceUnreachable, ask_health  # a service to ask

    try:
        return pid, ask_health(str(config.watch.base_dir), timeout_seconds=2.0)
    except ServiceUnreachable:
        pass  # an older service, or another user's socket: try the HTTP endpoint
    if not config.metrics.enabled:
        return pid, None
    host = config.metrics.address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{config.metrics.port}/healthz"
    import urllib.error  # only for a service without the socket: http.client is heavy
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as e:  # 503: unhealthy, and the body says why
        body = json.loads(e.read() or b"{}")
    except (OSError, ValueError):
        return pid, None
    return pid, body if isinstance(body, dict) else None


def _lock_holder(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            text = os.read(fd, 64).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        return None  # nobody holds it: a file left by a killed service
    finally:
        os.close(fd)


def render_text(report: StatusReport) -> str:
    """A short human summary with a histogram of files and bytes by age."""
    lines = [
        f"base_dir: {printable(report.base_dir)}",
        f"files:    {report.files} ({format_size(report.total_bytes)})",
    ]
    if report.oldest_path is not None and report.oldest_age_seconds is not None:
        age = format_age(report.oldest_age_seconds)
        lines.append(f"oldest:   {printable(report.oldest_path)} ({age} old)")
    lines.append("")
    lines.append(f"{'age':<8} {'files':>8} {'bytes':>10}")
    widest = max((b.files for b in report.buckets), default=0) or 1
    for bucket in report.buckets:
        bar = "#" * round(_BAR_WIDTH * bucket.files / widest)
        lines.append(
            f"{bucket.label:<8} {bucket.files:>8} {format_size(bucket.size_bytes):>10} {bar}"
        )
    lines.append("")
    if report.would_remove:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(report.would_remove.items()))
        lines.append(
            f"a clean now would remove {count(sum(report.would_remove.values()), 'file')} "
            f"({format_size(report.would_remove_bytes)}): {reasons}"
        )
    else:
        lines.append("a clean now would remove nothing")
    if report.skipped_open:
        lines.append(
            f"{count(report.skipped_open, 'file')} that would go "
            f"{'is' if report.skipped_open == 1 else 'are'} open and would be kept"
        )
    if report.scan_errors:
        lines.append(f"{count(report.scan_errors, 'entry', 'entries')} could not be read")
    if report.deleted_open_files:
        lines.append(
            f"{count(report.deleted_open_files, 'deleted file')} "
            f"{'is' if report.deleted_open_files == 1 else 'are'} still held open and keep "
            f"{format_size(report.deleted_open_bytes)} of disk space:"
        )
        for item in report.deleted_open:
            holders = ", ".join(item.holders) or "?"
            size = format_size(item.size_bytes)
            lines.append(f"  {printable(item.path)} ({size}) held by {holders}")
    lines.extend(pressure_lines(report.pressure))
    lines.append("")
    lines.extend(_service_lines(report))
    return "\n".join(lines)


def _service_lines(report: StatusReport) -> list[str]:
    if report.service_pid is None:
        return ["service: not running"]
    lines = [f"service: running (pid {report.service_pid or 'unknown'})"]
    health = report.service
    if health is None:
        lines.append("  it did not answer on its health socket (an older tempwatch, or busy)")
        return lines
    keys = ("status", "active_files", "observer_alive", "last_pass_at", "reasons")
    lines.extend(f"  {key}: {_plain(health[key])}" for key in keys if key in health)
    if report.config_from == "service":
        lines.append("  (what a clean would remove is judged with the service's own config)")
    return lines


def _plain(value: object) -> str:
    """A health value as text for people: yes/no, "none", lists joined."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, list):
        return "; ".join(str(item) for item in value) or "none"
    return str(value)
