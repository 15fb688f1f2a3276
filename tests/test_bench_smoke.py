"""Smoke test of scripts/bench: the quick run completes and reports every benchmark.

No timing is asserted (benchmarks never go in tests as timed asserts); what is checked is
that the run succeeds, writes both files where it is told to and nowhere else, reports
every benchmark with at least three runs per figure, and leaves no process or file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench"
ALL_BENCHMARKS = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}

sys.path.insert(0, str(REPO / "scripts"))
from bench_lib.procs import BenchChild  # noqa: E402  (scripts/ is not a package root)
from support import wait_for  # noqa: E402


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A private work directory on tmpfs, where the event benchmarks belong."""
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else str(tmp_path)
    path = Path(tempfile.mkdtemp(prefix="bench-smoke-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _snapshot(path: Path) -> dict[str, int]:
    if not path.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in path.iterdir()}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if text in cmdline:
            found.append(f"{proc.pid}: {cmdline[:200]}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_bench_reports_every_benchmark(tmp_path: Path, workdir: Path) -> None:
    out = tmp_path / "results"
    repo_results = _snapshot(REPO / "bench-results")

    done = subprocess.run(
        [str(BENCH), "--quick", "--out", str(out), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-4000:]
    table = (out / "latest.md").read_text()
    report = json.loads((out / "latest.json").read_text())
    assert set(report["benchmarks"]) == ALL_BENCHMARKS
    for key, bench in report["benchmarks"].items():
        assert bench["error"] is None, (key, bench["error"])
        assert bench["figures"], key
        assert bench["goals"], key
        for figure in bench["figures"]:
            subject = figure["subject"]
            # A run in which the measured event never happened has no sample: the figure
            # must then say how many runs it lacks.
            assert subject["runs"] >= 3 or "never" in subject["note"], (key, figure["label"])
            for peer in figure["peers"]:
                assert peer["runs"] >= 3 or "missing" in peer["note"], (key, peer)
        assert f"| {key} |" in table
    machine = report["machine"]
    assert machine["cores"] and machine["kernel"] and machine["filesystem"]
    assert report["date"] and report["mode"] == "quick"
    assert done.stdout.strip() == table.strip()  # the table is printed too
    # Nothing left behind: the repo's results untouched, the work directory emptied, and no
    # child (readers, holders, tools) still running with our work directory in its args.
    assert _snapshot(REPO / "bench-results") == repo_results
    assert list(workdir.iterdir()) == []
    assert _processes_mentioning(str(workdir)) == []


def _is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_child_that_will_not_stop_is_killed_with_everything_it_forked(tmp_path: Path) -> None:
    # The holders child forks processes that hold files open. Stopping the whole group
    # (SIGSTOP) means none can exit on its own when its stdin closes: only the kill of the
    # process group on close can end them, as it must when a benchmark fails part way.
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with BenchChild("holders", {"dir": str(tmp_path), "procs": 3, "files_each": 2}) as child:
            forked = child.ready["pids"]
            assert len(forked) == 3 and child.ready["ready"]
            os.killpg(child.pid, signal.SIGSTOP)
            child_pid = child.pid
            raise RuntimeError("benchmark failed")
    assert child.proc.returncode == -signal.SIGKILL
    assert _is_gone(child_pid)
    # SIGKILL is delivered at once, but dying takes the kernel a moment.
    wait_for(
        lambda: all(_is_gone(pid) for pid in forked),
        timeout=5,
        message=f"the holders {forked} to die with the bench child",
    )
