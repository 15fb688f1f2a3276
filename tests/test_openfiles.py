"""The open-file check: real child processes hold real files open; the sweep must see them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import hold_open, wait_for

from tempwatch.openfiles import (
    NO_OPEN_FILES,
    LazyOpenFiles,
    OpenFiles,
    SweepMethod,
    sweep_open_files,
)

METHODS: list[SweepMethod] = ["procfs", "psutil"]
REPO = Path(__file__).resolve().parents[1]


def _identity(path: Path) -> tuple[int, int]:
    stat = os.lstat(path)
    return (stat.st_dev, stat.st_ino)


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["r", "w", "path"])
def test_file_held_open_is_seen_until_the_holder_exits(
    base: Path, mode: str, method: SweepMethod
) -> None:
    held = _touch(base / "held")
    idle = _touch(base / "idle")
    with hold_open(held, mode):
        found = sweep_open_files(str(base), method=method)
        assert str(held) in found
        assert str(idle) not in found
        assert found.ids == frozenset()  # a named file is known by its name
        assert found.processes_seen >= 2  # the holder and this process
    assert str(held) not in sweep_open_files(str(base), method=method)


@pytest.mark.parametrize("method", METHODS)
def test_files_outside_base_dir_and_base_dir_itself_are_excluded(
    base: Path, method: SweepMethod
) -> None:
    sibling = base.parent / (base.name + "-sibling")  # shares the prefix "base" as a string
    sibling.mkdir()
    outside = _touch(sibling / "f")
    inside = _touch(base / "f")
    with hold_open(outside), hold_open(base, "path"), hold_open(inside):
        found = sweep_open_files(str(base), method=method)
    assert found.paths == {str(inside)}


def test_a_held_directory_under_base_dir_is_seen(base: Path) -> None:
    sub = base / "sub"
    sub.mkdir()
    with hold_open(sub, "path"):
        assert str(sub) in sweep_open_files(str(base), method="procfs")


@pytest.mark.parametrize("method", METHODS)
def test_base_dir_reached_through_a_symlink(base: Path, method: SweepMethod) -> None:
    link = base.parent / "link"
    link.symlink_to(base)
    held = _touch(base / "f")
    with hold_open(link / "f"):
        by_realpath = sweep_open_files(os.path.realpath(link), method=method)
        by_link = sweep_open_files(str(link), method=method)
    assert str(held) in by_realpath
    assert by_link.paths == by_realpath.paths == {str(held)}


@pytest.mark.parametrize("method", METHODS)
def test_this_process_counts_unless_excluded(base: Path, method: SweepMethod) -> None:
    mine = _touch(base / "mine")
    with open(mine, "rb"):
        assert str(mine) in sweep_open_files(str(base), method=method)
        excluded = sweep_open_files(str(base), exclude_pid=os.getpid(), method=method)
        assert str(mine) not in excluded


@pytest.mark.parametrize("method", METHODS)
def test_a_file_renamed_after_the_sweep_is_not_held_by_its_new_name(
    base: Path, method: SweepMethod
) -> None:
    # The sweep answers for names as they were: the deleter's lease is what sees the rest
    # (test_inuse: a file open in another process is kept without any sweep).
    first = _touch(base / "first")
    renamed = base / "renamed"
    with hold_open(first):
        found = sweep_open_files(str(base), method=method)
        first.rename(renamed)
        assert str(first) in found and str(renamed) not in found
        assert not found.holds(str(renamed), *_identity(renamed))


def test_a_file_renamed_before_the_sweep_is_reported_under_its_new_name(base: Path) -> None:
    first = _touch(base / "first")
    with hold_open(first):
        first.rename(base / "second")
        found = sweep_open_files(str(base))
    assert found.paths == {str(base / "second")}


@pytest.mark.parametrize("method", METHODS)
def test_unlinked_files_are_ignored_but_a_literal_deleted_suffix_is_not(
    base: Path, method: SweepMethod
) -> None:
    gone = _touch(base / "gone")
    literal = _touch(base / "kept (deleted)")
    with hold_open(gone), hold_open(literal):
        gone.unlink()
        found = sweep_open_files(str(base), method=method)
    assert found.paths == {str(literal)}
    assert found.ids == frozenset()


def test_unlinked_name_of_a_file_with_another_link_is_held_by_identity(base: Path) -> None:
    first = _touch(base / "first")
    second = base / "second"
    os.link(first, second)
    with hold_open(first):
        first.unlink()  # the holder's name is now reported as "first (deleted)"
        found = sweep_open_files(str(base))
    assert str(second) not in found
    assert found.holds(str(second), *_identity(second))


_DEEP_HOLDER = r"""
import os, sys
os.chdir(sys.argv[1])
for _ in range(int(sys.argv[3])):
    os.chdir(sys.argv[2])
fd = os.open("f", os.O_RDONLY)
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
"""


def test_a_path_too_long_to_report_is_still_held_by_identity(base: Path) -> None:
    component, depth = "d" * 250, 18  # about 4.5 kB: longer than the kernel will report
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(component, dir_fd=dir_fd)
            deeper = os.open(component, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = deeper
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=dir_fd))
        stat = os.stat("f", dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    long_path = "/".join([str(base), *[component] * depth, "f"])
    holder = subprocess.Popen(
        [sys.executable, "-c", _DEEP_HOLDER, str(base), component, str(depth)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        found = sweep_open_files(str(base), method="procfs")
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
        shutil.rmtree(base / component)
    assert found.holds(long_path, stat.st_dev, stat.st_ino)


@contextmanager
def _churning_processes() -> Iterator[list[int]]:
    """Start and kill short-lived children on a thread until the block ends; yield a counter.

    Killed children are zombies until reaped, so the sweep meets those as well as vanished pids.
    """
    stop = threading.Event()
    spawned = [0]

    def churn() -> None:
        while not stop.is_set():
            batch = [subprocess.Popen(["sleep", "60"]) for _ in range(4)]
            for child in batch:
                child.kill()
            for child in batch:
                child.wait(timeout=10)
            spawned[0] += len(batch)

    thread = threading.Thread(target=churn, name="churn")
    thread.start()
    try:
        yield spawned
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.mark.parametrize("method", METHODS)
def test_processes_exiting_during_the_sweep_do_not_abort_it(
    base: Path, method: SweepMethod
) -> None:
    held = _touch(base / "held")
    with hold_open(held), _churning_processes() as spawned:
        wait_for(lambda: spawned[0] > 0, message="children churning")
        for _ in range(15):
            assert str(held) in sweep_open_files(str(base), method=method)
        assert spawned[0] > 0


_AS_NOBODY = r"""
import json, os, sys
from tempwatch.openfiles import sweep_open_files
mine = open(sys.argv[2], "rb")  # opened while still root, still held after the switch
os.setgroups([]); os.setgid(65534); os.setuid(65534)
found = sweep_open_files(sys.argv[1])
print(json.dumps({"paths": sorted(found.paths), "denied": found.processes_denied}))
"""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_a_non_root_sweep_counts_other_users_processes_as_denied(base: Path) -> None:
    theirs = _touch(base / "theirs")
    mine = _touch(base / "mine")
    with hold_open(theirs):
        run = subprocess.run(
            [sys.executable, "-c", _AS_NOBODY, str(base), str(mine)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=True,
        )
    report = json.loads(run.stdout)
    assert report["paths"] == [str(mine)]  # its own file, not root's
    assert report["denied"] >= 1


def _fixed_result(*paths: str) -> OpenFiles:
    return OpenFiles(frozenset(paths), frozenset({(1, 2)}), processes_seen=3, processes_denied=0)


class _CountingSweep:
    def __init__(self, result: OpenFiles) -> None:
        self.result = result
        self.calls: list[str] = []

    def __call__(self, base_dir: str) -> OpenFiles:
        self.calls.append(base_dir)
        return self.result


def test_lazy_open_files_never_sweeps_when_not_asked() -> None:
    sweep = _CountingSweep(_fixed_result("/b/x"))
    lazy = LazyOpenFiles("/b", sweep=sweep)
    assert not lazy.swept
    assert lazy.result is None
    assert sweep.calls == []


def test_lazy_open_files_sweeps_once_for_many_questions() -> None:
    result = _fixed_result("/b/x")
    sweep = _CountingSweep(result)
    lazy = LazyOpenFiles("/b", sweep=sweep)
    assert "/b/x" in lazy
    assert "/b/y" not in lazy
    assert lazy.holds("/b/z", 1, 2)
    assert not lazy.holds("/b/z", 1, 3)
    assert sweep.calls == ["/b"]
    assert lazy.swept
    assert lazy.result is result


def test_lazy_open_files_with_the_real_sweep(base: Path) -> None:
    held = _touch(base / "held")
    with hold_open(held):
        lazy = LazyOpenFiles(str(base))
        assert str(held) in lazy
    assert lazy.result is not None and lazy.result.paths == {str(held)}


def test_open_files_membership_is_by_string_path() -> None:
    found = _fixed_result("/b/x")
    assert "/b/x" in found
    assert Path("/b/x") not in found
    assert 3 not in found
    assert found.holds("/b/x", 9, 9)
    assert found.holds("/elsewhere", 1, 2)
    assert not found.holds("/elsewhere", 2, 1)


def test_no_open_files_holds_nothing(base: Path) -> None:
    held = _touch(base / "held")
    with hold_open(held):
        assert str(held) not in NO_OPEN_FILES
        assert not NO_OPEN_FILES.holds(str(held), *_identity(held))
