"""Entry point of the bench's child processes: `python -m bench_lib.child ROLE JSON_ARGS`.

Each role prints one JSON line when ready. `reader` then answers requests read from stdin
(one JSON object per line) until stdin closes; the others are one-shot.

- reader:  an event reader (see readers.py) on a directory; requests `wait_count` and
           `wait_exact` wait inside the child, so polling costs no pipe round trips.
- startup: time to register an existing tree (the service, or a bare scandir + lstat).
- memory:  RSS growth per registered file (tempwatch's Registry, or a bare dict).
- holders: forks processes that each hold files open until stdin closes.
- pressure_service, fill: the service with a free-space watermark, and a writer filling
           its filesystem (see fill.py).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import stat
import sys
import time
from typing import Any

__all__ = ["main", "rss_bytes", "scandir_lstat"]

_POLL_SECONDS = 0.005


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def scandir_lstat(root: str) -> dict[str, float]:
    """The bare peer: one scandir + lstat pass, path -> mtime for every non-directory."""
    found: dict[str, float] = {}
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                else:
                    found[entry.path] = st.st_mtime
    return found


# -- reader -----------------------------------------------------------------------------


def _reader(args: dict[str, Any]) -> None:
    from bench_lib.readers import open_reader

    started = time.monotonic()
    reader = open_reader(args["kind"], args["dir"])
    try:
        _reply({"ready": True, "start_seconds": time.monotonic() - started, "pid": os.getpid()})
        for line in sys.stdin:
            request = json.loads(line)
            command = request.get("cmd")
            if command == "wait_count":
                _reply(_wait_count(reader, request["n"], request["timeout"]))
            elif command == "wait_exact":
                _reply(_wait_exact(reader, args["dir"], request["n"], request["timeout"]))
            elif command == "stat":
                _reply({"count": reader.count(), **reader.counters()})
            else:
                _reply({"error": f"unknown request {request!r}"})
    finally:
        reader.close()


def _wait_count(reader: Any, n: int, timeout: float) -> dict[str, Any]:
    """Wait until the reader holds `n` files; report when, or what it had at the deadline."""
    deadline = time.monotonic() + timeout
    reached_at = None
    while True:
        count = reader.count()
        now = time.monotonic()
        if count >= n:
            reached_at = now
            break
        if now > deadline:
            break
        time.sleep(_POLL_SECONDS)
    return {"count": count, "reached_at": reached_at, **reader.counters()}


def _wait_exact(reader: Any, directory: str, n: int, timeout: float) -> dict[str, Any]:
    """Wait until the reader holds exactly the files on disk; report missing and ghosts.

    `reached_at` is when the count first matched in the attempt that then proved exact;
    the comparison with the disk is not part of the time.
    """
    deadline = time.monotonic() + timeout
    own = os.path.join(directory, ".tempwatch.lock")
    missing = ghosts = -1
    while True:
        answer = _wait_count(reader, n, max(0.0, deadline - time.monotonic()))
        on_disk = set(scandir_lstat(directory)) - {own}
        held = reader.paths()
        missing, ghosts = len(on_disk - held), len(held - on_disk)
        if answer["reached_at"] is not None and missing == 0 and ghosts == 0:
            return {**answer, "missing": 0, "ghosts": 0}
        if time.monotonic() > deadline:
            return {**answer, "reached_at": None, "missing": missing, "ghosts": ghosts}
        time.sleep(_POLL_SECONDS)


# -- startup ----------------------------------------------------------------------------


def _startup(args: dict[str, Any]) -> None:
    directory, kind, expected = args["dir"], args["kind"], args["n"]
    gc.collect()
    rss_before = rss_bytes()
    if kind == "tempwatch":
        from tempwatch.configload import load_config
        from tempwatch.service import Service

        config = load_config(
            None,
            overrides={
                "watch.base_dir": directory,
                "cleanup.max_age": "30d",
                "limits.max_files": 0,
                "log.level": "WARNING",
            },
        )
        rss_before = rss_bytes()  # after the imports: only the registry and its garbage
        started = time.perf_counter()
        with Service(config) as service:
            seconds = time.perf_counter() - started  # start() returns once all are registered
            count = len(service.registry)
            rss_after = rss_bytes()
    else:
        started = time.perf_counter()
        found = scandir_lstat(directory)
        seconds = time.perf_counter() - started
        count = len(found)
        rss_after = rss_bytes()
    _reply(
        {
            "ready": True,
            "seconds": seconds,
            "count": count,
            "expected": expected,
            "rss_delta_bytes": rss_after - rss_before,
        }
    )


# -- memory -----------------------------------------------------------------------------


def _paths(n: int) -> Any:
    # Realistic names: a base dir, a subdirectory per thousand files, a 12-character name.
    base = "/dev/shm/tempwatch-bench/memory"
    return (f"{base}/d{i // 1000:05d}/f{i:07d}.tmp" for i in range(n))


def _memory(args: dict[str, Any]) -> None:
    kind, n = args["kind"], args["n"]
    from tempwatch.registry import Registry

    holder: object
    gc.collect()
    gc.disable()  # no collection mid-build: the growth measured is the data, not timing
    before = rss_bytes()
    started = time.time()
    if kind == "tempwatch":
        registry = Registry()
        for i, path in enumerate(_paths(n)):
            # Sizes and inodes as stat gives them: one int object each, like real entries.
            registry.add(path, started + i * 1e-6, 4096 + i % 50000, 1_000_000 + i)
        holder = registry
        count = len(registry)
    else:
        plain: dict[str, float] = {}
        for i, path in enumerate(_paths(n)):
            plain[path] = started + i * 1e-6
        holder = plain
        count = len(plain)
    gc.enable()
    gc.collect()
    after = rss_bytes()
    _reply(
        {
            "ready": True,
            "count": count,
            "bytes_per_file": (after - before) / n,
            "holder": type(holder).__name__,
        }
    )


# -- holders ----------------------------------------------------------------------------


def _holders(args: dict[str, Any]) -> None:
    """Fork `procs` children that each create and hold `files_each` files under `dir`."""
    directory, procs, files_each = args["dir"], args["procs"], args["files_each"]
    read_end, write_end = os.pipe()
    pids: list[int] = []
    try:
        for index in range(procs):
            pid = os.fork()
            if pid == 0:  # the child: hold the files until stdin (shared) closes
                os.close(read_end)
                code = 0
                try:
                    mine = os.path.join(directory, f"h{index:04d}")
                    os.mkdir(mine)
                    held = [
                        os.open(f"{mine}/held{k:03d}", os.O_CREAT | os.O_RDWR, 0o600)
                        for k in range(files_each)
                    ]
                    os.write(write_end, b"+")
                    while os.read(0, 4096):
                        pass
                    for fd in held:
                        os.close(fd)
                except BaseException:
                    code = 1
                os._exit(code)
            pids.append(pid)
        os.close(write_end)
        write_end = -1
        ready = _read_exactly(read_end, procs, deadline=time.monotonic() + 120)
        _reply({"ready": ready == procs, "pids": pids, "holding": ready * files_each})
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        for pid in pids:
            _reap(pid, deadline=time.monotonic() + 10)


def _read_exactly(fd: int, count: int, deadline: float) -> int:
    import select

    got = 0
    while got < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, count - got)
        if not chunk:
            break
        got += len(chunk)
    return got


def _reap(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)


def _pressure_service(args: dict[str, Any]) -> None:
    from bench_lib.fill import serve

    serve(args)


def _fill(args: dict[str, Any]) -> None:
    from bench_lib.fill import fill

    fill(args)


_ROLES = {
    "reader": _reader,
    "startup": _startup,
    "memory": _memory,
    "holders": _holders,
    "pressure_service": _pressure_service,
    "fill": _fill,
}


def main(argv: list[str]) -> int:
    """Run ROLE with its JSON arguments; report an exception as {"error": ...}."""
    role, args = argv[0], json.loads(argv[1])
    # watchdog warns through stdlib logging; without a handler those land on our stderr.
    logging.getLogger("watchdog").addHandler(logging.NullHandler())
    try:
        _ROLES[role](args)
    except Exception as e:
        _reply({"error": f"{role}: {type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
