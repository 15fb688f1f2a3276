"""`tempwatch explain`: the verdict a pass would reach, and why, for real files and holders."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
from support import child_process, hold_open

from tempwatch.cli import main
from tempwatch.config import CleanupConfig, Config, LimitsConfig, WatchConfig
from tempwatch.errors import OutsideBaseDirError
from tempwatch.explain import explain_path
from tempwatch.openfiles import LazyOpenFiles
from tempwatch.rules import Rule

BY_MTIME = frozenset({"modified"})


def _config(base: Path, **limits: int) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base),
        cleanup=CleanupConfig(max_age_seconds=3600, age_by=BY_MTIME),
        limits=LimitsConfig(**limits),  # type: ignore[arg-type]
    )


def _file(path: Path, age_seconds: float = 0, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age_seconds:
        then = time.time() - age_seconds
        os.utime(path, (then, then))
    return path


def _explain(base: Path, path: Path, config: Config | None = None) -> tuple[str, str]:
    facts = explain_path(
        str(path), config or _config(base), open_paths=LazyOpenFiles(str(base))
    )
    return facts.verdict, facts.why


def test_an_expired_file_would_go_and_a_young_one_stays(base: Path) -> None:
    verdict, why = _explain(base, _file(base / "old", 3 * 3600))
    assert verdict == "would delete"
    assert why.startswith("expired: last used 3h") and "max_age 1h" in why
    verdict, why = _explain(base, _file(base / "new", 60))
    assert verdict == "kept" and "expires in 59m" in why


@pytest.mark.parametrize("mode", ["r", "w", "path"])
def test_an_open_file_is_kept_naming_its_holder(base: Path, mode: str) -> None:
    held = _file(base / "held", 3 * 3600)
    with hold_open(held, mode) as pid:
        verdict, why = _explain(base, held)
    assert verdict == "kept"
    assert why.startswith("expired") and f"open by pid {pid} (" in why


def test_a_file_only_mapped_is_kept_by_the_kernels_answer(base: Path) -> None:
    mapped = _file(base / "mapped", 3 * 3600, b"x" * 4096)
    mapper = """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    fd = os.open(sys.argv[1], os.O_RDONLY)
    libc.mmap(None, 4096, 1, 1, fd, 0)
    os.close(fd)
    print("ready", flush=True)
    sys.stdin.read()
    """
    with child_process(mapper, str(mapped)):
        verdict, why = _explain(base, mapped)
    assert verdict == "kept" and "the kernel refused a lease" in why


def test_a_file_below_a_locked_directory_is_kept(base: Path) -> None:
    inner = _file(base / "locked" / "deeper" / "f", 3 * 3600)
    locker = """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    print("ready", flush=True)
    sys.stdin.read()
    """
    with child_process(locker, str(base / "locked")):
        verdict, why = _explain(base, inner)
    assert verdict == "kept" and f"{base / 'locked'} is locked" in why


def test_rules_keep_and_their_own_max_age(base: Path) -> None:
    rules = (Rule("*.pid", keep=True), Rule("*.log", max_age_seconds=60))
    config = dataclasses.replace(_config(base), rules=rules)
    verdict, why = _explain(base, _file(base / "app.pid", 9 * 3600), config)
    assert (verdict, why) == ("kept", 'rule 1 ("*.pid") says keep = true')
    facts = explain_path(str(_file(base / "app.log", 120)), config)
    assert facts.verdict == "would delete" and facts.rule == 'rule 2 ("*.log")'


def test_the_count_limit_names_the_oldest_as_evicted_now(base: Path) -> None:
    oldest = _file(base / "a", 300)
    newest = _file(base / "b", 100)
    _file(base / "c", 200)
    config = _config(base, max_files=2)
    assert explain_path(str(oldest), config).limit == "over-count"
    assert explain_path(str(oldest), config).verdict == "would delete"
    assert explain_path(str(newest), config).verdict == "kept"


def test_a_path_outside_the_directory_is_refused(base: Path, outside: Path) -> None:
    with pytest.raises(OutsideBaseDirError):
        explain_path(str(_file(outside / "x")), _config(base))


def test_the_command_answers_in_text_and_json_and_exits_2_for_an_outside_path(
    base: Path, outside: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _file(base / "old", 3 * 3600)
    monkeypatch.setenv("TEMP_FILE_AGE_BY", "modified")  # utime renewed the ctime
    assert main(["explain", "--base-dir", str(base), str(old)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{old}: would delete: expired")
    assert "kernel lease: free" in text
    assert main(["explain", "--base-dir", str(base), "--json", str(old)]) == 0
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["verdict"] == "would delete" and answer["lease"] == "free"
    code = main(["explain", "--base-dir", str(base), str(old), str(outside / "x")])
    captured = capsys.readouterr()
    assert code == 2 and "not governed by tempwatch" in captured.err
    assert old.exists()  # explaining deletes nothing


def test_several_directories_the_innermost_governs(
    base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = base / "app"
    app.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[cleanup]\nage_by = ["modified"]\n'
        f'[[directory]]\npath = "{base}"\nmax_age = "10d"\n'
        f'[[directory]]\npath = "{app}"\nmax_age = "1h"\n'
        f'[[directory.rule]]\nmatch = "*.pid"\nkeep = true\n'
    )
    outer = _file(base / "report.txt", 3 * 3600)
    inner = _file(app / "cache.bin", 3 * 3600)
    pid = _file(app / "app.pid", 3 * 3600)
    code = main(["explain", "-c", str(config), "--json", str(outer), str(inner), str(pid)])
    assert code == 0
    answers = {Path(a["path"]).name: a for a in json.loads(capsys.readouterr().out)}
    assert answers["report.txt"]["directory"] == str(base)
    assert answers["report.txt"]["verdict"] == "kept"  # 3 h against 10 days
    assert answers["cache.bin"]["directory"] == str(app)
    assert answers["cache.bin"]["verdict"] == "would delete"
    assert answers["app.pid"]["why"] == 'rule 1 ("*.pid") says keep = true'
