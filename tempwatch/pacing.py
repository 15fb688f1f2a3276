"""How a pass or an eviction round spreads its deletions over time: batches, pauses, a budget.

A plan is carried out in batches of at most `batch_size` deletions (0: one batch). Between
two batches the caller's lock is released and `pause(batch_pause_seconds)` is called, so
that the other side (a pass or the enforcer) can act and a host whose disk must not be
saturated gets a breather. A pass also has a time budget: once `timeout_seconds` have gone
by on the injected timer it deletes no more, and the next pass carries on from where the
registry stands. Nothing here deletes or logs: it only says when to go on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "UNLIMITED",
    "Budget",
    "Pace",
    "Pacer",
    "Pause",
    "batches",
    "until",
    "wait_unless_stopped",
]

_T = TypeVar("_T")

Pause = Callable[[float], bool]
"""Waits up to the given seconds between two batches; True means "stop now"."""


@dataclass(frozen=True, slots=True)
class Pace:
    """The pacing settings of one pass or eviction round (cleanup.* in the config).

    `batch_size` 0 means one batch of everything; `timeout_seconds` 0 means no time limit;
    `threads` is how many threads share a batch's deletions, one set of directories each.
    """

    batch_size: int = 0
    batch_pause_seconds: float = 0.0
    timeout_seconds: float = 0.0
    threads: int = 1


class Budget:
    """A pass's time limit, read from an injected monotonic timer; 0 seconds is no limit."""

    __slots__ = ("_deadline", "_started", "_timer", "timeout_seconds")

    def __init__(self, timeout_seconds: float, timer: Callable[[], float] = time.monotonic):
        self._timer = timer
        self.timeout_seconds = timeout_seconds
        self._started = timer()
        self._deadline = self._started + timeout_seconds if timeout_seconds > 0 else math.inf

    def is_spent(self) -> bool:
        """Whether the time is up (never, without a limit)."""
        return self._deadline != math.inf and self._timer() >= self._deadline

    def elapsed_seconds(self) -> float:
        """Time since the budget was opened, by its timer."""
        return self._timer() - self._started


UNLIMITED = Budget(0.0)
"""The budget of the enforcer: limits must be met, so it is never cut short by time."""


@dataclass(frozen=True, slots=True)
class Pacer:
    """A Pace and its side effects: the timer of the budget, the pause between batches and
    the lock held around each batch (the service's: one pass or round deletes at a time)."""

    pace: Pace = Pace()
    timer: Callable[[], float] = time.monotonic
    pause: Pause = field(default_factory=lambda: wait_unless_stopped)
    lock: AbstractContextManager[Any] = field(default_factory=nullcontext)

    def budget(self) -> Budget:
        """A pass's budget, opened now."""
        return Budget(self.pace.timeout_seconds, self.timer)


def batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """`items` in consecutive slices of at most `size` (all at once when size is 0)."""
    if size <= 0 or len(items) <= size:
        if items:
            yield items
        return
    for start in range(0, len(items), size):
        yield items[start : start + size]


def until(should_stop: Callable[[], bool], items: Iterable[_T]) -> Iterator[_T]:
    """`items`, asking `should_stop` before each one and ending as soon as it says so."""
    for item in items:
        if should_stop():
            return
        yield item


_never_set = threading.Event()


def wait_unless_stopped(seconds: float) -> bool:
    """The default pause where there is no stop request to wait on: waits, returns False."""
    if seconds > 0:
        _never_set.wait(seconds)
    return False
