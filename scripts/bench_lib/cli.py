"""`scripts/bench [--quick] [--only 1,3] [--runs N] [--out DIR] [--workdir DIR]`.

Runs the benchmarks in the order 3, 4, 5, 7, 1, 2, 6, 8, 9, 10 (cheapest set-up first), prints the
markdown table and writes latest.md and latest.json into the output directory. A benchmark
that fails is reported as failed in both files and the others still run; the exit code is
then 1. The work directory (tmpfs) is removed at the end, whatever happened.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_lib.bench_commands import bench_commands
from bench_lib.bench_events import bench_burst, bench_idle, bench_registration
from bench_lib.bench_eviction import bench_eviction
from bench_lib.bench_expiry import bench_expiry
from bench_lib.bench_memory import bench_memory
from bench_lib.bench_openfiles import bench_openfiles
from bench_lib.bench_pressure import bench_pressure
from bench_lib.bench_startup import bench_startup
from bench_lib.context import Context
from bench_lib.report import BenchResult, machine_info, render_json, render_markdown
from bench_lib.trees import remove_tree

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS: dict[str, tuple[str, Callable[[Context], BenchResult]]] = {
    "3": ("Expiry throughput", bench_expiry),
    "4": ("Open-file check", bench_openfiles),
    "5": ("Memory", bench_memory),
    "7": ("Startup", bench_startup),
    "1": ("Sustained registration", bench_registration),
    "2": ("Burst recovery", bench_burst),
    "6": ("Idle cost", bench_idle),
    "8": ("Disk pressure", bench_pressure),
    "9": ("Burst eviction", bench_eviction),
    "10": ("Command start-up", bench_commands),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a minute or two")
    parser.add_argument("--only", metavar="LIST", help="comma-separated benchmark numbers")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--out", metavar="DIR", default="bench-results", help="output dir")
    parser.add_argument(
        "--workdir", metavar="DIR", default="/dev/shm", help="tmpfs to work in (default /dev/shm)"
    )
    return parser


def _caller_path(path: str) -> Path:
    # scripts/bench changes to the repo root first; relative paths mean the caller's cwd.
    base = os.environ.get("BENCH_CALLER_CWD", os.getcwd())
    return Path(base, path) if not os.path.isabs(path) else Path(path)


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    wanted = [key.strip() for key in only.split(",") if key.strip()]
    unknown = [key for key in wanted if key not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"bench: unknown benchmark(s) {', '.join(unknown)}; have 1-10")
    return [key for key in BENCHMARKS if key in wanted]


def _run_one(key: str, ctx: Context) -> BenchResult:
    title, bench = BENCHMARKS[key]
    ctx.log(f"== {key}. {title}")
    started = time.monotonic()
    try:
        result = bench(ctx)
    except Exception as e:  # one broken benchmark must not hide the others' results
        traceback.print_exc(file=sys.stderr)
        result = BenchResult(key, title, {}, error=f"{type(e).__name__}: {e}")
    result.seconds = time.monotonic() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmarks and write the report; 1 if any failed."""
    args = _parser().parse_args(argv)
    if args.runs < 1:
        raise SystemExit("bench: --runs must be at least 1")
    keys = _selected(args.only)
    out = _caller_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="tempwatch-bench-", dir=str(_caller_path(args.workdir)))
    ctx = Context(workdir=workdir, quick=args.quick, runs=args.runs)
    date = dt.datetime.now(dt.timezone.utc)
    machine = machine_info(workdir)
    results: list[BenchResult] = []
    try:
        for key in keys:
            results.append(_run_one(key, ctx))
    finally:
        remove_tree(workdir)
    results.sort(key=lambda r: int(r.key))
    mode = "quick" if args.quick else "full"
    table = render_markdown(results, machine, date, mode)
    (out / "latest.md").write_text(table, encoding="utf-8")
    (out / "latest.json").write_text(render_json(results, machine, date, mode), encoding="utf-8")
    print(table)
    print(f"written: {out / 'latest.md'}, {out / 'latest.json'}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0
