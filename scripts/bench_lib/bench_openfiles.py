"""Benchmark 4, the open-file check: is each candidate file held open by some process?

Extra idle processes hold files open under base_dir (the expensive case for tempwatch,
which stats only descriptors under base_dir). Three ways to answer for N candidates:

- tempwatch: `LazyOpenFiles`, the per-pass check: one /proc sweep, then set lookups;
- a bare psutil sweep: `open_files()` of every process once, then set lookups;
- a bare /proc sweep: `readlink` of every /proc/PID/fd/N once, the floor for any sweep;
- the naive per-file sweep: for each candidate, every process's `open_files()` again.

The naive sweep is timed on as many candidates as fit in a time budget and extrapolated
linearly (its cost is one full sweep per candidate that is not open).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench_lib.context import Context
from bench_lib.procs import BenchChild
from bench_lib.report import BenchResult, Figure, Goal, Series
from bench_lib.trees import CREATE_FLAGS, remove_tree
from tempwatch.inuse import InUse, LeaseProbe
from tempwatch.openfiles import LazyOpenFiles

__all__ = ["bench_openfiles"]


def _tempwatch(base: str, candidates: list[str]) -> int:
    open_paths = LazyOpenFiles(base)
    return sum(path in open_paths for path in candidates)


def _lease_probe(base: str, candidates: list[str]) -> int:
    """The kernel's answer per candidate, as the deleter asks it right before an unlink."""
    probe, in_use = LeaseProbe(), 0
    for path in candidates:
        parent, name = os.path.split(path)
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = probe.acquire(name, dir_fd)
            if fd is not None:
                os.fstat(fd)
                os.close(fd)
        except InUse:
            in_use += 1
        finally:
            os.close(dir_fd)
    if probe.unavailable is not None:
        raise RuntimeError(f"leases unavailable: {probe.unavailable}")
    return in_use


def _bare_psutil(base: str, candidates: list[str]) -> int:
    held: set[str] = set()
    for proc in psutil.process_iter():
        try:
            held.update(item.path for item in proc.open_files())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sum(path in held for path in candidates)


def _bare_readlink(base: str, candidates: list[str]) -> int:
    held: set[str] = set()
    prefix = base.rstrip("/") + "/"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd/"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir + fd)
            except OSError:
                continue
            if target.startswith(prefix):
                held.add(target)
    return sum(path in held for path in candidates)


def _is_open_naive(path: str) -> bool:
    for proc in psutil.process_iter():
        try:
            if any(item.path == path for item in proc.open_files()):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def _timed(
    check: Callable[[str, list[str]], int], base: str, candidates: list[str]
) -> tuple[float, int]:
    started = time.perf_counter()
    found = check(base, candidates)
    return time.perf_counter() - started, found


def _naive(candidates: list[str], budget_seconds: float) -> tuple[float, int, int]:
    """(estimated seconds for all candidates, open found among those checked, checked)."""
    started = time.perf_counter()
    found = checked = 0
    for path in candidates:
        found += _is_open_naive(path)
        checked += 1
        if time.perf_counter() - started > budget_seconds:
            break
    elapsed = time.perf_counter() - started
    return elapsed * len(candidates) / checked, found, checked


def _make_candidates(base: str, count: int, held: list[str]) -> list[str]:
    """`count` candidates: a few of them held open (to check the answers agree), the rest not."""
    directory = os.path.join(base, "candidates")
    os.makedirs(directory, exist_ok=True)
    n_held = min(len(held), max(1, count // 100))
    fresh = []
    for index in range(count - n_held):
        path = os.path.join(directory, f"c{count}-{index:05d}")
        os.close(os.open(path, CREATE_FLAGS, 0o600))
        fresh.append(path)
    return held[:n_held] + fresh


def bench_openfiles(ctx: Context) -> BenchResult:
    """Per-pass open-file check cost for few and many candidates, with many idle holders."""
    procs, files_each = ctx.size(200, 20), ctx.size(50, 10)
    sizes = (10, 1000) if not ctx.quick else (10, 100)
    budget = ctx.seconds(4.0, 0.5)
    result = BenchResult(
        "4",
        "Open-file check",
        {"holder_processes": procs, "files_each": files_each, "candidates": list(sizes)},
    )
    base = os.path.realpath(ctx.fresh_dir("openfiles"))
    methods: dict[str, dict[int, list[float]]] = {
        "tempwatch": {n: [] for n in sizes},
        "psutil": {n: [] for n in sizes},
        "naive": {n: [] for n in sizes},
        "lease": {n: [] for n in sizes},
        "readlink": {n: [] for n in sizes},
    }
    answers: list[dict[str, Any]] = []
    try:
        with BenchChild(
            "holders",
            {"dir": base, "procs": procs, "files_each": files_each},
            ready_timeout_seconds=180,
        ) as holders:
            if not holders.ready["ready"]:
                raise RuntimeError(f"holders not ready: {holders.ready}")
            held = sorted(
                os.path.join(base, d, name)
                for d in os.listdir(base)
                if d.startswith("h")
                for name in os.listdir(os.path.join(base, d))
            )
            candidates = {n: _make_candidates(base, n, held) for n in sizes}
            processes = len(psutil.pids())
            for run in range(ctx.runs):
                for n in sizes:
                    mine, mine_found = _timed(_tempwatch, base, candidates[n])
                    bare, bare_found = _timed(_bare_psutil, base, candidates[n])
                    floor, floor_found = _timed(_bare_readlink, base, candidates[n])
                    methods["readlink"][n].append(floor)
                    naive, naive_found, checked = _naive(candidates[n], budget)
                    lease, lease_found = _timed(_lease_probe, base, candidates[n])
                    methods["lease"][n].append(lease)
                    methods["tempwatch"][n].append(mine)
                    methods["psutil"][n].append(bare)
                    methods["naive"][n].append(naive)
                    answer = {
                        "candidates": n,
                        "open_found": {
                            "tempwatch": mine_found, "psutil": bare_found, "readlink": floor_found
                        },
                        "naive_checked": checked,
                        "naive_open_found": naive_found,
                        "lease_in_use_found": lease_found,
                    }
                    answers.append(answer)
                    ctx.log(f"4 run {run + 1} n={n}: tw {mine:.4f}s psutil {bare:.4f}s "
                            f"naive≈{naive:.2f}s {answer}")
    finally:
        remove_tree(base)
    result.params["processes_on_machine"] = processes
    result.raw["answers"] = answers
    for n in sizes:
        naive_note = "extrapolated" if any(a["naive_checked"] < n for a in answers
                                            if a["candidates"] == n) else ""
        result.figures.append(
            Figure(
                f"check, {n:,} candidates",
                "s",
                False,
                Series("tempwatch LazyOpenFiles", methods["tempwatch"][n]),
                [
                    Series("one bare psutil sweep", methods["psutil"][n]),
                    Series("naive per-file sweep", methods["naive"][n], naive_note),
                    Series("lease probe per candidate (the deleter's check)",
                           methods["lease"][n]),
                    Series("bare /proc/*/fd readlink sweep", methods["readlink"][n]),
                ],
            )
        )
    _goals(result, sizes)
    lease_many = sorted(methods["lease"][sizes[1]])
    if lease_many:
        per = lease_many[len(lease_many) // 2] / sizes[1] * 1e6
        result.raw["lease_us_per_candidate"] = per
        result.notes.append(
            f"lease probe: {per:.1f} µs per candidate (open, F_SETLEASE, fstat, close), paid "
            "by the deleter for each file it is about to unlink, on top of the one sweep."
        )
    if any(len(set(a["open_found"].values())) > 1 for a in answers):
        result.notes.append("the sweeps disagreed on which candidates are open!")
    return result


def _goals(result: BenchResult, sizes: tuple[int, int]) -> None:
    few, many = result.figures
    few_median, many_median = few.subject.median, many.subject.median
    growth = None if not few_median or many_median is None else many_median / few_median
    result.goals.append(
        Goal(
            f"cost independent of the candidate count ({sizes[1]:,} vs {sizes[0]:,})",
            None if growth is None else growth <= 1.2,
            "ratio " + ("n/a" if growth is None else f"{growth:.2f} (judged: ≤ 1.2)"),
        )
    )
    for figure in (few, many):
        ratio = figure.ratio(figure.peers[0])
        result.goals.append(
            Goal(
                f"{figure.label}: ≤ 1.2 × one bare psutil sweep",
                None if ratio is None else ratio <= 1.2,
                "ratio " + ("n/a" if ratio is None else f"{ratio:.2f}"),
            )
        )
        floor = figure.ratio(figure.peers[3])
        result.goals.append(
            Goal(
                f"{figure.label}: ≤ 1.1 × a bare /proc readlink sweep",
                None if floor is None else floor <= 1.1,
                "ratio " + ("n/a" if floor is None else f"{floor:.2f}"),
            )
        )
