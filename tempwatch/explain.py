"""`tempwatch explain PATH...`: why a file would go or stay, from the same definitions a pass
uses (the directory and rule that govern it, its age by last use, in use as the sweep and
the kernel see it, the limits).

`gather` reads the facts (one lstat, the sweep's holders, a lease probe taken and dropped
at once, the locks of the directories above, and a plan over the directory for the
limits); `verdict` is pure and turns them into the answer a pass would reach now.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from tempwatch.age import last_used_at
from tempwatch.config import Config
from tempwatch.directory import limits_of, own_files, read_disk, rules_of, watermarks_of
from tempwatch.errors import OutsideBaseDirError
from tempwatch.freespace import pressure_reason
from tempwatch.globs import is_excluded
from tempwatch.inuse import InUse, LeaseProbe, is_dir_locked
from tempwatch.openfiles import NO_OPEN_FILES, OpenFileSet
from tempwatch.policy import Reason, plan_pass
from tempwatch.units import format_age, format_duration, printable

__all__ = ["Explanation", "explain_path", "governing_directory", "render_text", "verdict"]

_LEASE_FREE = "free"


@dataclass(slots=True)
class Explanation:
    """What `explain` found for one path, and the verdict; JSON-serialisable."""

    path: str
    directory: str
    kind: str  # "file", "symlink", "directory", "special", "missing", "tempwatch's own"
    rule: str | None = None  # 'rule 2 ("*.log")', or None for the directory's own settings
    keep: bool = False
    excluded: bool = False
    size_bytes: int = 0
    timestamps: dict[str, str] = field(default_factory=dict)  # modified/changed/accessed
    age_by: list[str] = field(default_factory=list)
    age_seconds: float | None = None
    max_age_seconds: float = 0.0
    max_file_size_bytes: int = 0
    open_by: list[str] = field(default_factory=list)  # holders the sweep found
    lease: str = _LEASE_FREE  # "free", "in use", or why it could not be asked
    locked_dir: str | None = None  # a directory above it holding a BSD lock
    limit: str | None = None  # the limit that would evict it now
    verdict: str = ""
    why: str = ""

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(asdict(self), indent=2)


def governing_directory(path: str, config: Config) -> Config | None:
    """The configured directory that governs `path`: the innermost one containing it (a
    directory configured inside another is governed by its own entry), or None."""
    absolute = _judged_path(path)
    inside = [
        directory for directory in config.each_directory()
        if absolute.startswith(str(directory.watch.base_dir).rstrip("/") + "/")
    ]  # fmt: skip
    return max(inside, key=lambda d: len(str(d.watch.base_dir)), default=None)


def _judged_path(path: str) -> str:
    # A path given through a symlinked parent is judged where it really is, as the deleter
    # would reach it; the final name is not resolved (a symlink is judged as a link).
    head, tail = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(head), tail)


def explain_path(
    path: str,
    config: Config,
    *,
    open_paths: Container[str] = NO_OPEN_FILES,
    clock: Callable[[], float] = time.time,
) -> Explanation:
    """Gather the facts about `path` and judge it by the settings of `config`, one
    directory's (see `governing_directory`). Raises OutsideBaseDirError when it is not below
    that directory."""
    base = str(config.watch.base_dir)
    absolute = _judged_path(path)
    if not absolute.startswith(base.rstrip("/") + "/"):
        raise OutsideBaseDirError(f"{printable(path)} is not below {printable(base)}")
    facts = Explanation(path=absolute, directory=base, kind="missing")
    _read_file(facts, config, clock())
    if facts.kind in ("file", "symlink"):
        _read_use(facts, config, open_paths)
        _read_limits(facts, config, open_paths, clock())
    facts.verdict, facts.why = verdict(facts)
    return facts


def _read_file(facts: Explanation, config: Config, now: float) -> None:
    governing = rules_of(config).governing(facts.path)
    if governing.rule_index is not None:
        match = config.rules[governing.rule_index].match
        facts.rule = f'rule {governing.rule_index + 1} ("{match}")'
    facts.keep = governing.keep
    facts.max_age_seconds = governing.max_age_seconds
    facts.max_file_size_bytes = governing.max_file_size_bytes
    age_by = governing.age_by or config.cleanup.age_by
    facts.age_by = sorted(age_by)
    rel = facts.path[len(facts.directory.rstrip("/")) + 1 :]
    facts.excluded = is_excluded(rel, config.watch.exclude)
    if facts.path in own_files(config):
        facts.kind = "tempwatch's own"
        return
    try:
        st = os.lstat(facts.path)
    except FileNotFoundError:
        return
    facts.kind = _kind(st.st_mode)
    facts.size_bytes = st.st_size
    facts.timestamps = {
        "modified": _iso(st.st_mtime),
        "changed": _iso(st.st_ctime),
        "accessed": _iso(st.st_atime),
    }
    used = last_used_at(age_by, mtime=st.st_mtime, ctime=st.st_ctime, atime=st.st_atime)
    facts.age_seconds = round(now - used, 3)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special"


def _read_use(facts: Explanation, config: Config, open_paths: Container[str]) -> None:
    if not config.cleanup.skip_open_files:
        facts.lease = "not asked (skip_open_files = false)"
        return
    if isinstance(open_paths, OpenFileSet):
        facts.open_by = [str(holder) for holder in open_paths.holders_of(facts.path)]
    facts.locked_dir = _locked_ancestor(facts.directory, facts.path)
    if facts.kind == "file":
        facts.lease = _ask_lease(facts.path) if config.cleanup.lease_probe else "not asked"


def _locked_ancestor(base: str, path: str) -> str | None:
    """The first directory between base_dir (excluded) and `path` holding a BSD lock."""
    parts = os.path.relpath(os.path.dirname(path), base).split(os.sep)
    current = base
    for part in [] if parts == ["."] else parts:
        current = os.path.join(current, part)
        try:
            fd = os.open(current, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if is_dir_locked(fd):
                return current
        finally:
            os.close(fd)
    return None


def _ask_lease(path: str) -> str:
    """The kernel's answer, taken and dropped at once: "free", "in use", or why not asked."""
    probe = LeaseProbe()
    parent, name = os.path.split(path)
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return f"not asked ({e.strerror})"
    try:
        fd = probe.acquire(name, dir_fd)
    except InUse:
        return "in use"
    except OSError as e:
        return f"not asked ({e.strerror})"
    finally:
        os.close(dir_fd)
    if fd is None:
        return f"not asked ({probe.unavailable})"
    os.close(fd)
    return _LEASE_FREE


def _read_limits(
    facts: Explanation, config: Config, open_paths: Container[str], now: float
) -> None:
    """Whether the count or quota would evict it now, from a plan over the directory."""
    watermarks = watermarks_of(config)
    if not (config.limits.max_files or config.limits.max_total_size_bytes or watermarks.is_set):
        return
    entries = read_disk(config).registry.oldest_first()
    plan = plan_pass(entries, now=now, limits=limits_of(config), open_paths=open_paths)
    for decision in plan.deletions:
        if decision.path == facts.path and decision.reason in (
            Reason.OVER_COUNT,
            Reason.OVER_QUOTA,
        ):
            facts.limit = decision.reason.value
            return
    facts.limit = pressure_reason(
        facts.path, str(config.watch.base_dir), entries, watermarks=watermarks, now=now,
        open_paths=open_paths,
    )


def verdict(facts: Explanation) -> tuple[str, str]:
    """What a pass would do now, and why: ("would delete" | "kept" | "nothing to do", reason)."""
    if facts.kind == "missing":
        return "nothing to do", "no such file"
    if facts.kind == "tempwatch's own":
        return "kept", "tempwatch's own file (lock, socket or log)"
    if facts.keep:
        return "kept", f"{facts.rule} says keep = true"
    if facts.excluded:
        return "kept", "matches watch.exclude"
    if facts.kind == "directory":
        return "kept", "a directory (an empty one goes only with remove_empty_dirs)"
    if facts.kind == "special":
        return "kept", "not a regular file or symlink (FIFO, socket or device)"
    reason = _reason_to_go(facts)
    if reason is None:
        assert facts.age_seconds is not None
        left = facts.max_age_seconds - facts.age_seconds
        return "kept", (
            f"last used {format_age(facts.age_seconds)} ago ({_sources(facts)}), "
            f"max_age {format_duration(facts.max_age_seconds)}: expires in {format_age(left)}"
        )
    if facts.open_by:
        return "kept", f"{reason}, but open by {', '.join(facts.open_by)}"
    if facts.lease == "in use":
        return "kept", (
            f"{reason}, but in use: the kernel refused a lease (a holder the sweep cannot "
            "see: another PID namespace or user, or a mapping)"
        )
    if facts.locked_dir is not None:
        return "kept", f"{reason}, but {printable(facts.locked_dir)} is locked (flock)"
    return "would delete", reason


def _reason_to_go(facts: Explanation) -> str | None:
    assert facts.age_seconds is not None
    if facts.age_seconds > facts.max_age_seconds:
        return (
            f"expired: last used {format_age(facts.age_seconds)} ago ({_sources(facts)}), "
            f"max_age {format_duration(facts.max_age_seconds)}"
        )
    if facts.max_file_size_bytes and facts.size_bytes > facts.max_file_size_bytes:
        return f"oversize: {facts.size_bytes} bytes, limit {facts.max_file_size_bytes}"
    if facts.limit in ("low-space", "low-inodes"):
        what = "space" if facts.limit == "low-space" else "inodes"
        return (
            f"{facts.limit}: among the oldest files while the filesystem's free {what} is "
            "below its watermark"
        )
    if facts.limit is not None:
        return f"{facts.limit}: among the oldest files over the directory's limit"
    return None


def _sources(facts: Explanation) -> str:
    return "newest of " + ", ".join(facts.age_by) if len(facts.age_by) > 1 else facts.age_by[0]


def render_text(facts: Explanation) -> str:
    """A few lines for a person; the verdict first."""
    lines = [f"{printable(facts.path)}: {facts.verdict}: {facts.why}"]
    lines.append(f"  directory: {printable(facts.directory)} ({facts.rule or 'its own settings'})")
    if facts.kind in ("file", "symlink"):
        lines.append(f"  kind: {facts.kind}, {facts.size_bytes} bytes")
        for name, when in facts.timestamps.items():
            lines.append(f"  {name}: {when}")
        if facts.age_seconds is not None:
            lines.append(
                f"  age: {format_age(facts.age_seconds)} (newest of {', '.join(facts.age_by)})"
            )
        lines.append(f"  open by: {', '.join(facts.open_by) or 'nobody the sweep can see'}")
        lines.append(f"  kernel lease: {facts.lease}")
        if facts.locked_dir is not None:
            lines.append(f"  locked directory above it: {printable(facts.locked_dir)}")
        if facts.limit is not None:
            lines.append(f"  limit: would be evicted now ({facts.limit})")
    else:
        lines.append(f"  kind: {facts.kind}")
    return "\n".join(lines)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")
