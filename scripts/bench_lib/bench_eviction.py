"""Benchmark 9, burst eviction: a flood into a directory served with max_files = 1000.

`tempwatch run` serves a fresh directory on tmpfs with `max_files = 1000` and everything
else as shipped: INFO level, JSON lines to a log file (one line per deletion), the default
in-use check (the /proc sweep and a write lease per file). The bench process then creates
N empty files as fast as it can and times from the last create until the directory is
within the limit again. The peer is `find -delete` of the same number of files (those
tempwatch deleted) on a copy. Checked afterwards: the log holds exactly one "deleted" line
per file gone, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench_lib.context import Context, median_of
from bench_lib.procs import child_env, run_command
from bench_lib.report import BenchResult, Figure, Goal, Series
from bench_lib.trees import CREATE_FLAGS, create_burst, remove_tree

__all__ = ["bench_eviction"]

_MAX_FILES = 1000
_POLL_SECONDS = 0.005
_TMPFS_DIRENT_BYTES = 20  # tmpfs counts a directory's size as 20 bytes per entry
_LOCK_FILE = ".tempwatch.lock"


def _entries(directory: str) -> int:
    """Entries in `directory` other than the service's lock file."""
    with os.scandir(directory) as found:
        return sum(1 for entry in found if entry.name != _LOCK_FILE)


def _wait_within(directory: str, limit: int, timeout_seconds: float) -> float | None:
    """time.monotonic() at which `directory` first held at most `limit` files, or None.

    On tmpfs the directory's size counts its entries, so the poll is one lstat; a scandir
    confirms before the time is taken. Elsewhere every poll is a scandir.
    """
    deadline = time.monotonic() + timeout_seconds
    cheap = os.lstat(directory).st_size % _TMPFS_DIRENT_BYTES == 0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if cheap:
            maybe = os.lstat(directory).st_size // _TMPFS_DIRENT_BYTES - 1 <= limit
        else:
            maybe = True
        if maybe and _entries(directory) <= limit:
            return now
        time.sleep(_POLL_SECONDS)
    return None


def _wait_started(log_path: str, proc: subprocess.Popen[bytes], timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tempwatch run exited {proc.returncode} before it started")
        try:
            with open(log_path, encoding="utf-8") as log:
                if any(json.loads(line).get("event") == "started" for line in log):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"tempwatch run did not log its start within {timeout_seconds}s")


def _deleted_lines(log_path: str) -> list[str]:
    with open(log_path, encoding="utf-8") as log:
        records = [json.loads(line) for line in log]
    return [r["path"] for r in records if r.get("event") == "deleted"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _tempwatch_run(ctx: Context, files: int) -> dict[str, Any]:
    directory = ctx.fresh_dir("evict")
    log_path = os.path.join(ctx.workdir, f"evict-{os.getpid()}-{time.monotonic_ns()}.log")
    tempwatch = os.path.join(os.path.dirname(sys.executable), "tempwatch")
    command = [
        tempwatch, "run", "--base-dir", directory, "--max-files", str(_MAX_FILES),
        "--log-format", "json", "--log-file", log_path, "--log-level", "INFO",
    ]
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=child_env(), start_new_session=True,
    )
    try:
        _wait_started(log_path, proc, 60)
        burst = create_burst(directory, files)
        reached = _wait_within(directory, _MAX_FILES, 600)
        if reached is None:
            raise RuntimeError(f"the directory never came back within {_MAX_FILES} files")
        _stop(proc)  # it may go on down to the low watermark meanwhile: count after
        left = _entries(directory)
    finally:
        _stop(proc)
        remove_tree(directory)
    deleted = _deleted_lines(log_path)
    os.unlink(log_path)
    gone = files - left
    if proc.returncode != 0:
        raise RuntimeError(f"tempwatch run exited {proc.returncode}")
    if len(deleted) != gone or len(set(deleted)) != len(deleted):
        raise RuntimeError(f"{gone} files gone but {len(deleted)} deletion lines logged")
    return {
        "create_seconds": round(burst.seconds, 3),
        "seconds": reached - burst.last_create_at,
        "deleted": gone,
        "left": left,
    }


def _find_run(ctx: Context, count: int) -> float:
    directory = ctx.fresh_dir("evict-find")
    try:
        prefix = f"{directory}/f"
        for index in range(count):
            os.close(os.open(f"{prefix}{index:07d}", CREATE_FLAGS, 0o600))
        seconds, done = run_command(
            ["find", directory, "-type", "f", "-delete"], timeout_seconds=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"find exited {done.returncode}")
    finally:
        remove_tree(directory)
    return seconds


def bench_eviction(ctx: Context) -> BenchResult:
    """Time for the service to bring a flooded directory back within max_files."""
    files = ctx.size(100_000, 5_000)
    result = BenchResult(
        "9",
        "Burst eviction",
        {"files": files, "max_files": _MAX_FILES, "log": "INFO, JSON to a file", "fs": "tmpfs"},
    )
    mine: list[float] = []
    finds: list[float] = []
    rates: list[float] = []
    runs: list[dict[str, Any]] = []
    for run in range(ctx.runs):
        entry = _tempwatch_run(ctx, files)
        entry["find_seconds"] = _find_run(ctx, entry["deleted"])
        mine.append(entry["seconds"])
        finds.append(entry["find_seconds"])
        rates.append(entry["deleted"] / entry["seconds"] if entry["seconds"] > 0 else 0.0)
        runs.append(entry)
        ctx.log(f"9 run {run + 1}: {entry}")
    result.raw["runs"] = runs
    figure = Figure(
        f"last create → within max_files = {_MAX_FILES}, {files:,} files",
        "s",
        False,
        Series("tempwatch run (INFO JSON log file, in-use check)", mine),
        [Series("find -delete of the same count, on a copy", finds)],
    )
    result.figures.append(figure)
    result.figures.append(
        Figure("deletions per second after the burst", "files/s", True, Series("tempwatch", rates))
    )
    ratio = figure.ratio(figure.peers[0])
    result.goals.append(
        Goal(
            "burst eviction ≤ 2 × find -delete",
            None if ratio is None else ratio <= 2.0,
            "ratio " + ("n/a" if ratio is None else f"{ratio:.2f}")
            + f"; {median_of(rates) or 0:,.0f} deletions/s",
        )
    )
    result.notes.append(
        "The service's time runs from the last create to the first poll (every 5 ms) that "
        "finds the directory within the limit; it includes the creates still queued in "
        "inotify. Every run checks that the log holds exactly one deletion line per file "
        "gone. find's time includes its process start."
    )
    return result
