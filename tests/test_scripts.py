"""The README's two commands, `scripts/run` and `scripts/test`, run as a user runs them.

They use the checkout's .venv, which `scripts/test` made before running this suite; without
it they would install from the network, so the tests skip outside `scripts/test`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import wait_for

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

pytestmark = pytest.mark.skipif(
    not (REPO / ".venv" / ".tempwatch-installed-dev").is_file() or not SCRIPTS.is_dir(),
    reason="needs the checkout's .venv as scripts/test makes it (run through scripts/test)",
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"TEMPWATCH_CONFIG", "LOG_LEVEL"}}
    env.update(extra)
    return env


def test_run_help_exits_0_and_shows_the_run_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [SCRIPTS / "run", "--help"], cwd=tmp_path, env=_env(), capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tempwatch run"), result.stdout
    assert "Traceback" not in result.stderr


def test_run_with_readme_arguments_watches_and_expires(tmp_path: Path) -> None:
    """`scripts/run --base-dir DIR --max-age 1s`: a relative DIR is taken from where you are."""
    base = tmp_path / "x"
    proc = subprocess.Popen(
        [SCRIPTS / "run", "--base-dir", "x", "--max-age", "1s", "--interval", "1s"],
        cwd=tmp_path, env=_env(LOG_LEVEL="INFO"), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: (base / ".tempwatch.lock").exists(), timeout=60,
                 message="the service to start on ./x")
        doomed = base / "doomed.tmp"
        doomed.write_text("x")
        old = time.time() - 60
        os.utime(doomed, (old, old))
        wait_for(lambda: not doomed.exists(), timeout=30, message="the old file to expire")
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "doomed.tmp" in err


@pytest.mark.timeout(600)
def test_test_script_passes_arguments_to_pytest_from_the_callers_directory() -> None:
    result = subprocess.run(
        [SCRIPTS / "test", "test_health.py", "-q", "-p", "no:cacheprovider"],
        cwd=REPO / "tests", env=_env(), capture_output=True, text=True, timeout=590,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "== ruff" in result.stdout and "== mypy (strict)" in result.stdout
    assert " passed" in result.stdout
