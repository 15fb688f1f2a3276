"""Benchmark 3, expiry throughput: remove N aged files, tempwatch against the usual tools.

Every tool gets a fresh copy of the same tree (subdirectories of 1,000 files, atime and
mtime two hours ago) and the same rule (older than one hour). Wall time includes each
tool's own start-up, since that is what a cron job or a timer pays. Checked afterwards:
the tool removed every file.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable

from bench_lib.context import Context, median_of
from bench_lib.procs import child_env, run_command
from bench_lib.report import BenchResult, Figure, Goal, Series
from bench_lib.trees import age_tree, count_files, make_tree, remove_tree

__all__ = ["bench_expiry"]

_AGE_SECONDS = 2 * 3600
_MAX_AGE = "1h"
_TIMEOUT_SECONDS = 600


def _tempwatch(root: str, ctx: Context, threads: int = 1) -> float:
    tempwatch = os.path.join(os.path.dirname(sys.executable), "tempwatch")
    command = [
        tempwatch, "clean", "--base-dir", root, "--max-age", _MAX_AGE,
        "--max-files", "0", "--max-file-size", "0", "-q",
    ]
    # The tree is aged by mtime, as find -mmin and the others judge it; the default age
    # by last use also counts ctime, which utime cannot set back.
    settings = {"TEMP_FILE_CLEANUP_THREADS": str(threads), "TEMP_FILE_AGE_BY": "modified"}
    return _timed(command, settings)


def _tempwatch_4_threads(root: str, ctx: Context) -> float:
    return _tempwatch(root, ctx, threads=4)


def _tempwatch_sweep_only(root: str, ctx: Context) -> float:
    tempwatch = os.path.join(os.path.dirname(sys.executable), "tempwatch")
    config = os.path.join(ctx.workdir, "bench-no-lease.toml")
    with open(config, "w", encoding="utf-8") as out:
        out.write("[cleanup]\nlease_probe = false\n")
    command = [
        tempwatch, "clean", "-c", config, "--base-dir", root, "--max-age", _MAX_AGE,
        "--max-files", "0", "--max-file-size", "0", "-q",
    ]
    return _timed(command, {"TEMP_FILE_AGE_BY": "modified"})


def _find(root: str, ctx: Context) -> float:
    return _timed(["find", root, "-type", "f", "-mmin", "+60", "-delete"])


def _floor(root: str, ctx: Context) -> float:
    return _timed([sys.executable, _FLOOR_SCRIPT, root])


def _floor_with_lease(root: str, ctx: Context) -> float:
    return _timed([sys.executable, _FLOOR_SCRIPT, root, "--lease"])


_FLOOR_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.py")


def _systemd_tmpfiles(root: str, ctx: Context) -> float:
    # "e": clean an existing directory by age; "m:" judges files by mtime only, as the
    # others do (utime cannot age ctime).
    rules = os.path.join(ctx.workdir, "bench-tmpfiles.conf")
    with open(rules, "w", encoding="utf-8") as out:
        out.write(f"e {root} - - - m:{_MAX_AGE}\n")
    return _timed(["systemd-tmpfiles", "--clean", rules])


def _tmpreaper(root: str, ctx: Context) -> float:
    # Its default --runtime of 55 s would abort a large run half way.
    return _timed([_tmpreaper_path() or "tmpreaper", "--mtime", "--runtime=0", _MAX_AGE, root])


def _seed(root: str, ctx: Context) -> float:
    """The seed's algorithm: a dict of path -> time, then an os.remove loop over it.

    The dict is filled before the clock starts, as the seed's registrations filled it;
    what is timed is its cleanup loop.
    """
    files: dict[str, float] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            files[path] = os.lstat(path).st_mtime
    started = time.perf_counter()
    now = time.time()
    for path, registered_at in list(files.items()):
        if now - registered_at > 3600:
            os.remove(path)
            del files[path]
    return time.perf_counter() - started


def _timed(command: list[str], settings: dict[str, str] | None = None) -> float:
    env = child_env() | (settings or {})
    seconds, done = run_command(command, timeout_seconds=_TIMEOUT_SECONDS, env=env)
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {error}")
    return seconds


def _tmpreaper_path() -> str | None:
    found = shutil.which("tmpreaper")
    if found is None and os.path.exists("/usr/sbin/tmpreaper"):
        found = "/usr/sbin/tmpreaper"
    return found


_WITH_LEASE = "tempwatch clean (open-file check on)"
_SWEEP_ONLY = "tempwatch clean (sweep only, no lease)"
_FOUR_THREADS = "tempwatch clean, cleanup.threads = 4"
_FIND = "find -mmin +60 -delete"
_SYSTEMD = "systemd-tmpfiles --clean"
_TMPREAPER = "tmpreaper --mtime"
_FLOOR = "Python floor: scandir, lstat, lstat, unlinkat, a line"
_FLOOR_LEASE = "Python floor with the lease: open, fstat, F_SETLEASE, unlinkat, close"

_TOOLS: dict[str, tuple[Callable[[str, Context], float], Callable[[], bool]]] = {
    _WITH_LEASE: (_tempwatch, lambda: True),
    _SWEEP_ONLY: (_tempwatch_sweep_only, lambda: True),
    _FOUR_THREADS: (_tempwatch_4_threads, lambda: True),
    _FIND: (_find, lambda: shutil.which("find") is not None),
    _SYSTEMD: (_systemd_tmpfiles, lambda: shutil.which("systemd-tmpfiles") is not None),
    _TMPREAPER: (_tmpreaper, lambda: _tmpreaper_path() is not None),
    "seed: dict + os.remove loop": (_seed, lambda: True),
    _FLOOR: (_floor, lambda: True),
    _FLOOR_LEASE: (_floor_with_lease, lambda: True),
}


def _one(ctx: Context, name: str, files: int) -> tuple[float, int]:
    tool, _available = _TOOLS[name]
    root = ctx.fresh_dir("expiry")
    try:
        make_tree(root, files)
        age_tree(root, _AGE_SECONDS)
        seconds = tool(root, ctx)
        left = count_files(root)
    finally:
        remove_tree(root)
    return seconds, left


def bench_expiry(ctx: Context) -> BenchResult:
    """Wall time to expire `files` aged files, per tool."""
    files = ctx.size(100_000, 2_000)
    result = BenchResult(
        "3", "Expiry throughput", {"files": files, "files_per_dir": 1000, "fs": "tmpfs"}
    )
    samples: dict[str, list[float]] = {name: [] for name in _TOOLS}
    left_over: dict[str, list[int]] = {name: [] for name in _TOOLS}
    notes: dict[str, str] = {}
    for run in range(ctx.runs):
        for name, (_tool, available) in _TOOLS.items():
            if not available():
                notes[name] = "missing on this machine"
                continue
            seconds, left = _one(ctx, name, files)
            samples[name].append(seconds)
            left_over[name].append(left)
            ctx.log(f"3 run {run + 1} {name}: {seconds:.3f}s, {left} files left")
    for name, lefts in left_over.items():
        if any(lefts):
            notes[name] = f"left files behind: {lefts}"
    result.raw["files_left"] = left_over
    subject = Series(_WITH_LEASE, samples[_WITH_LEASE], notes.get(_WITH_LEASE, ""))
    peers = [Series(n, samples[n], notes.get(n, "")) for n in _TOOLS if n != _WITH_LEASE]
    result.figures.append(Figure(f"wall time, {files:,} files", "s", False, subject, peers))
    _goals(result, samples)
    with_lease, sweep_only = median_of(samples[_WITH_LEASE]), median_of(samples[_SWEEP_ONLY])
    if with_lease is not None and sweep_only is not None:
        per_file = (with_lease - sweep_only) / files * 1e6
        result.raw["lease_cost_us_per_file"] = per_file
        result.notes.append(
            f"the lease probe (open, F_SETLEASE, fstat, close per file) costs {per_file:.1f} µs "
            "per file against the sweep-only pass (median of each)."
        )
    result.notes.append(
        "tempwatch clean prints a line per deletion (sent to /dev/null here) and sweeps "
        "/proc for open files; the seed's time excludes filling its dict. The 4-thread run "
        "(cleanup.threads) gives each thread whole directories; on tmpfs the Python around "
        "each unlink holds the GIL, so it measures the cost of the threads more than a gain."
    )
    result.notes.append(
        "The two Python floors (scripts/bench_lib/floor.py) do only the system calls of a "
        "clean and print a line per file, in a loop over directory fds, without policy, "
        "registry or log: the gap from tempwatch to them is tempwatch's own, the gap from "
        "them to find is the interpreter's and, with the lease, the three system calls the "
        "in-use check adds per file."
    )
    return result


def _goals(result: BenchResult, samples: dict[str, list[float]]) -> None:
    mine = median_of(samples[_WITH_LEASE])

    def ratio(name: str) -> float | None:
        theirs = median_of(samples[name])
        return None if mine is None or not theirs else mine / theirs

    to_find = ratio(_FIND)
    find = median_of(samples[_FIND])
    floors = [median_of(samples[name]) for name in (_FLOOR, _FLOOR_LEASE)]
    reach = (
        ""
        if find is None or None in floors
        else "; the Python floor is {:.2f} × find, {:.2f} × with the lease".format(
            *(floor / find for floor in floors if floor is not None)
        )
    )
    result.goals.append(
        Goal(
            "tempwatch clean ≤ 1.25 × find",
            None if to_find is None else to_find <= 1.25,
            "ratio " + ("n/a (find missing)" if to_find is None else f"{to_find:.2f}") + reach,
        )
    )
    for name in (_TMPREAPER, _SYSTEMD):
        theirs, short = ratio(name), name.split()[0]
        result.goals.append(
            Goal(
                f"tempwatch clean faster than {short}",
                None if theirs is None else theirs < 1.0,
                "ratio " + (f"n/a ({short} missing)" if theirs is None else f"{theirs:.2f}"),
            )
        )
