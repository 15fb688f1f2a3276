"""The tree scanner on real trees: what it reports, what it skips, and where it never goes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tempwatch.deleter import Deleter, Outcome
from tempwatch.globs import is_excluded
from tempwatch.scan import DirInfo, FileInfo, scan_tree

IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="needs root (mounts, mknod)")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"outside")
    return directory


def _write(path: Path, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _paths(base: Path, infos: list[FileInfo] | list[DirInfo]) -> set[str]:
    return {os.path.relpath(info.path, base) for info in infos}


@contextmanager
def _mounted(target: Path, *mount_args: str) -> Iterator[None]:
    done = subprocess.run(
        ["mount", *mount_args, str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(mount_args)} refused here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_reports_files_with_their_lstat(base: Path) -> None:
    top = _write(base / "top", b"12345")
    deep = _write(base / "a" / "b" / "deep", b"x" * 100)
    result = scan_tree(base)
    by_path = {info.path: info for info in result.files}
    assert set(by_path) == {str(top), str(deep)}
    for path in (top, deep):
        st = os.lstat(path)
        assert by_path[str(path)] == FileInfo(
            str(path), st.st_size, st.st_mtime, st.st_dev, st.st_ino, st.st_uid, False,
            st.st_ctime, st.st_atime,
        )
    assert (result.errors, result.skipped_mounts) == ([], [])


def test_lists_subdirectories_deepest_first_with_emptiness(base: Path) -> None:
    (base / "a" / "b" / "c").mkdir(parents=True)
    (base / "z").mkdir()
    _write(base / "a" / "b" / "f")
    os.utime(base / "a" / "b" / "c", (0, 4242))
    result = scan_tree(base)
    assert [os.path.relpath(d.path, base) for d in result.dirs][0] == "a/b/c"
    depths = [d.path.count("/") for d in result.dirs]
    assert depths == sorted(depths, reverse=True)
    empties = {os.path.relpath(d.path, base): d.is_empty for d in result.dirs}
    assert empties == {"a/b/c": True, "a/b": False, "a": False, "z": True}
    assert next(d for d in result.dirs if d.path.endswith("/c")).mtime == 4242
    assert str(base) not in {d.path for d in result.dirs}


def test_non_recursive_reports_only_the_top_level(base: Path) -> None:
    _write(base / "top")
    _write(base / "sub" / "below")
    result = scan_tree(base, recursive=False)
    assert _paths(base, result.files) == {"top"}
    assert result.dirs == []


def test_reports_symlinks_but_never_follows_them(base: Path, outside: Path) -> None:
    (base / "to-file").symlink_to(outside / "secret")
    (base / "to-dir").symlink_to(outside)
    (base / "dangling").symlink_to(base / "nowhere")
    result = scan_tree(base)
    assert _paths(base, result.files) == {"to-file", "to-dir", "dangling"}
    assert all(info.is_symlink for info in result.files)
    assert result.dirs == []


def test_fifos_sockets_and_devices_are_not_reported(base: Path) -> None:
    os.mkfifo(base / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(base / "sock"))
    if IS_ROOT:
        os.mknod(base / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    _write(base / "plain")
    result = scan_tree(base)
    assert _paths(base, result.files) == {"plain"}
    assert result.errors == []


@root_only
@pytest.mark.root
def test_mounts_below_base_dir_are_not_entered(base: Path, outside: Path) -> None:
    (base / "bind").mkdir()
    (base / "tmpfs").mkdir()
    _write(base / "mine")
    with _mounted(base / "bind", "--bind", str(outside)):
        with _mounted(base / "tmpfs", "-t", "tmpfs", "-o", "size=1m", "tempwatch-test"):
            _write(base / "tmpfs" / "on-tmpfs")
            result = scan_tree(base)
    assert _paths(base, result.files) == {"mine"}
    assert sorted(result.skipped_mounts) == [str(base / "bind"), str(base / "tmpfs")]
    assert result.dirs == []


def test_exclude_patterns(base: Path) -> None:
    for rel in [
        "keep.txt",
        "app.log",
        "a/b/deep.log",
        "a/x.o",
        "a/b/y.o",
        "build/c/d/z.o",
        "build/keep.c",
        "node_modules/pkg/index.js",
        "cache/one/two",
    ]:
        _write(base / rel)
    result = scan_tree(base, exclude=["*.log", "a/*.o", "build/**/*.o", "node_modules", "/cache/"])
    assert _paths(base, result.files) == {"keep.txt", "a/b/y.o", "build/keep.c"}
    # An excluded directory is not entered at all, but still makes its parent non-empty.
    assert not any("node_modules" in d.path or "cache" in d.path for d in result.dirs)
    (only_excluded,) = [d for d in result.dirs if d.path == str(base / "build" / "c" / "d")]
    assert not only_excluded.is_empty


@pytest.mark.parametrize(
    ("rel_path", "patterns", "expected"),
    [
        ("app.log", ["*.log"], True),
        ("a/b/app.log", ["*.log"], True),
        ("a/b/app.log.1", ["*.log"], False),
        ("a/x.o", ["a/*.o"], True),
        ("a/b/x.o", ["a/*.o"], False),
        ("a/b/x.o", ["a/**/*.o"], True),
        ("a/x.o", ["a/**/*.o"], True),
        ("a/b/c/x.o", ["**/*.o"], True),
        ("cache/deep/file", ["cache"], True),
        ("x/cache/deep/file", ["cache"], True),
        ("x/cache/deep/file", ["/cache"], False),
        ("cache/deep/file", ["/cache/"], True),
        ("file1", ["file[0-9]"], True),
        ("filex", ["file[!0-9]"], True),
        ("file1", ["file[!0-9]"], False),
        ("a/b", ["a?b"], False),
        ("weird[name", ["weird[name"], True),
        ("[&&]", ["[[]&&]"], True),
        ("&y", ["[&&x]y"], True),
        ("]", ["[]]"], True),
        ("new\nline.log", ["*.log"], True),
        ("anything", [], False),
    ],
)
def test_is_excluded(rel_path: str, patterns: list[str], expected: bool) -> None:
    assert is_excluded(rel_path, patterns) is expected


def test_a_lone_string_is_not_taken_as_a_list_of_patterns(base: Path) -> None:
    with pytest.raises(TypeError):
        scan_tree(base, exclude="*.log")
    with pytest.raises(TypeError):
        is_excluded("a.log", "*.log")


def test_skip_names_are_never_reported(tmp_path: Path, base: Path) -> None:
    _write(base / "tempwatch.log")
    _write(base / "run" / "tempwatch.lock")
    _write(base / "other")
    alias = tmp_path / "alias"
    alias.symlink_to(base)
    skip = [str(base / "tempwatch.log"), str(alias / "run" / "tempwatch.lock")]
    result = scan_tree(base, skip_names=skip)
    assert _paths(base, result.files) == {"other"}


def test_paths_are_under_the_resolved_base_dir(tmp_path: Path, base: Path) -> None:
    _write(base / "f")
    alias = tmp_path / "alias"
    alias.symlink_to(base)
    assert [info.path for info in scan_tree(alias).files] == [str(base / "f")]


def test_non_utf8_names_round_trip(base: Path) -> None:
    raw = os.fsencode(base) + b"/\xff\xfe-name\nwith newline"
    with open(raw, "wb") as f:
        f.write(b"x")
    (info,) = scan_tree(base).files
    assert os.fsencode(info.path) == raw
    assert Deleter(base).delete(info.path, info.file_id).outcome is Outcome.DELETED


def test_scan_results_feed_the_deleter(base: Path) -> None:
    for i in range(5):
        _write(base / "d" / f"f{i}")
    result = scan_tree(base)
    deleter = Deleter(base)
    assert all(deleter.delete(info.path, info.file_id).ok for info in result.files)
    assert all(deleter.remove_empty_dir(d.path, 0, now=1e10).ok for d in result.dirs)
    assert os.listdir(base) == []


def test_deep_nesting_is_walked_iteratively(base: Path) -> None:
    depth = 500
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    before = len(os.listdir("/proc/self/fd"))
    result = scan_tree(base)
    assert len(os.listdir("/proc/self/fd")) == before
    (info,) = result.files
    assert info.path == str(base) + "/d" * depth + "/bottom"
    assert len(result.dirs) == depth
    assert result.dirs[0].path == str(base) + "/d" * depth
    assert result.errors == []


def test_no_fd_leaks_over_many_scans(base: Path, outside: Path) -> None:
    for i in range(20):
        _write(base / f"d{i}" / "e" / "f")
    (base / "link").symlink_to(outside)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert len(scan_tree(base).files) == 21
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_missing_base_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_tree(tmp_path / "missing")


_SCAN_CHILD = """
import json, sys
from tempwatch.scan import scan_tree
result = scan_tree(sys.argv[1])
print(json.dumps({"files": [f.path for f in result.files], "errors": result.errors}))
"""


def test_an_unreadable_subdirectory_is_an_error_and_the_scan_goes_on(base: Path) -> None:
    _write(base / "before" / "f")
    _write(base / "locked" / "hidden")
    _write(base / "later" / "g")
    os.chmod(base / "locked", 0)
    argv = [sys.executable, "-c", _SCAN_CHILD, str(base)]
    if IS_ROOT:
        # Root ignores permission bits; a child without the override capabilities does not.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root this needs setpriv to drop CAP_DAC_OVERRIDE in a child")
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=REPO)
    finally:
        os.chmod(base / "locked", 0o700)
    shown = json.loads(done.stdout)
    assert sorted(shown["files"]) == [str(base / "before" / "f"), str(base / "later" / "g")]
    assert shown["errors"] == [[str(base / "locked"), "[Errno 13] Permission denied"]]


_CHURN_CHILD = """
import os, sys
base = sys.argv[1]
print("ready", flush=True)
i = 0
while True:
    name = os.path.join(base, f"churn{i % 100}")
    try:
        if i % 2:
            open(name, "w").close()
            os.unlink(name)
        else:
            os.mkdir(name)
            os.rmdir(name)
    except OSError:
        pass
    i += 1
"""


def test_entries_vanishing_mid_walk_are_skipped_silently(base: Path) -> None:
    # Many stable names in the same directory widen the gap between listing a name and
    # looking at it, so the churning child removes names in that gap again and again.
    for i in range(1000):
        _write(base / f"s{i}")
    churn = subprocess.Popen(
        [sys.executable, "-c", _CHURN_CHILD, str(base)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert churn.stdout is not None and churn.stdout.readline().strip() == "ready"
        for _ in range(100):
            result = scan_tree(base)
            assert result.errors == []
            assert sum(1 for f in result.files if "/s" in f.path) == 1000
    finally:
        churn.kill()
        churn.wait(timeout=10)
        if churn.stdout is not None:
            churn.stdout.close()
