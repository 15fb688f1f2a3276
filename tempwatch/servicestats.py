"""What a service has done: the snapshot that metrics, /healthz and `status` read."""

from __future__ import annotations

from dataclasses import dataclass

from tempwatch.cleaner import PassReport
from tempwatch.health import LEASE_AND_SWEEP
from tempwatch.reclaim import PressureState

__all__ = ["ServiceStats"]


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """A snapshot of what the service has done, for metrics and health checks."""

    started_at: float
    registered_files: int
    registered_bytes: int
    registered_total: int  # files registered since start, by events and rescans
    overflows: int
    rescans: int
    observer_restarts: int
    observer_alive: bool
    observer_kind: str | None
    last_pass_at: float | None
    last_pass_report: PassReport | None
    pinned_files: int
    pinned_bytes: int
    base_dir_problem: str | None = None  # what base_dir became, while it is not adopted
    sweep_denied_processes: int = 0  # processes the latest open-file sweep could not inspect
    observer_fallback: str | None = None  # why "auto" watches by polling
    unwatched_dirs: int = 0  # directories inotify could not watch (its watch limit)
    deleted_open_files: int = 0
    deleted_open_bytes: int = 0
    in_use_check: str = LEASE_AND_SWEEP
    pressure: PressureState = PressureState()  # the filesystem's free space, last seen
    observer_failure: str | None = None  # why the observer is dead, or last died

    @property
    def pressure_problem(self) -> str | None:
        """Why the free-space or free-inode watermark cannot be held; None when it is."""
        return self.pressure.problem
