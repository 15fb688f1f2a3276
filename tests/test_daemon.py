"""`tempwatch run` as a real child process: signals, reloads, a second instance, kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, base: Path, **cleanup: str | list[str]) -> None:
    lines = ["[watch]", f'base_dir = "{base}"', "[cleanup]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in cleanup.items()]
    lines += ["[log]", 'level = "DEBUG"', 'format = "json"']
    path.write_text("\n".join(lines) + "\n")


class Daemon:
    """`python -m tempwatch run -c CONFIG` in a child, its JSON log lines collected."""

    def __init__(self, config: Path, *, code: str | None = None) -> None:
        argv = ["-m", "tempwatch", "run", "-c", str(config)]
        if code is not None:
            argv = ["-c", code, str(config)]
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="daemon-log-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def records(self) -> list[dict[str, object]]:
        found = []
        for line in list(self.lines):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def saw(self, event: str, **fields: object) -> bool:
        return any(
            r.get("event") == event and all(r.get(k) == v for k, v in fields.items())
            for r in self.records()
        )

    def wait_event(self, event: str, **fields: object) -> None:
        wait_for(lambda: self.saw(event, **fields) or self.proc.poll() is not None,
                 message=f"log event {event} {fields or ''}")
        assert self.saw(event, **fields), "\n".join(self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return (tmp_path / "base").resolve()


@pytest.fixture
def config(tmp_path: Path, base: Path) -> Path:
    path = tmp_path / "cfg.toml"
    # By mtime: tests make a file expire by setting its mtime back (a ctime cannot be).
    write_config(path, base, max_age="1h", interval="100ms", age_by=["modified"])
    return path


@pytest.fixture
def daemon(config: Path) -> Iterator[Daemon]:
    child = Daemon(config)
    try:
        child.wait_event("started")
        yield child
    finally:
        child.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_gracefully_and_flushes_the_last_line(
    daemon: Daemon, base: Path, signum: int
) -> None:
    assert daemon.saw("started", observer="inotify", files=0, pid=daemon.proc.pid)
    (base / "hello").write_bytes(b"x")
    daemon.wait_event("registered", path=str(base / "hello"))
    daemon.signal(signum)
    assert daemon.wait() == 0
    assert daemon.records()[-1]["event"] == "stopped"
    assert not daemon.saw("stop"), "every thread joined within the stop's own deadline"
    assert not (base / ".tempwatch.lock").exists()
    assert (base / "hello").exists()


def test_sigterm_mid_pass_ends_it_and_stopped_is_the_last_line(
    config: Path, base: Path
) -> None:
    base.mkdir()
    for d in range(10):
        (base / f"d{d}").mkdir()
    for i in range(500):
        path = base / f"d{i % 10}" / f"f{i}"
        path.write_bytes(b"")
        os.utime(path, (1_000_000, 1_000_000))  # expired at the first pass
    child = Daemon(config)
    try:
        child.wait_event("deleted")
        child.signal(signal.SIGTERM)
        assert child.wait() == 0
    finally:
        child.close()
    records = child.records()
    assert records[-1]["event"] == "stopped", records[-3:]
    assert not any(r.get("event") == "stop" for r in records), "no thread outlived the stop"


_STUCK_STOP = r"""
import sys, threading
from tempwatch import service
from tempwatch.cli import main

def stuck_stop(self):
    print('{"event": "stuck"}', file=sys.stderr, flush=True)
    threading.Event().wait()

service.Service.stop = stuck_stop
sys.exit(main(["run", "-c", sys.argv[1]]))
"""


def test_second_signal_forces_the_exit(config: Path) -> None:
    child = Daemon(config, code=_STUCK_STOP)
    try:
        child.wait_event("started")
        child.signal(signal.SIGTERM)
        child.wait_event("stuck")
        child.signal(signal.SIGTERM)
        assert child.wait() == 143
        # Said with a plain write from the signal handler, where loguru is not re-entrant.
        assert "tempwatch: second SIGTERM: exiting now" in child.lines
    finally:
        child.close()


_SLOW_SWEEP = r"""
import sys, threading
from tempwatch.configload import load_config
from tempwatch.daemon import run_daemon
from tempwatch.logsetup import configure_logging
from tempwatch.openfiles import sweep_open_files

released = threading.Event()

def slow_sweep(prefix):
    # The pass's open-file sweep outlasts the stop's deadline, as a sweep of a busy /proc
    # or one stuck on a dead filesystem can (the sweep at start is not held up).
    if threading.current_thread().name == "tempwatch-passes":
        print('{"event": "sweep-stuck"}', file=sys.stderr, flush=True)
        released.wait(30)
    return sweep_open_files(prefix)

code = run_daemon(lambda: load_config(sys.argv[1]),
                  configure_logging=lambda config: configure_logging(config.log),
                  sweep=slow_sweep)
released.set()  # the late pass goes on while the process still lives, and logs
for thread in threading.enumerate():
    if thread.name == "tempwatch-passes":
        thread.join(30)
        print('{"event": "late-pass-ended"}', file=sys.stderr, flush=True)
sys.exit(code)
"""


def test_a_pass_stuck_past_the_stop_deadline_logs_nothing_after_stopped(
    config: Path, base: Path
) -> None:
    base.mkdir()
    for i in range(20):
        path = base / f"f{i}"
        path.write_bytes(b"")
        os.utime(path, (1_000_000, 1_000_000))  # expired at the first pass
    child = Daemon(config, code=_SLOW_SWEEP)
    try:
        child.wait_event("sweep-stuck")
        child.signal(signal.SIGTERM)
        assert child.wait() == 0
    finally:
        child.close()
    records = child.records()
    events = [r.get("event") for r in records]
    assert "late-pass-ended" in events, "the late pass never ended: nothing was tested"
    last = events.index("stopped")
    assert "late-pass-ended" in events[last + 1:]
    assert not [r for r in records[last + 1:] if "level" in r], records[last:]
    assert any(e == "stop" for e in events[:last]), "the late pass was not reported"
    assert records[last]["late_lines_dropped"] == 0


def test_sighup_applies_a_good_config(daemon: Daemon, config: Path, base: Path) -> None:
    (base / "old").write_bytes(b"x")
    daemon.wait_event("registered", path=str(base / "old"))
    write_config(config, base, max_age="200ms", interval="100ms")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload")
    wait_for(lambda: not (base / "old").exists(), message="deleted under the new max_age")
    daemon.wait_event("deleted", path=str(base / "old"), reason="expired")


def test_sighup_with_a_bad_config_keeps_the_old_one(
    daemon: Daemon, config: Path, base: Path
) -> None:
    config.write_text(config.read_text().replace('max_age = "1h"', 'max_age = "soon"'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("reload-failed")
    failure = next(r for r in daemon.records() if r.get("event") == "reload-failed")
    assert "max_age" in str(failure["message"]) and "\n" not in str(failure["message"])
    (base / "still-watching").write_bytes(b"x")
    daemon.wait_event("registered", path=str(base / "still-watching"))
    assert (base / "still-watching").exists(), "max_age is still 1h"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0


def test_second_instance_exits_1_naming_the_first(daemon: Daemon, config: Path) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "tempwatch", "run", "-c", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert second.returncode == 1
    message = second.stderr.strip().splitlines()[-1]
    assert f"pid {daemon.proc.pid}" in message and "already watches" in message


def test_kill_9_then_restart_keeps_ages_from_mtime(config: Path, base: Path) -> None:
    # Aged by mtime alone: an mtime can be set back to fake an old file, a ctime cannot.
    first = Daemon(config)
    try:
        first.wait_event("started")
        path = base / "survivor"
        path.write_bytes(b"x")
        first.wait_event("registered", path=str(path))
        an_hour_ago = time.time() - 3600
        os.utime(path, (an_hour_ago, an_hour_ago))  # as if created an hour ago
        first.signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    finally:
        first.close()
    assert (base / ".tempwatch.lock").exists(), "the dead instance's lock file is left"
    write_config(config, base, max_age="10m", interval="100ms", age_by=["modified"])
    second = Daemon(config)
    try:
        second.wait_event("started", files=1)
        # Registered with its mtime: an hour old, so it expires at the first pass.
        wait_for(lambda: not path.exists(), message="the hour-old file expired after restart")
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    finally:
        second.close()
