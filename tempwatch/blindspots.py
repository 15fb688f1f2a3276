"""What the open-file check could not see, said out loud.

A sweep that may not read /proc/PID/fd of a process (another user's, when the service runs
without CAP_SYS_PTRACE; or one a security module shields) takes every file that process
holds as closed, so such a file can be deleted while in use. The sweep counts those
processes; this module keeps the count of the latest sweep, for the metrics and /healthz,
and turns it into a warning an operator reads: at start, and once per cleanup pass.

The real fix is the lease the deleter takes on each file before it is deleted (inuse.py):
where it is in force, a hidden process's files are still kept and only their holders
cannot be named, so the report is INFO at start and DEBUG per pass. Where leases are
refused, this is the honest report: a WARNING at start and once per pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tempwatch.lazylog import logger
from tempwatch.openfiles import LazyOpenFiles, OpenFiles

__all__ = ["SweepVisibility", "warn_denied"]


_REMEDY_AS_USER = "run as root with CAP_SYS_PTRACE to see other users' processes"
_REMEDY_AS_ROOT = (
    "root needs CAP_SYS_PTRACE, and no security module (AppArmor, SELinux) denying ptrace "
    "reads, to see every process"
)


def warn_denied(
    processes_denied: int, base_dir: str, when: str, *, lease_in_force: bool = False
) -> None:
    """Say, if any process could not be inspected, what that costs: its open files look
    closed to the sweep (a WARNING), or, with the lease in force, only its name is missing."""
    if processes_denied <= 0:
        return
    one = processes_denied == 1
    said = logger.bind(event="sweep-denied", processes_denied=processes_denied)
    if lease_in_force:
        said.log(
            "INFO" if when == "at start" else "DEBUG",
            "{}: the open-file check could not inspect {} process{}: the kernel lease still "
            "keeps the files {} open under {}, but cannot name {}",
            when,
            processes_denied,
            "" if one else "es",
            "it holds" if one else "they hold",
            base_dir,
            "it" if one else "them",
        )
        return
    said.warning(
        "{}: the open-file check could not inspect {} process{}: files {} open under {} "
        "look closed and may be deleted while in use ({})",
        when,
        processes_denied,
        "" if one else "es",
        "it holds" if one else "they hold",
        base_dir,
        _REMEDY_AS_ROOT if os.geteuid() == 0 else _REMEDY_AS_USER,
    )


class SweepVisibility:
    """Wraps a sweep: remembers how many processes the latest one could not inspect.

    `sweep` is the wrapped call itself; hand it to whatever sweeps. Thread-safe enough for
    its use: one int written per sweep, read by scrapes and health checks.
    """

    def __init__(self, sweep: Callable[[str], OpenFiles]) -> None:
        self._sweep = sweep
        self.processes_denied = 0  # of the latest sweep; 0 before the first
        self.sweeps = 0

    def sweep(self, base_dir: str) -> OpenFiles:
        """Run the wrapped sweep and note its count of processes it could not inspect."""
        result = self._sweep(base_dir)
        self.processes_denied = result.processes_denied
        self.sweeps += 1
        return result

    def at_start(self, base_dir: str, check_open_files: bool, lease_in_force: bool) -> None:
        """Sweep once at start, when files are checked for being open, and say if some
        processes are hidden: the operator learns it now, not at the first deletion."""
        if check_open_files:
            self.sweep(base_dir)
            self.warn(base_dir, "at start", lease_in_force)

    def warn(self, base_dir: str, when: str, lease_in_force: bool) -> None:
        """Say what the latest count means, if it is not 0."""
        warn_denied(self.processes_denied, base_dir, when, lease_in_force=lease_in_force)

    def after_pass(self, open_paths: object, base_dir: str, lease_in_force: bool) -> None:
        """Once per cleanup pass: warn with a current count while some process is hidden.

        A pass sweeps only when it has something to delete; while the latest count is not 0
        a pass that did not sweep sweeps once anyway, so that the count (and the health it
        sets) follows a hidden process going away instead of staying stale.
        """
        if not isinstance(open_paths, LazyOpenFiles):
            return  # the open-file check is off: nothing is swept, nothing is hidden
        if not open_paths.swept and self.processes_denied:
            self.sweep(base_dir)
        self.warn(base_dir, "cleanup pass", lease_in_force)
