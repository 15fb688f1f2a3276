"""Health of a running service, as /healthz reports it. Pure: the caller gathers the facts.

- unhealthy (HTTP 503): the observer is dead, or base_dir is gone, or base_dir is no
  longer the directory verified at start (a mount over it, a symlink or another directory
  in its place: nothing is cleaned there until one passes the start checks). New files are
  not being registered or cleaned: a supervisor or an operator should look.
- degraded (HTTP 200): the observer fell back to polling, or some directories could not
  be watched (inotify's limits), or a limit is exceeded only because the files that would
  go are held open, or the filesystem stays below its free-space or free-inode watermark
  (what would have to go is open, or the space is used outside the watched directories),
  or no cleanup pass has run for longer than twice the interval (plus a grace), or the
  open-file check could not inspect some processes (their open files look closed). It
  still works; an operator should look.
- healthy (HTTP 200): otherwise.

Degraded answers 200 on purpose: a liveness probe that restarted the service because a
process holds files open would change nothing, and would lose the registry's ages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, Protocol

from tempwatch.config import Config

__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "Health",
    "HealthStatus",
    "LEASE_AND_SWEEP",
    "ServiceState",
    "assess",
    "assess_service",
    "combine_health",
    "is_pass_overdue",
]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]

LEASE_AND_SWEEP = "kernel lease and /proc sweep"
"""`in_use_check` when the deleter's lease is in force beside the sweep."""

DEFAULT_GRACE_SECONDS = 30.0
"""Slack on top of 2 x interval before a pass counts as overdue: a pass over a large
registry takes time, and the loop wakes late under load."""


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict: status, the HTTP status to answer with, and the JSON body."""

    status: HealthStatus
    http_status: int
    body: dict[str, object]

    @property
    def reasons(self) -> list[str]:
        """Why the status is not healthy; empty when it is."""
        reasons = self.body.get("reasons")
        return [str(reason) for reason in reasons] if isinstance(reasons, list) else []

    def to_json(self) -> str:
        """The body as one line of JSON."""
        return json.dumps(self.body, sort_keys=True)


def is_pass_overdue(
    *,
    now: float,
    last_pass_at: float | None,
    started_at: float,
    interval_seconds: float,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> bool:
    """No pass within 2 x interval + grace of the last one (or of the start, if none yet)."""
    since = started_at if last_pass_at is None else last_pass_at
    return now - since > 2 * interval_seconds + grace_seconds


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


def assess(
    *,
    now: float,
    observer_alive: bool,
    base_dir_exists: bool,
    last_pass_at: float | None,
    interval_seconds: float,
    limit_pinned: bool,
    active_files: int,
    base_dir: str | os.PathLike[str],
    max_age_seconds: float,
    started_at: float,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    base_dir_problem: str | None = None,
    sweep_denied_processes: int = 0,
    observer_fallback: str | None = None,
    unwatched_dirs: int = 0,
    in_use_check: str = "",
    pressure_problem: str | None = None,
    observer_restarts: int = 0,
    observer_failure: str | None = None,
) -> Health:
    """Judge the service's health from facts gathered by the caller; all times are epoch seconds.

    The body holds: status, reasons, active_files, base_dir, max_age (seconds), timestamp,
    observer_alive, base_dir_exists, base_dir_problem (what base_dir became, or null),
    observer_fallback (why inotify is not used, or null), unwatched_dirs,
    last_pass_at (ISO 8601 UTC or null), seconds_since_last_pass, pass_overdue,
    limit_pinned, sweep_denied_processes, pressure_problem (why the free-space or
    free-inode watermark cannot be held, or null), started_at, uptime_seconds and
    in_use_check (how "in use" is decided now: the lease falls back to the sweep alone
    where the filesystem or the service's rights refuse leases), observer_restarts and
    observer_failure (why the observer is dead, or why it last died: a recovered failure
    leaves the status healthy, and is still told here).
    """
    overdue = is_pass_overdue(
        now=now,
        last_pass_at=last_pass_at,
        started_at=started_at,
        interval_seconds=interval_seconds,
        grace_seconds=grace_seconds,
    )
    failures: list[str] = []
    if base_dir_problem is not None:
        # The observer is stopped on purpose then, and the reason says it all.
        failures.append(f"base_dir {os.fspath(base_dir)} {base_dir_problem}: nothing is cleaned")
    elif not base_dir_exists:
        failures.append(f"base_dir {os.fspath(base_dir)} does not exist")
    if not observer_alive and base_dir_problem is None:
        why = f" ({observer_failure})" if observer_failure else ""
        failures.append(f"the observer is not running{why}: new files are not being registered")
    warnings: list[str] = []
    if observer_fallback is not None:
        warnings.append(f"watching by polling, slower to notice files: {observer_fallback}")
    if unwatched_dirs:
        warnings.append(
            f"{unwatched_dirs} directories are not watched (inotify's watch limit): their "
            "files are found by rescans only"
        )
    if limit_pinned:
        warnings.append("a limit is exceeded, but the files that would go are held open")
    if pressure_problem is not None:
        warnings.append(f"disk pressure: {pressure_problem}")
    if sweep_denied_processes and in_use_check != LEASE_AND_SWEEP:
        # With the lease in force their files are still kept: only their names are missing.
        warnings.append(
            f"the open-file check cannot inspect {sweep_denied_processes} processes: "
            "files they hold open look closed and may be deleted"
        )
    if overdue:
        since = "start" if last_pass_at is None else "the last pass"
        since_at = started_at if last_pass_at is None else last_pass_at
        warnings.append(
            f"no cleanup pass for {now - since_at:.0f}s since {since} "
            f"(expected every {interval_seconds:g}s)"
        )
    status: HealthStatus = "unhealthy" if failures else "degraded" if warnings else "healthy"
    body: dict[str, object] = {
        "status": status,
        "reasons": failures + warnings,
        "active_files": active_files,
        "base_dir": os.fspath(base_dir),
        "max_age": max_age_seconds,
        "timestamp": _iso(now),
        "observer_alive": observer_alive,
        "base_dir_exists": base_dir_exists,
        "base_dir_problem": base_dir_problem,
        "observer_fallback": observer_fallback,
        "unwatched_dirs": unwatched_dirs,
        "last_pass_at": _iso(last_pass_at),
        "seconds_since_last_pass": None if last_pass_at is None else round(now - last_pass_at, 3),
        "pass_overdue": overdue,
        "limit_pinned": limit_pinned,
        "sweep_denied_processes": sweep_denied_processes,
        "pressure_problem": pressure_problem,
        "started_at": _iso(started_at),
        "uptime_seconds": round(now - started_at, 3),
        "in_use_check": in_use_check,
        "observer_restarts": observer_restarts,
        "observer_failure": observer_failure,
    }
    return Health(status, 503 if failures else 200, body)


class ServiceState(Protocol):
    """The facts `assess_service` takes from the service (`Service.stats` has them)."""

    @property
    def started_at(self) -> float: ...
    @property
    def registered_files(self) -> int: ...
    @property
    def observer_alive(self) -> bool: ...
    @property
    def last_pass_at(self) -> float | None: ...
    @property
    def pinned_files(self) -> int: ...
    @property
    def base_dir_problem(self) -> str | None: ...
    @property
    def sweep_denied_processes(self) -> int: ...
    @property
    def observer_fallback(self) -> str | None: ...
    @property
    def unwatched_dirs(self) -> int: ...
    @property
    def in_use_check(self) -> str: ...
    @property
    def pressure_problem(self) -> str | None: ...
    @property
    def observer_restarts(self) -> int: ...
    @property
    def observer_failure(self) -> str | None: ...


def assess_service(
    state: ServiceState,
    config: Config,
    *,
    now: float,
    base_dir_exists: bool,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
) -> Health:
    """`assess` with the facts of a service's stats and the configuration in force."""
    return assess(
        now=now,
        observer_alive=state.observer_alive,
        base_dir_exists=base_dir_exists,
        last_pass_at=state.last_pass_at,
        interval_seconds=config.cleanup.interval_seconds,
        limit_pinned=state.pinned_files > 0,
        active_files=state.registered_files,
        base_dir=config.watch.base_dir,
        max_age_seconds=config.cleanup.max_age_seconds,
        started_at=state.started_at,
        grace_seconds=grace_seconds,
        base_dir_problem=state.base_dir_problem,
        sweep_denied_processes=state.sweep_denied_processes,
        observer_fallback=state.observer_fallback,
        unwatched_dirs=state.unwatched_dirs,
        in_use_check=state.in_use_check,
        pressure_problem=state.pressure_problem,
        observer_restarts=state.observer_restarts,
        observer_failure=state.observer_failure,
    )


_RANK: dict[str, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def combine_health(by_directory: dict[str, Health]) -> Health:
    """One answer for several directories: the worst status, each directory's own body."""
    if not by_directory:
        return Health("unhealthy", 503, {"status": "unhealthy", "reasons": ["no directory"]})
    worst = max(by_directory.values(), key=lambda health: _RANK[health.status])
    reasons = [
        f"{directory}: {reason}"
        for directory, health in sorted(by_directory.items())
        for reason in health.reasons
    ]
    body: dict[str, object] = {
        "status": worst.status,
        "reasons": reasons,
        "directories": {d: h.body for d, h in sorted(by_directory.items())},
    }
    return Health(worst.status, worst.http_status, body)
