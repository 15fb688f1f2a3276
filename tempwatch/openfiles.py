"""Which files under base_dir some process holds open: one sweep over all processes per pass.

This is the only module of the package that imports psutil. A cleanup pass asks one question
per candidate file ("is it open?"), so the answer is computed once, as a set, by one sweep over
every visible process, and each candidate is a set lookup. `LazyOpenFiles` defers that sweep to
the first question, so a pass with nothing to delete costs nothing.

How the sweep reads the kernel. On Linux it lists /proc/PID/fd itself (and the process list
from /proc: psutil is imported only to name holders) and keeps only the links whose target lies
strictly under base_dir: a readlink per descriptor, as a bare sweep does. Only a target the
kernel reports as "<path> (deleted)" is also stat'ed, through the descriptor, to tell an
unlinked file (its space still held) from one still linked under another name (held: known by
its (st_dev, st_ino), as `holds` answers). psutil's own
`Process.open_files()` also stats every regular file and reads /proc/PID/fdinfo for each, which
is why it is not the Linux path; it remains the fallback where there is no /proc. Both paths
report descriptors opened with O_RDONLY, O_WRONLY/O_RDWR and O_PATH; the procfs path also
reports held directories, psutil's only regular files.

What a sweep cannot see, so what may still be deleted while in use:

- Processes of other users when the service is not root: /proc/PID/fd needs ptrace-read
  access. They are skipped and counted in `processes_denied`.
- Processes outside the service's PID namespace (a service in a container sees only its
  container), and files opened through another path to the same file (a bind mount, a
  container's own mount namespace): the kernel reports the path as that process sees it.
- Files only memory-mapped (mmap, then close): a mapping is not a descriptor.
- A descriptor private to one thread (after unshare(CLONE_FILES)): /proc/PID/fd shows the
  thread-group leader's table only.
- Files opened after the sweep: a pass sweeps once, so a file opened between the sweep and its
  deletion can still be deleted in that pass. No sweep can close that window.

Paths the kernel reports as "<path> (deleted)" are unlinked already and ignored, unless a file
of that literal name is the one held.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "NO_OPEN_FILES",
    "DeletedOpenFile",
    "Holder",
    "LazyOpenFiles",
    "OpenFileSet",
    "OpenFiles",
    "SweepMethod",
    "sweep_open_files",
]

SweepMethod = Literal["auto", "procfs", "psutil"]

_PROC = "/proc"
_DELETED_SUFFIX = " (deleted)"


class Holder(NamedTuple):
    """A process holding a file open, as the operator wants it named."""

    pid: int
    name: str
    user: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.name}, user {self.user})"


def describe_holders(
    pids: Iterable[int], known: dict[int, Holder] | None = None
) -> tuple[Holder, ...]:
    """Name each pid: command and user (a process gone meanwhile is named "?").

    `known` caches the names across calls, so a process holding many files is read once.
    """
    cache = {} if known is None else known
    holders = []
    for pid in sorted(set(pids)):
        holder = cache.get(pid)
        if holder is None:
            holder = cache[pid] = _describe(pid)
        holders.append(holder)
    return tuple(holders)


def _describe(pid: int) -> Holder:
    import psutil  # imported when asked: `status` on a quiet directory never needs it

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return Holder(pid, proc.name(), proc.username())
    except (psutil.Error, OSError, KeyError):  # gone, denied, or a uid with no name
        return Holder(pid, "?", "?")


class DeletedOpenFile(NamedTuple):
    """A file under base_dir already unlinked but still held open: its space is not free."""

    path: str
    size_bytes: int
    pids: tuple[int, ...]


@runtime_checkable
class OpenFileSet(Protocol):
    """What the cleanup pass asks: is this path, or this file identity, held open, and by whom?"""

    def __contains__(self, path: object) -> bool: ...

    def holds(self, path: str, dev: int, ino: int) -> bool: ...

    def holders_of(self, path: str) -> tuple[Holder, ...]: ...


@dataclass(frozen=True, slots=True)
class OpenFiles:
    """The result of one sweep: files under base_dir held open by some visible process.

    `paths` are absolute, as the kernel reports them (resolved, no symlinks) at the sweep: a
    file renamed since is under its new name only to the deleter's lease. `ids` are the
    (st_dev, st_ino) of held files that have no name to report: held through a name since
    unlinked while another link remains, or through a path longer than PATH_MAX.
    """

    paths: frozenset[str]
    ids: frozenset[tuple[int, int]]
    processes_seen: int
    processes_denied: int
    pids_by_path: Mapping[str, Sequence[int]] = field(default_factory=dict)
    deleted: tuple[DeletedOpenFile, ...] = ()
    _names: dict[int, Holder] = field(default_factory=dict, compare=False, repr=False)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path in self.paths

    def holders_of(self, path: str) -> tuple[Holder, ...]:
        """Who holds `path` open (named only when asked: a skipped file, not a candidate)."""
        return describe_holders(self.pids_by_path.get(path, ()), self._names)

    def holds(self, path: str, dev: int, ino: int) -> bool:
        """Whether the file at `path` with identity (dev, ino) is held open, by name or identity."""
        return path in self.paths or (dev, ino) in self.ids


def sweep_open_files(
    base_dir: str, *, exclude_pid: int | None = None, method: SweepMethod = "auto"
) -> OpenFiles:
    """Sweep every visible process once; return the files strictly under `base_dir` held open.

    `base_dir` is resolved with realpath, because the kernel reports resolved paths and an
    unresolved prefix would silently match nothing. Processes that vanish or are denied during
    the sweep never abort it. The calling process is included unless `exclude_pid` names it.
    `method` "auto" reads /proc where it exists and falls back to psutil's `open_files()`.
    """
    prefix = _prefix_of(os.path.realpath(base_dir))
    if method == "procfs" or (method == "auto" and os.path.isdir(f"{_PROC}/self/fd")):
        return _sweep_procfs(prefix, exclude_pid)
    return _sweep_psutil(prefix, exclude_pid)


class LazyOpenFiles:
    """Container[str] that runs one sweep on the first membership test and reuses it.

    Make one per cleanup pass: a pass with no candidates never sweeps, and a pass with many
    sweeps once. Not thread-safe; a pass runs on one thread. If the sweep raises, the error
    reaches the caller, which must then delete nothing rather than assume nothing is open.
    """

    __slots__ = ("_base_dir", "_result", "_sweep")

    def __init__(
        self, base_dir: str, sweep: Callable[[str], OpenFiles] = sweep_open_files
    ) -> None:
        self._base_dir = base_dir
        self._sweep = sweep
        self._result: OpenFiles | None = None

    def _open_files(self) -> OpenFiles:
        if self._result is None:
            self._result = self._sweep(self._base_dir)
        return self._result

    def __contains__(self, path: object) -> bool:
        return path in self._open_files()

    def holds(self, path: str, dev: int, ino: int) -> bool:
        """Whether the file is held open by name or by identity (sweeps on first use)."""
        return self._open_files().holds(path, dev, ino)

    def holders_of(self, path: str) -> tuple[Holder, ...]:
        """Who holds `path` open, from this pass's sweep (sweeps on first use)."""
        return self._open_files().holders_of(path)

    @property
    def deleted(self) -> tuple[DeletedOpenFile, ...]:
        """Files under base_dir unlinked but still held open (sweeps on first use)."""
        return self._open_files().deleted

    @property
    def swept(self) -> bool:
        """Whether the sweep has run."""
        return self._result is not None

    @property
    def result(self) -> OpenFiles | None:
        """The sweep's result, or None while no question has been asked."""
        return self._result


class _NoOpenFiles:
    """The answer when the open-file check is switched off: nothing is ever open."""

    __slots__ = ()

    def __contains__(self, path: object) -> bool:
        return False

    def holds(self, path: str, dev: int, ino: int) -> bool:
        return False

    def holders_of(self, path: str) -> tuple[Holder, ...]:
        return ()

    def __repr__(self) -> str:
        return "NO_OPEN_FILES"


NO_OPEN_FILES: OpenFileSet = _NoOpenFiles()


class _Collector:
    __slots__ = ("deleted", "denied", "held", "ids", "paths", "pid", "prefix", "seen")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.paths: set[str] = set()
        self.ids: set[tuple[int, int]] = set()
        self.held: list[tuple[int, list[str]]] = []  # (pid, the paths it holds open)
        self.deleted: dict[tuple[int, int], tuple[str, int, list[int]]] = {}
        self.seen = 0
        self.denied = 0
        self.pid = 0  # the process being read

    def add(self, path: str) -> None:
        """A descriptor on `path`, a name under base_dir not reported as deleted."""
        self.paths.add(path)
        self.held.append((self.pid, [path]))

    def add_unlinked(self, path: str, stat: os.stat_result | None) -> None:
        """A descriptor whose name the kernel reports as "<path> (deleted)"."""
        if stat is None:
            return
        if stat.st_nlink == 0:
            self._add_deleted(path[: -len(_DELETED_SUFFIX)], stat)
            return
        identity = (stat.st_dev, stat.st_ino)
        if _identity_of(path) == identity:
            self.add(path)  # a live file of that very name
        else:
            self.ids.add(identity)  # held through a name now gone, still linked elsewhere

    def _add_deleted(self, path: str, stat: os.stat_result) -> None:
        key = (stat.st_dev, stat.st_ino)
        known = self.deleted.get(key)
        if known is None:
            self.deleted[key] = (path, stat.st_size, [self.pid])
        else:
            known[2].append(self.pid)

    def result(self) -> OpenFiles:
        deleted = tuple(
            DeletedOpenFile(path, size, tuple(sorted(set(pids))))
            for path, size, pids in sorted(self.deleted.values())
        )
        return OpenFiles(
            frozenset(self.paths), frozenset(self.ids), self.seen, self.denied,
            _Holders(self.held), deleted,
        )  # fmt: skip


class _Holders(Mapping[str, Sequence[int]]):
    """path -> the pids holding it, made from the sweep's (pid, paths) on first use: a pass
    asks only for the holders of files it skips, most never."""

    __slots__ = ("_by_path", "_held")

    def __init__(self, held: list[tuple[int, list[str]]]) -> None:
        self._held = held
        self._by_path: dict[str, list[int]] | None = None

    def _map(self) -> dict[str, list[int]]:
        by_path = self._by_path
        if by_path is None:
            by_path = {}
            for pid, paths in self._held:
                for path in paths:
                    by_path.setdefault(path, []).append(pid)
            self._by_path = by_path
        return by_path

    def __getitem__(self, path: str) -> Sequence[int]:
        return self._map()[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self._map())


def _prefix_of(real_base_dir: str) -> str:
    return real_base_dir if real_base_dir.endswith("/") else real_base_dir + "/"


def _identity_of(path: str) -> tuple[int, int] | None:
    try:
        stat = os.lstat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _sweep_procfs(prefix: str, exclude_pid: int | None) -> OpenFiles:
    found = _Collector(prefix)
    for pid in _pids():
        if pid == exclude_pid:
            continue
        try:
            # A descriptor on the directory stays bound to this process: if the pid is reused
            # mid-scan, reads fail with ENOENT instead of listing the newcomer's files.
            dir_fd = os.open(f"{_PROC}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            found.denied += 1
            continue
        except OSError:
            continue  # gone before we looked
        found.pid = pid
        try:
            _scan_fd_dir(dir_fd, found)
        except PermissionError:
            found.denied += 1
        except OSError:
            pass  # exited mid-scan; what was read is kept
        else:
            found.seen += 1
        finally:
            os.close(dir_fd)
    return found.result()


def _pids() -> list[int]:
    # What psutil.pids() reads on Linux, without importing psutil for it.
    return [int(name) for name in os.listdir(_PROC) if name.isdigit()]


def _scan_fd_dir(dir_fd: int, found: _Collector) -> None:
    # This loop runs for every descriptor of every process: a name under base_dir costs an
    # append more than its readlink, one reported as deleted a stat; who holds what is
    # worked out only if a holder is asked for.
    prefix = found.prefix
    mine: list[str] = []
    for name in os.listdir(dir_fd):
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except PermissionError:
            raise
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                # The path is too long to report but the file is real: keep its identity.
                _add_identity_only(name, dir_fd, found)
            continue  # otherwise closed since the listing
        if not target.startswith(prefix):
            continue
        if target.endswith(_DELETED_SUFFIX):
            found.add_unlinked(target, _stat_through_fd(name, dir_fd))
        else:
            mine.append(target)
    if mine:
        found.paths.update(mine)
        found.held.append((found.pid, mine))


def _stat_through_fd(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd)
    except OSError:
        return None


def _add_identity_only(name: str, dir_fd: int, found: _Collector) -> None:
    stat = _stat_through_fd(name, dir_fd)
    if stat is not None:
        found.ids.add((stat.st_dev, stat.st_ino))


def _sweep_psutil(prefix: str, exclude_pid: int | None) -> OpenFiles:
    import psutil

    found = _Collector(prefix)
    for proc in psutil.process_iter():
        if proc.pid == exclude_pid:
            continue
        try:
            held = proc.open_files()
        except (psutil.AccessDenied, PermissionError):
            found.denied += 1
            continue
        except (psutil.NoSuchProcess, OSError):
            continue  # ZombieProcess is a NoSuchProcess: its descriptors are closed
        found.seen += 1
        found.pid = proc.pid
        for item in held:
            path = item.path
            if not path.startswith(prefix):
                continue
            if path.endswith(_DELETED_SUFFIX):
                found.add_unlinked(path, _stat_path(path))
            else:
                found.add(path)
    return found.result()


def _stat_path(path: str) -> os.stat_result | None:
    # Without /proc there is no way to stat through the descriptor; the name is what we have.
    try:
        return os.stat(path)
    except OSError:
        return None
