"""Benchmark 8, disk pressure: a writer filling a tmpfs at full speed against a 10% watermark.

A tmpfs of a fixed size is mounted (root only) and the service runs in a child process on a
directory in it with `min_free_space = "10%"`. A writer child writes three times the
filesystem's size in 1 MiB files as fast as it can, each closed before the next, sampling
statvfs after every write. From its samples, per run:

- the lowest free space reached (% of the filesystem);
- the reaction time: from the first sample below the watermark to the first sample where
  free space grew (the first eviction seen);
- the time back above the watermark: from the first sample below it to the first at or
  above it again, while the writer still writes.

No other temp cleaner evicts by free space, so there is no peer: the goals are absolute.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from bench_lib.context import Context
from bench_lib.procs import BenchChild
from bench_lib.report import BenchResult, Figure, Goal, Series
from bench_lib.trees import remove_tree

__all__ = ["analyse", "bench_pressure"]

_MiB = 1024**2
_PERCENT = 10.0


def analyse(samples: list[list[float]], watermark_bytes: int) -> dict[str, float | None]:
    """Lowest free space, reaction and time back above the watermark, from (t, free) samples."""
    lowest = min(free for _, free in samples)
    below = next((i for i, (_, free) in enumerate(samples) if free < watermark_bytes), None)
    if below is None:
        return {"lowest_bytes": lowest, "reaction_seconds": None, "back_above_seconds": None}
    started = samples[below][0]
    reaction = back = None
    for (_, before), (t, free) in zip(samples[below:], samples[below + 1 :], strict=False):
        if reaction is None and free > before:
            reaction = t - started
        if free >= watermark_bytes:
            back = t - started
            break
    return {"lowest_bytes": lowest, "reaction_seconds": reaction, "back_above_seconds": back}


def _mount(point: str, size_mib: int) -> None:
    os.mkdir(point)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", point],
        check=True, capture_output=True,
    )


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _total_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def _one_run(ctx: Context, fs: str, run: int) -> dict[str, Any]:
    directory = os.path.join(fs, f"run{run}")
    os.mkdir(directory)
    total = _total_bytes(fs)
    watermark = -(-total * int(_PERCENT) // 100)
    with BenchChild("pressure_service", {"dir": directory, "percent": _PERCENT}):
        with BenchChild(
            "fill", {"dir": directory, "total": 3 * total, "chunk": _MiB},
            ready_timeout_seconds=300,
        ) as writer:
            answer = writer.ready
        # After the writer: the service must bring free space back above the watermark.
        deadline = time.monotonic() + 30
        while _free_bytes(fs) < watermark and time.monotonic() < deadline:
            time.sleep(0.01)
        settled = _free_bytes(fs) >= watermark
    remove_tree(directory)
    figures = analyse(answer["samples"], watermark)
    ctx.log(
        f"8 run {run + 1}: lowest {100 * (figures['lowest_bytes'] or 0) / total:.1f}% free, "
        f"reaction {_ms(figures['reaction_seconds'])}, back above "
        f"{_ms(figures['back_above_seconds'])}, {answer['enospc']} ENOSPC, "
        f"{answer['written'] / _MiB / answer['seconds']:.0f} MiB/s"
    )
    return {
        **figures,
        "settled": settled,
        "total_bytes": total,
        "watermark_bytes": watermark,
        "enospc": answer["enospc"],
        "written_bytes": answer["written"],
        "writer_seconds": answer["seconds"],
        "samples": len(answer["samples"]),
    }


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{1000 * seconds:.0f} ms"


def bench_pressure(ctx: Context) -> BenchResult:
    """Lowest free space and the time back above a 10% watermark under a full-speed writer."""
    size_mib = ctx.size(1024, 64)
    result = BenchResult(
        "8", "Disk pressure",
        {"fs": "tmpfs", "fs_size": f"{size_mib} MiB", "min_free_space": f"{_PERCENT:g}%",
         "written": "3 × the fs size in 1 MiB files"},
    )
    if os.geteuid() != 0:
        result.notes.append("not measured: mounting a tmpfs needs root")
        result.goals.append(Goal("free space back above the watermark", None, "needs root"))
        return result
    root = ctx.fresh_dir("pressure")
    fs = os.path.join(root, "fs")
    _mount(fs, size_mib)
    runs: list[dict[str, Any]] = []
    try:
        for run in range(ctx.runs):
            runs.append(_one_run(ctx, fs, run))
    finally:
        subprocess.run(["umount", "-l", fs], check=False)
        remove_tree(root)
    result.raw["runs"] = runs
    _figures(result, runs, size_mib)
    return result


def _never(missing: int, runs: int) -> str:
    """A run that never got back above the watermark has no time: say so beside the rest."""
    return f"{missing} of {runs} runs never got back above while the writer ran" if missing else ""


def _figures(result: BenchResult, runs: list[dict[str, Any]], size_mib: int) -> None:
    lowest = [100 * r["lowest_bytes"] / r["total_bytes"] for r in runs]
    reaction = [1000 * r["reaction_seconds"] for r in runs if r["reaction_seconds"] is not None]
    back = [1000 * r["back_above_seconds"] for r in runs if r["back_above_seconds"] is not None]
    name = f"tempwatch, {size_mib} MiB tmpfs"
    result.figures += [
        Figure("lowest free space reached (watermark 10%)", "% of fs", True,
               Series(name, lowest)),
        Figure("reaction: below the watermark to the first eviction", "ms", False,
               Series(name, reaction)),
        Figure("time back above the watermark, writer still writing", "ms", False,
               Series(name, back, _never(len(runs) - len(back), len(runs)))),
    ]
    enospc = [r["enospc"] for r in runs]
    speed = [r["written_bytes"] / _MiB / r["writer_seconds"] for r in runs]
    result.notes.append(
        f"writer: {min(speed):.0f}-{max(speed):.0f} MiB/s; ENOSPC met {min(enospc)}-"
        f"{max(enospc)} times a run (it retries after 1 ms); the service checks statvfs at "
        "most every 200 ms while files are written"
    )
    every_back = len(back) == len(runs) and all(r["settled"] for r in runs)
    result.goals.append(Goal(
        "free space back above the watermark while the writer runs, every run",
        every_back, f"{len(back)} of {len(runs)} runs",
    ))
    worst = max(reaction) if reaction else None
    result.goals.append(Goal(
        "reaction ≤ 500 ms (checks every 200 ms while files are written)",
        None if worst is None else worst <= 500,
        "no run went below" if worst is None else f"worst {worst:.0f} ms",
    ))
