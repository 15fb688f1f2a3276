"""Where tempwatch may delete: the one check of a base_dir, shared by the config and the library.

A base_dir is refused when it is reached through a symlink another user owns, when it is
the root directory, not a directory, or has no parent; and, unless the caller opts in,
when it is a system directory or a user's home. An age-based deleter aimed at `/home`
or `/etc` by a typo or an empty variable (`base_dir = "${TMP}/.."`) would delete what
nobody meant to be temporary, so those need an explicit `allow_system_dir`.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterable
from pathlib import Path

from tempwatch.errors import ConfigError
from tempwatch.units import render_value

__all__ = [
    "ALLOW_SYSTEM_DIR_KEY",
    "check_base_dir",
    "protected_reason",
    "refuse_protected",
    "resolve_base_dir",
]

ALLOW_SYSTEM_DIR_KEY = "watch.allow_system_dir = true (or TEMP_FILE_ALLOW_SYSTEM_DIR=1)"
"""How the config opts in, as its messages name it; the library's keyword is `allow_system_dir`."""

_TOP_LEVEL_ALLOWED = frozenset({"/tmp"})
# Trees where no temp directory belongs, at any depth (but for the exceptions below them).
_SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/sbin", "/sys", "/usr",
)  # fmt: skip
_TREE_EXCEPTIONS = ("/dev/shm",)
# System directories that hold temp directories of their own below them, but are not one.
_SYSTEM_DIRS = frozenset(
    {"/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/mail", "/var/opt",
     "/var/local", "/var/backups", "/var/www", "/run/user"}
)  # fmt: skip


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def _home_dirs() -> Iterable[str]:
    home = os.environ.get("HOME", "")
    if home:
        yield os.path.realpath(home)
    try:
        entries = pwd.getpwall()
    except OSError:  # pragma: no cover - no user database
        entries = []
    for entry in entries:
        if entry.pw_dir and entry.pw_dir != "/":
            yield os.path.realpath(entry.pw_dir)


def protected_reason(path: str) -> str | None:
    """Why `path` (absolute, normalised) is a system or home directory, or None if it is not."""
    if path == "/":
        return "the root directory"
    if path.count("/") == 1 and path not in _TOP_LEVEL_ALLOWED:
        return "a top-level system directory"
    if any(_within(path, tree) for tree in _SYSTEM_TREES) and not any(
        _within(path, allowed) for allowed in _TREE_EXCEPTIONS
    ):
        return "a system directory"
    if path in _SYSTEM_DIRS:
        return "a system directory"
    if path in set(_home_dirs()):
        return "a user's home directory"
    return None


def _invalid(label: str, expected: str, value: object, note: str = "") -> ConfigError:
    return ConfigError(f"{label}: expected {expected}, got {render_value(value)}{note}")


def resolve_base_dir(text: str, label: str, relative_to: Path, shown: object = None) -> Path:
    """`text` (a path, `~` expanded) as an absolute, resolved directory that may exist or
    be created. `shown` is the value as the user wrote it, for messages.

    Raises ConfigError naming `label` when it is reached through another user's symlink,
    is the root directory, exists and is not a directory, or its parent does not exist.
    The system-directory check is separate (`check_base_dir`), because its opt-in is
    another key of the config.
    """
    value = text if shown is None else shown
    given = os.path.abspath(relative_to / text)
    foreign = _foreign_symlink(given)
    if foreign is not None:
        # A link planted in a shared temp dir by another user would point the cleaner at
        # any directory it likes (the tmpwatch/systemd-tmpfiles class of bugs).
        note = f" ({render_value(foreign)} is a symlink owned by another user: give the real path)"
        raise _invalid(label, "a path without other users' symlinks", value, note)
    resolved = Path(os.path.realpath(given))
    if resolved == Path(resolved.anchor):
        raise _invalid(label, "a directory other than the root directory", value)
    if os.path.lexists(resolved) and not os.path.isdir(resolved):
        raise _invalid(label, "a directory", value, " (it exists and is not a directory)")
    if not os.path.isdir(resolved.parent):
        note = f" (parent directory {render_value(str(resolved.parent))} does not exist)"
        raise _invalid(label, "a directory whose parent exists", value, note)
    return resolved


def refuse_protected(
    base_dir: Path, label: str, *, allow_system_dir: bool, opt_in: str = ALLOW_SYSTEM_DIR_KEY
) -> None:
    """Raise ConfigError if `base_dir` is a system or home directory and no opt-in was given."""
    if allow_system_dir:
        return
    reason = protected_reason(str(base_dir))
    if reason is not None:
        raise ConfigError(
            f"{label}: {render_value(str(base_dir))} is {reason}; cleaning it by age would "
            f"delete files that are not temporary: choose a directory of its own, or set "
            f"{opt_in} to clean it anyway"
        )


def check_base_dir(
    value: object,
    label: str = "base_dir",
    *,
    allow_system_dir: bool = False,
    relative_to: Path | None = None,
    opt_in: str = ALLOW_SYSTEM_DIR_KEY,
) -> Path:
    """The whole check, as the config applies it: resolve, then refuse protected directories.

    For the library: `value` is a str or path-like; raises ConfigError, one line.
    """
    text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise _invalid(label, "a path", value)
    where = Path.cwd() if relative_to is None else relative_to
    resolved = resolve_base_dir(os.path.expanduser(text), label, where, text)
    refuse_protected(resolved, label, allow_system_dir=allow_system_dir, opt_in=opt_in)
    return resolved


def _foreign_symlink(path: str) -> str | None:
    """The first component of `path` that is a symlink owned by neither us nor root."""
    trusted = {0, os.geteuid()}
    current = "/"
    for part in path.strip("/").split("/"):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError:
            return None  # the rest does not exist: nothing to follow
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in trusted:
            return current
        if stat.S_ISLNK(st.st_mode):
            current = os.path.realpath(current)
    return None
