"""The filesystem's free space (`read_usage`) next to the watermarks, as `status` shows it.

`status` reads statvfs itself and asks the pressure policy what an eviction would remove
now, with the same entries, ages and open files it judges a clean by: the service would
remove the same files if it checked at this moment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Sequence

from tempwatch.pressure import FsUsage, Watermarks, plan_pressure
from tempwatch.registry import Entry
from tempwatch.units import format_size

__all__ = ["pressure_lines", "pressure_reason", "pressure_status", "read_usage"]


def read_usage(path: str, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> FsUsage:
    """The figures of the filesystem holding `path` (free: what unprivileged users get)."""
    st = statvfs(path)
    return FsUsage(
        free_bytes=st.f_bavail * st.f_frsize,
        total_bytes=st.f_blocks * st.f_frsize,
        free_inodes=st.f_favail,
        total_inodes=st.f_files,
        block_bytes=st.f_frsize,
    )


def pressure_status(
    base_dir: str,
    entries: Sequence[tuple[str, Entry]],
    *,
    watermarks: Watermarks,
    now: float,
    open_paths: Container[str],
    usage_of: Callable[[str], FsUsage] = read_usage,
) -> dict[str, object] | None:
    """The figures `status` shows (JSON-ready); None while no watermark is set."""
    if not watermarks.is_set:
        return None
    try:
        usage = usage_of(base_dir)
    except OSError as e:
        return {"error": f"cannot read the free space of {base_dir}: {e.strerror or e}"}
    targets = watermarks.targets(usage)
    pressure = plan_pressure(
        entries, usage=usage, watermarks=watermarks, now=now, open_paths=open_paths
    )
    deletions = pressure.plan.deletions
    return {
        "free_bytes": usage.free_bytes,
        "total_bytes": usage.total_bytes,
        "free_inodes": usage.free_inodes,
        "total_inodes": usage.total_inodes,
        "min_free_bytes": targets.min_free_bytes,
        "min_free_inodes": targets.min_free_inodes,
        "low_space": pressure.low_space,
        "low_inodes": pressure.low_inodes,
        "would_remove": len(deletions),
        "would_remove_bytes": sum(d.size_bytes for d in deletions),
        "pinned_files": len(pressure.plan.pinned),
        "pinned_bytes": pressure.plan.pinned_bytes,
        "short_bytes": pressure.short_bytes,
        "short_inodes": pressure.short_inodes,
    }


def pressure_reason(
    path: str,
    base_dir: str,
    entries: Sequence[tuple[str, Entry]],
    *,
    watermarks: Watermarks,
    now: float,
    open_paths: Container[str],
    usage_of: Callable[[str], FsUsage] = read_usage,
) -> str | None:
    """"low-space" or "low-inodes" if an eviction for free space would remove `path` now."""
    if not watermarks.is_set:
        return None
    try:
        usage = usage_of(base_dir)
    except OSError:
        return None
    plan = plan_pressure(
        entries, usage=usage, watermarks=watermarks, now=now, open_paths=open_paths
    ).plan
    return next((d.reason.value for d in plan.deletions if d.path == path), None)


def pressure_lines(figures: dict[str, object] | None) -> list[str]:
    """`status` lines for the figures of `pressure_status`."""
    if figures is None:
        return []
    if "error" in figures:
        return [f"free space: {figures['error']}"]
    free, total = _int(figures, "free_bytes"), _int(figures, "total_bytes")
    inodes, all_inodes = _int(figures, "free_inodes"), _int(figures, "total_inodes")
    lines = [
        f"free space: {format_size(free)} of {format_size(total)}{_percent(free, total)}"
        + _against(figures, "min_free_bytes", format_size(_int(figures, "min_free_bytes"))),
        f"free inodes: {inodes} of {all_inodes}{_percent(inodes, all_inodes)}"
        + _against(figures, "min_free_inodes", str(_int(figures, "min_free_inodes"))),
    ]
    if figures["would_remove"]:
        lines.append(
            f"an eviction for free space now would remove {figures['would_remove']} files "
            f"({format_size(_int(figures, 'would_remove_bytes'))})"
        )
    elif figures["low_space"] or figures["low_inodes"]:
        lines.append("below a watermark, and nothing that could go")
    else:
        lines.append("an eviction for free space now would remove nothing")
    if figures["pinned_files"]:
        lines.append(
            f"{figures['pinned_files']} files ({format_size(_int(figures, 'pinned_bytes'))}) "
            "that would go to get back above the watermark are open"
        )
    return lines


def _int(figures: dict[str, object], key: str) -> int:
    value = figures[key]
    return value if isinstance(value, int) else 0


def _percent(part: int, whole: int) -> str:
    return f" ({100 * part / whole:.1f}%)" if whole else ""


def _against(figures: dict[str, object], key: str, shown: str) -> str:
    if not _int(figures, key):
        return ", no watermark"
    return f", watermark {shown}"
