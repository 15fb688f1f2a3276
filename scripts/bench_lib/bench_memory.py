"""Benchmark 5, memory: RSS growth per registered file, tempwatch's Registry against a dict.

Each measurement is a fresh child process that builds the structure from the same
generated paths (about 45 characters, like a temp file two levels down) and reports its
RSS growth divided by the number of files. The path strings are counted on both sides:
the registry must keep them, and so does the dict.
"""

from __future__ import annotations

from bench_lib.context import Context, median_of
from bench_lib.procs import run_json_child
from bench_lib.report import BenchResult, Figure, Goal, Series

__all__ = ["bench_memory"]


def bench_memory(ctx: Context) -> BenchResult:
    """Bytes of RSS per registered file."""
    files = ctx.size(1_000_000, 50_000)
    result = BenchResult("5", "Memory", {"files": files})
    samples: dict[str, list[float]] = {"tempwatch": [], "dict": []}
    for run in range(ctx.runs):
        for kind in samples:
            answer = run_json_child("memory", {"kind": kind, "n": files}, timeout_seconds=300)
            samples[kind].append(float(answer["bytes_per_file"]))
            ctx.log(f"5 run {run + 1} {kind}: {answer['bytes_per_file']:.1f} bytes/file")
    result.figures.append(
        Figure(
            f"RSS per registered file, {files:,} files",
            "bytes/file",
            False,
            Series("tempwatch Registry (path, time, size, inode)", samples["tempwatch"]),
            [Series("bare dict[str, float]", samples["dict"])],
        )
    )
    mine = median_of(samples["tempwatch"])
    result.goals.append(
        Goal(
            "≤ 128 bytes per registered file (issue 12; was 200)",
            None if mine is None else mine <= 128,
            "median " + ("n/a" if mine is None else f"{mine:.0f} bytes"),
        )
    )
    return result
