"""Helpers for one temp file: create it with contents, remove it, or both around a block."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from tempwatch.configkeys import parse_mask
from tempwatch.deleter import Deleter, Outcome
from tempwatch.errors import ConfigError, TempFileError
from tempwatch.instance import BASE_DIR_MODE

__all__ = ["cleanup_temporary_file", "create_temporary_file", "temporary_file"]

_DEFAULT_MASK = 0o077  # files readable and writable by their owner only: 0600
BASE_DIR_ENV = "TEMP_FILE_BASE_DIR"


def _file_mode() -> int:
    """0o666 less the mask in TEMP_FILE_PERMISSION_MASK (octal), 0600 by default."""
    raw = os.environ.get("TEMP_FILE_PERMISSION_MASK", "").strip()
    if not raw:
        return 0o666 & ~_DEFAULT_MASK
    try:
        mask = parse_mask(raw, "TEMP_FILE_PERMISSION_MASK (environment)")
    except ConfigError as e:
        raise TempFileError(str(e)) from e
    return 0o666 & ~mask


def _suffix(extension: str | None) -> str:
    if not extension:
        return ""
    if not isinstance(extension, str):
        raise TypeError(f"extension must be a str, not {type(extension).__name__}")
    if "/" in extension or "\0" in extension or (os.altsep and os.altsep in extension):
        raise ValueError(
            f"extension must be a file name suffix like \".txt\", without a path separator "
            f"or NUL byte, got {extension!r}"
        )
    return extension if extension.startswith(".") else "." + extension


def _directory(dir: str | os.PathLike[str] | None) -> str:
    """Where a new temp file goes: `dir`, else $TEMP_FILE_BASE_DIR (created 0700 if it is
    missing, as the service does), else the system temp dir."""
    if dir is not None:
        return os.fspath(dir)
    configured = os.environ.get(BASE_DIR_ENV, "").strip()
    if not configured:
        return tempfile.gettempdir()
    directory = os.path.abspath(os.path.expanduser(configured))
    try:
        os.mkdir(directory, BASE_DIR_MODE)
    except FileExistsError:
        pass
    except OSError as e:
        raise TempFileError(
            f"cannot create {BASE_DIR_ENV} {directory}: {e.strerror} "
            f"(create it, or unset {BASE_DIR_ENV} to use {tempfile.gettempdir()})"
        ) from e
    return directory


def create_temporary_file(
    contents: str | bytes,
    extension: str | None = None,
    verbose: bool = False,
    *,
    dir: str | os.PathLike[str] | None = None,
) -> str:
    """Create a new temp file holding `contents` (str is written as UTF-8); return its path.

    The file goes in `dir`, else in $TEMP_FILE_BASE_DIR (the directory the service
    cleans, created with mode 0700 if missing), else in the system temp dir. It is
    created exclusively with mode 0600 (0o666 less TEMP_FILE_PERMISSION_MASK).
    `extension` is a suffix ("txt" or ".txt"); a path separator in it raises ValueError.
    Raises TempFileError, naming the directory and the reason, if it cannot be written;
    a partly written file is removed first.
    """
    if not isinstance(contents, str | bytes | bytearray | memoryview):
        raise TypeError(f"contents must be str or bytes, not {type(contents).__name__}")
    data = contents.encode("utf-8") if isinstance(contents, str) else bytes(contents)
    mode = _file_mode()
    suffix = _suffix(extension)
    where = _directory(dir)
    try:
        fd, path = tempfile.mkstemp(suffix=suffix, prefix="tmp", dir=where)
    except OSError as e:
        raise TempFileError(f"cannot create a temporary file in {where}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
    except OSError as e:
        os.unlink(path)
        raise TempFileError(f"cannot write temporary file {path}: {e.strerror}") from e
    if verbose:
        print(f"tempwatch: created {path} ({len(data)} bytes)", file=sys.stderr)
    return path


def cleanup_temporary_file(path: str | os.PathLike[str], verbose: bool = False) -> bool:
    """Remove the temp file at `path`: True if removed, False if it was already gone.

    A symlink is removed as a link. Raises TempFileError for anything that is not a
    regular file or symlink, and when the removal fails (naming the reason).
    """
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    parent = os.path.realpath(parent)  # the deleter works below a resolved directory
    absolute = os.path.join(parent, name)
    try:
        deleter = Deleter(parent)
    except FileNotFoundError:
        return False
    result = deleter.delete(absolute)
    if result.outcome is Outcome.VANISHED:
        return False
    if result.outcome is not Outcome.DELETED:
        raise TempFileError(
            f"cannot remove {absolute}: {result.error or result.outcome.value}"
        )
    if verbose:
        print(f"tempwatch: removed {absolute}", file=sys.stderr)
    return True


@contextmanager
def temporary_file(
    contents: str | bytes = b"",
    extension: str | None = None,
    *,
    dir: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Create a temp file with `contents`, yield its path, and remove it on exit, even on error."""
    path = create_temporary_file(contents, extension, dir=dir)
    try:
        yield path
    finally:
        cleanup_temporary_file(path)
