"""The watcher on real directories: real inotify and polling observers, real files."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from loguru import logger
from support import small_inotify_queue, wait_for

from tempwatch.inotify import InotifyObserver
from tempwatch.registry import Registry
from tempwatch.watcher import Watcher


class Clock:
    """A clock that ticks one second per reading, so every registration time is distinct."""

    def __init__(self, start: float = 1000.0) -> None:
        self._ticks = itertools.count(start)

    def __call__(self) -> float:
        return float(next(self._ticks))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    logger.enable("tempwatch")
    sink = logger.add(lines.append, level="DEBUG", format="{level} {extra} {message}")
    yield lines
    logger.remove(sink)
    logger.disable("tempwatch")


@contextmanager
def watching(base: Path, **kwargs: object) -> Iterator[tuple[Watcher, Registry]]:
    registry = Registry()
    watcher = Watcher(str(base), registry, **kwargs)  # type: ignore[arg-type]
    watcher.start()
    try:
        yield watcher, registry
    finally:
        watcher.stop()


def registered(registry: Registry, path: Path) -> Callable[[], bool]:
    return lambda: str(path) in registry


def gone(registry: Registry, path: Path) -> Callable[[], bool]:
    return lambda: str(path) not in registry


def settle(registry: Registry, directory: Path) -> None:
    """Create a sentinel and wait for it: inotify delivers in order, so earlier events are done."""
    sentinel = directory / f"sentinel-{len(registry)}-{os.urandom(4).hex()}"
    sentinel.write_bytes(b"")
    wait_for(registered(registry, sentinel), message=f"{sentinel.name} registered")
    sentinel.unlink()
    wait_for(gone(registry, sentinel), message=f"{sentinel.name} dropped")


def test_created_file_is_registered_with_size_inode_and_time(base: Path) -> None:
    with watching(base, clock=lambda: 1234.5) as (watcher, registry):
        assert watcher.kind == "inotify"
        path = base / "a.tmp"
        path.write_bytes(b"12345")
        wait_for(lambda: (e := registry.get(str(path))) is not None and e.size_bytes == 5,
                 message="a.tmp registered with 5 bytes")
        entry = registry.get(str(path))
        assert entry is not None
        assert entry.registered_at == 1234.5
        assert entry.ino == path.stat().st_ino


def test_deleted_file_is_dropped(base: Path) -> None:
    path = base / "a.tmp"
    with watching(base) as (_, registry):
        path.write_bytes(b"x")
        wait_for(registered(registry, path), message="registered")
        path.unlink()
        wait_for(gone(registry, path), message="dropped after delete")


def test_rename_inside_keeps_the_age(base: Path) -> None:
    (base / "sub").mkdir()
    with watching(base, clock=Clock()) as (_, registry):
        src = base / "a.tmp"
        src.write_bytes(b"x")
        wait_for(registered(registry, src), message="registered")
        entry = registry.get(str(src))
        assert entry is not None
        dst = base / "sub" / "b.tmp"
        src.rename(dst)
        wait_for(registered(registry, dst), message="renamed entry")
        assert str(src) not in registry
        moved = registry.get(str(dst))
        assert moved is not None and moved.registered_at == entry.registered_at


def test_directory_rename_inside_keeps_the_ages(base: Path) -> None:
    with watching(base, clock=Clock()) as (_, registry):
        (base / "d" / "e").mkdir(parents=True)
        files = [base / "d" / "one", base / "d" / "e" / "two"]
        for path in files:
            path.write_bytes(b"x")
        wait_for(lambda: all(str(p) in registry for p in files), message="both registered")
        ages = {p.name: registry.get(str(p)) for p in files}
        assert all(entry is not None for entry in ages.values())
        (base / "d").rename(base / "renamed")
        moved = [base / "renamed" / "one", base / "renamed" / "e" / "two"]
        wait_for(lambda: all(str(p) in registry for p in moved), message="entries moved")
        settle(registry, base)
        assert all(str(p) not in registry for p in files)
        for path in moved:
            entry, before = registry.get(str(path)), ages[path.name]
            assert entry is not None and before is not None
            assert (entry.registered_at, entry.ino) == (before.registered_at, before.ino)


def test_move_out_drops_and_move_in_registers(base: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with watching(base) as (_, registry):
        inside = base / "a.tmp"
        inside.write_bytes(b"x")
        wait_for(registered(registry, inside), message="registered")
        inside.rename(outside / "a.tmp")
        wait_for(gone(registry, inside), message="dropped after move out")

        (outside / "b.tmp").write_bytes(b"yy")
        (outside / "b.tmp").rename(base / "b.tmp")
        wait_for(registered(registry, base / "b.tmp"), message="registered after move in")


def test_directory_moved_out_and_in(base: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "tree" / "deep").mkdir(parents=True)
    (outside / "tree" / "deep" / "f").write_bytes(b"x")
    with watching(base) as (_, registry):
        (outside / "tree").rename(base / "tree")
        wait_for(registered(registry, base / "tree" / "deep" / "f"), message="moved-in tree")
        (base / "tree").rename(outside / "tree")
        wait_for(gone(registry, base / "tree" / "deep" / "f"), message="moved-out tree dropped")


def test_nested_mkdir_then_create(base: Path) -> None:
    with watching(base) as (_, registry):
        deep = base / "a" / "b" / "c"
        deep.mkdir(parents=True)
        (deep / "f.tmp").write_bytes(b"x")
        wait_for(registered(registry, deep / "f.tmp"), message="file in a/b/c registered")
        # The new directories are watched too, not just scanned once.
        (deep / "later.tmp").write_bytes(b"x")
        wait_for(registered(registry, deep / "later.tmp"), message="later file registered")


class HeldClock:
    """A clock whose first reading blocks until released, holding the emitter thread so that
    the events of the files made meanwhile are handled together, as one read's batch; the
    readings listed in `failing` raise."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._failing = failing
        self._calls = itertools.count()

    def __call__(self) -> float:
        n = next(self._calls)
        if n == 0:
            self.entered.set()
            self.release.wait(10)
        if n in self._failing:
            raise RuntimeError(f"clock reading {n} broke")
        return 1000.0 + n


def make_files_while_held(
    base: Path, clock: HeldClock, names: list[str], *, written: bool = True
) -> None:
    """Make `names` while the emitter is held; each written with its index in bytes, or
    (written=False) only created, opened read-only: one event per file, one clock reading."""
    (base / "first").write_bytes(b"")
    wait_for(clock.entered.is_set, message="the emitter reading the clock for 'first'")
    for index, name in enumerate(names):
        fd = os.open(base / name, os.O_CREAT | (os.O_WRONLY if written else os.O_RDONLY), 0o600)
        if written:
            os.write(fd, b"x" * index)
        os.close(fd)
    clock.release.set()


def test_a_failure_on_one_file_of_a_batch_spares_the_others(base: Path) -> None:
    clock = HeldClock(failing=frozenset({5}))
    missed: list[str] = []
    names = [f"f{i:02d}" for i in range(40)]
    with watching(base, clock=clock, on_missed=missed.append) as (watcher, registry):
        make_files_while_held(base, clock, names, written=False)
        wait_for(lambda: missed, message="the failure reported as missed events")
        settle(registry, base)
        held = [name for name in names if str(base / name) in registry]
        assert len(held) == len(names) - 1, f"only {held} registered"
        assert str(base / "first") in registry
        assert missed == ["handler error"]
        assert watcher.is_alive


def test_every_closed_file_of_a_batch_is_reported_once_with_its_size(base: Path) -> None:
    clock = HeldClock()
    closed: list[tuple[str, int]] = []
    changes = threading.Semaphore(0)
    names = [f"f{i:02d}" for i in range(40)]

    def on_closed(path: str, size_bytes: int) -> None:
        if path.endswith("/f07"):
            raise RuntimeError("callback broke")  # must not cost the other files theirs
        closed.append((path, size_bytes))

    with watching(base, clock=clock, on_closed=on_closed, on_change=changes.release) as (
        _,
        registry,
    ):
        make_files_while_held(base, clock, names)
        settle(registry, base)
        assert all(str(base / name) in registry for name in names)
        expected = [(str(base / name), index) for index, name in enumerate(names)]
        del expected[7]
        paths = {path for path, _ in expected} | {str(base / "f07")}
        assert sorted(c for c in closed if c[0] in paths) == expected
        assert changes.acquire(timeout=1)
        entry = registry.get(str(base / "f39"))
        assert entry is not None and entry.size_bytes == 39


def test_a_name_that_is_not_utf8_is_registered_under_its_fsdecoded_path(base: Path) -> None:
    with watching(base) as (_, registry):
        raw = os.path.join(os.fsencode(base), b"caf\xe9-\xff.tmp")
        with open(raw, "wb") as f:
            f.write(b"abc")
        wait_for(lambda: (e := registry.get(os.fsdecode(raw))) is not None and e.size_bytes == 3,
                 message="the undecodable name registered")


def test_chmod_and_touch_neither_reregister_nor_reset_age(base: Path) -> None:
    closed: list[str] = []
    with watching(base, clock=Clock(), on_closed=lambda p, s: closed.append(p)) as (
        _,
        registry,
    ):
        path = base / "a.tmp"
        path.write_bytes(b"x")
        # The close renews the entry (a write is a use): wait until it was handled.
        wait_for(lambda: str(path) in closed, message="registered and closed")
        before = registry.get(str(path))
        path.chmod(0o600)
        os.utime(path, (1, 1))
        path.touch()
        settle(registry, base)
        assert registry.get(str(path)) == before


def test_close_after_write_refreshes_size_and_reports_it(base: Path) -> None:
    closed: list[tuple[str, int]] = []
    changes = threading.Semaphore(0)
    with watching(
        base, on_closed=lambda p, s: closed.append((p, s)), on_change=changes.release
    ) as (_, registry):
        path = base / "grow.tmp"
        with path.open("wb") as f:
            f.write(b"")
            f.flush()
            wait_for(registered(registry, path), message="registered while open")
            f.write(b"x" * 4096)
        wait_for(lambda: (str(path), 4096) in closed, message="close reported with 4096 bytes")
        entry = registry.get(str(path))
        assert entry is not None and entry.size_bytes == 4096
        assert registry.total_bytes == 4096
        assert changes.acquire(timeout=1)


def test_excluded_globs_and_skip_paths_are_never_registered(base: Path) -> None:
    lock = base / ".tempwatch.lock"
    with watching(base, exclude=("*.log", "cache"), skip_paths=[str(lock)]) as (_, registry):
        (base / "cache" / "x").mkdir(parents=True)
        (base / "cache" / "x" / "f").write_bytes(b"x")
        (base / "app.log").write_bytes(b"x")
        lock.write_bytes(b"123")
        (base / "kept").write_bytes(b"x")
        settle(registry, base)
        assert set(registry.times()) == {str(base / "kept")}
        (base / "kept").rename(base / "kept.log")
        wait_for(gone(registry, base / "kept"), message="renamed to an excluded name: dropped")
        assert str(base / "kept.log") not in registry


def test_symlinks_are_registered_like_files_fifos_and_directories_never(base: Path) -> None:
    with watching(base) as (_, registry):
        (base / "target").write_bytes(b"x")
        os.symlink(base / "target", base / "link")
        os.symlink(base / "nowhere", base / "dangling")
        os.mkfifo(base / "fifo")
        (base / "dir").mkdir()
        settle(registry, base)
        wait_for(
            lambda: set(registry.times())
            == {str(base / "target"), str(base / "link"), str(base / "dangling")},
            message="the file and both links registered, as clean sees them",
        )


def test_handler_exception_is_logged_and_the_observer_keeps_running(
    base: Path, log_lines: list[str]
) -> None:
    calls = itertools.count()
    missed: list[str] = []

    def failing_once() -> float:
        if next(calls) == 0:
            raise RuntimeError("clock broke")
        return 1.0

    with watching(base, clock=failing_once, on_missed=missed.append) as (watcher, registry):
        (base / "first").write_bytes(b"x")
        wait_for(lambda: missed, message="the failure reported as missed events")
        (base / "second").write_bytes(b"x")
        wait_for(registered(registry, base / "second"), message="second registered")
        assert watcher.is_alive
    assert any("clock broke" in line or "failed to handle" in line for line in log_lines)


# The test kills watchdog's dispatcher thread on purpose; pytest reports the thread's death.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_observer_is_noticed_and_restarted(base: Path) -> None:
    calls = itertools.count()

    def fatal_once() -> float:
        if next(calls) == 0:
            raise SystemExit  # not an Exception: it gets past the handler's guard
        return 1.0

    with watching(base, clock=fatal_once) as (watcher, registry):
        (base / "first").write_bytes(b"x")
        wait_for(lambda: not watcher.is_alive, message="observer died")
        watcher.restart()
        assert watcher.is_alive
        (base / "second").write_bytes(b"x")
        wait_for(registered(registry, base / "second"), message="registered after restart")


@pytest.mark.root
def test_queue_overflow_is_reported(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("lowering max_queued_events needs root")
    overflows = threading.Event()
    with small_inotify_queue(16):
        watcher_cm = watching(base, on_overflow=overflows.set)
        watcher, registry = watcher_cm.__enter__()
    try:
        with burst(base):
            wait_for(overflows.is_set, timeout=30, message="overflow reported")
        assert watcher.is_alive
    finally:
        watcher_cm.__exit__(None, None, None)


@pytest.mark.root
def test_directories_made_while_events_were_lost_are_watched_after_an_overflow(
    base: Path,
) -> None:
    """The watcher alone (no rescan): after an overflow its watches cover the whole tree."""
    if os.geteuid() != 0:
        pytest.skip("lowering max_queued_events needs root")
    overflows = threading.Event()
    with small_inotify_queue(16):
        watcher_cm = watching(base, on_overflow=overflows.set)
        watcher, registry = watcher_cm.__enter__()
    try:
        with burst(base, subdirectories=True):
            wait_for(overflows.is_set, timeout=30, message="overflow reported")
        later = [d / "later" for d in base.iterdir() if d.is_dir()]
        assert later, "the burst made no directory"
        # One at a time (two events): a queue of 16 must not overflow again, however slow
        # a loaded machine makes the reader, or an event lost in a watched directory would
        # never come back (no rescan here).
        for start in range(len(later)):
            chunk = later[start : start + 1]
            for path in chunk:
                path.write_bytes(b"x")
            wait_for(lambda c=chunk: all(str(p) in registry for p in c),
                     message=f"a file in each of {[p.parent.name for p in chunk]} registered")
        assert watcher.is_alive
    finally:
        watcher_cm.__exit__(None, None, None)


_WRITER = r"""
import os, sys
d, stop, subdirectories = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
for i in range(200000):
    if i % 500 == 0 and os.path.exists(stop):
        break
    if subdirectories and i % 2 == 0:
        d = os.path.join(sys.argv[1], f"dir-{i}")
        os.mkdir(d)
    os.close(os.open(os.path.join(d, f"burst-{i}"), os.O_CREAT | os.O_WRONLY, 0o600))
"""


@contextmanager
def burst(directory: Path, *, subdirectories: bool = False) -> Iterator[None]:
    """A child creating files as fast as it can until the block ends (at most 200k); with
    `subdirectories`, in a new subdirectory every 2 files."""
    stop = directory.parent / "stop-burst"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(stop), str(int(subdirectories))]
    )
    try:
        yield
    finally:
        stop.write_bytes(b"")
        writer.wait(timeout=30)


def test_polling_observer_create_delete_rename(base: Path) -> None:
    with watching(base, observer="polling", polling_interval_seconds=0.05, clock=Clock()) as (
        watcher,
        registry,
    ):
        assert watcher.kind == "polling"
        path = base / "a.tmp"
        path.write_bytes(b"x")
        wait_for(registered(registry, path), message="polling: created")
        entry = registry.get(str(path))
        path.rename(base / "b.tmp")
        wait_for(registered(registry, base / "b.tmp"), message="polling: renamed")
        moved = registry.get(str(base / "b.tmp"))
        assert entry is not None and moved is not None
        assert moved.registered_at == entry.registered_at
        assert str(path) not in registry
        (base / "b.tmp").unlink()
        wait_for(lambda: len(registry) == 0, message="polling: deleted")


_LIMITED_CHILD = r"""
import os, sys, time
from tempwatch.inotify import InotifyObserver
from tempwatch.registry import Registry
from tempwatch.watcher import Watcher
base, wanted = sys.argv[1], sys.argv[2]
missed = []
registry = Registry()
watcher = Watcher(base, registry, polling_interval_seconds=0.05, on_missed=missed.append)
watcher.start()
print(watcher.kind, flush=True)
sys.stdin.readline()  # the parent has made its files
deadline = time.monotonic() + 10
while wanted not in registry and time.monotonic() < deadline:
    time.sleep(0.01)
print("registered" if wanted in registry else "missing", len(missed), flush=True)
watcher.stop()
"""


class LimitedChild:
    """A watcher in a child process, in its own user namespace with its own inotify limits.

    The limits of a user namespace bind it alone: nothing else on the machine is affected.
    """

    def __init__(self, base: Path, wanted: Path, limits: dict[str, int]) -> None:
        sysctls = " && ".join(
            f"echo {n} > /proc/sys/user/max_inotify_{k}" for k, n in limits.items()
        )
        self.proc = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "sh", "-c", f'{sysctls} && exec "$0" "$@"',
             sys.executable, "-c", _LIMITED_CHILD, str(base), str(wanted)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def kind(self) -> str:
        return self.stdout.readline().strip()

    def verdict(self) -> str:
        self.stdin.write("go\n")
        self.stdin.flush()
        return self.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.stdin.close()
        self.stdout.close()


@pytest.mark.root
def test_auto_falls_back_to_polling_when_inotify_instances_run_out(base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a child in a user namespace with its own inotify limits")
    child = LimitedChild(base, base / "seen", {"instances": 0})
    try:
        assert child.kind() == "polling"
        (base / "seen").write_bytes(b"x")
        assert child.verdict() == "registered 0"
    finally:
        child.close()


@pytest.mark.root
def test_unwatchable_new_subdirectory_is_reported(base: Path) -> None:
    """watchdog swallows a failed watch on a new subdirectory; the watcher must not."""
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a child in a user namespace with its own inotify limits")
    child = LimitedChild(base, base / "seen", {"watches": 2})
    try:
        assert child.kind() == "inotify"
        for name in ("a", "b", "c"):
            (base / name).mkdir()
        (base / "seen").write_bytes(b"x")
        verdict = child.verdict()
        assert verdict.startswith("registered ") and int(verdict.split()[1]) >= 1, verdict
    finally:
        child.close()


def _inotify_instances() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue  # closed meanwhile (the listing's own fd)
    return count


def test_a_failed_reader_ends_says_why_and_releases_its_instance(tmp_path: Path) -> None:
    def refused(fd: int, size: int) -> bytes:
        raise OSError(5, "Input/output error")

    before = _inotify_instances()
    watcher = Watcher(str(tmp_path), Registry(), observer="inotify", inotify_read=refused)
    watcher.start()
    try:
        assert watcher.is_alive and watcher.failure is None
        (tmp_path / "f").write_bytes(b"")  # the read of its event fails
        wait_for(lambda: not watcher.is_alive, message="the observer counts as dead")
        assert watcher.failure == "inotify reader failed: OSError: [Errno 5] Input/output error"
    finally:
        watcher.stop()
    assert _inotify_instances() == before, "the dead reader's inotify instance leaked"


_RENAME_AND_REMAKE = """
import os, sys
for top in sys.argv[1:]:
    os.mkdir(top + "/p")
    os.rename(top + "/p", top + "/m")
    os.mkdir(top + "/p")
"""


def test_a_directory_renamed_and_made_again_at_once_is_watched_under_both_names(
    tmp_path: Path,
) -> None:
    # `mkdir p; mv p m; mkdir p` done before the events are read: the watch added at the
    # first IN_CREATE is on the second `p`, which the rename's events must not take for `m`.
    tops = [tmp_path / f"d{i}" for i in range(100)]
    for top in tops:
        top.mkdir()
    registry = Registry()
    watcher = Watcher(str(tmp_path), registry, observer="inotify")
    watcher.start()
    try:
        wait_for(lambda: watcher.watched_dirs() == {str(tmp_path), *map(str, tops)},
                 message="the tops watched")
        subprocess.run([sys.executable, "-c", _RENAME_AND_REMAKE, *map(str, tops)], check=True)
        files = [top / name / "f" for top in tops for name in ("m", "p")]
        for path in files:
            path.write_bytes(b"")
        wait_for(lambda: all(str(path) in registry for path in files), timeout=30,
                 message="every file registered by its event, in m as in p")
        watched = {str(tmp_path), *(str(top / n) for top in tops for n in ("", "m", "p"))}
        assert watcher.watched_dirs() == {w.rstrip("/") for w in watched}
        for top in tops:
            shutil.rmtree(top)
        # No name of a removed directory stays in the maps.
        wait_for(lambda: watcher.watched_dirs() == {str(tmp_path)}, timeout=30,
                 message="only base_dir still watched")
        observer = watcher._observer
        assert isinstance(observer, InotifyObserver) and observer.kernel_watches == 1
    finally:
        watcher.stop()
