"""Health with several directories: a socket in every directory served, reloads included,
and `tempwatch health` asking each of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import wait_for
from test_ops_e2e import REPO, Child

from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS, load_config
from tempwatch.healthsocket import SOCKET_NAME, ServiceUnreachable, ask_health
from tempwatch.host import Host
from tempwatch.service import Service


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENV_VARS, CONFIG_PATH_ENV]:
        monkeypatch.delenv(variable, raising=False)


def _dirs(tmp_path: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        directory = tmp_path.resolve() / name
        directory.mkdir()
        made.append(directory)
    return made


def _config_text(*directories: Path) -> str:
    head = '[cleanup]\nmax_age = "1h"\ninterval = "1h"\n[metrics]\nenabled = false\n'
    return head + "".join(f'[[directory]]\npath = "{d}"\n' for d in directories)


def _health(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tempwatch", "health", "-c", str(config), *args],
        capture_output=True, text=True, cwd=REPO, timeout=50,
    )


def _answers(directory: Path) -> bool:
    try:
        ask_health(str(directory), timeout_seconds=5)
    except ServiceUnreachable:
        return False
    return True


# -- the host: what serves each directory beside its service --------------------------------


def test_every_directory_gets_its_companion_for_as_long_as_it_is_served(
    tmp_path: Path,
) -> None:
    a, b, c = _dirs(tmp_path, "a", "b", "c")
    first, second = tmp_path / "1.toml", tmp_path / "2.toml"
    first.write_text(_config_text(a, b))
    second.write_text(_config_text(a, c))
    events: list[str] = []

    @contextmanager
    def companion(base_dir: str) -> Iterator[None]:
        name = Path(base_dir).name
        assert base_dir in host.services, "entered once its service is there"
        events.append(f"+{name}")
        yield
        assert base_dir in services_at_exit(), "left before its service stops"
        events.append(f"-{name}")

    host = Host(load_config(first, env={}), attach=companion)

    def services_at_exit() -> dict[str, object]:
        # The service is still running (not yet stopped) when its companion leaves.
        return {path: s for path, s in known.items() if s.is_working}

    with host:
        known = dict(host.services)
        assert sorted(events) == ["+a", "+b"]
        host.reload(load_config(second, env={}))
        known.update(host.services)
        assert sorted(events) == ["+a", "+b", "+c", "-b"]
    assert sorted(events) == ["+a", "+b", "+c", "-a", "-b", "-c"]


def test_a_directory_whose_companion_fails_is_not_served(tmp_path: Path) -> None:
    a, b = _dirs(tmp_path, "a", "b")
    first, second = tmp_path / "1.toml", tmp_path / "2.toml"
    first.write_text(_config_text(a))
    second.write_text(_config_text(a, b))

    @contextmanager
    def companion(base_dir: str) -> Iterator[None]:
        if base_dir == str(b):
            raise OSError("no socket for b")
        yield

    with Host(load_config(first, env={}), attach=companion) as host:
        host.reload(load_config(second, env={}))  # logged, and b left out
        assert set(host.services) == {str(a)}
    with Service(load_config(second, env={}).each_directory()[1]):
        pass  # b's lock was released: another service can take it


# -- `tempwatch run`: a socket per directory, through reloads --------------------------------


def test_reload_gives_an_added_directory_a_socket_and_takes_a_removed_ones(
    tmp_path: Path,
) -> None:
    a, b, c = _dirs(tmp_path, "a", "b", "c")
    config = tmp_path / "config.toml"
    config.write_text(_config_text(a, b))
    child = Child(config)
    try:
        def serving(*directories: Path) -> bool:
            assert child.proc.poll() is None, child.log()
            return all(_answers(d) for d in directories)

        wait_for(lambda: serving(a, b), timeout=30, message="a and b answering")
        started_a = ask_health(str(a))["started_at"]
        assert not (c / SOCKET_NAME).exists()
        config.write_text(_config_text(a, c))
        child.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: serving(c), timeout=30, message="c answering after the reload")
        wait_for(lambda: not (b / SOCKET_NAME).exists(), timeout=30, message="b's socket gone")
        with pytest.raises(ServiceUnreachable, match="no tempwatch is running"):
            ask_health(str(b))
        body = ask_health(str(c))
        assert body["base_dir"] == str(c)
        assert ask_health(str(a))["started_at"] == started_a, "a was not disturbed"
        # The socket tells status the directory's own config in force, c's too.
        assert f'path = "{c}"' in str(body["config_toml"])
    finally:
        assert child.stop() == 0, child.log()
    assert [d for d in (a, b, c) if (d / SOCKET_NAME).exists()] == []


# -- `tempwatch health`: every directory ---------------------------------------------------


def test_health_asks_every_directory_and_fails_when_one_does_not_answer(
    tmp_path: Path,
) -> None:
    a, b, c = _dirs(tmp_path, "a", "b", "c")
    (a / "one").write_bytes(b"x")
    config = tmp_path / "config.toml"
    config.write_text(_config_text(a, b))
    child = Child(config)
    try:
        def answering() -> bool:
            assert child.proc.poll() is None, child.log()
            return _health(config).returncode == 0

        wait_for(answering, timeout=30, message="tempwatch health passing")
        done = _health(config)
        lines = done.stdout.splitlines()
        assert len(lines) == 2, done.stdout
        assert lines[0].endswith(f" 1 files in {a}") and lines[1].endswith(f" 0 files in {b}")
        assert all(line.split(":")[0] in ("healthy", "degraded") for line in lines)
        assert done.stderr == ""
        body = json.loads(_health(config, "--json").stdout)
        assert body["status"] in ("healthy", "degraded")
        assert set(body["directories"]) == {str(a), str(b)}
        assert body["directories"][str(a)]["active_files"] == 1
        assert "config_toml" not in body["directories"][str(a)], "the /healthz body's keys"
        alone = _health(config, "--base-dir", str(b))
        assert alone.returncode == 0 and alone.stdout.splitlines() == [lines[1]]

        # A directory the config names and nobody serves (edited, not reloaded) fails it.
        config.write_text(_config_text(a, b, c))
        done = _health(config)
        assert done.returncode == 1, done.stdout
        lines = done.stdout.splitlines()
        assert [line.split(":")[0] for line in lines][2] == "unreachable"
        assert lines[2] == (
            f"unreachable: no tempwatch is running on {c} ({c / SOCKET_NAME} is missing)"
        )
        assert lines[0].endswith(f"files in {a}") and lines[1].endswith(f"files in {b}")
        body = json.loads(_health(config, "--json").stdout)
        assert body["status"] == "unhealthy"
        assert body["directories"][str(c)]["status"] == "unreachable"
        assert body["directories"][str(b)]["status"] in ("healthy", "degraded")

        child.proc.send_signal(signal.SIGHUP)  # now it serves c too
        wait_for(answering, timeout=30, message="health passing once c is served")
        assert len(_health(config).stdout.splitlines()) == 3
    finally:
        assert child.stop() == 0, child.log()
    done = _health(config)
    assert done.returncode == 1
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["unreachable"] * 3
