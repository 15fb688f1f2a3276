"""Benchmark 7, startup: the service registering a tree of existing files.

One tree (subdirectories of 1,000 files) is made once; each run starts a fresh child that
either enters `Service(config)` (which returns once every file already there is
registered, the observer watching first) or does a bare scandir + lstat into a dict.
Times exclude interpreter start-up and imports on both sides.
"""

from __future__ import annotations

from typing import Any

from bench_lib.context import Context, median_of
from bench_lib.procs import run_json_child
from bench_lib.report import BenchResult, Figure, Goal, Series
from bench_lib.trees import make_tree, remove_tree

__all__ = ["bench_startup"]


def bench_startup(ctx: Context) -> BenchResult:
    """Service start-up time against a bare scan into a dict."""
    files = ctx.size(1_000_000, 20_000)
    result = BenchResult("7", "Startup", {"files": files, "files_per_dir": 1000, "fs": "tmpfs"})
    samples: dict[str, list[float]] = {"tempwatch": [], "scandir": []}
    rss: list[float] = []
    runs: list[dict[str, Any]] = []
    root = ctx.fresh_dir("startup")
    try:
        make_tree(root, files)
        ctx.log(f"7 tree of {files:,} files made")
        for run in range(ctx.runs):
            for kind in samples:
                answer = run_json_child(
                    "startup", {"kind": kind, "dir": root, "n": files}, timeout_seconds=600
                )
                if answer["count"] != files:
                    raise RuntimeError(f"{kind} registered {answer['count']} of {files} files")
                samples[kind].append(float(answer["seconds"]))
                if kind == "tempwatch":
                    rss.append(answer["rss_delta_bytes"] / files)
                runs.append({"kind": kind, **answer})
                ctx.log(f"7 run {run + 1} {kind}: {answer['seconds']:.2f}s")
    finally:
        remove_tree(root)
    result.raw["runs"] = runs
    figure = Figure(
        f"register {files:,} existing files",
        "s",
        False,
        Series("tempwatch Service start", samples["tempwatch"]),
        [Series("bare scandir + lstat into a dict", samples["scandir"])],
    )
    result.figures.append(figure)
    result.figures.append(
        Figure(
            "service RSS growth per file after start-up (incl. scan garbage kept by the heap)",
            "bytes/file",
            False,
            Series("tempwatch Service start", rss),
        )
    )
    ratio = figure.ratio(figure.peers[0])
    result.goals.append(
        Goal(
            "startup ≤ 1.2 × bare scandir + lstat (issue 12; was 1.5)",
            None if ratio is None else ratio <= 1.2,
            "ratio " + ("n/a" if ratio is None else f"{ratio:.2f}"),
        )
    )
    per_file = median_of(rss)
    result.goals.append(
        Goal(
            f"service RSS ≤ 200 bytes per registered file at {files:,} files",
            None if per_file is None else per_file <= 200,
            "median " + ("n/a" if per_file is None else f"{per_file:.0f} bytes"),
        )
    )
    return result
