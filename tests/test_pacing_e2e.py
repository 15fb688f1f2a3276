"""The four carried-over settings as a user meets them: environment, check-config, clean, run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import wait_for

from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.instance import LOCK_FILE_NAME
from tempwatch.service import Service

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tomli backport has the same API
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600.0
_CARRIED_OVER = {
    "TEMP_FILE_CLEANUP_BATCH_SIZE": "100",
    "TEMP_FILE_CLEANUP_THREADS": "4",
    "TEMP_FILE_CLEANUP_TIMEOUT": "30",
    "METRICS_BACKEND": "prometheus",
}


def _tempwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMP_FILE", "MAX_"))}
    clean_env.pop("METRICS_BACKEND", None)
    clean_env.pop("TEMPWATCH_CONFIG", None)
    clean_env["PYTHONPATH"] = str(REPO)
    clean_env["TEMP_FILE_AGE_BY"] = "modified"  # the trees are aged by mtime (ctime cannot be)
    clean_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tempwatch", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean_env,
        timeout=120,
    )


def _old_tree(base: Path, files: int, dirs: int) -> None:
    then = time.time() - 2 * HOUR
    for n in range(files):
        directory = base / f"d{n % dirs}"
        directory.mkdir(exist_ok=True)
        path = directory / f"f{n}"
        path.write_bytes(b"x")
        os.utime(path, (then, then))


def _files(base: Path) -> int:
    return sum(1 for p in base.rglob("*") if p.is_file() and p.name != LOCK_FILE_NAME)


def test_check_config_shows_the_carried_over_environment(tmp_path: Path) -> None:
    done = _tempwatch("check-config", "--base-dir", str(tmp_path), env=_CARRIED_OVER)
    assert done.returncode == 0, done.stderr
    effective = tomllib.loads(done.stdout)
    assert effective["cleanup"]["batch_size"] == 100
    assert effective["cleanup"]["threads"] == 4
    assert effective["cleanup"]["pass_timeout"] == "30s"
    assert effective["cleanup"]["batch_pause"] == 0
    assert effective["metrics"]["backend"] == "prometheus"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TEMP_FILE_CLEANUP_BATCH_SIZE", "-100"),
        ("TEMP_FILE_CLEANUP_THREADS", "0"),
        ("TEMP_FILE_CLEANUP_TIMEOUT", "half a minute"),
        ("METRICS_BACKEND", "statsd"),
    ],
)
def test_a_bad_carried_over_value_is_one_line_and_exit_2(
    tmp_path: Path, variable: str, raw: str
) -> None:
    (tmp_path / "keep").write_bytes(b"")
    done = _tempwatch("clean", "--base-dir", str(tmp_path), "--max-age", "1s",
                      env={variable: raw})  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"tempwatch: config error: {variable} (environment): expected ")
    assert (tmp_path / "keep").exists()


def test_clean_stopped_by_its_time_limit_is_finished_by_the_next_clean(base: Path) -> None:
    _old_tree(base, 3_000, dirs=6)
    # 3,000 files cannot go in a millisecond: the first clean stops early, says so.
    first = _tempwatch("clean", "--base-dir", str(base), "-q",
                       env={"TEMP_FILE_CLEANUP_TIMEOUT": "1ms"})  # fmt: skip
    assert first.returncode == 0, first.stderr
    left = _files(base)
    assert 0 < left <= 3_000
    assert "stopped early at its time limit (cleanup.pass_timeout 0.001s)" in first.stderr
    assert f"{left} planned deletions left for the next pass" in first.stderr
    second = _tempwatch("clean", "--base-dir", str(base), "-q",
                        env={"TEMP_FILE_CLEANUP_THREADS": "4"})  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1].startswith(f"removed {left} files")
    assert _files(base) == 0


def test_clean_in_batches_over_four_threads_prints_every_file(base: Path) -> None:
    _old_tree(base, 500, dirs=10)
    done = _tempwatch("clean", "--base-dir", str(base), "-q", env={
        "TEMP_FILE_CLEANUP_BATCH_SIZE": "64", "TEMP_FILE_CLEANUP_THREADS": "4"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 501 and lines[-1].startswith("removed 500 files")
    assert len(set(lines[:-1])) == 500
    assert _files(base) == 0


# -- the service ---------------------------------------------------------------------------


def _config(base: Path, max_files: int, **cleanup: object) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=HOUR),
        cleanup=CleanupConfig(
            max_age_seconds=HOUR,
            interval_seconds=HOUR,
            age_by=frozenset({"modified"}),  # the trees are aged by mtime (ctime cannot be)
            **cleanup,  # type: ignore[arg-type]
        ),
        limits=LimitsConfig(max_files=max_files, low_watermark=0.5),
    )


def test_the_enforcer_evicts_in_batches_and_says_a_limit_is_still_exceeded(
    base: Path, log_lines: list[str]
) -> None:
    config = _config(base, 20, batch_size=4, batch_pause_seconds=0.01, threads=2)
    with Service(config) as service:
        for n in range(40):
            (base / f"d{n % 4}").mkdir(exist_ok=True)
            (base / f"d{n % 4}" / f"f{n:02}").write_bytes(b"")
        wait_for(lambda: _files(base) <= 20 and len(service.registry) == _files(base),
                 message="held within the limit")  # fmt: skip
    # Each eviction goes down to the watermark (10), never below it.
    left = _files(base)
    assert 10 <= left <= 20
    batches = [line for line in log_lines if " batch-limit " in line]
    assert batches, "no batch after which a limit was still exceeded was logged"
    assert all("after a batch of 4 deletions" in line for line in batches)
    deleted = [line for line in log_lines if line.startswith("INFO deleted ")]
    assert len(deleted) == 40 - left


def test_a_stop_ends_a_paced_pass_between_two_batches(base: Path, log_lines: list[str]) -> None:
    _old_tree(base, 30, dirs=3)
    config = _config(base, 0, batch_size=5, batch_pause_seconds=600.0)
    service = Service(config)
    with service:
        passing = []

        def run() -> None:
            passing.append(service.run_pass_now())

        worker = threading.Thread(target=run)
        worker.start()
        wait_for(lambda: _files(base) == 25, message="the first batch")
    worker.join(10)
    assert not worker.is_alive()
    (report,) = passing
    assert (len(report.deleted), report.unfinished, report.stopped) == (5, 25, "stop requested")
    assert _files(base) == 25
    summaries = [line for line in log_lines if line.startswith("INFO pass ")]
    assert summaries[-1].rstrip().endswith("stopped early, 25 files left for the next pass")

