"""The deleter's fast paths keep every guarantee: a directory kept open across a batch,
moved out of base_dir, mounted over or removed mid-batch, never leads outside base_dir."""

from __future__ import annotations

import gc
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from support import OnDeleted

import tempwatch.dirfd
from tempwatch.cleaner import execute_plan
from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.deleter import Deleter, DeleteResult, FileId, Outcome
from tempwatch.errors import TempwatchError
from tempwatch.oneshot import clean_once
from tempwatch.policy import Decision, Limits, Plan, Reason
from tempwatch.registry import Registry
from tempwatch.rounds import run_pass, run_pass_over

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root (mounts)")

Item = tuple[str, FileId | None]


def _write(path: Path, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _id(path: Path) -> FileId:
    st = os.lstat(path)
    return FileId(st.st_dev, st.st_ino)


def _with_hook(items: list[Item], after_first: Callable[[], None]) -> Iterator[Item]:
    """Yield `items`, running `after_first` once the first item has been acted on."""
    yield items[0]
    after_first()  # the deleter asks for the second item only after the first is done
    yield from items[1:]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- a directory kept open across the batch ---------------------------------------------------


@pytest.mark.parametrize("with_identity", [True, False], ids=["expected", "no-expected"])
def test_a_directory_moved_out_mid_batch_is_not_followed(
    base: Path, outside: Path, with_identity: bool
) -> None:
    files = [_write(base / "sub" / f"f{i}") for i in range(3)]
    items = [(str(f), _id(f) if with_identity else None) for f in files]

    results = list(
        Deleter(base).delete_many(
            _with_hook(items, lambda: os.rename(base / "sub", outside / "sub"))
        )
    )

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.VANISHED, Outcome.VANISHED]
    assert sorted(p.name for p in (outside / "sub").iterdir()) == ["f1", "f2"]


def test_a_directory_replaced_by_a_symlink_out_mid_batch_is_not_followed(
    base: Path, outside: Path
) -> None:
    files = [_write(base / "sub" / f"f{i}") for i in range(2)]

    def swap() -> None:
        os.rename(base / "sub", outside / "sub")
        (base / "sub").symlink_to(outside / "sub")

    items: list[Item] = [(str(f), None) for f in files]
    results = list(Deleter(base).delete_many(_with_hook(items, swap)))

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.SYMLINK_PARENT]
    assert (outside / "sub" / "f1").exists()


def test_a_grandparent_moved_out_mid_batch_is_seen_at_any_depth(base: Path, outside: Path) -> None:
    deep = base / "a" / "b" / "c"
    files = [_write(deep / f"f{i}") for i in range(2)]
    items = [(str(f), _id(f)) for f in files]

    results = list(
        Deleter(base).delete_many(_with_hook(items, lambda: os.rename(base / "a", outside / "a")))
    )

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.VANISHED]
    assert (outside / "a" / "b" / "c" / "f1").exists()


def test_a_directory_moved_deeper_inside_base_is_judged_again_by_its_path(base: Path) -> None:
    files = [_write(base / "a" / f"f{i}") for i in range(2)]
    (base / "x").mkdir()

    def move() -> None:
        os.rename(base / "a", base / "x" / "a")  # same directory, one level deeper
        _write(base / "a" / "f1", b"a new file under the old name")

    items = [(str(f), _id(f)) for f in files]
    results = list(Deleter(base).delete_many(_with_hook(items, move)))

    # The kept fd fails the depth check, the path is walked again and leads to the new file.
    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.SWAPPED]
    assert (base / "x" / "a" / "f1").exists()
    assert (base / "a" / "f1").read_bytes() == b"a new file under the old name"


def test_secure_delete_never_overwrites_a_file_moved_out_mid_batch(
    base: Path, outside: Path
) -> None:
    files = [_write(base / "sub" / f"f{i}", b"secret") for i in range(2)]
    items = [(str(f), _id(f)) for f in files]

    deleter = Deleter(base, secure_delete=True)
    results = list(
        deleter.delete_many(_with_hook(items, lambda: os.rename(base / "sub", outside / "sub")))
    )

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.VANISHED]
    assert (outside / "sub" / "f1").read_bytes() == b"secret"


def test_a_kept_directory_removed_and_recreated_is_walked_again(base: Path) -> None:
    first = _write(base / "sub" / "f0")
    second = base / "sub" / "f1"
    items: list[Item] = [(str(first), None), (str(second), None)]

    def recreate() -> None:
        os.rmdir(base / "sub")
        _write(second)

    results = list(Deleter(base).delete_many(_with_hook(items, recreate)))

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.DELETED]
    assert not second.exists()


def test_the_depth_check_works_past_one_path_of_dotdots(
    base: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With two ".." per lookup, depth 5 takes three lookups: the chunked walk is exercised.
    monkeypatch.setattr(tempwatch.dirfd, "_MAX_HOPS", 2)
    deep = base / "a" / "b" / "c" / "d" / "e"
    files = [_write(deep / f"f{i}") for i in range(3)]
    before = _open_fds()

    def move() -> None:
        os.rename(base / "a", outside / "a")

    items = [(str(f), _id(f)) for f in files]
    results = list(Deleter(base).delete_many(_with_hook(items, move)))

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.VANISHED, Outcome.VANISHED]
    assert sorted(p.name for p in (outside / "a" / "b" / "c" / "d" / "e").iterdir()) == [
        "f1",
        "f2",
    ]
    assert _open_fds() == before


def test_a_batch_holds_two_fds_at_most_whatever_the_depth(base: Path) -> None:
    files = [_write(base / "a" / "b" / "c" / f"d{i % 3}" / f"f{i}") for i in range(12)]
    files += [_write(base / f"top{i}") for i in range(3)]
    before = _open_fds()
    peak = before

    def items() -> Iterator[Item]:
        nonlocal peak
        for path in files:
            peak = max(peak, _open_fds())
            yield str(path), _id(path)

    results = list(Deleter(base).delete_many(items()))

    assert all(r.ok for r in results)
    assert peak <= before + 2
    assert _open_fds() == before


def test_an_abandoned_batch_closes_its_descriptors(base: Path) -> None:
    files = [_write(base / "sub" / f"f{i}") for i in range(3)]
    before = _open_fds()
    batch = Deleter(base).delete_many((str(f), None) for f in files)
    assert next(batch).ok
    assert _open_fds() > before  # base_dir and sub are held between items
    batch.close()
    assert _open_fds() == before
    assert files[1].exists()


def test_interleaved_directories_are_all_deleted(base: Path) -> None:
    files = [_write(base / f"d{i % 4}" / f"f{i}") for i in range(20)]
    results = list(Deleter(base).delete_many((str(f), _id(f)) for f in files))
    assert [r.path for r in results] == [str(f) for f in files]  # input order is kept
    assert all(r.ok for r in results)
    assert all(os.listdir(d) == [] for d in base.iterdir())


# --- mounts -------------------------------------------------------------------------------------


@pytest.fixture
def mount() -> Iterator[Callable[[str, Path], None]]:
    """mount --bind SOURCE TARGET, undone at the end of the test (skips if refused here)."""
    done: list[Path] = []

    def bind(source: str, target: Path) -> None:
        result = subprocess.run(
            ["mount", "--bind", source, str(target)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            pytest.skip(f"mount --bind refused here: {result.stderr.strip()}")
        done.append(target)

    try:
        yield bind
    finally:
        # Unmount before pytest's tmp_path cleanup could recurse into the mount.
        for target in reversed(done):
            subprocess.run(["umount", str(target)], check=True)


Mount = Callable[[str, Path], None]


@root_only
@pytest.mark.root
def test_a_bind_mount_made_mid_batch_is_not_entered(
    base: Path, outside: Path, mount: Mount
) -> None:
    victim = _write(outside / "src" / "f", b"outside")
    first = _write(base / "a" / "f")
    (base / "mnt").mkdir()
    items: list[Item] = [(str(first), None), (str(base / "mnt" / "f"), None)]

    def bind() -> None:
        mount(str(outside / "src"), base / "mnt")

    results = list(Deleter(base).delete_many(_with_hook(items, bind)))

    assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.OTHER_FS]
    assert victim.read_bytes() == b"outside"


@root_only
@pytest.mark.root
def test_a_bind_mount_over_the_kept_directory_is_not_followed(
    base: Path, outside: Path, mount: Mount
) -> None:
    victim = _write(outside / "src" / "f1", b"outside")
    files = [_write(base / "sub" / f"f{i}") for i in range(2)]
    items: list[Item] = [(str(f), None) for f in files]
    covered = os.open(base / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:

        def bind() -> None:
            mount(str(outside / "src"), base / "sub")

        results = list(Deleter(base).delete_many(_with_hook(items, bind)))
        # The kept fd is on the directory under the mount, still in base_dir: its own f1
        # goes, the file mounted over it from outside stays.
        assert [r.outcome for r in results] == [Outcome.DELETED, Outcome.DELETED]
        assert victim.read_bytes() == b"outside"
        assert os.listdir(covered) == []
    finally:
        os.close(covered)


@root_only
@pytest.mark.root
def test_a_bind_mount_below_base_dir_is_refused_in_a_batch(
    base: Path, outside: Path, mount: Mount
) -> None:
    victim = _write(outside / "src" / "f", b"outside")
    (base / "mnt").mkdir()
    flat = _write(base / "g")
    mount(str(outside / "src"), base / "mnt")

    items: list[Item] = [(str(base / "mnt" / "f"), None), (str(flat), None)]
    results = list(Deleter(base).delete_many(items))

    assert [r.outcome for r in results] == [Outcome.OTHER_FS, Outcome.DELETED]
    assert victim.read_bytes() == b"outside"


# --- the cleaner's side -----------------------------------------------------------------------


def _decision(path: Path) -> Decision:
    return Decision(str(path), Reason.EXPIRED, 7200.0, 4, os.lstat(path).st_ino)


class _Heard(OnDeleted):
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        self.deleted.append(decision.path)


def test_execute_plan_deletes_grouped_by_directory(base: Path) -> None:
    files = [_write(base / f"d{i % 3}" / f"f{i}") for i in range(9)]
    registry = Registry()
    for path in files:
        registry.add(str(path), 0.0, 4, os.lstat(path).st_ino)
    heard = _Heard()

    report = execute_plan(
        Plan(deletions=tuple(_decision(f) for f in files)), registry, Deleter(base), listener=heard
    )

    assert len(report.deleted) == 9 and len(registry) == 0
    parents = [os.path.dirname(p) for p in heard.deleted]
    assert parents == sorted(parents, key=lambda p: int(p[-1]))  # d0 x3, d1 x3, d2 x3
    assert sorted(heard.deleted) == sorted(str(f) for f in files)


@pytest.fixture
def pass_summaries() -> Iterator[list[dict[str, Any]]]:
    """The extra fields of every pass summary logged during the test."""
    records: list[dict[str, Any]] = []
    logger.enable("tempwatch")
    sink_id = logger.add(
        lambda message: records.append(message.record["extra"]),
        level="INFO",
        filter=lambda record: record["extra"].get("event") == "pass",
    )
    try:
        yield records
    finally:
        logger.remove(sink_id)
        logger.disable("tempwatch")


def _registry_of(files: list[Path], registered_at: float) -> Registry:
    registry = Registry()
    for path in files:
        ino = os.lstat(path).st_ino if path.exists() else 0
        registry.add(str(path), registered_at, 4, ino)
    return registry


@pytest.mark.parametrize("with_registry", [True, False], ids=["run_pass", "run_pass_over"])
def test_a_pass_counts_what_remains_with_or_without_a_registry(
    base: Path, with_registry: bool, pass_summaries: list[dict[str, Any]]
) -> None:
    old = [_write(base / "d" / f"old{i}") for i in range(3)]
    registry = _registry_of([*old, base / "gone"], 0.0)
    young = _write(base / "young")
    registry.add(str(young), 1e9, 4, os.lstat(young).st_ino)
    kwargs: dict[str, Any] = {"open_paths": frozenset(), "clock": lambda: 1e9 + 1}
    limits = Limits(max_age_seconds=60)

    if with_registry:
        report = run_pass(registry, Deleter(base), limits, **kwargs)
    else:
        report = run_pass_over(registry.oldest_first(), Deleter(base), limits, **kwargs)

    assert len(report.deleted) == 3 and report.vanished == 1
    assert not any(p.exists() for p in old)
    assert len(registry) == (1 if with_registry else 5)  # run_pass_over touches no registry
    assert [summary["remaining"] for summary in pass_summaries] == [1]


def test_a_dry_run_pass_over_entries_counts_every_file_as_remaining(
    base: Path, pass_summaries: list[dict[str, Any]]
) -> None:
    old = [_write(base / f"old{i}") for i in range(2)]
    entries = _registry_of(old, 0.0).oldest_first()

    report = run_pass_over(
        entries,
        Deleter(base, dry_run=True),
        Limits(max_age_seconds=60),
        open_paths=frozenset(),
        clock=lambda: 1e9,
        dry_run=True,
    )

    assert len(report.deleted) == 2 and all(p.exists() for p in old)
    assert [summary["remaining"] for summary in pass_summaries] == [2]


# --- the one-shot clean -----------------------------------------------------------------------


def _config(base: Path, **cleanup: Any) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base),
        cleanup=CleanupConfig(max_age_seconds=60, skip_open_files=False, **cleanup),
        limits=LimitsConfig(max_files=0, max_file_size_bytes=0),
    )


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
def test_clean_once_deletes_and_leaves_the_collector_as_it_found_it(
    base: Path, enabled: bool
) -> None:
    old = [_write(base / f"d{i % 2}" / f"f{i}") for i in range(6)]
    for path in old:
        os.utime(path, (0, 0))
    young = _write(base / "young")
    was_enabled = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        # By mtime: the files were aged by setting it back (their ctime is now).
        report, scan = clean_once(_config(base, age_by=frozenset({"modified"})))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was_enabled else gc.disable)()
    assert sorted(d.path for d, _ in report.deleted) == sorted(str(p) for p in old)
    assert young.exists() and not any(p.exists() for p in old)
    assert len(scan.files) == 7  # what the scan found, deleted files included


def test_clean_once_turns_the_collector_back_on_when_it_raises(tmp_path: Path) -> None:
    assert gc.isenabled()
    with pytest.raises(TempwatchError):
        clean_once(_config(tmp_path / "missing"))
    assert gc.isenabled()
