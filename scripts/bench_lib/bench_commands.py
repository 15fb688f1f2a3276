"""Benchmark 10, command start-up: `tempwatch --help` and `tempwatch status` on an empty directory.

What a person at a terminal, a shell completion or a container probe pays for one command: the
whole process, interpreter start-up included, measured from outside. Each round starts the two
commands and `python -c pass` (the same interpreter with the same site-packages: the floor no
Python program goes under) one after the other, so a drift in the machine's speed moves all
three; the figure is the median of the rounds.

The package's bytecode is compiled first: an installed package has its .pyc files, and an
environment with PYTHONDONTWRITEBYTECODE (CI, containers) would otherwise measure the
compiler on every start.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import sys

from bench_lib.context import Context, median_of
from bench_lib.procs import child_env, run_command
from bench_lib.report import BenchResult, Figure, Goal, Series

__all__ = ["bench_commands"]

_STARTS = 10  # the goal's count, whatever --runs says: one start is a few tens of ms
_GOAL_SECONDS = 0.15
_TIMEOUT_SECONDS = 60


def _compile_package() -> None:
    spec = importlib.util.find_spec("tempwatch")
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)


def bench_commands(ctx: Context) -> BenchResult:
    """Median wall time of 10 starts of each command against `python -c pass`."""
    tempwatch = os.path.join(os.path.dirname(sys.executable), "tempwatch")
    empty = ctx.fresh_dir("empty")
    commands = {
        "help": [tempwatch, "--help"],
        "status": [tempwatch, "status", "--base-dir", empty],
        "floor": [sys.executable, "-c", "pass"],
    }
    _compile_package()
    env = child_env()
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(_STARTS + 1):
        for name, command in commands.items():
            seconds, done = run_command(command, timeout_seconds=_TIMEOUT_SECONDS, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)}: exit {done.returncode}: "
                                   f"{done.stderr.decode(errors='replace')[-500:]}")
            if round_:  # the first round only warms the page cache
                samples[name].append(seconds)
    medians = {name: median_of(values) or 0.0 for name, values in samples.items()}
    ctx.log("10 " + ", ".join(f"{name} {m * 1000:.0f} ms" for name, m in medians.items()))
    result = BenchResult("10", "Command start-up", {"starts": _STARTS, "python": sys.executable})
    floor = Series("python -c pass (same interpreter)", samples["floor"])
    for name, label in (("help", "tempwatch --help"), ("status", "tempwatch status, empty dir")):
        figure = Figure(label, "s", False, Series(label, samples[name]), [floor])
        result.figures.append(figure)
        median = figure.subject.median
        result.goals.append(Goal(
            f"{label} ≤ {_GOAL_SECONDS} s",
            None if median is None else median <= _GOAL_SECONDS,
            "median " + ("n/a" if median is None else f"{median:.3f} s"),
        ))
    return result
