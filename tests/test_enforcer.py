"""The enforcer backs off only when a limit cannot be met now, never during a burst."""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from support import OnDeleted, hold_open

from tempwatch.config import Config, WatchConfig
from tempwatch.deleter import Deleter, DeleteResult
from tempwatch.enforcer import Enforcer
from tempwatch.openfiles import OpenFiles, sweep_open_files
from tempwatch.policy import Decision, Limits
from tempwatch.registry import Registry

_LIMITS = Limits(max_age_seconds=3600, max_files=10, low_watermark=0.5)


class _Arrivals(OnDeleted):
    """A listener that creates and registers a new file for each one deleted: a burst that
    goes on while the enforcer evicts."""

    def __init__(self, base: Path, registry: Registry, count: int) -> None:
        self._base, self._registry, self._left = base, registry, count
        self._made = 0

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        if self._left:
            self._left -= 1
            self._made += 1
            path = _make(self._base / f"late{self._made:03d}")
            self._registry.add(str(path), time.time(), 0, os.lstat(path).st_ino)


def _make(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _registry_of(base: Path, count: int) -> Registry:
    registry = Registry()
    for index in range(count):
        path = _make(base / f"f{index:03d}")
        registry.add(str(path), time.time() - 100 + index, 0, os.lstat(path).st_ino)
    return registry


def _enforcer(base: Path, registry: Registry, listener: _Arrivals | None = None) -> Enforcer:
    def sweep(directory: str) -> OpenFiles:
        return sweep_open_files(directory)

    return Enforcer(
        registry, base_dir=str(base), sweep=sweep, clock=time.time, listener=listener,
        act_lock=threading.Lock(), pause=lambda seconds: False,
    )  # fmt: skip


def _config(base: Path) -> Config:
    return Config(watch=WatchConfig(base_dir=base))


def test_files_arriving_during_an_eviction_do_not_make_it_back_off(base: Path) -> None:
    registry = _registry_of(base, 20)
    # Each deletion brings a new file: at the end the count is over the limit again.
    enforcer = _enforcer(base, registry, _Arrivals(base, registry, 11))

    enforcer.enforce(_config(base), _LIMITS, Deleter(base))

    assert len(registry) == 16 and enforcer.is_over_limits(_LIMITS)
    assert enforcer.backoff_remaining() == 0  # the next wake-up evicts at once
    enforcer.enforce(_config(base), _LIMITS, Deleter(base))
    assert len(registry) == 5


def test_a_limit_held_by_open_files_backs_off(base: Path) -> None:
    registry = _registry_of(base, 11)
    enforcer = _enforcer(base, registry)
    with ExitStack() as holders:
        for path in sorted(base.iterdir()):
            holders.enter_context(hold_open(path))
        enforcer.enforce(_config(base), _LIMITS, Deleter(base))
    assert len(registry) == 11 and enforcer.is_over_limits(_LIMITS)
    assert enforcer.pinned[0] == 11
    assert enforcer.backoff_remaining() > 0  # nothing it may delete: it waits
