"""Benchmark 1's native creator: compiled once per bench run when a C compiler is present.

A Python loop tops out at about 60-80k creates/s on a small machine, where raw inotify
still follows; the C creator (creator.c) does not, so the readers' own ceilings show.
Without a compiler the bench falls back to the Python creator and says so in its notes.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from bench_lib.trees import PacedRun

__all__ = ["compile_creator", "create_paced_native"]

_SOURCE = os.path.join(os.path.dirname(__file__), "creator.c")


def compile_creator(workdir: str) -> tuple[str | None, str]:
    """(path of the compiled creator, "") or (None, why there is none)."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler (cc, gcc or clang) on PATH"
    binary = os.path.join(workdir, "creator")
    done = subprocess.run(
        [compiler, "-O2", "-o", binary, _SOURCE], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None, f"{compiler} failed: {done.stderr.strip()[:200]}"
    return binary, ""


def create_paced_native(binary: str, directory: str, rate: float, seconds: float) -> PacedRun:
    """`trees.create_paced`, by the compiled creator."""
    done = subprocess.run(
        [binary, directory, repr(float(rate)), repr(float(seconds))],
        capture_output=True, text=True, check=True, timeout=seconds * 3 + 30,
    )
    created, target, took, last = done.stdout.split()
    return PacedRun(int(created), int(target), float(took), float(last))
