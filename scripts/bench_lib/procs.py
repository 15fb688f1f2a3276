"""Child processes of the bench: started, talked to with JSON lines, and always stopped.

Readers and scanners run in their own interpreter so that the file creator in the bench
process and the reader under test do not share a GIL, and so that each measurement starts
from a fresh heap. Every child is a session leader: stopping it kills its process group, so
the helpers it forks cannot outlive it either.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["BenchChild", "ChildError", "child_env", "run_command", "run_json_child"]

_SCRIPTS_DIR = str(Path(__file__).resolve().parent.parent)

# The config layers of tempwatch read these: a stray one would change what is measured.
_TEMPWATCH_ENV_PREFIXES = ("TEMP_FILE_", "TEMPWATCH_", "MAX_TEMP_FILES", "LOG_", "PROMETHEUS_")


class ChildError(RuntimeError):
    """A child failed, answered garbage, or did not answer in time."""


def child_env() -> dict[str, str]:
    """The environment for children: bench_lib importable, no tempwatch settings leaking in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_TEMPWATCH_ENV_PREFIXES)
        and key not in ("ENABLE_TEMP_FILE_METRICS", "METRICS_BACKEND")
    }
    env["PYTHONPATH"] = _SCRIPTS_DIR + os.pathsep + env.get("PYTHONPATH", "")
    return env


class BenchChild:
    """`python -m bench_lib.child ROLE ARGS` speaking one JSON object per line.

    The child prints {"ready": ...} once set up, then answers each request line. Closing
    stdin asks it to stop; `close` waits, then kills the whole process group.
    """

    def __init__(
        self, role: str, args: dict[str, Any], *, ready_timeout_seconds: float = 60.0
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench_lib.child", role, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            start_new_session=True,
        )
        self._buffer = b""
        try:
            self.ready = self.read(ready_timeout_seconds)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, message: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise ChildError(f"child {self.pid} is gone (exit {self.proc.poll()})") from e
        return self.read(timeout_seconds)

    def read(self, timeout_seconds: float) -> dict[str, Any]:
        """The next JSON line from the child, within `timeout_seconds`."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_seconds
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"child {self.pid} did not answer within {timeout_seconds}s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ChildError(f"child {self.pid} exited (code {self.proc.wait(5)})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ChildError(f"child {self.pid} answered {line!r}")
        if "error" in answer:
            raise ChildError(f"child {self.pid}: {answer['error']}")
        return answer

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Ask the child to stop; kill its process group if it does not within the timeout."""
        proc = self.proc
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        except BrokenPipeError:
            pass
        if proc.returncode is None:
            # Not reaped yet, so the pid (and the group id) cannot have been reused: the
            # group kill reaches only what this child started.
            _wait_unreaped(proc.pid, timeout_seconds)
            _kill_group(proc.pid)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> BenchChild:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _wait_unreaped(pid: int, timeout_seconds: float) -> None:
    """Wait for `pid` to exit without reaping it (a zombie keeps its pid reserved)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def _kill_group(pgid: int) -> None:
    # The group is the child's own session (start_new_session), so this reaches only it and
    # whatever it forked.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_json_child(role: str, args: dict[str, Any], timeout_seconds: float) -> dict[str, Any]:
    """Run a one-shot child that prints a single JSON answer, and return that answer."""
    with BenchChild(role, args, ready_timeout_seconds=timeout_seconds) as child:
        return child.ready


def run_command(
    command: Sequence[str], *, timeout_seconds: float, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Run a command to completion; return its wall time and result. Output is discarded
    except stderr, which is kept for the error message."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout_seconds)
    except BaseException:
        _kill_group(proc.pid)
        proc.communicate(timeout=10)
        raise
    elapsed = time.perf_counter() - started
    return elapsed, subprocess.CompletedProcess(proc.args, proc.returncode, b"", stderr)
