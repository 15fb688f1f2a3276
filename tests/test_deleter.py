"""The safe deleter with real files, symlinks and mounts: every refusal leaves a sentinel intact."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tempwatch.age import AgeCheck
from tempwatch.deleter import DeleteItem, Deleter, DeleteResult, FileId, Outcome, PathArg
from tempwatch.scan import scan_tree
from tempwatch.spread import delete_spread

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root (mounts, chown, chattr, mknod)")


@pytest.fixture(autouse=True, params=[1, 4], ids=["1-thread", "4-threads"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every test here runs twice: as written, and with each file deleted on a worker thread.

    With 4 threads, `delete` goes through the threaded batch path (cleanup.threads = 4)
    beside three decoy items in directories of their own that do not exist, so that the
    batch really is dealt to four threads and the tested file is handled on one of them,
    with its own descent from base_dir. The decoys touch nothing: they can only vanish.
    """
    count: int = request.param
    if count > 1:

        def delete(
            self: Deleter,
            path: PathArg,
            expected: FileId | None = None,
            age_check: AgeCheck | None = None,
        ) -> DeleteResult:
            decoys: list[DeleteItem] = [
                (os.path.join(self.base_dir, f".no-such-dir-{n}", "absent"), None)
                for n in range(count - 1)
            ]
            items: list[DeleteItem] = [(path, expected, age_check), *decoys]
            results = dict(delete_spread(self, items, threads=count))
            assert [results[n].outcome for n in range(1, count)] == [Outcome.VANISHED] * (
                count - 1
            )
            return results[0]

        monkeypatch.setattr(Deleter, "delete", delete)
    return count


@pytest.fixture
def sentinel(outside: Path) -> Path:
    path = outside / "sentinel"
    path.write_bytes(b"must survive")
    return path


def _write(path: Path, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@contextmanager
def _mounted(target: Path, *mount_args: str) -> Iterator[None]:
    """Mount on `target` for the block; skip the test if this sandbox forbids mounting."""
    done = _run("mount", *mount_args, str(target))
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(mount_args)} refused here: {done.stderr.strip()}")
    try:
        yield
    finally:
        # Unmount before pytest's tmp_path cleanup could recurse into the mount.
        subprocess.run(["umount", str(target)], check=True)


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done = _run("chattr", "+i", str(path))
    if done.returncode != 0:
        pytest.skip(f"chattr +i refused on this filesystem: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- the plain case ------------------------------------------------------------------------


def test_deletes_a_regular_file_and_reports_its_size(base: Path) -> None:
    target = _write(base / "sub" / "f.tmp", b"x" * 1234)
    result = Deleter(base).delete(target)
    assert result == DeleteResult(str(target), Outcome.DELETED, size_bytes=1234)
    assert result.ok
    assert not target.exists()


def test_a_file_that_is_already_gone_has_vanished(base: Path) -> None:
    deleter = Deleter(base)
    for path in (base / "missing", base / "no-such-dir" / "f"):
        result = deleter.delete(path)
        assert (result.outcome, result.error, result.ok) == (Outcome.VANISHED, None, False)


def test_base_dir_must_be_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Deleter(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        Deleter(_write(tmp_path / "file"))


def test_base_dir_is_resolved_and_paths_must_use_the_resolved_form(
    tmp_path: Path, base: Path
) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(base)
    deleter = Deleter(alias)
    assert deleter.base_dir == str(base)
    target = _write(base / "f")
    assert deleter.delete(alias / "f").outcome is Outcome.OUTSIDE
    assert deleter.delete(target).outcome is Outcome.DELETED


def test_a_non_path_argument_is_a_programming_error(base: Path) -> None:
    with pytest.raises(TypeError):
        Deleter(base).delete(42)  # type: ignore[arg-type]


def test_a_path_with_a_nul_byte_fails_without_raising(base: Path) -> None:
    result = Deleter(base).delete(f"{base}/a\0b")
    assert result.outcome is Outcome.FAILED
    assert result.error == "path contains a NUL byte"


# --- staying below base_dir ----------------------------------------------------------------


def test_an_absolute_path_outside_base_dir_is_refused(base: Path, sentinel: Path) -> None:
    assert Deleter(base).delete(sentinel).outcome is Outcome.OUTSIDE
    assert sentinel.read_bytes() == b"must survive"


def test_a_relative_path_is_taken_from_the_current_directory(
    base: Path, sentinel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sentinel.parent)
    assert Deleter(base).delete("sentinel").outcome is Outcome.OUTSIDE
    assert sentinel.exists()
    monkeypatch.chdir(base)
    _write(base / "mine")
    assert Deleter(base).delete("mine").outcome is Outcome.DELETED


@pytest.mark.parametrize(
    "relative",
    ["../outside/sentinel", "sub/../../outside/sentinel", "./sub/./../../outside/sentinel"],
)
def test_dotdot_escapes_are_refused(base: Path, sentinel: Path, relative: str) -> None:
    (base / "sub").mkdir()
    result = Deleter(base).delete(f"{base}/{relative}")
    assert result.outcome is Outcome.OUTSIDE
    assert result.path == str(sentinel)
    assert sentinel.read_bytes() == b"must survive"


def test_a_sibling_whose_name_starts_with_base_dir_is_outside(tmp_path: Path, base: Path) -> None:
    sibling = _write(tmp_path / "base-other" / "f")
    assert Deleter(base).delete(sibling).outcome is Outcome.OUTSIDE
    assert sibling.exists()


@pytest.mark.parametrize("suffix", ["", "/", "/.", "/sub/..", "//"])
def test_base_dir_itself_is_refused(base: Path, suffix: str) -> None:
    os.utime(base, (0, 0))  # empty and old: only the base_dir rule keeps it
    deleter = Deleter(base)
    assert deleter.delete(f"{base}{suffix}").outcome is Outcome.OUTSIDE
    assert deleter.remove_empty_dir(f"{base}{suffix}", 0, now=1e10).outcome is Outcome.OUTSIDE
    assert base.is_dir()


def test_the_root_directory_as_base_dir_is_never_deleted_itself() -> None:
    assert Deleter("/").delete("/").outcome is Outcome.OUTSIDE


def test_a_leading_double_slash_means_the_root(base: Path) -> None:
    target = _write(base / "f")
    assert Deleter(base).delete("/" + str(target)).ok


def test_dotdot_collapses_lexically_never_through_a_symlink(base: Path, outside: Path) -> None:
    (outside / "deep").mkdir()
    victim_outside = _write(outside / "victim", b"outside")
    victim_inside = _write(base / "victim", b"inside")
    (base / "link").symlink_to(outside / "deep")
    # The kernel would resolve base/link/../victim to outside/victim; we must not.
    result = Deleter(base).delete(f"{base}/link/../victim")
    assert result.outcome is Outcome.DELETED
    assert result.path == str(victim_inside)
    assert not victim_inside.exists()
    assert victim_outside.read_bytes() == b"outside"


# --- symlinks ------------------------------------------------------------------------------


def test_a_symlink_is_removed_and_its_target_is_not(base: Path, sentinel: Path) -> None:
    link = base / "link"
    link.symlink_to(sentinel)
    result = Deleter(base, secure_delete=True).delete(link)
    assert result.outcome is Outcome.DELETED
    assert result.size_bytes == len(os.fsencode(str(sentinel)))  # a symlink's size: its target
    assert not os.path.lexists(link)
    assert sentinel.read_bytes() == b"must survive"


@pytest.mark.parametrize("depth", [1, 3])
def test_a_symlinked_directory_component_is_not_entered(
    base: Path, outside: Path, depth: int
) -> None:
    parent = base.joinpath(*["a"] * (depth - 1))
    parent.mkdir(parents=True, exist_ok=True)
    (parent / "d").symlink_to(outside)
    victim = _write(outside / "f")
    result = Deleter(base).delete(parent / "d" / "f")
    assert result.outcome is Outcome.SYMLINK_PARENT
    assert victim.exists()


def test_a_file_used_as_a_directory_component_is_refused(base: Path) -> None:
    plain = _write(base / "f")
    assert Deleter(base).delete(plain / "g").outcome is Outcome.SYMLINK_PARENT
    assert plain.exists()


def test_a_directory_swapped_for_a_symlink_after_the_scan_is_not_entered(
    tmp_path: Path, base: Path, outside: Path
) -> None:
    _write(base / "d" / "f", b"judged")
    (info,) = scan_tree(base).files
    os.rename(base / "d", tmp_path / "moved")
    (base / "d").symlink_to(outside)
    victim = _write(outside / "f", b"outside")
    for expected in (info.file_id, None):
        assert Deleter(base).delete(info.path, expected).outcome is Outcome.SYMLINK_PARENT
    assert victim.read_bytes() == b"outside"
    assert (tmp_path / "moved" / "f").read_bytes() == b"judged"


# --- identity: never delete a file swapped in after the judgement ---------------------------


def test_a_file_swapped_after_the_scan_is_left_alone(base: Path) -> None:
    _write(base / "f", b"judged")
    (info,) = scan_tree(base).files
    os.rename(base / "f", base / "judged-moved-aside")
    _write(base / "incoming", b"swapped in")
    os.rename(base / "incoming", base / "f")
    result = Deleter(base).delete(info.path, expected=info.file_id)
    assert result.outcome is Outcome.SWAPPED
    assert (base / "f").read_bytes() == b"swapped in"
    assert (base / "judged-moved-aside").read_bytes() == b"judged"


def test_expected_identity_matching_deletes(base: Path) -> None:
    target = _write(base / "f")
    st = os.lstat(target)
    assert Deleter(base).delete(target, FileId(st.st_dev, st.st_ino)).ok


class _SwappingDeleter(Deleter):
    """Renames another file over the name at a chosen point inside one deletion.

    The race is made deterministic by hooking the one step between judging a file and
    unlinking it; the filesystem operations themselves are real.
    """

    def __init__(self, base: Path, swap: Callable[[], None], *, before_overwrite: bool) -> None:
        super().__init__(base, secure_delete=True)
        self._swap = swap
        self._before = before_overwrite

    def _overwrite(self, *args: object) -> None:
        if self._before:
            self._swap()
        super()._overwrite(*args)  # type: ignore[arg-type]
        if not self._before:
            self._swap()


@pytest.mark.parametrize("before_overwrite", [True, False], ids=["before-open", "before-unlink"])
def test_a_file_swapped_during_the_deletion_is_not_touched(
    base: Path, before_overwrite: bool
) -> None:
    target = _write(base / "f", b"judged")
    incoming = _write(base / "incoming", b"swapped in")

    def swap() -> None:
        os.rename(target, base / "judged-moved-aside")
        os.rename(incoming, target)

    result = _SwappingDeleter(base, swap, before_overwrite=before_overwrite).delete(target)
    assert result.outcome is Outcome.SWAPPED
    assert target.read_bytes() == b"swapped in"  # neither overwritten nor unlinked


# --- secure_delete -------------------------------------------------------------------------


def test_secure_delete_zeroes_the_data_before_unlinking(base: Path) -> None:
    size = 3 * 1024 * 1024 + 123  # more than one chunk, not a multiple of it
    target = _write(base / "f", os.urandom(size))
    reader = os.open(target, os.O_RDONLY)
    try:
        # The reader keeps the data observable, and would make the lease probe refuse.
        result = Deleter(base, secure_delete=True, lease_probe=False).delete(target)
        assert (result.outcome, result.size_bytes) == (Outcome.DELETED, size)
        assert os.fstat(reader).st_nlink == 0
        assert os.pread(reader, size + 10, 0) == bytes(size)
    finally:
        os.close(reader)


def test_without_secure_delete_the_data_is_left_as_it_was(base: Path) -> None:
    target = _write(base / "f", b"plain")
    reader = os.open(target, os.O_RDONLY)
    try:
        assert Deleter(base, lease_probe=False).delete(target).ok
        assert os.pread(reader, 10, 0) == b"plain"
    finally:
        os.close(reader)


def test_secure_delete_skips_the_overwrite_of_a_hardlinked_file(base: Path, sentinel: Path) -> None:
    link = base / "f"
    os.link(sentinel, link)
    assert Deleter(base, secure_delete=True).delete(link).outcome is Outcome.DELETED
    assert not link.exists()
    assert sentinel.read_bytes() == b"must survive"


def test_secure_delete_keeps_a_sparse_file_sparse(base: Path) -> None:
    size = 1 << 30
    target = base / "sparse"
    with open(target, "wb") as f:
        f.write(b"head")
        f.seek(size // 2)
        f.write(b"middle")
        f.truncate(size)
    reader = os.open(target, os.O_RDONLY)
    try:
        assert Deleter(base, secure_delete=True, lease_probe=False).delete(target).ok
        assert os.pread(reader, 4, 0) == bytes(4)
        assert os.pread(reader, 6, size // 2) == bytes(6)
        assert os.fstat(reader).st_blocks * 512 < 16 * 1024 * 1024  # holes were not filled
    finally:
        os.close(reader)


# --- names ---------------------------------------------------------------------------------

ODD_NAMES = [b"-rf", b"--help", b" spaced name ", b"new\nline", b"tab\there", b"\xff\xfe\xe9-latin"]


@pytest.mark.parametrize("raw", ODD_NAMES, ids=repr)
@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "str"])
def test_any_name_can_be_deleted(base: Path, raw: bytes, as_bytes: bool) -> None:
    path = os.fsencode(base) + b"/" + raw
    with open(path, "wb") as f:
        f.write(b"odd")
    argument: str | bytes = path if as_bytes else os.fsdecode(path)
    result = Deleter(base, secure_delete=True).delete(argument)
    assert (result.outcome, result.path) == (Outcome.DELETED, os.fsdecode(path))
    assert not os.path.lexists(path)


@root_only
@pytest.mark.root
def test_a_failure_message_stays_on_one_line_whatever_the_name(base: Path) -> None:
    target = _write(base / "new\nline")
    with _immutable(target):
        result = Deleter(base).delete(target)
    assert result.outcome is Outcome.FAILED
    assert result.error is not None and "\n" not in result.error


# --- special files, ownership, mounts, failures --------------------------------------------


def _make_fifo(path: Path) -> None:
    os.mkfifo(path)


def _make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def _make_device(path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("mknod of a device node needs root")
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))


def _make_dir(path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize("make", [_make_fifo, _make_socket, _make_device, _make_dir])
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_special_files_are_left_alone(
    base: Path, make: Callable[[Path], None], secure: bool
) -> None:
    path = base / "special"
    make(path)
    result = Deleter(base, secure_delete=secure).delete(path)
    assert result.outcome is Outcome.SPECIAL
    assert os.path.lexists(path)


@root_only
@pytest.mark.root
def test_owner_check_leaves_other_users_files_alone(base: Path) -> None:
    theirs = _write(base / "theirs")
    mine = _write(base / "mine")
    os.chown(theirs, 12345, 12345)
    checked = Deleter(base, owner_uid=os.geteuid())
    assert checked.delete(theirs).outcome is Outcome.NOT_OWNER
    assert theirs.exists()
    assert checked.delete(mine).ok
    assert Deleter(base).delete(theirs).ok  # it was the owner check that kept it


@root_only
@pytest.mark.root
def test_a_bind_mount_below_base_dir_is_not_entered(base: Path, outside: Path) -> None:
    source = outside / "src"
    victim = _write(source / "f", b"outside")
    (base / "mnt").mkdir()
    with _mounted(base / "mnt", "--bind", str(source)):
        assert os.stat(base / "mnt").st_dev == os.stat(base).st_dev  # same fs: st_dev is blind
        deleter = Deleter(base)
        assert deleter.delete(base / "mnt" / "f").outcome is Outcome.OTHER_FS
        assert deleter.delete(base / "mnt" / "missing").outcome is Outcome.OTHER_FS
    assert victim.read_bytes() == b"outside"


@root_only
@pytest.mark.root
def test_a_tmpfs_mounted_below_base_dir_is_not_entered(base: Path) -> None:
    mount_point = base / "tmpfs"
    mount_point.mkdir()
    with _mounted(mount_point, "-t", "tmpfs", "-o", "size=1m", "tempwatch-test"):
        inside = _write(mount_point / "d" / "f")
        deleter = Deleter(base)
        assert deleter.delete(inside).outcome is Outcome.OTHER_FS
        assert deleter.delete(mount_point / "d").outcome is Outcome.OTHER_FS
        assert deleter.remove_empty_dir(mount_point, 0, now=1e10).outcome is Outcome.OTHER_FS
        assert inside.exists()
        # A file of that other filesystem bind-mounted over a name in base_dir itself.
        name = _write(base / "g", b"")
        with _mounted(name, "--bind", str(inside)):
            assert deleter.delete(name).outcome is Outcome.OTHER_FS


@root_only
@pytest.mark.root
def test_a_file_bind_mounted_over_a_name_is_not_overwritten(base: Path, sentinel: Path) -> None:
    name = _write(base / "f", b"")
    with _mounted(name, "--bind", str(sentinel)):
        result = Deleter(base, secure_delete=True).delete(name)
        assert result.outcome is Outcome.OTHER_FS
    assert sentinel.read_bytes() == b"must survive"


@root_only
@pytest.mark.root
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_an_immutable_file_fails_and_the_pass_continues(base: Path, secure: bool) -> None:
    stuck = _write(base / "stuck")
    free = _write(base / "free")
    deleter = Deleter(base, secure_delete=secure)
    with _immutable(stuck):
        results = [deleter.delete(stuck), deleter.delete(free)]
        assert stuck.read_bytes() == b"data"
    assert results[0].outcome is Outcome.FAILED
    assert results[0].error == "[Errno 1] Operation not permitted"
    assert results[1].ok and not free.exists()


@root_only
@pytest.mark.root
def test_a_read_only_filesystem_fails_cleanly(base: Path) -> None:
    target = _write(base / "f")
    with _mounted(base, "--bind", str(base)):
        remount = _run("mount", "-o", "remount,bind,ro", str(base))
        if remount.returncode != 0:
            pytest.skip(f"read-only remount refused here: {remount.stderr.strip()}")
        result = Deleter(base).delete(target)
    assert (result.outcome, result.error) == (Outcome.FAILED, "[Errno 30] Read-only file system")
    assert target.exists()


# --- dry run, fds, empty directories ---------------------------------------------------------


def test_dry_run_deletes_nothing(base: Path, sentinel: Path) -> None:
    data = _write(base / "f", b"keep me")
    link = base / "link"
    link.symlink_to(sentinel)
    empty = base / "empty"
    empty.mkdir()
    os.utime(empty, (0, 0))
    deleter = Deleter(base, secure_delete=True, dry_run=True)
    assert deleter.delete(data) == DeleteResult(str(data), Outcome.DELETED, size_bytes=7)
    assert deleter.delete(link).ok
    assert deleter.remove_empty_dir(empty, 60, now=1e10).ok
    assert data.read_bytes() == b"keep me"
    assert os.path.islink(link) and empty.is_dir()
    # A dry run still refuses what a real run would refuse.
    _write(empty / "child")
    assert deleter.remove_empty_dir(empty, 60, now=1e10).outcome is Outcome.NOT_EMPTY
    assert deleter.delete(sentinel).outcome is Outcome.OUTSIDE


def test_no_fd_leaks_over_many_deletions(base: Path, outside: Path) -> None:
    (base / "symdir").symlink_to(outside)
    (base / "dir").mkdir()
    os.mkfifo(base / "fifo")
    deleter = Deleter(base, secure_delete=True)
    before = _open_fd_count()
    for i in range(100):
        target = _write(base / "a" / "b" / f"f{i}")
        assert deleter.delete(target).ok
        assert deleter.delete(target).outcome is Outcome.VANISHED
        assert deleter.delete(base / "symdir" / "x").outcome is Outcome.SYMLINK_PARENT
        assert deleter.delete(base / "fifo").outcome is Outcome.SPECIAL
        assert deleter.delete(base / "a" / "b", FileId(0, 0)).outcome is Outcome.SWAPPED
        assert deleter.remove_empty_dir(base / "a", 0, now=1e10).outcome is Outcome.NOT_EMPTY
        assert deleter.remove_empty_dir(base / "dir", 1e9, now=0).outcome is Outcome.TOO_RECENT
    assert _open_fd_count() == before


def test_remove_empty_dir_removes_only_an_old_empty_directory(base: Path) -> None:
    old = base / "a" / "old"
    old.mkdir(parents=True)
    os.utime(old, (1000, 1000))
    young = base / "young"
    young.mkdir()
    os.utime(young, (1000, 1000))
    full = base / "full"
    _write(full / "f")
    os.utime(full, (1000, 1000))
    deleter = Deleter(base)
    assert deleter.remove_empty_dir(young, 60, now=1059).outcome is Outcome.TOO_RECENT
    assert deleter.remove_empty_dir(full, 60, now=1060).outcome is Outcome.NOT_EMPTY
    assert deleter.remove_empty_dir(old, 60, now=1060).ok
    assert young.is_dir() and full.is_dir() and not old.exists()
    assert deleter.remove_empty_dir(old, 60, now=1060).outcome is Outcome.VANISHED


def test_remove_empty_dir_leaves_symlinks_and_files_alone(base: Path, outside: Path) -> None:
    target = outside / "empty"
    target.mkdir()
    os.utime(target, (0, 0))
    (base / "link").symlink_to(target)
    plain = _write(base / "file")
    deleter = Deleter(base)
    assert deleter.remove_empty_dir(base / "link", 0, now=1e10).outcome is Outcome.SPECIAL
    assert deleter.remove_empty_dir(plain, 0, now=1e10).outcome is Outcome.SPECIAL
    assert deleter.remove_empty_dir(base / "link" / "x", 0, now=1e10).outcome is (
        Outcome.SYMLINK_PARENT
    )
    assert target.is_dir() and os.path.islink(base / "link") and plain.exists()


@root_only
@pytest.mark.root
def test_remove_empty_dir_honours_the_owner_check(base: Path) -> None:
    theirs = base / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    os.utime(theirs, (0, 0))
    result = Deleter(base, owner_uid=os.geteuid()).remove_empty_dir(theirs, 0, now=1e10)
    assert result.outcome is Outcome.NOT_OWNER
    assert theirs.is_dir()
