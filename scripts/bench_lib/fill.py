"""The two children of the disk-pressure benchmark: the service, and a writer filling a tmpfs.

- `serve`: the tempwatch Service on a directory with `min_free_space`; ready once started;
  stops when stdin closes and answers with what it deleted.
- `fill`: writes files of `chunk` bytes at full speed until `total` bytes are written,
  each closed before the next. After every write (and every ENOSPC) it reads statvfs, so
  its samples follow free space as the writer sees it, about every half millisecond. On
  ENOSPC it counts, waits a millisecond (as a program retrying would) and goes on.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from typing import Any

__all__ = ["fill", "serve"]

_RETRY_SECONDS = 0.001


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve(args: dict[str, Any]) -> None:
    """Run the service until stdin closes; answer with its figures."""
    from loguru import logger

    from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
    from tempwatch.pressure import FreeAmount
    from tempwatch.service import Service

    logger.disable("tempwatch")
    config = Config(
        watch=WatchConfig(base_dir=args["dir"], rescan_interval_seconds=3600.0),
        cleanup=CleanupConfig(max_age_seconds=3600.0, interval_seconds=3600.0),
        limits=LimitsConfig(
            max_files=0, max_file_size_bytes=0,
            min_free_space=FreeAmount(args["percent"], is_percent=True),
        ),
    )
    with Service(config) as service:
        _reply({"ready": True, "pid": os.getpid()})
        sys.stdin.read()  # until the bench closes it
        stats = service.stats
    _reply({"registered": stats.registered_total, "pinned_bytes": stats.pressure.pinned_bytes})


def fill(args: dict[str, Any]) -> None:
    """Write `total` bytes in files of `chunk` bytes under `dir`, sampling statvfs."""
    directory, total, chunk = args["dir"], int(args["total"]), int(args["chunk"])
    data = b"x" * chunk
    samples: list[tuple[float, int]] = []
    statvfs, monotonic = os.statvfs, time.monotonic

    def sample() -> None:
        st = statvfs(directory)
        samples.append((monotonic(), st.f_bavail * st.f_frsize))

    enospc = written = index = 0
    started = monotonic()
    sample()
    while written < total:
        path = os.path.join(directory, f"w{index:07d}")
        index += 1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            enospc += 1
            sample()
            time.sleep(_RETRY_SECONDS)
            continue
        try:
            view = memoryview(data)
            while view:
                done = os.write(fd, view)
                written += done
                view = view[done:]
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            enospc += 1
            sample()
            time.sleep(_RETRY_SECONDS)
        finally:
            os.close(fd)
        sample()
    _reply({
        "ready": True,
        "seconds": monotonic() - started,
        "written": written,
        "files": index,
        "enospc": enospc,
        "samples": [[round(t - started, 6), free] for t, free in samples],
    })
