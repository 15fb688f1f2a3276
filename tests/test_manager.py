"""TempFileManager and its Registry, attacked: escapes, odd file types, open files, threads."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from loguru import logger
from support import hold_open

from tempwatch import TempFileManager
from tempwatch import registry as registry_module
from tempwatch.registry import Entry, Registry

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chattr +i, mknod)")


class FakeClock:
    """A settable clock: tests move time instead of waiting for it.

    It starts a minute ahead of the real clock, in whole seconds: the files a test makes
    have their lstat times (real, and ctime cannot be set back) before the clock's start,
    so a file's last use is its registration, and moving the clock ages every timestamp
    alike, as waiting would.
    """

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(time.time()) + 60) if now is None else now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _warnings_naming(records: list[Any], name: str) -> list[str]:
    return [
        str(r["message"])
        for r in records
        if r["level"].no >= logger.level("WARNING").no and name in str(r["message"])
    ]


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """Make `path` impossible to unlink, even for root, for the duration of the block."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr not found: cannot make a file undeletable as root")
    done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


# -- construction and registration --------------------------------------------------------


def test_creates_a_missing_base_dir_and_exposes_it_absolute(tmp_path: Path) -> None:
    wanted = tmp_path / "base"
    manager = TempFileManager(wanted, max_age=10)
    assert wanted.is_dir()
    assert stat.S_IMODE(wanted.stat().st_mode) == 0o700
    assert manager.base_dir.is_absolute()
    assert Path(manager.base_dir) == Path(os.path.realpath(wanted))
    assert manager.max_age == 10
    assert manager.lock is not None
    assert dict(manager.files) == {}


def test_relative_and_dotted_paths_are_registered_absolute(
    base: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    manager = TempFileManager(base, clock=clock)
    _touch(base / "rel")
    _touch(base / "sub" / "dotted")
    monkeypatch.chdir(base)
    assert manager.register_file("rel") is True
    assert manager.register_file(base / "sub" / ".." / "sub" / "." / "dotted") is True
    assert set(manager.files) == {str(base / "rel"), str(base / "sub" / "dotted")}
    # Any spelling of a registered file finds it.
    assert manager.is_temp_file("./rel")
    assert manager.is_temp_file(base / "rel")
    assert manager.is_temp_file("sub/../sub/dotted")
    assert manager.get_file_age(Path("sub") / "dotted") == 0.0


def test_base_dir_given_through_a_symlink_accepts_both_spellings(
    tmp_path: Path, base: Path, clock: FakeClock
) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(base, target_is_directory=True)
    manager = TempFileManager(alias, clock=clock)
    _touch(base / "a")
    _touch(base / "b")
    assert manager.register_file(alias / "a")
    assert manager.register_file(base / "b")
    assert set(manager.files) == {str(base / "a"), str(base / "b")}
    clock.now += 4000
    assert manager.cleanup() == 2
    assert list(base.iterdir()) == []


def test_a_path_through_a_symlinked_directory_inside_base_is_kept_resolved(
    base: Path, clock: FakeClock
) -> None:
    (base / "real").mkdir()
    (base / "alias").symlink_to(base / "real", target_is_directory=True)
    _touch(base / "real" / "f")
    manager = TempFileManager(base, clock=clock)
    assert manager.register_file(base / "alias" / "f")
    assert set(manager.files) == {str(base / "real" / "f")}
    assert manager.is_temp_file(base / "alias" / "f")


def _refusals(base: Path, outside: Path) -> dict[str, Path | str]:
    """Each case: a path that must be refused, after setting up what it points at."""
    sentinel = _touch(outside / "sentinel")
    _touch(base / "inside-target")
    (base / "dir").mkdir()
    (base / "link-inside").symlink_to(base / "inside-target")
    (base / "link-outside").symlink_to(sentinel)
    (base / "link-dir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(base / "fifo")
    return {
        "missing": base / "missing",
        "directory": base / "dir",
        "base_dir itself": base,
        "symlink inside": base / "link-inside",
        "symlink outside": base / "link-outside",
        "fifo": base / "fifo",
        "outside": sentinel,
        "dotdot outside": base / ".." / "outside" / "sentinel",
        "dotdot outside, relative": os.path.relpath(sentinel),
        "through symlinked dir": base / "link-dir" / "sentinel",
        "below a regular file": base / "inside-target" / "x",
        "nul byte": str(base / "nul\0byte"),
        "empty": "",
    }


CASES = [
    "missing",
    "directory",
    "base_dir itself",
    "symlink inside",
    "symlink outside",
    "fifo",
    "outside",
    "dotdot outside",
    "dotdot outside, relative",
    "through symlinked dir",
    "below a regular file",
    "nul byte",
    "empty",
]


@pytest.mark.parametrize("case", CASES)
def test_register_refuses_without_raising_and_warns(
    case: str, base: Path, outside: Path, log_records: list[Any], clock: FakeClock
) -> None:
    manager = TempFileManager(base, clock=clock)
    path = _refusals(base, outside)[case]
    assert manager.register_file(path) is False
    assert dict(manager.files) == {}
    assert len(manager) == 0
    warnings = [r for r in log_records if r["level"].no >= logger.level("WARNING").no]
    assert len(warnings) == 1, f"expected one warning for {case}, got {warnings}"
    # Nothing refused is ever deleted, even by a forced cleanup.
    clock.now += 10**6
    assert manager.cleanup(force=True) == 0
    assert (outside / "sentinel").read_bytes() == b"x"
    assert (base / "inside-target").read_bytes() == b"x"
    assert (base / "fifo").exists()


@pytest.mark.parametrize("case", ["missing", "directory", "symlink inside", "fifo", "outside"])
def test_refusal_warning_names_the_path(
    case: str, base: Path, outside: Path, log_records: list[Any]
) -> None:
    manager = TempFileManager(base)
    path = Path(_refusals(base, outside)[case])
    assert manager.register_file(path) is False
    assert _warnings_naming(log_records, path.name), f"no warning naming {path.name}"


def test_register_refuses_a_unix_socket(
    base: Path, monkeypatch: pytest.MonkeyPatch, log_records: list[Any]
) -> None:
    monkeypatch.chdir(base)  # a relative name keeps the socket path under the AF_UNIX limit
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("sock")
        manager = TempFileManager(base)
        assert manager.register_file(base / "sock") is False
        assert not manager.is_temp_file(base / "sock")
        assert _warnings_naming(log_records, "sock")


@pytest.mark.root
@needs_root
def test_register_refuses_a_device_node(base: Path, log_records: list[Any]) -> None:
    node = base / "null"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    manager = TempFileManager(base)
    assert manager.register_file(node) is False
    assert not manager.is_temp_file(node)
    assert _warnings_naming(log_records, "null")
    assert manager.cleanup(force=True) == 0
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_registering_again_keeps_the_original_time(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=100, clock=clock)
    path = _touch(base / "f")
    first = clock.now
    assert manager.register_file(path)
    clock.now += 60
    assert manager.register_file(path)
    assert manager.register_file(Path(os.path.relpath(path)))
    assert manager.files[str(path)] == first
    assert manager.get_file_age(path) == 60
    clock.now += 41
    # Had the second registration reset the time, the file would be 41 s old and stay.
    assert manager.cleanup() == 1
    assert not path.exists()


def test_age_and_membership_queries(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, clock=clock)
    path = _touch(base / "f")
    other = _touch(base / "g")
    assert manager.get_file_age(path) is None
    assert manager.is_temp_file(path) is False
    manager.register_file(path)
    clock.now += 12.5
    assert manager.get_file_age(path) == 12.5
    assert manager.is_temp_file(path) is True
    assert manager.get_file_age(other) is None
    assert manager.is_temp_file(other) is False
    assert manager.is_temp_file(base / "missing") is False


def test_files_is_read_only(base: Path) -> None:
    manager = TempFileManager(base)
    path = _touch(base / "f")
    manager.register_file(path)
    view = manager.files
    with pytest.raises(TypeError):
        view[str(base / "g")] = 0.0  # type: ignore[index]
    with pytest.raises(TypeError):
        del view[str(path)]  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        manager.files = {}  # type: ignore[misc]
    assert set(manager.files) == {str(path)}


# -- cleanup ------------------------------------------------------------------------------


def test_cleanup_deletes_only_files_older_than_max_age(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=100, clock=clock)
    old = _touch(base / "old")
    edge = _touch(base / "sub" / "edge")
    young = _touch(base / "young")
    manager.register_file(old)
    clock.now += 50
    manager.register_file(edge)
    clock.now += 49
    manager.register_file(young)
    clock.now += 51  # ages: old 150, edge exactly 100, young 51
    assert manager.cleanup() == 1
    assert not old.exists()
    assert edge.exists() and young.exists()
    assert set(manager.files) == {str(edge), str(young)}
    clock.now += 0.001
    assert manager.cleanup() == 1
    assert not edge.exists()
    assert manager.cleanup() == 0
    assert young.exists()


def test_an_old_mtime_does_not_age_a_file_just_registered(
    base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=100, clock=clock)
    ancient = _touch(base / "ancient")
    os.utime(ancient, (0, 0))
    manager.register_file(ancient)
    clock.now += 99
    assert manager.cleanup() == 0
    assert ancient.exists()


def test_a_file_deleted_behind_its_back_is_dropped_and_not_counted(
    base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    gone = _touch(base / "gone")
    kept = _touch(base / "kept")
    manager.register_file(gone)
    manager.register_file(kept)
    gone.unlink()
    clock.now += 11
    assert manager.cleanup() == 1
    assert dict(manager.files) == {}
    assert not kept.exists()
    assert manager.cleanup(force=True) == 0


def test_force_ignores_age(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=3600, clock=clock)
    paths = [_touch(base / f"f{i}") for i in range(3)]
    for path in paths:
        manager.register_file(path)
    assert manager.cleanup() == 0
    assert manager.cleanup(force=True) == 3
    assert not any(path.exists() for path in paths)
    assert len(manager) == 0


@pytest.mark.parametrize("mode", ["r", "w", "path"])
def test_a_file_held_open_is_skipped_until_closed(
    mode: str, base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    held = _touch(base / "held")
    free = _touch(base / "free")
    manager.register_file(held)
    manager.register_file(free)
    clock.now += 11
    with hold_open(held, mode):
        assert manager.cleanup() == 1
        assert held.exists() and not free.exists()
        assert manager.cleanup(force=True) == 0
        assert manager.clear_all() == 0
        assert held.exists()
        assert manager.is_temp_file(held)
    # The holder has exited: the next pass takes the file.
    assert manager.cleanup() == 1
    assert not held.exists()
    assert len(manager) == 0


def test_clear_all_removes_every_registered_file_whatever_its_age(
    base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=3600, clock=clock)
    paths = [_touch(base / "d" / f"f{i}") for i in range(5)]
    unregistered = _touch(base / "unregistered")
    for path in paths:
        manager.register_file(path)
    assert manager.clear_all() == 5
    assert not any(path.exists() for path in paths)
    assert unregistered.exists()
    assert dict(manager.files) == {}


def test_context_manager_clears_on_exit(base: Path) -> None:
    with TempFileManager(base) as manager:
        path = _touch(base / "f")
        manager.register_file(path)
    assert not path.exists()
    assert len(manager) == 0


def test_context_manager_clears_when_the_body_raises(base: Path) -> None:
    path = _touch(base / "f")
    with pytest.raises(RuntimeError, match="boom"), TempFileManager(base) as manager:
        manager.register_file(path)
        raise RuntimeError("boom")
    assert not path.exists()
    assert len(manager) == 0


@pytest.mark.root
@needs_root
def test_a_failed_deletion_keeps_its_entry_and_is_retried(
    base: Path, clock: FakeClock, log_records: list[Any]
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    stuck = _touch(base / "stuck")
    other = _touch(base / "other")
    manager.register_file(stuck)
    manager.register_file(other)
    clock.now += 11
    with _immutable(stuck):
        # One bad file does not stop the pass, and is not counted as deleted.
        assert manager.cleanup() == 1
        assert stuck.exists() and not other.exists()
        assert manager.is_temp_file(stuck)
        assert _warnings_naming(log_records, "stuck"), "the failure was not logged"
        assert manager.cleanup(force=True) == 0
        assert manager.is_temp_file(stuck)
    assert manager.cleanup() == 1
    assert not stuck.exists()
    assert len(manager) == 0


def test_cleanup_after_base_dir_was_removed_drops_everything(
    base: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    manager.register_file(_touch(base / "f"))
    manager.register_file(_touch(base / "sub" / "g"))
    shutil.rmtree(base)
    clock.now += 11
    # Every file is already gone: nothing to count, nothing to keep, nothing to raise.
    assert manager.cleanup() == 0
    assert len(manager) == 0


def test_a_parent_directory_swapped_for_a_symlink_is_not_followed(
    base: Path, outside: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    manager.register_file(_touch(base / "sub" / "f"))
    sentinel = _touch(outside / "f", b"sentinel")
    (base / "sub").rename(base / "sub.old")
    (base / "sub").symlink_to(outside, target_is_directory=True)
    clock.now += 11
    assert manager.cleanup(force=True) == 0
    assert sentinel.read_bytes() == b"sentinel"
    assert (base / "sub.old" / "f").exists()


def test_base_dir_swapped_for_a_symlink_is_not_followed(
    base: Path, outside: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    manager.register_file(_touch(base / "f"))
    sentinel = _touch(outside / "f", b"sentinel")
    base.rename(base.with_name("base.old"))
    base.symlink_to(outside, target_is_directory=True)
    clock.now += 11
    assert manager.cleanup(force=True) == 0
    assert sentinel.read_bytes() == b"sentinel"


def test_a_registered_name_swapped_for_a_symlink_leaves_the_target(
    base: Path, outside: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, clock=clock)
    victim = _touch(base / "f")
    manager.register_file(victim)
    sentinel = _touch(outside / "sentinel", b"sentinel")
    victim.unlink()
    victim.symlink_to(sentinel)
    clock.now += 11
    manager.cleanup(force=True)
    assert sentinel.read_bytes() == b"sentinel"


def test_a_registered_name_swapped_for_a_hard_link_is_not_overwritten(
    base: Path, outside: Path, clock: FakeClock
) -> None:
    manager = TempFileManager(base, max_age=10, secure_delete=True, clock=clock)
    victim = _touch(base / "f")
    manager.register_file(victim)
    sentinel = _touch(outside / "sentinel", b"sentinel")
    victim.unlink()
    os.link(sentinel, victim)
    clock.now += 11
    manager.cleanup(force=True)
    assert sentinel.read_bytes() == b"sentinel"


def test_secure_delete_removes_registered_files(base: Path, clock: FakeClock) -> None:
    manager = TempFileManager(base, max_age=10, secure_delete=True, clock=clock)
    path = _touch(base / "f", b"secret" * 100)
    manager.register_file(path)
    clock.now += 11
    assert manager.cleanup() == 1
    assert not path.exists()


# -- threads ------------------------------------------------------------------------------

THREADS = 8
OPERATIONS = 500


def test_concurrent_use_never_raises_loses_or_double_counts(base: Path) -> None:
    # Every call moves time on, so entries expire while other threads still register; it
    # starts ahead of the real clock, as FakeClock does, so registration is each file's
    # last use.
    ticks = itertools.count(int(time.time()) + 60)
    manager = TempFileManager(base, max_age=400, clock=lambda: float(next(ticks)))
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []
    created = [0] * THREADS
    counted = [0] * THREADS

    def work(n: int) -> None:
        rng = random.Random(n)
        mine: list[Path] = []
        try:
            barrier.wait(timeout=30)
            for i in range(OPERATIONS):
                op = rng.randrange(5)
                if op <= 1 or not mine:
                    path = base / f"t{n}" / f"f{i}"
                    _touch(path)
                    assert manager.register_file(path), f"refused {path}"
                    mine.append(path)
                    created[n] += 1
                elif op == 2:
                    age = manager.get_file_age(rng.choice(mine))
                    assert age is None or age >= 0
                elif op == 3:
                    manager.is_temp_file(rng.choice(mine))
                    len(manager.files)
                else:
                    counted[n] += manager.cleanup(force=rng.random() < 0.02)
        except BaseException as e:  # noqa: B036 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,), name=f"worker-{n}") for n in range(THREADS)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose races
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=50)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    on_disk = {str(p) for p in base.rglob("*") if p.is_file()}
    # None lost: every file still on disk is still registered, nothing gone stays registered.
    assert set(manager.files) == on_disk
    remaining = len(on_disk)
    final = manager.cleanup(force=True)
    assert final == remaining
    assert [p for p in base.rglob("*") if p.is_file()] == []
    assert sum(counted) + final == sum(created)
    assert sum(counted) > 0, "no cleanup ran concurrently with the others"
    assert len(manager) == 0


# -- the registry's order -----------------------------------------------------------------

_DIRS = ("/d0", "/d1", "/d0x")
_PATHS = [f"{d}/{f}" for d in _DIRS for f in ("a", "b", "c")]
_times = st.one_of(st.integers(0, 30).map(float), st.floats(0, 30, allow_nan=False))
_add = st.tuples(
    st.just("add"), st.sampled_from(_PATHS), _times, st.integers(0, 100), st.integers(0, 2)
)
_ops = st.one_of(
    _add,
    _add,  # adds are what make entries arrive out of order: draw them more often
    _add,
    st.tuples(st.just("discard"), st.sampled_from(_PATHS)),
    st.tuples(st.just("move"), st.sampled_from(_PATHS), st.sampled_from(_PATHS)),
    st.tuples(st.just("move_tree"), st.sampled_from(_DIRS), st.sampled_from(_DIRS)),
    st.tuples(st.just("discard_tree"), st.sampled_from(_DIRS)),
    st.tuples(st.just("update_size"), st.sampled_from(_PATHS), st.integers(0, 100)),
)


def _apply_to_model(model: dict[str, Entry], op: tuple[Any, ...]) -> None:
    """What each operation means, written as plainly as possible."""
    kind = op[0]
    if kind == "add":
        _, path, at, size, ino = op
        old = model.get(path)
        if old is not None and (ino == 0 or old.ino == 0 or old.ino == ino):
            model[path] = Entry(old.registered_at, size, ino or old.ino)
        else:
            model[path] = Entry(at, size, ino)
    elif kind == "discard":
        model.pop(op[1], None)
    elif kind == "move":
        _, src, dst = op
        if src in model:
            model[dst] = model.pop(src)
    elif kind == "move_tree":
        _, src, dst = op
        for path in [p for p in model if p.startswith(src + "/")]:
            model[dst + path[len(src) :]] = model.pop(path)
    elif kind == "discard_tree":
        for path in [p for p in model if p.startswith(op[1] + "/")]:
            del model[path]
    elif kind == "update_size" and op[1] in model:
        model[op[1]] = model[op[1]]._replace(size_bytes=op[2])


def _apply(registry: Registry, op: tuple[Any, ...]) -> None:
    getattr(registry, op[0])(*op[1:])


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(_ops, min_size=3, max_size=80), rebuild_min=st.sampled_from([1, 2, 3, 1024]))
@example(  # two late arrivals past the threshold of 1: the side table is rebuilt in order
    ops=[("add", "/d0/a", 5.0, 1, 1), ("add", "/d0/b", 3.0, 1, 1), ("add", "/d0/c", 1.0, 1, 1)],
    rebuild_min=1,
)
def test_registry_iterates_oldest_first_under_any_operations(
    ops: list[tuple[Any, ...]], rebuild_min: int
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        # A small threshold exercises the rebuild of the out-of-order side table.
        mp.setattr(registry_module, "_REBUILD_MIN", rebuild_min)
        registry = Registry()
        model: dict[str, Entry] = {}
        for op in ops:
            _apply(registry, op)
            _apply_to_model(model, op)
            listed = registry.oldest_first()
            times = [entry.registered_at for _, entry in listed]
            assert times == sorted(times), f"not oldest first after {op}: {listed}"
            assert dict(listed) == model
            assert len(listed) == len(model) == len(registry)
            assert registry.total_bytes == sum(e.size_bytes for e in model.values())
            assert registry.times() == {p: e.registered_at for p, e in model.items()}
            for k in (0, 1, 3):
                assert registry.oldest(k) == listed[:k]
            with registry.lock:
                assert list(registry.iter_oldest()) == listed
