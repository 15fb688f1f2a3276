"""In use as the kernel sees it: leases at the unlink, locked directories, holders named.

Every holder is a real child process; nothing about the kernel is simulated.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import child_process, hold_open, wait_for

from tempwatch.cleaner import PassReport, log_pinned
from tempwatch.config import CleanupConfig, Config, WatchConfig
from tempwatch.deleter import Deleter, FileId, Outcome
from tempwatch.inuse import LeaseProbe
from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles, sweep_open_files
from tempwatch.policy import Limits
from tempwatch.registry import Registry
from tempwatch.rounds import run_eviction, run_pass
from tempwatch.service import Service
from tempwatch.status import gather_status, render_text

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="needs root (namespaces, other users)")


_MAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
fd = os.open(sys.argv[1], os.O_RDONLY)
address = libc.mmap(None, 4096, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
assert address not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
os.close(fd)  # only the mapping is left: no descriptor in /proc/PID/fd
print("ready", flush=True)
sys.stdin.read()
"""

_DIR_LOCKER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX)
print("ready", flush=True)
sys.stdin.read()
"""

_OPENER = """
import os, sys
print("ready", flush=True)
sys.stdin.readline()
fd = os.open(sys.argv[1], os.O_RDONLY)  # waits while a lease is held on the file
os.close(fd)
print("opened", flush=True)
"""


def _old(path: Path, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    two_hours_ago = time.time() - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    return path


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's own tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="tempwatch-test-"))
    os.chmod(directory, 0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def _expire(base: Path, target: Path) -> PassReport:
    """One pass over a registry holding only `target`, long expired, with the sweep on."""
    registry = Registry()
    registry.add(str(target), 0.0, 4, os.lstat(target).st_ino)
    return run_pass(
        registry, Deleter(base), Limits(max_age_seconds=1),
        open_paths=LazyOpenFiles(str(base)), clock=lambda: 10_000.0,
    )  # fmt: skip


# -- the lease ------------------------------------------------------------------------------


def test_a_probe_on_the_main_thread_makes_a_lease_break_harmless(base: Path) -> None:
    target = _old(base / "f")
    probe = LeaseProbe()
    assert probe.unavailable is None
    assert signal.getsignal(signal.SIGIO) == signal.SIG_IGN
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        lease_fd = probe.acquire("f", dir_fd)
        assert lease_fd is not None
        with child_process(_OPENER, str(target)) as opener:
            assert opener.stdin is not None and opener.stdout is not None
            opener.stdin.write("go\n")
            opener.stdin.flush()
            # The opener's open() breaks our lease: SIGIO arrives and must not end us.
            wait_for(lambda: _lease_breaking(lease_fd), message="the lease break to start")
            os.close(lease_fd)
            assert opener.stdout.readline().strip() == "opened"
    finally:
        os.close(dir_fd)


def _lease_breaking(fd: int) -> bool:
    import fcntl

    # While a break is pending, F_GETLEASE reports the type the lease is being downgraded to.
    return bool(fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK)


def test_a_file_only_mapped_by_another_process_is_kept(base: Path) -> None:
    target = _old(base / "mapped", b"x" * 4096)
    with child_process(_MAPPER, str(target)):
        assert str(target) not in sweep_open_files(str(base))  # the sweep cannot see it
        result = Deleter(base).delete(target)
        assert result.outcome is Outcome.IN_USE
        assert target.exists()
    assert Deleter(base).delete(target).outcome is Outcome.DELETED


def test_a_file_open_in_another_process_is_kept_without_any_sweep(base: Path) -> None:
    target = _old(base / "held")
    with hold_open(target, "w"):
        assert Deleter(base).delete(target).outcome is Outcome.IN_USE
    assert Deleter(base).delete(target).ok


def _swap_in(path: Path, kind: str) -> None:
    """Put a non-regular file where a regular one was judged, as an attacker racing a pass.

    Made beside it and renamed over it, so that it cannot reuse the judged inode number."""
    made = path.with_name(path.name + ".new")
    if kind == "fifo":
        os.mkfifo(made)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(made))
    elif kind == "device":
        if not is_root:
            pytest.skip("mknod of a device node needs root")
        os.mknod(made, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    else:
        made.mkdir()
    path.unlink()
    os.rename(made, path)


@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "directory"])
@pytest.mark.parametrize("judged", [True, False], ids=["with-identity", "without"])
def test_a_special_file_swapped_in_is_refused_and_the_lease_stays_on(
    base: Path, kind: str, judged: bool
) -> None:
    # The deleter judges a file by the fd it opens: the one extra thing it does to a special
    # file swapped in after the scan is open it (without blocking) and close it. It must not
    # be deleted, nor leased (a refused lease would turn the probe off for every later file).
    target = _old(base / "f")
    expected = FileId(*(lambda st: (st.st_dev, st.st_ino))(os.lstat(target)))
    deleter = Deleter(base)
    _swap_in(target, kind)
    result = deleter.delete(target, expected if judged else None)
    assert result.outcome is (Outcome.SWAPPED if judged else Outcome.SPECIAL)
    assert os.path.lexists(target) and not target.is_file()
    assert deleter.lease_unavailable is None
    held = _old(base / "held")
    with hold_open(held, "r"):
        assert deleter.delete(held).outcome is Outcome.IN_USE  # the lease still decides
    assert deleter.delete(held).ok


def test_a_symlink_in_a_files_place_is_judged_by_lstat_and_removed_as_a_link(
    base: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside-target"
    outside.write_text("keep")
    link = base / "link"
    link.symlink_to(outside)
    deleter = Deleter(base)
    assert deleter.delete(link).ok
    assert not os.path.lexists(link) and outside.read_text() == "keep"
    assert deleter.lease_unavailable is None


def test_an_o_path_holder_is_not_seen_by_the_lease_but_by_the_sweep(base: Path) -> None:
    target = _old(base / "o-path")
    with hold_open(target, "path"):
        assert str(target) in sweep_open_files(str(base))
        report = _expire(base, target)
        assert [d.path for d in report.skipped_open] == [str(target)]
        assert target.exists()


def test_a_dry_run_reports_the_kernels_answer_too(base: Path) -> None:
    target = _old(base / "held")
    with hold_open(target, "r"):
        assert Deleter(base, dry_run=True).delete(target).outcome is Outcome.IN_USE
    assert Deleter(base, dry_run=True).delete(target).ok
    assert target.exists()


@pytest.mark.root
@needs_root
def test_a_holder_in_another_pid_namespace_keeps_its_file(base: Path) -> None:
    """`tempwatch clean` run in its own PID namespace sees no other process in /proc."""
    held = _old(base / "held-from-outside")
    free = _old(base / "free")
    command = [
        "unshare", "--pid", "--fork", "--mount-proc",
        sys.executable, "-m", "tempwatch", "clean", "--base-dir", str(base), "--max-age", "1h",
    ]  # fmt: skip
    with hold_open(held, "r"):
        # The files were aged with utime, which sets their ctime to now: age by mtime only.
        env = {**os.environ, "TEMP_FILE_AGE_BY": "modified"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
        if done.returncode != 0 and "unshare" in done.stderr:
            pytest.skip(f"cannot make a PID namespace here: {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        assert held.exists()
        assert not free.exists()


@pytest.mark.root
@needs_root
def test_without_lease_rights_the_sweep_alone_decides_and_says_so(
    public_dir: Path,
) -> None:
    """A lease needs ownership or CAP_LEASE: a deleter running as nobody has neither."""
    shared = public_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    target = _old(shared / "roots-file")
    code = textwrap.dedent(
        """
        import os, sys
        from tempwatch.deleter import Deleter  # imported while the interpreter is readable
        os.setgid(65534); os.setuid(65534)
        deleter = Deleter(sys.argv[1])
        print(deleter.delete(sys.argv[2]).outcome.value)
        print(deleter.lease_unavailable)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(shared), str(target)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome, unavailable = done.stdout.splitlines()
    assert outcome == "deleted"
    assert unavailable.startswith("leases refused here")
    assert not target.exists()


# -- locked directories -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["shared", "exclusive"])
def test_a_locked_directory_keeps_everything_below_it(base: Path, mode: str) -> None:
    locked = base / "locked"
    inner = _old(locked / "f")
    deeper = _old(locked / "sub" / "g")
    free = _old(base / "free" / "h")
    with child_process(_DIR_LOCKER, str(locked), mode):
        results = list(Deleter(base).delete_many([(inner, None), (deeper, None), (free, None)]))
        assert [r.outcome for r in results] == [Outcome.LOCKED, Outcome.LOCKED, Outcome.DELETED]
        assert inner.exists() and deeper.exists()
        assert Deleter(base).remove_empty_dir(locked / "sub", 0, time.time() + 10).outcome in (
            Outcome.LOCKED,
        )
    assert Deleter(base).delete(inner).ok


def test_a_locked_file_is_kept_and_its_holder_named(
    base: Path, log_records: list[Any]
) -> None:
    target = _old(base / "app.lock")
    locker = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    sys.stdin.read()
    """
    with child_process(locker, str(target)) as child:
        report = _expire(base, target)
        assert target.exists()
        assert report.holders[str(target)].startswith(f"pid {child.pid} (python")
    skipped = [r for r in log_records if r["extra"].get("event") == "skipped-open"]
    assert skipped and f"pid {child.pid}" in skipped[0]["extra"]["holders"]
    assert "user root" in skipped[0]["extra"]["holders"] or not is_root


# -- planning around what the kernel refused --------------------------------------------------


def test_an_eviction_plans_around_a_file_the_sweep_cannot_see(base: Path) -> None:
    oldest = _old(base / "a", b"x" * 4096)
    others = [_old(base / name) for name in ("b", "c", "d")]
    registry = Registry()
    for when, path in enumerate([oldest, *others]):
        registry.add(str(path), float(when), path.stat().st_size, path.stat().st_ino)
    limits = Limits(max_age_seconds=3600, max_files=3, low_watermark=1.0)  # one must go
    with child_process(_MAPPER, str(oldest)):
        report = run_eviction(
            registry, Deleter(base), limits, open_paths=NO_OPEN_FILES, clock=lambda: 10.0
        )
        # The oldest is refused at the unlink; the next oldest goes in its place.
        assert oldest.exists()
        assert [path.exists() for path in others] == [False, True, True]
        assert len(registry) == 3
        assert [d.path for d in report.skipped_open] == [str(oldest)]
        assert "cannot see" in report.holders[str(oldest)]


# -- deleted but still open -----------------------------------------------------------------


def test_a_deleted_file_still_open_is_reported_with_its_bytes_and_holder(base: Path) -> None:
    target = base / "gone-but-held"
    target.write_bytes(b"y" * 10_000)
    with hold_open(target, "r") as pid:
        os.unlink(target)
        found = sweep_open_files(str(base))
        assert [(d.path, d.size_bytes, d.pids) for d in found.deleted] == [
            (str(target), 10_000, (pid,))
        ]
        assert str(target) not in found


def test_status_and_the_service_report_deleted_files_still_open(base: Path) -> None:
    target = base / "gone-but-held"
    target.write_bytes(b"z" * 20_000)
    config = Config(watch=WatchConfig(base_dir=base), cleanup=CleanupConfig(interval_seconds=3600))
    with hold_open(target, "r") as pid:
        os.unlink(target)
        report = gather_status(config, open_paths=LazyOpenFiles(str(base)))
        assert (report.deleted_open_files, report.deleted_open_bytes) == (1, 20_000)
        assert report.deleted_open[0].holders[0].startswith(f"pid {pid} (")
        assert f"held by pid {pid}" in render_text(report)
        with Service(config) as service:
            service.run_pass_now()
            stats = service.stats
            assert (stats.deleted_open_files, stats.deleted_open_bytes) == (1, 20_000)
    with Service(config) as service:
        service.run_pass_now()
        assert service.stats.deleted_open_bytes == 0


def test_the_service_says_once_when_the_sweep_alone_decides(
    base: Path, log_records: list[Any]
) -> None:
    config = Config(
        watch=WatchConfig(base_dir=base),
        cleanup=CleanupConfig(interval_seconds=3600, lease_probe=False),
    )
    with Service(config) as service:
        service.run_pass_now()
        service.run_pass_now()
        assert service.stats.in_use_check == "/proc sweep only (cleanup.lease_probe = false)"
    said = [r for r in log_records if r["extra"].get("event") == "lease-fallback"]
    assert len(said) == 1
    with Service(Config(watch=WatchConfig(base_dir=base))) as service:
        service.run_pass_now()
        assert service.stats.in_use_check == "kernel lease and /proc sweep"


@pytest.mark.root
@needs_root
def test_a_file_open_by_another_user_is_kept_and_the_user_named(public_dir: Path) -> None:
    base = public_dir / "base"
    base.mkdir()
    os.chmod(base, 0o777)
    target = _old(base / "theirs")
    os.chmod(target, 0o666)
    holder = """
    import os, sys
    os.setgid(65534); os.setuid(65534)
    fd = os.open(sys.argv[1], os.O_RDONLY)
    print("ready", flush=True)
    sys.stdin.read()
    """
    with child_process(holder, str(target)) as child:
        report = _expire(base, target)
        assert target.exists()
        named = report.holders[str(target)]
        assert named.startswith(f"pid {child.pid} (") and named.endswith(", user nobody)")
        # Without the sweep, the kernel alone still keeps it.
        assert Deleter(base).delete(target).outcome is Outcome.IN_USE


def test_the_probe_leaves_the_access_time_and_the_registry_alone(base: Path) -> None:
    target = _old(base / "kept-young", b"x")
    before = os.lstat(target)
    with hold_open(target, "r"):
        assert Deleter(base).delete(target).outcome is Outcome.IN_USE
    after = os.lstat(target)
    assert (after.st_atime_ns, after.st_mtime_ns) == (before.st_atime_ns, before.st_mtime_ns)


def test_the_pinned_warning_names_the_top_holders(
    base: Path, log_records: list[Any]
) -> None:
    held = [_old(base / f"held-{i}") for i in range(3)]
    registry = Registry()
    for when, path in enumerate(held):
        registry.add(str(path), float(when), 4, os.lstat(path).st_ino)
    limits = Limits(max_age_seconds=3600, max_files=1, low_watermark=1.0)
    with hold_open(held[0], "r") as first, hold_open(held[1], "r"), hold_open(held[2], "r"):
        report = run_eviction(
            registry, Deleter(base), limits, open_paths=sweep_open_files(str(base)),
            clock=lambda: 10.0,
        )  # fmt: skip
        assert report.pinned_files >= 2
        log_pinned(report)
    [warning] = [r for r in log_records if r["extra"].get("event") == "pinned"]
    assert f"held by pid {first} (" in str(warning["message"])
    assert "(1 files)" in warning["extra"]["holders"]
