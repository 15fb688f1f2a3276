"""The event benchmarks, on tmpfs: sustained registration (1), burst recovery (2), idle cost (6).

Readers run in child processes (readers.py); the bench process creates the files, so the
creator and the reader never share a GIL. Runs alternate between readers so that drift in
the machine's load hits them all alike.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench_lib.child import scandir_lstat
from bench_lib.context import Context, median_of
from bench_lib.native import compile_creator, create_paced_native
from bench_lib.procs import BenchChild
from bench_lib.report import BenchResult, Figure, Goal, Series
from bench_lib.trees import PacedRun, create_burst, create_paced, make_tree, remove_tree

__all__ = ["bench_burst", "bench_idle", "bench_registration"]

_READERS = ("tempwatch", "watchdog", "inotify")
_READER_LABELS = {
    "tempwatch": "tempwatch service",
    "watchdog": "bare watchdog (default handler)",
    "inotify": "raw inotify (inotify_simple)",
}


# -- 1. sustained registration ------------------------------------------------------------


Creator = Callable[[str, float, float], PacedRun]


def _registration_step(
    ctx: Context, kind: str, rate: int, seconds: float, creator: Creator
) -> dict[str, Any]:
    directory = ctx.fresh_dir(f"reg-{kind}-{rate}")
    try:
        with BenchChild("reader", {"kind": kind, "dir": directory}) as child:
            paced = creator(directory, rate, seconds)
            # A reader may lag, but it must catch up soon after the creator stops.
            answer = child.request(
                {"cmd": "wait_count", "n": paced.created, "timeout": max(2.0, seconds)},
                timeout_seconds=seconds + 60,
            )
    finally:
        remove_tree(directory)
    reached = answer["reached_at"]
    ok = reached is not None and answer["overflows"] == 0 and answer["rescans"] == 0
    return {
        "rate": rate,
        "achieved_rate": round(paced.rate),
        "created": paced.created,
        "registered": answer["count"],
        "missing_at_deadline": paced.created - answer["count"],
        "overflows": answer["overflows"],
        "rescans": answer["rescans"],
        "lag_seconds": None if reached is None else round(reached - paced.last_create_at, 4),
        "ok": ok,
    }


def bench_registration(ctx: Context) -> BenchResult:
    """Highest create rate each reader follows with zero loss and no rescan."""
    binary, why_not = compile_creator(ctx.workdir)
    creator: Creator = create_paced
    rates: tuple[int, ...] = (2000, 5000) if ctx.quick else (5000, 10000, 20000, 40000, 80000)
    if binary is not None:
        creator = functools.partial(create_paced_native, binary)
        if not ctx.quick:
            rates = (10000, 20000, 40000, 80000, 120000, 160000, 240000, 320000)
    seconds = ctx.seconds(5.0, 0.5)
    result = BenchResult(
        "1",
        "Sustained registration",
        {
            "rates_per_second": list(rates),
            "seconds_per_rate": seconds,
            "fs": "tmpfs",
            "creator": "C (creator.c)" if binary is not None else "Python",
        },
    )
    best: dict[str, list[float]] = {kind: [] for kind in _READERS}
    steps: dict[str, list[list[dict[str, Any]]]] = {kind: [] for kind in _READERS}
    for run in range(ctx.runs):
        for kind in _READERS:
            passed = 0.0
            run_steps: list[dict[str, Any]] = []
            for rate in rates:
                step = _registration_step(ctx, kind, rate, seconds, creator)
                run_steps.append(step)
                ctx.log(f"1 run {run + 1} {kind} {rate}/s: {step}")
                if not step["ok"]:
                    break  # higher rates only lose more; the issue asks for the highest pass
                passed = float(step["achieved_rate"])
            best[kind].append(passed)
            steps[kind].append(run_steps)
    figure = Figure(
        "highest rate, zero loss, no rescan",
        "creates/s",
        True,
        Series(_READER_LABELS["tempwatch"], best["tempwatch"]),
        [Series(_READER_LABELS[k], best[k]) for k in ("watchdog", "inotify")],
    )
    result.figures.append(figure)
    result.raw["steps"] = steps
    ratio = figure.ratio(figure.peers[1])
    result.goals.append(
        Goal(
            "tempwatch ≥ 0.9 × raw inotify ceiling",
            None if ratio is None else ratio >= 0.9,
            "ratio " + ("n/a" if ratio is None else f"{ratio:.2f}"),
        )
    )
    top = max(rates)
    if any(s and s[-1]["ok"] and s[-1]["rate"] == top for s in steps["tempwatch"]):
        result.notes.append(
            f"tempwatch passed the highest rate tried ({top}/s): its ceiling is at least that."
        )
    if binary is None:
        result.notes.append(
            f"The creator is a Python loop ({why_not}): above about 60k/s it, not the "
            "readers, is the limit."
        )
    result.notes.append(
        "Rate = what the creator achieved (it sleeps in 1 ms ticks); a reader passes a step "
        "when it holds every file within max(2 s, step length) after the last create, with no "
        "queue overflow and no rescan. Steps stop at a reader's first failure."
    )
    return result


# -- 2. burst recovery ----------------------------------------------------------------------


def bench_burst(ctx: Context) -> BenchResult:
    """Time from the last create of a burst to a registry equal to the directory."""
    files = ctx.size(200_000, 5_000)
    result = BenchResult("2", "Burst recovery", {"files": files, "fs": "tmpfs"})
    recovery: list[float] = []
    scan: list[float] = []
    runs: list[dict[str, Any]] = []
    for run in range(ctx.runs):
        directory = ctx.fresh_dir("burst")
        try:
            with BenchChild("reader", {"kind": "tempwatch", "dir": directory}) as child:
                burst = create_burst(directory, files)
                answer = child.request(
                    {"cmd": "wait_exact", "n": files, "timeout": 120}, timeout_seconds=300
                )
            started = time.perf_counter()
            found = scandir_lstat(directory)
            scan.append(time.perf_counter() - started)
        finally:
            remove_tree(directory)
        reached = answer["reached_at"]
        entry = {
            "create_seconds": round(burst.seconds, 3),
            "recovery_seconds": (
                None if reached is None else round(reached - burst.last_create_at, 4)
            ),
            "missing": answer["missing"],
            "ghosts": answer["ghosts"],
            "overflows": answer["overflows"],
            "rescans": answer["rescans"],
            "scanned": len(found),
        }
        runs.append(entry)
        ctx.log(f"2 run {run + 1}: {entry}")
        if reached is not None:
            recovery.append(reached - burst.last_create_at)
    result.raw["runs"] = runs
    figure = Figure(
        f"last create → registry == directory, {files:,} files",
        "s",
        False,
        Series(
            "tempwatch service",
            recovery,
            "" if len(recovery) == ctx.runs else "some runs never caught up",
        ),
        [Series("one scandir + lstat pass", scan)],
    )
    result.figures.append(figure)
    ratio = figure.ratio(figure.peers[0])
    exact = all(r["missing"] == 0 and r["ghosts"] == 0 for r in runs)
    result.goals.append(
        Goal(
            "recovery ≤ 0.5 × one scandir + lstat pass (issue 12; was 1.5)",
            None if ratio is None else ratio <= 0.5,
            "ratio " + ("n/a" if ratio is None else f"{ratio:.2f}"),
        )
    )
    result.goals.append(
        Goal(
            "zero missing and zero ghost entries",
            exact and len(recovery) == ctx.runs,
            "; ".join(f"run {i + 1}: {r['missing']} missing, {r['ghosts']} ghosts, "
                      f"{r['overflows']} overflows, {r['rescans']} rescans"
                      for i, r in enumerate(runs)),
        )
    )
    return result


# -- 6. idle cost ---------------------------------------------------------------------------


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of every thread of `proc`, in nanosecond resolution where schedstat exists.

    psutil's cpu_times() counts in clock ticks (10 ms here): too coarse for an idle process.
    """
    try:
        tids = os.listdir(f"/proc/{proc.pid}/task")
    except OSError:
        tids = []
    total_ns = 0
    for tid in tids:
        try:
            with open(f"/proc/{proc.pid}/task/{tid}/schedstat", encoding="ascii") as schedstat:
                total_ns += int(schedstat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile; nothing ends in an idle process
    if not total_ns:
        times = proc.cpu_times()
        return float(times.user + times.system)
    return total_ns / 1e9


def _settle(proc: psutil.Process, limit_seconds: float) -> bool:
    """Wait until the process uses under 2% of a core over one second, at most limit_seconds."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        before = _cpu_seconds(proc)
        time.sleep(1.0)
        if _cpu_seconds(proc) - before < 0.02:
            return True
    return False


def _idle_run(ctx: Context, kind: str, root: str, seconds: float) -> tuple[float, dict[str, Any]]:
    with BenchChild("reader", {"kind": kind, "dir": root}, ready_timeout_seconds=300) as child:
        proc = psutil.Process(child.pid)
        settled = _settle(proc, ctx.seconds(10.0, 3.0))
        before, started = _cpu_seconds(proc), time.monotonic()
        time.sleep(seconds)
        used, wall = _cpu_seconds(proc) - before, time.monotonic() - started
        counters = child.request({"cmd": "stat"}, timeout_seconds=60)
    percent = 100.0 * used / wall
    return percent, {
        "cpu_seconds": round(used, 4),
        "wall_seconds": round(wall, 2),
        "settled_before_measuring": settled,
        "start_seconds": round(child.ready["start_seconds"], 2),
        **counters,
    }


def bench_idle(ctx: Context) -> BenchResult:
    """CPU used while nothing happens, watching a large tree."""
    dirs, files_per_dir = ctx.size(10_000, 200), 10
    seconds = ctx.seconds(30.0, 2.0)
    result = BenchResult(
        "6",
        "Idle cost",
        {"subdirectories": dirs, "files": dirs * files_per_dir, "seconds": seconds, "fs": "tmpfs"},
    )
    root = ctx.fresh_dir("idle")
    samples: dict[str, list[float]] = {"tempwatch": [], "watchdog": []}
    runs: dict[str, list[dict[str, Any]]] = {"tempwatch": [], "watchdog": []}
    try:
        make_tree(root, dirs * files_per_dir, files_per_dir=files_per_dir)
        for run in range(ctx.runs):
            for kind in samples:
                percent, detail = _idle_run(ctx, kind, root, seconds)
                samples[kind].append(percent)
                runs[kind].append(detail)
                ctx.log(f"6 run {run + 1} {kind}: {percent:.3f}% {detail}")
    finally:
        remove_tree(root)
    result.raw["runs"] = runs
    figure = Figure(
        "CPU while idle",
        "% of a core",
        False,
        Series("tempwatch service", samples["tempwatch"]),
        [Series("bare watchdog, default mask", samples["watchdog"])],
    )
    result.figures.append(figure)
    mine = median_of(samples["tempwatch"])
    result.goals.append(
        Goal(
            "tempwatch idle ≤ 0.1% of a core",
            None if mine is None else mine <= 0.1,
            "median " + ("n/a" if mine is None else f"{mine:.3f}%"),
        )
    )
    if not all(d["settled_before_measuring"] for d in runs["watchdog"]):
        result.notes.append(
            "The bare watchdog never settled (under 2% of a core for a second) before "
            "measuring: its start-up churn is part of what it costs while idle."
        )
    return result
