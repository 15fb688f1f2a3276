"""Which in-use check is in force for a directory, and saying once when it falls back.

The deleter takes a kernel lease right before each unlink (tempwatch.inuse) beside the
/proc sweep (tempwatch.openfiles). When the lease cannot be taken (switched off, refused
by the filesystem, no CAP_LEASE) the sweep alone decides: /healthz and the metrics report
which check is in force, and the log says it once per reason.
"""

from __future__ import annotations

from tempwatch.config import CleanupConfig
from tempwatch.deleter import Deleter
from tempwatch.health import LEASE_AND_SWEEP
from tempwatch.lazylog import logger

__all__ = ["LeaseFallbackNotice", "in_use_check", "is_lease_in_force"]

_SWITCHED_OFF = "cleanup.lease_probe = false"


def in_use_check(cleanup: CleanupConfig, deleter: Deleter | None) -> str:
    """How "in use" is decided now, for /healthz and the metrics."""
    if not cleanup.skip_open_files:
        return "off (skip_open_files = false)"
    why = _SWITCHED_OFF if not cleanup.lease_probe else (
        None if deleter is None else deleter.lease_unavailable
    )
    return LEASE_AND_SWEEP if why is None else f"/proc sweep only ({why})"


def is_lease_in_force(cleanup: CleanupConfig, deleter: Deleter | None) -> bool:
    """Whether the kernel's lease keeps open files beside the sweep now."""
    return in_use_check(cleanup, deleter) == LEASE_AND_SWEEP


class LeaseFallbackNotice:
    """Warns once per reason that files are deleted without the kernel's in-use check."""

    def __init__(self) -> None:
        self._said: str | None = None

    def check(self, cleanup: CleanupConfig, deleter: Deleter) -> None:
        """Log the fallback if the deleter has one not yet said."""
        why = deleter.lease_unavailable
        if why is None or not cleanup.skip_open_files:
            return
        if not cleanup.lease_probe:
            why = _SWITCHED_OFF
        if why == self._said:
            return
        self._said = why
        logger.bind(event="lease-fallback", reason=why).warning(
            "in-use check: the /proc sweep alone ({}): a holder it cannot see (another PID "
            "namespace or user, a mapping) does not keep a file",
            why,
        )
