"""`tempwatch status` against a running service, and the library's watch=True."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from support import is_healthy_but_for_hidden_processes, wait_for
from test_ops_e2e import Child, free_port, wait_up, write_config

from tempwatch import TempFileManager
from tempwatch.cli import main
from tempwatch.healthsocket import SOCKET_NAME


def test_status_shows_the_running_service_and_its_own_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "present").write_text("x")
    port = free_port()
    config = tmp_path / "config.toml"
    write_config(config, base, port, max_age="1h", interval="1h")
    child = Child(config)
    try:
        wait_up(child, f"http://127.0.0.1:{port}")
        assert main(["status", "-c", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["service_pid"] == child.proc.pid
        assert is_healthy_but_for_hidden_processes(report["service"])
        assert report["service"]["active_files"] == 1
        assert main(["status", "-c", str(config)]) == 0
        text = capsys.readouterr().out
        assert f"service: running (pid {child.proc.pid})" in text
        assert f"status: {report['service']['status']}" in text
    finally:
        assert child.stop() == 0, child.log()
    assert main(["status", "-c", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["service_pid"] is None


def test_a_watching_manager_registers_files_it_was_not_told_about(tmp_path: Path) -> None:
    base = tmp_path / "base"
    with TempFileManager(base, max_age=3600, watch=True) as manager:
        made = base / "made-by-someone-else"
        made.write_text("data")
        wait_for(lambda: manager.is_temp_file(made), message="the watcher registering the file")
        nested = base / "a" / "b"
        nested.mkdir(parents=True)
        (nested / "deep").write_text("x")
        wait_for(lambda: manager.is_temp_file(nested / "deep"), message="a nested file")
        os.unlink(made)
        wait_for(lambda: not manager.is_temp_file(made), message="the delete dropping it")
    # Exit clears only what the program registered itself; watched files go by age.
    assert (nested / "deep").exists()


def test_status_judges_with_the_running_services_config_not_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    old = base / "two-hours-old"
    old.write_text("x")
    then = time.time() - 7200
    os.utime(old, (then, then))
    port = free_port()
    config = tmp_path / "config.toml"
    # The service runs with max_age 1 day; then the file is edited (no SIGHUP yet).
    write_config(config, base, port, max_age="1d", interval="1h")
    text = config.read_text().replace('[cleanup]', '[cleanup]\nage_by = ["modified"]')
    config.write_text(text)
    child = Child(config)
    try:
        wait_up(child, f"http://127.0.0.1:{port}")
        config.write_text(text.replace('max_age = "1d"', 'max_age = "1h"'))
        assert main(["status", "-c", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["config_from"] == "service"
        assert report["would_remove"] == {}, "the service's max_age (1 day) keeps it"
        assert "config_toml" not in report["service"]
    finally:
        assert child.stop() == 0, child.log()
    assert main(["status", "-c", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config_from"] == "file" and report["would_remove"] == {"expired": 1}


def test_status_finds_a_service_on_port_0_and_prints_plain_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With `port = 0` the service picks a port; status asks it over its socket instead."""
    base = tmp_path / "base"
    base.mkdir()
    config = tmp_path / "config.toml"
    write_config(config, base, 0, max_age="1h", interval="1h")
    child = Child(config)
    try:
        wait_for(lambda: any("serving metrics" in line for line in child.lines),
                 timeout=20, message="the service to serve metrics on a random port")
        wait_for(lambda: (base / SOCKET_NAME).exists(), timeout=20, message="its socket")
        assert main(["status", "-c", str(config)]) == 0
        text = capsys.readouterr().out
    finally:
        assert child.stop() == 0, child.log()
    # The service's own figures, whatever its health here (a process the open-file sweep
    # cannot inspect makes it "degraded", with a reason).
    assert re.search(r"^  status: (healthy|degraded)$", text, re.M), text
    assert "enable" not in text and "did not answer" not in text, text
    assert "observer_alive: yes" in text and "True" not in text, text
    assert re.search(r"^  reasons: [^\[]", text, re.M) and "[]" not in text, text
