"""The library refuses what the config refuses, and a `with` block clears only its own files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

from tempwatch import (
    AlreadyRunningError,
    ConfigError,
    TempFileManager,
    create_temporary_file,
)
from tempwatch.configload import load_config
from tempwatch.instance import InstanceLock


def _message(call: object) -> str:
    assert callable(call)
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


# -- base_dir: one check for the config and the library ----------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/etc", "/usr", "/home", "/var", "/root", "/boot", "/srv", "/usr/local",
             "/var/lib", "/etc/ssl", "/tmp/.."]
)  # fmt: skip
def test_library_and_config_refuse_the_same_system_dirs_with_the_same_reason(
    path: str,
) -> None:
    from_library = _message(lambda: TempFileManager(path))
    from_config = _message(lambda: load_config(env={}, overrides={"watch.base_dir": path}))
    assert from_library.partition(": ")[2].split(";")[0] == from_config.partition(": ")[
        2
    ].split(";")[0]
    assert "\n" not in from_library and "\n" not in from_config


def test_the_root_directory_is_refused_before_anything_is_registered() -> None:
    # The reported data loss: TempFileManager("/") then clear_all() deleted a user's file.
    with pytest.raises(ConfigError, match="root directory"):
        TempFileManager("/")


def test_the_messages_name_the_opt_in() -> None:
    assert "allow_system_dir=True" in _message(lambda: TempFileManager("/etc"))
    config_message = _message(lambda: load_config(env={"TEMP_FILE_BASE_DIR": "/home"}))
    assert config_message.startswith("TEMP_FILE_BASE_DIR (environment): ")
    assert "watch.allow_system_dir = true" in config_message
    assert "TEMP_FILE_ALLOW_SYSTEM_DIR=1" in config_message


def test_a_users_home_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert "home directory" in _message(lambda: TempFileManager(home))
    assert "home directory" in _message(lambda: TempFileManager("~"))
    assert "home directory" in _message(
        lambda: load_config(env={}, overrides={"watch.base_dir": "~"})
    )
    # A directory below the home is a directory of its own: allowed.
    assert TempFileManager(home / ".cache").base_dir == home / ".cache"


def test_the_opt_in_allows_a_system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "alice"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    manager = TempFileManager(home, allow_system_dir=True)
    assert manager.base_dir == home
    config = load_config(
        env={"TEMP_FILE_BASE_DIR": "/var", "TEMP_FILE_ALLOW_SYSTEM_DIR": "1"}
    )
    assert config.watch.base_dir == Path("/var")
    assert config.watch.allow_system_dir


def test_temp_dirs_stay_allowed() -> None:
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(path):
            assert load_config(env={}, overrides={"watch.base_dir": path}).watch.base_dir


def test_a_missing_parent_is_refused_as_by_the_config(tmp_path: Path) -> None:
    wanted = tmp_path / "a" / "b"
    assert "parent" in _message(lambda: TempFileManager(wanted))
    assert not (tmp_path / "a").exists()


# -- a `with` block clears only what the program registered ------------------------------


_WRITER = "import sys; open(sys.argv[1], 'w').write('theirs')"


def test_exit_keeps_a_file_another_process_created_while_watching(base: Path) -> None:
    theirs = base / "theirs.txt"
    with TempFileManager(base, watch=True) as manager:
        mine = base / "mine.txt"
        mine.write_text("mine")
        assert manager.register_file(mine)
        subprocess.run([sys.executable, "-c", _WRITER, str(theirs)], check=True)
        wait_for(lambda: manager.is_temp_file(theirs), message="the watcher to see theirs.txt")
        assert manager.clear_all() == 1
    assert not mine.exists()
    assert theirs.read_text() == "theirs"


def test_force_ignores_age_only_for_the_programs_own_files(base: Path) -> None:
    with TempFileManager(base, watch=True, max_age="1h") as manager:
        theirs = base / "theirs"
        subprocess.run([sys.executable, "-c", _WRITER, str(theirs)], check=True)
        wait_for(lambda: manager.is_temp_file(theirs), message="the watcher to see theirs")
        assert manager.cleanup(force=True) == 0
        assert theirs.exists()


# -- watching takes the service's lock, and expires in the background ---------------------


_LOCK_HOLDER = """
import sys
from tempwatch.instance import InstanceLock
with InstanceLock(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_watching_beside_a_running_service_is_refused_naming_its_pid(base: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(base)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(AlreadyRunningError, match=f"pid {holder.pid}"):
            TempFileManager(base, watch=True)
        TempFileManager(base).close()  # registering its own files needs no lock
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        assert holder.stdout is not None
        holder.stdout.close()


def test_a_watching_manager_holds_the_lock_until_closed(base: Path) -> None:
    manager = TempFileManager(base, watch=True)
    try:
        with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"):
            InstanceLock(base).acquire()
        assert not manager.is_temp_file(base / ".tempwatch.lock")
    finally:
        manager.close()
    with InstanceLock(base):
        pass


def test_a_watching_manager_expires_files_without_being_asked(base: Path) -> None:
    with TempFileManager(base, watch=True, max_age="200ms", cleanup_interval="50ms") as m:
        path = base / "forgotten"
        subprocess.run([sys.executable, "-c", _WRITER, str(path)], check=True)
        wait_for(lambda: not path.exists(), message="background expiry of a forgotten file")
        # The entry goes right after the unlink, on the expiry thread: wait for it too.
        wait_for(lambda: len(m) == 0, message="its entry dropped")


# -- arguments -----------------------------------------------------------------------------


def test_max_age_takes_the_configs_durations(base: Path) -> None:
    assert TempFileManager(base, max_age="1h").max_age == 3600
    assert TempFileManager(base, max_age="1h30m").max_age == 5400
    assert TempFileManager(base, max_age=2.5).max_age == 2.5


@pytest.mark.parametrize("bad", [[1], None, True, b"1h"])
def test_a_max_age_of_the_wrong_type_is_a_type_error_naming_it(base: Path, bad: object) -> None:
    with pytest.raises(TypeError, match="max_age"):
        TempFileManager(base, max_age=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["5M", "soon", "0s", -1, 0])
def test_a_bad_max_age_value_is_a_value_error_naming_it(base: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="max_age"):
        TempFileManager(base, max_age=bad)  # type: ignore[arg-type]


def test_create_without_dir_honours_temp_file_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "svc"
    monkeypatch.setenv("TEMP_FILE_BASE_DIR", str(target))
    path = Path(create_temporary_file("x", extension="txt"))
    assert path.parent == target and path.suffix == ".txt"
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


@pytest.mark.parametrize("extension", ["../x", "a/b", "/etc", "x\0y"])
def test_an_extension_with_a_path_separator_is_refused(tmp_path: Path, extension: str) -> None:
    with pytest.raises(ValueError, match="extension"):
        create_temporary_file("x", extension=extension, dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
