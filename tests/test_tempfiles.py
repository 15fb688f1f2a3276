"""create_temporary_file, cleanup_temporary_file and temporary_file on the real filesystem."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tempwatch import (
    TempFileError,
    TempwatchError,
    cleanup_temporary_file,
    create_temporary_file,
    temporary_file,
)


@pytest.fixture(autouse=True)
def no_mask_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEMP_FILE_PERMISSION_MASK", raising=False)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: a file left at the umask's mercy would come out 0666."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- create -------------------------------------------------------------------------------


def test_str_contents_round_trip_as_utf8(tmp_path: Path) -> None:
    text = "héllo ✓\nline two\r\n\0end"
    path = create_temporary_file(text, dir=tmp_path)
    assert isinstance(path, str)
    assert os.path.isabs(path)
    assert Path(path).parent == tmp_path
    assert Path(path).read_bytes() == text.encode("utf-8")


def test_bytes_contents_round_trip(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3
    path = create_temporary_file(data, dir=tmp_path)
    assert Path(path).read_bytes() == data


def test_empty_contents_make_an_empty_file(tmp_path: Path) -> None:
    path = create_temporary_file(b"", dir=tmp_path)
    assert os.path.getsize(path) == 0


@pytest.mark.parametrize("extension", ["txt", ".txt"])
def test_extension_with_or_without_the_dot(tmp_path: Path, extension: str) -> None:
    path = create_temporary_file("x", extension, dir=tmp_path)
    assert path.endswith(".txt")
    assert not path.endswith("..txt")


def test_no_extension_means_no_suffix(tmp_path: Path) -> None:
    path = create_temporary_file("x", dir=tmp_path)
    assert "." not in Path(path).name


def test_each_call_makes_a_new_file(tmp_path: Path) -> None:
    paths = {create_temporary_file(str(i), ".dat", dir=tmp_path) for i in range(50)}
    assert len(paths) == 50
    assert sorted(Path(p).read_text() for p in paths) == sorted(str(i) for i in range(50))


def test_default_directory_is_the_system_temp_dir() -> None:
    path = create_temporary_file(b"default")
    try:
        assert os.path.realpath(os.path.dirname(path)) == os.path.realpath(tempfile.gettempdir())
        assert _mode(path) == 0o600
    finally:
        os.unlink(path)


@pytest.mark.usefixtures("permissive_umask")
def test_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = create_temporary_file("secret", dir=tmp_path)
    assert _mode(path) == 0o600


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.parametrize(("mask", "mode"), [("027", 0o640), ("0o027", 0o640), ("077", 0o600)])
def test_permission_mask_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask: str, mode: int
) -> None:
    monkeypatch.setenv("TEMP_FILE_PERMISSION_MASK", mask)
    path = create_temporary_file("x", dir=tmp_path)
    assert _mode(path) == mode


@pytest.mark.usefixtures("permissive_umask")
@pytest.mark.parametrize("mask", ["000", "020", "0"])
def test_a_mask_never_makes_a_file_writable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask: str
) -> None:
    # The config loader rejects these masks for TEMP_FILE_PERMISSION_MASK; the library reads
    # the same variable and must not create a world-writable file in a shared temp dir.
    monkeypatch.setenv("TEMP_FILE_PERMISSION_MASK", mask)
    try:
        path = create_temporary_file("x", dir=tmp_path)
    except TempFileError as e:
        assert "TEMP_FILE_PERMISSION_MASK" in str(e)
    else:
        assert _mode(path) & 0o002 == 0, f"mask {mask} gave mode {_mode(path):o}"
    assert [p for p in tmp_path.iterdir() if _mode(p) & 0o002] == []


@pytest.mark.parametrize("mask", ["abc", "999", "-1"])
def test_a_bad_mask_raises_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask: str
) -> None:
    monkeypatch.setenv("TEMP_FILE_PERMISSION_MASK", mask)
    with pytest.raises(TempFileError, match="TEMP_FILE_PERMISSION_MASK"):
        create_temporary_file("x", dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_raises_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(TempFileError) as raised:
        create_temporary_file("x", dir=missing)
    assert str(missing) in str(raised.value)
    assert isinstance(raised.value, TempwatchError)
    assert isinstance(raised.value.__cause__, OSError)
    assert not missing.exists()


@pytest.mark.parametrize("below", [(), ("sub",)])
def test_a_directory_that_is_a_regular_file_raises(tmp_path: Path, below: tuple[str, ...]) -> None:
    # Root ignores permission bits, so "cannot write here" is made with a file in the way.
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"keep")
    target = blocker.joinpath(*below)
    with pytest.raises(TempFileError) as raised:
        create_temporary_file("x", dir=target)
    assert str(target) in str(raised.value)
    assert str(raised.value).strip(), "the message must say something"
    assert blocker.read_bytes() == b"keep"


def test_a_failure_message_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TempFileError) as raised:
        create_temporary_file("x", dir=tmp_path / "missing")
    assert "\n" not in str(raised.value)


def test_quiet_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = create_temporary_file("x", dir=tmp_path)
    assert cleanup_temporary_file(path)
    with temporary_file("y", dir=tmp_path):
        pass
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- cleanup ------------------------------------------------------------------------------


def test_cleanup_is_true_then_false(tmp_path: Path) -> None:
    path = create_temporary_file("x", dir=tmp_path)
    assert cleanup_temporary_file(path) is True
    assert not os.path.lexists(path)
    assert cleanup_temporary_file(path) is False


def test_cleanup_of_a_path_whose_directory_is_gone_is_false(tmp_path: Path) -> None:
    assert cleanup_temporary_file(tmp_path / "nowhere" / "file") is False


def test_cleanup_accepts_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = create_temporary_file("x", dir=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cleanup_temporary_file(os.path.basename(path)) is True
    assert not os.path.lexists(path)


def test_cleanup_removes_a_symlink_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"sentinel")
    work = tmp_path / "work"
    work.mkdir()
    link = work / "link"
    link.symlink_to(target)
    assert cleanup_temporary_file(link) is True
    assert not os.path.lexists(link)
    assert target.read_bytes() == b"sentinel"


def test_cleanup_of_a_dangling_symlink_removes_the_link(tmp_path: Path) -> None:
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nothing-here")
    assert cleanup_temporary_file(link) is True
    assert not os.path.lexists(link)


def test_cleanup_through_a_symlinked_directory_removes_only_the_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"x")
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    assert cleanup_temporary_file(alias / "f") is True
    assert not (real / "f").exists()
    assert alias.is_symlink() and real.is_dir()


def test_cleanup_never_removes_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "inside").write_bytes(b"x")
    with pytest.raises(TempFileError):
        cleanup_temporary_file(directory)
    assert (directory / "inside").read_bytes() == b"x"


def test_cleanup_never_removes_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TempFileError):
        cleanup_temporary_file(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- the context manager ------------------------------------------------------------------


def test_temporary_file_yields_a_file_and_removes_it_on_exit(tmp_path: Path) -> None:
    with temporary_file(contents="hello", extension="json", dir=tmp_path) as path:
        assert path.endswith(".json")
        assert Path(path).read_text() == "hello"
        assert _mode(path) == 0o600
    assert not os.path.lexists(path)
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_removes_it_when_the_body_raises(tmp_path: Path) -> None:
    seen: list[str] = []
    with pytest.raises(KeyError), temporary_file(b"\x00\xff", dir=tmp_path) as path:
        seen.append(path)
        raise KeyError("boom")
    assert seen and not os.path.lexists(seen[0])
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_tolerates_the_body_removing_it(tmp_path: Path) -> None:
    with temporary_file("x", dir=tmp_path) as path:
        os.unlink(path)
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_defaults_to_an_empty_file(tmp_path: Path) -> None:
    with temporary_file(dir=tmp_path) as path:
        assert Path(path).read_bytes() == b""
    assert not os.path.lexists(path)


def test_temporary_file_keeps_the_body_exception(tmp_path: Path) -> None:
    # Cleanup on the way out must not replace the body's exception with its own.
    with pytest.raises(ValueError, match="original"), temporary_file("x", dir=tmp_path) as path:
        os.unlink(path)
        raise ValueError("original")
