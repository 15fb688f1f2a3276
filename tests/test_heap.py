"""The heap kept compact: glibc's allocator tuned at start and trimmed every half minute."""

from __future__ import annotations

import platform

import pytest

from tempwatch import heap

needs_glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_trimmer_trims_once_per_interval_from_its_start() -> None:
    clock = FakeClock()
    calls: list[float] = []
    trimmer = heap.Trimmer(trim=lambda: calls.append(clock.now), interval_seconds=30,
                           clock=clock)
    trimmer.tick()
    clock.now += 29.9
    trimmer.tick()
    assert calls == [], "no trim before a whole interval"
    clock.now += 0.1
    trimmer.tick()
    trimmer.tick()
    assert calls == [130.0]
    clock.now += 30
    trimmer.tick()
    assert calls == [130.0, 160.0] and trimmer.trims == 2


@needs_glibc
def test_tune_and_trim_reach_glibc() -> None:
    # Settings for the whole test process, and harmless there: two arenas, a fixed
    # threshold at glibc's own default.
    assert heap.tune() is True
    heap.malloc_trim()  # whether pages were given back depends on the heap: it must run
