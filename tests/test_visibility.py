"""Processes the open-file check cannot inspect: warned of at start and per pass, counted in a
metric, and /healthz degraded with the reason.

The first test runs `tempwatch run` as root without CAP_SYS_PTRACE (the child drops it from
its bounding set before it execs, as a unit with a trimmed capability set would run) while
a root process with every capability holds a file open in its directory: the real kernel
refuses the sweep, nothing is simulated. The second drives the count through the
service's injected sweep, to show it follows a hidden process going away.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from loguru import logger
from support import hold_open, wait_for
from test_ops_e2e import REPO, free_port, healthz, make_config, metric

from tempwatch.health import assess_service
from tempwatch.openfiles import OpenFiles, sweep_open_files
from tempwatch.service import Service

IS_ROOT = os.geteuid() == 0
_PR_CAPBSET_DROP = 24
_CAP_SYS_PTRACE = 19
# Drops CAP_SYS_PTRACE for good (the bounding set limits every later exec), then becomes
# `python -m tempwatch run ...`.
_WITHOUT_PTRACE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({_PR_CAPBSET_DROP}, {_CAP_SYS_PTRACE}, 0, 0, 0) != 0:
    sys.exit("prctl(PR_CAPBSET_DROP): " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable, "-m", "tempwatch", *sys.argv[1:]])
"""


def _effective_capabilities(pid: int) -> int:
    found = re.search(r"^CapEff:\s*([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert found is not None
    return int(found.group(1), 16)


class _WithoutPtrace:
    """`python -m tempwatch run -c CONFIG` as root without CAP_SYS_PTRACE."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WITHOUT_PTRACE, "run", "-c", str(config)],
            cwd=REPO, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="without-ptrace-stderr")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        self.lines.extend(line.rstrip("\n") for line in self.proc.stderr)

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(timeout=5)
            assert self.proc.stderr is not None
            self.proc.stderr.close()


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root: a root process the service cannot inspect")
def test_a_service_that_cannot_inspect_a_holder_says_so(base: Path, tmp_path: Path) -> None:
    held = base / "held"
    held.write_bytes(b"data")
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "1h"\ninterval = "200ms"\n'
        # The sweep alone, as on a filesystem that refuses leases: the hidden holder's file
        # is then unprotected, which is what the warnings are for.
        'lease_probe = false\n'
        f'[metrics]\nenabled = true\nport = {port}\n[log]\nlevel = "INFO"\n'
    )
    url = f"http://127.0.0.1:{port}"
    with hold_open(held):  # with every capability: a sweep without CAP_SYS_PTRACE is refused
        child = _WithoutPtrace(config)
        try:
            def answering() -> bool:
                assert child.proc.poll() is None, "\n".join(child.lines)
                try:
                    return healthz(url)[0] == 200
                except OSError:
                    return False

            wait_for(answering, timeout=20, message="/healthz answering")
            assert not _effective_capabilities(child.proc.pid) & (1 << _CAP_SYS_PTRACE)
            at_start = [line for line in child.lines if "at start: the open-file check" in line]
            assert len(at_start) == 1, "\n".join(child.lines)
            found = re.search(r"could not inspect (\d+) process", at_start[0])
            assert found and int(found.group(1)) > 0
            assert "root needs CAP_SYS_PTRACE" in at_start[0]
            wait_for(lambda: any("cleanup pass: the open-file check" in line
                                 for line in child.lines), message="the warning of a pass")
            assert metric(url, "tempwatch_sweep_denied_processes") > 0
            status, body = healthz(url)
            assert (status, body["status"]) == (200, "degraded")
            assert isinstance(body["sweep_denied_processes"], int)
            assert body["sweep_denied_processes"] > 0
            reasons = body["reasons"]
            assert isinstance(reasons, list) and len(reasons) == 1
            assert "the open-file check cannot inspect" in reasons[0]
        finally:
            assert child.stop() == 0, "\n".join(child.lines)


def test_the_count_follows_the_sweep_and_is_warned_once_per_pass(base: Path) -> None:
    hidden = [2]

    def sweep(base_dir: str) -> OpenFiles:
        return replace(sweep_open_files(base_dir), processes_denied=hidden[0])

    warnings: list[str] = []
    logger.enable("tempwatch")
    sink = logger.add(warnings.append, level="WARNING", format="{extra[event]} {message}",
                      filter=lambda r: r["extra"].get("event") == "sweep-denied")
    try:
        config = make_config(base, interval_seconds=3600.0, lease_probe=False)
        with Service(config, sweep=sweep) as service:
            assert len(warnings) == 1 and warnings[0].startswith("sweep-denied at start:")
            assert "2 processes" in warnings[0]
            assert service.stats.sweep_denied_processes == 2
            health = assess_service(service.stats, config, now=time.time(), base_dir_exists=True)
            assert health.status == "degraded"
            service.run_pass_now()  # nothing to delete, but it re-checks while blind
            assert len(warnings) == 2 and "cleanup pass:" in warnings[1]
            hidden[0] = 0  # the hidden process went away
            service.run_pass_now()
            assert service.stats.sweep_denied_processes == 0
            assert len(warnings) == 2  # nothing more to say
            health = assess_service(service.stats, config, now=time.time(), base_dir_exists=True)
            assert health.status == "healthy"
    finally:
        logger.remove(sink)
        logger.disable("tempwatch")


def test_no_sweep_and_no_warning_when_the_open_file_check_is_off(base: Path) -> None:
    calls: list[str] = []

    def sweep(base_dir: str) -> OpenFiles:
        calls.append(base_dir)
        return OpenFiles(frozenset(), frozenset(), processes_seen=1, processes_denied=5)

    config = make_config(base, skip_open_files=False)
    with Service(config, sweep=sweep) as service:
        service.run_pass_now()
        assert service.stats.sweep_denied_processes == 0
    assert calls == []


def test_with_the_lease_in_force_a_hidden_process_costs_only_its_name(base: Path) -> None:
    def sweep(base_dir: str) -> OpenFiles:
        return replace(sweep_open_files(base_dir), processes_denied=2)

    said: list[str] = []
    logger.enable("tempwatch")
    sink = logger.add(said.append, level="DEBUG", format="{level} {message}",
                      filter=lambda r: r["extra"].get("event") == "sweep-denied")
    try:
        config = make_config(base, interval_seconds=3600.0)
        with Service(config, sweep=sweep) as service:
            service.run_pass_now()
            assert service.stats.sweep_denied_processes == 2
            health = assess_service(service.stats, config, now=time.time(), base_dir_exists=True)
            assert health.status == "healthy"
    finally:
        logger.remove(sink)
        logger.disable("tempwatch")
    assert said[0].startswith("INFO at start:") and "the kernel lease still keeps" in said[0]
    assert said[1].startswith("DEBUG cleanup pass:")
