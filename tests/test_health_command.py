"""`tempwatch health`: the running service asked through its local socket, no metrics port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import wait_for
from test_ops_e2e import REPO, Child

from tempwatch.errors import TempwatchError
from tempwatch.health import Health, assess
from tempwatch.healthsocket import SOCKET_NAME, HealthSocket, ServiceUnreachable, ask_health


def _health(status: str = "healthy") -> Health:
    now = time.time()
    return assess(
        now=now, observer_alive=status != "unhealthy", base_dir_exists=True,
        last_pass_at=now, interval_seconds=60.0, limit_pinned=status == "degraded",
        active_files=3, base_dir="/somewhere", max_age_seconds=60.0, started_at=now - 5,
    )


def health_command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tempwatch", "health", "-c", str(config), *args],
        capture_output=True, text=True, cwd=REPO, timeout=50,
    )


def write_config(path: Path, base: Path, *, metrics: bool) -> None:
    path.write_text(
        f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "1h"\ninterval = "1h"\n'
        f"[metrics]\nenabled = {'true' if metrics else 'false'}\nport = 0\n"
    )


# -- the socket itself ----------------------------------------------------------------------


def test_the_socket_answers_each_connection_and_goes_away_on_stop(base: Path) -> None:
    answers = iter(["healthy", "degraded", "unhealthy"])
    with HealthSocket(str(base), lambda: _health(next(answers))) as served:
        assert served.path == str(base / SOCKET_NAME)
        assert [ask_health(str(base))["status"] for _ in range(3)] == [
            "healthy", "degraded", "unhealthy"]
    assert not (base / SOCKET_NAME).exists()
    with pytest.raises(ServiceUnreachable, match="no tempwatch is running"):
        ask_health(str(base))


def test_a_socket_left_by_a_killed_service_is_replaced(base: Path) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(base / SOCKET_NAME))
    stale.close()  # the file stays, nobody listens: what kill -9 leaves
    with pytest.raises(ServiceUnreachable, match="left from a stopped one"):
        ask_health(str(base))
    with HealthSocket(str(base), _health):
        assert ask_health(str(base))["status"] == "healthy"


def test_another_file_under_the_socket_name_is_refused_not_removed(base: Path) -> None:
    planted = base / SOCKET_NAME
    planted.write_text("not a socket")
    with pytest.raises(TempwatchError, match="is not tempwatch's health socket"):
        HealthSocket(str(base), _health).start()
    assert planted.read_text() == "not a socket"


def test_a_base_dir_too_long_for_a_socket_address_still_works(base: Path) -> None:
    deep = base
    while len(os.fsencode(deep / SOCKET_NAME)) <= 120:
        deep = deep / ("d" * 20)
    deep.mkdir(parents=True)
    with HealthSocket(str(deep), _health):
        assert (deep / SOCKET_NAME).exists()
        assert ask_health(str(deep))["active_files"] == 3


def test_a_failing_assessment_still_answers(base: Path) -> None:
    def broken() -> Health:
        raise RuntimeError("stats unavailable")

    with HealthSocket(str(base), broken):
        body = ask_health(str(base))
    assert body["status"] == "unknown" and "stats unavailable" in str(body["error"])


# -- the command against `tempwatch run` ----------------------------------------------------


@pytest.mark.parametrize("metrics", [False, True], ids=["metrics-off", "metrics-on"])
def test_health_asks_the_running_service_whatever_the_metrics(
    base: Path, tmp_path: Path, metrics: bool
) -> None:
    config = tmp_path / "config.toml"
    write_config(config, base, metrics=metrics)
    (base / "present").write_text("x")
    child = Child(config)
    try:
        def answering() -> bool:
            assert child.proc.poll() is None, child.log()
            return health_command(config).returncode == 0

        wait_for(answering, timeout=20, message="tempwatch health answering")
        done = health_command(config, "--json")
        body = json.loads(done.stdout)
        assert body["status"] in ("healthy", "degraded") and body["active_files"] == 1
        assert "config_toml" not in body, "the /healthz body, nothing more"
        assert body["base_dir"] == str(base)
        text = health_command(config)
        assert text.stdout.startswith(f"{body['status']}:") and text.stderr == ""
    finally:
        assert child.stop() == 0, child.log()
    done = health_command(config)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"tempwatch: no tempwatch is running on {base} ({base / SOCKET_NAME} is missing)"
    )


def test_health_without_a_service_and_with_a_bad_config(base: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write_config(config, base, metrics=False)
    assert health_command(config).returncode == 1
    config.write_text("[cleanup]\nmax_age = -1\n")
    done = health_command(config)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
