from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from loguru import logger
from support import event_lines

# No per-example deadline: it is a timing assert, and on a loaded machine (benchmarks,
# other suites on 2 cores) an example can take a second for reasons of its own.
settings.register_profile("tempwatch", deadline=None)
settings.load_profile("tempwatch")


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    """Every thread a test starts must be joined by the end of that test."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 15.0  # joined threads end at once; a loaded machine is slow
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"threads outlived the test: {[t.name for t in leaked]}"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """An empty directory to act as base_dir, by its real path (as the config resolves it)."""
    directory = tmp_path.resolve() / "base"
    directory.mkdir()
    return directory


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An empty directory beside base_dir, for sentinels that must survive."""
    directory = tmp_path.resolve() / "outside"
    directory.mkdir()
    return directory


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """tempwatch's log records with an event, as "LEVEL event message" lines."""
    with event_lines() as lines:
        yield lines


@pytest.fixture
def log_records() -> Iterator[list[Any]]:
    """Every record the tempwatch logger emits during the test (the library adds no sink)."""
    records: list[Any] = []
    logger.enable("tempwatch")
    sink_id = logger.add(lambda message: records.append(message.record), level="DEBUG")
    try:
        yield records
    finally:
        logger.remove(sink_id)
        logger.disable("tempwatch")
