"""base_dir changing identity under a running service: mounts, a symlink, removal, recreation.

Real mounts (root only): a bind mount of another directory over base_dir, a tmpfs over it,
base_dir swapped for a symlink, removed and made again. Each time nothing outside is
deleted, /healthz says unhealthy with the reason, and cleaning resumes only on a directory
that passes the start checks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import wait_for
from test_ops_e2e import healthz, make_config, running

from tempwatch.baseguard import describe_change
from tempwatch.config import Config
from tempwatch.deleter import Deleter, Outcome
from tempwatch.dirfd import DirIdentity, dir_identity
from tempwatch.errors import AlreadyRunningError
from tempwatch.instance import LOCK_FILE_NAME, InstanceLock
from tempwatch.openfiles import NO_OPEN_FILES
from tempwatch.policy import Limits
from tempwatch.registry import Registry
from tempwatch.rounds import run_pass
from tempwatch.service import Service

OLD = 1_000_000.0  # an mtime long past: expired under any max_age


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount)"
    if shutil.which("mount") is None:
        return "needs mount(8)"
    return None


needs_mounts = pytest.mark.skipif(_can_mount() is not None, reason=_can_mount() or "")


@contextmanager
def mounted(*args: str) -> Iterator[None]:
    """`mount ARGS...` for the block; the last argument is the mount point."""
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", args[-1]], check=False)


def expired_files(directory: Path, count: int) -> list[Path]:
    paths = [directory / f"old{i}" for i in range(count)]
    for path in paths:
        path.write_bytes(b"x")
        os.utime(path, (OLD, OLD))
    return paths


def quick_config(base: Path) -> Config:
    """Passes every 50 ms; a file registered by an event expires half a second later."""
    return make_config(base, interval_seconds=0.05, max_age_seconds=0.5)


def problem_of(service: Service) -> str:
    return service.stats.base_dir_problem or ""


# -- the identity itself ----------------------------------------------------------------


def test_describe_change_names_what_base_dir_became(base: Path, outside: Path) -> None:
    identity = dir_identity(str(base))
    assert describe_change(str(base), identity) is None
    base.rename(base.with_name("away"))
    assert describe_change(str(base), identity) == "is gone"
    base.symlink_to(outside)
    assert describe_change(str(base), identity) == f"is now a symlink (to {str(outside)!r})"
    base.unlink()
    base.write_text("")
    assert describe_change(str(base), identity) == "is no longer a directory"
    base.unlink()
    base.mkdir()
    change = describe_change(str(base), identity)
    assert change is not None and change.startswith("was replaced by another directory")


@needs_mounts
@pytest.mark.root
def test_a_bound_deleter_refuses_a_directory_mounted_over_base_dir(
    base: Path, outside: Path
) -> None:
    (target,) = expired_files(outside, 1)
    deleter = Deleter(base, identity=dir_identity(str(base)))
    with mounted("--bind", str(outside), str(base)):
        result = deleter.delete(base / target.name)
        assert result.outcome is Outcome.BASE_CHANGED
        assert target.exists()
        # The same directory bound over itself: same device and inode, another mount.
    with mounted("--bind", str(base), str(base)):
        (base / "x").write_text("")
        assert deleter.delete(base / "x").outcome is Outcome.BASE_CHANGED
    assert Deleter(base, identity=dir_identity(str(base))).delete(base / "x").ok


# -- the service ------------------------------------------------------------------------


@needs_mounts
@pytest.mark.root
def test_a_bind_mount_over_base_dir_is_never_cleaned_and_reported(
    base: Path, outside: Path, log_lines: list[str]
) -> None:
    theirs = expired_files(outside, 100)
    config = quick_config(base)
    with running(config, monitor_seconds=0.05) as (service, url):
        with mounted("--bind", str(outside), str(base)):
            wait_for(lambda: "mount" in problem_of(service), message="the mount noticed")
            status, body = healthz(url)
            assert status == 503 and body["status"] == "unhealthy"
            assert any("another mount over it" in str(r) for r in body["reasons"]), body
            service.request_rescan("test")
            assert service.run_pass_now().deleted == []
            assert all(p.exists() for p in theirs)
            assert not any(str(p.name) in path for path in service.registry.paths()
                           for p in theirs)
        # The mount gone, the very directory checked at start is back: resumed.
        wait_for(lambda: service.stats.base_dir_problem is None, message="base_dir back")
        assert healthz(url)[0] == 200
        mine = expired_files(base, 1)[0]
        wait_for(lambda: not mine.exists(), message="cleaning resumed")
    assert all(p.exists() for p in theirs)
    changed = [line for line in log_lines if line.startswith("ERROR base-dir-changed")]
    assert len(changed) == 1, "logged once"
    assert "has another mount over it" in changed[0]
    assert any(line.startswith("WARNING base-dir-adopted") for line in log_lines)


@needs_mounts
@pytest.mark.root
def test_another_filesystem_over_base_dir_is_not_adopted(
    base: Path, log_lines: list[str]
) -> None:
    with running(quick_config(base), monitor_seconds=0.05) as (service, url):
        with mounted("-t", "tmpfs", "tempwatch-test", str(base)):
            wait_for(lambda: "filesystem" in problem_of(service), message="the tmpfs noticed")
            theirs = expired_files(base, 3)
            assert healthz(url)[0] == 503
            assert service.run_pass_now().deleted == []
            assert all(p.exists() for p in theirs)
        wait_for(lambda: service.stats.base_dir_problem is None, message="base_dir back")
    assert sum(line.startswith("ERROR base-dir-changed") for line in log_lines) == 1


def test_base_dir_replaced_by_a_symlink_then_recreated(
    base: Path, outside: Path, log_lines: list[str]
) -> None:
    theirs = expired_files(outside, 5)
    away = base.with_name("away")
    with running(quick_config(base), monitor_seconds=0.05) as (service, url):
        base.rename(away)
        base.symlink_to(outside)
        wait_for(lambda: "symlink" in problem_of(service), message="the symlink noticed")
        status, body = healthz(url)
        assert status == 503 and any("is now a symlink" in str(r) for r in body["reasons"])
        assert service.run_pass_now().deleted == []
        # A real directory again, made by a setup script: it passes the start checks.
        base.unlink()
        base.mkdir()
        wait_for(lambda: service.stats.base_dir_problem is None, message="adopted")
        assert (base / LOCK_FILE_NAME).exists(), "the instance lock is taken in it"
        assert healthz(url)[0] == 200
        (base / "new").write_text("")
        wait_for(lambda: str(base / "new") in service.registry, message="events flow")
        mine = expired_files(base, 1)[0]
        wait_for(lambda: not mine.exists(), message="cleaning resumed")
    assert all(p.exists() for p in theirs)
    assert (away / "").exists()
    assert sum(line.startswith("ERROR base-dir-changed") for line in log_lines) == 1


def test_base_dir_removed_and_recreated_is_adopted_again(base: Path) -> None:
    with running(quick_config(base), monitor_seconds=0.05) as (service, url):
        (base / "sub").mkdir()
        (base / "sub" / "f").write_text("")
        wait_for(lambda: str(base / "sub" / "f") in service.registry, message="registered")
        shutil.rmtree(base)
        wait_for(lambda: problem_of(service) == "is gone", message="the removal noticed")
        status, body = healthz(url)
        assert status == 503 and any("is gone" in str(r) for r in body["reasons"])
        base.mkdir()
        wait_for(lambda: service.stats.base_dir_problem is None, message="adopted")
        (base / "again").write_text("")
        wait_for(lambda: str(base / "again") in service.registry, message="events flow")
        assert set(service.registry.paths()) == {str(base / "again")}
        assert service.stats.observer_alive


def test_a_recreated_base_dir_locked_by_another_instance_is_not_adopted(
    base: Path, log_lines: list[str]
) -> None:
    with running(quick_config(base), monitor_seconds=0.05) as (service, _):
        shutil.rmtree(base)
        wait_for(lambda: problem_of(service) == "is gone", message="the removal noticed")
        base.mkdir()
        other = InstanceLock(base, pid=4242)
        other.acquire()
        try:
            wait_for(lambda: "pid 4242" in problem_of(service), message="refused: locked")
            with pytest.raises(AlreadyRunningError):
                InstanceLock(base).acquire()  # still the other's
        finally:
            other.release()
        wait_for(lambda: service.stats.base_dir_problem is None, message="adopted at last")
    refused = [line for line in log_lines if line.startswith("ERROR base-dir-refused")]
    assert len(refused) == 1 and "pid 4242" in refused[0]


def test_a_reload_while_base_dir_is_gone_keeps_the_service_up(base: Path) -> None:
    config = quick_config(base)
    with Service(config, monitor_interval_seconds=0.05) as service:
        shutil.rmtree(base)
        wait_for(lambda: service.stats.base_dir_problem == "is gone", message="noticed")
        service.reload(dataclasses.replace(config))
        base.mkdir()
        wait_for(lambda: service.stats.base_dir_problem is None, message="adopted")
        mine = expired_files(base, 1)[0]
        wait_for(lambda: not mine.exists(), message="cleaning with the new deleter")


def test_a_pass_halts_at_the_first_file_refused_for_a_changed_base_dir(base: Path) -> None:
    paths = expired_files(base, 3)
    registry = Registry()
    for path in paths:
        registry.add(str(path), OLD, 1, path.stat().st_ino)
    elsewhere = DirIdentity(dev=0, ino=0, mount_id=None)  # not base_dir's
    report = run_pass(registry, Deleter(base, identity=elsewhere), Limits(max_age_seconds=60),
                      open_paths=NO_OPEN_FILES)
    assert [r.outcome for _, r in report.left_alone] == [Outcome.BASE_CHANGED]
    assert report.unfinished == 2 and report.deleted == []
    assert len(registry) == 3 and all(p.exists() for p in paths)
