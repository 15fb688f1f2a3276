"""The one-shot CLI (`clean`, `status`, `check-config`) on real directories and processes."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from loguru import logger
from support import hold_open, without_hidden_process_warnings

from tempwatch.cli import main
from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tomli backport has the same API
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chattr +i)")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def summary(self) -> str:
        assert self.lines, "clean printed nothing"
        return self.lines[-1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No tempwatch variable leaks in from the environment; no sink leaks out of a test."""
    for variable in [*ENV_VARS, CONFIG_PATH_ENV]:
        monkeypatch.delenv(variable, raising=False)
    # These tests age files by setting their mtime back; ctime cannot be, so they age by
    # mtime alone. The default age (by last use) has its own tests in test_age_e2e.py.
    monkeypatch.setenv("TEMP_FILE_AGE_BY", "modified")
    # A tempwatch installed on this machine must not leak its /etc config into the tests.
    monkeypatch.setattr(
        "tempwatch.configload.SYSTEM_CONFIG_PATH", Path("/nonexistent/tempwatch.toml")
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    logger.remove()
    logger.disable("tempwatch")
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Iterator[_Runner]:
    yield _Runner(capsys)


class _Runner:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *argv: str | os.PathLike[str]) -> Result:
        self._capsys.readouterr()
        code = main([os.fspath(a) for a in argv])
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)


def _make(path: Path | bytes, age_seconds: float, size_bytes: int = 10) -> Path | bytes:
    """A file of `size_bytes` whose mtime is `age_seconds` ago."""
    with open(path, "wb") as handle:
        handle.write(b"x" * size_bytes)
    _age(path, age_seconds)
    return path


def _age(path: Path | bytes, age_seconds: float) -> None:
    then = time.time() - age_seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tempwatch.toml"
    path.write_text(text)
    return path


def _lines_naming(result: Result, path: Path | str) -> list[str]:
    """Output lines that name `path`, printed plainly or escaped as a Python literal would."""
    text = os.fspath(path)
    forms = {text, repr(text)[1:-1]}
    return [line for line in result.lines if any(form in line for form in forms)]


def _count(summary: str, word: str) -> int:
    found = re.search(rf"(\d+) {word}", summary)
    assert found, f"no count of {word!r} in summary {summary!r}"
    return int(found.group(1))


def _files(directory: Path) -> set[str]:
    return {str(p) for p in directory.rglob("*") if p.is_file() or p.is_symlink()}


# -- check-config -------------------------------------------------------------------------


def test_check_config_prints_the_effective_config_as_toml(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    config = _config(
        tmp_path,
        f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "90m"\n[limits]\nmax_files = 7\n',
    )
    result = run("check-config", "-c", config)
    assert result.code == 0
    effective = tomllib.loads(result.out)
    assert effective["watch"]["base_dir"] == str(base)
    assert effective["limits"]["max_files"] == 7
    assert effective["cleanup"]["max_age"] in ("90m", "1h30m", 5400)
    assert result.err == f"tempwatch: config file: {config} (--config)\n"


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[limits]\nmax_files = "ten"\n', "limits.max_files"),
        ("[limits]\nmax_files = -3\n", "limits.max_files"),
        ("[limits]\nlow_watermark = 1.5\n", "limits.low_watermark"),
        ("[cleanup]\nmax_age = -5\n", "cleanup.max_age"),
        ('[cleanup]\nmax_age = "soon"\n', "cleanup.max_age"),
        ("[cleanup]\nmax_agee = 5\n", "max_agee"),
        ("[wacth]\nbase_dir = 1\n", "wacth"),
        ('[watch]\nbase_dir = "/"\n', "watch.base_dir"),
        ("[cleanup]\nmax_age = \n", "line 2"),
    ],
)
def test_check_config_rejects_a_bad_value_in_one_line_naming_it(
    tmp_path: Path, run: _Runner, toml: str, named: str
) -> None:
    result = run("check-config", "-c", _config(tmp_path, toml))
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1, result.err
    assert named in result.err


def test_check_config_output_reads_back_to_the_same_config(tmp_path: Path, run: _Runner) -> None:
    odd = Path(os.path.realpath(tmp_path)) / 'we"ird \\ dir ünï'
    odd.mkdir()
    log_file = odd / "log file.txt"
    first = run(
        "check-config", "--base-dir", odd, "--max-age", "1h30m", "--max-total-size", "1500MiB",
        "--log-file", log_file,
    )  # fmt: skip
    assert first.code == 0, first.err
    again = run("check-config", "-c", _config(tmp_path, first.out))
    assert again.code == 0, again.err
    effective = tomllib.loads(again.out)
    assert effective["watch"]["base_dir"] == str(odd)
    assert effective["log"]["file"] == str(log_file)
    strip = [line for line in first.out.splitlines() if not line.startswith("#")]
    assert [line for line in again.out.splitlines() if not line.startswith("#")] == strip


def test_check_config_names_a_bad_environment_variable(
    run: _Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_TEMP_FILES", "ten")
    result = run("check-config")
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert "MAX_TEMP_FILES" in result.err


# -- clean --------------------------------------------------------------------------------


def test_clean_deletes_expired_files_and_reports_each(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    config = _config(tmp_path, f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "1h"\n')
    (base / "sub").mkdir()
    old = _make(base / "old", 2 * HOUR, size_bytes=100)
    deep = _make(base / "sub" / "deep", 3 * HOUR, size_bytes=20)
    fresh = _make(base / "fresh", 30 * 60)
    result = run("clean", "-c", config)
    assert result.code == 0
    assert _files(base) == {str(fresh)}
    assert len(result.lines) == 3, result.out
    for path in (old, deep):
        (line,) = _lines_naming(result, path)
        assert "expired" in line
    assert _lines_naming(result, fresh) == []
    assert _count(result.summary, "file") == 2
    assert "120" in result.summary  # bytes removed
    assert _count(result.summary, "skipped") == 0
    assert _count(result.summary, "error") == 0
    assert without_hidden_process_warnings(result.err) == ""


def test_clean_with_nothing_to_do_prints_only_the_summary(base: Path, run: _Runner) -> None:
    fresh = _make(base / "fresh", 60)
    result = run("clean", "--base-dir", base)
    assert result.code == 0
    assert len(result.lines) == 1
    assert _count(result.summary, "file") == 0
    assert Path(fresh).exists()


def test_dry_run_deletes_nothing_but_lists_the_same_files(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    config = _config(
        tmp_path,
        f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "1h"\n'
        "[limits]\nmax_files = 3\nlow_watermark = 0.5\n",
    )
    expired = [_make(base / f"expired{i}", (2 + i) * HOUR) for i in range(2)]
    young = [_make(base / f"young{i}", (10 + i) * 60) for i in range(4)]
    before = {p: os.lstat(p) for p in _files(base)}
    dry = run("clean", "-c", config, "--dry-run")
    assert dry.code == 0
    after = {p: os.lstat(p) for p in _files(base)}
    assert set(after) == set(before)
    assert all(after[p].st_mtime == before[p].st_mtime for p in before)
    listed = {str(p) for p in [*expired, *young] if _lines_naming(dry, p)}
    real = run("clean", "-c", config)
    deleted = {str(p) for p in [*expired, *young] if _lines_naming(real, p)}
    assert listed == deleted
    assert deleted == set(before) - _files(base)
    assert len(deleted) == 5  # 2 expired, then 4 young over the limit of 3 -> 1 left
    assert len(dry.lines) == len(real.lines) == 6


def test_max_age_flag_beats_the_config_file(tmp_path: Path, base: Path, run: _Runner) -> None:
    config = _config(tmp_path, f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "1h"\n')
    ten = _make(base / "ten-minutes", 10 * 60)
    one = _make(base / "one-minute", 60)
    assert run("clean", "-c", config).code == 0
    assert Path(ten).exists()
    result = run("clean", "-c", config, "--max-age", "5m")
    assert result.code == 0
    assert not Path(ten).exists() and Path(one).exists()
    (line,) = _lines_naming(result, ten)
    assert "expired" in line


def test_max_files_evicts_the_oldest_down_to_the_low_watermark(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    config = _config(
        tmp_path,
        f'[watch]\nbase_dir = "{base}"\n[cleanup]\nmax_age = "1h"\n'
        "[limits]\nmax_files = 10\nlow_watermark = 0.5\n",
    )
    # Names run against age, so an eviction by name or by inode order would pick wrongly.
    files = {m: _make(base / f"f{20 - m:02d}", m * 60) for m in range(1, 13)}
    result = run("clean", "-c", config)
    assert result.code == 0
    kept = {str(files[m]) for m in range(1, 6)}
    assert _files(base) == kept
    for minutes in range(6, 13):
        (line,) = _lines_naming(result, files[minutes])
        assert "over-count" in line
    assert len(result.lines) == 8


def test_an_oversize_file_goes_with_reason_oversize(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    config = _config(
        tmp_path, f'[watch]\nbase_dir = "{base}"\n[limits]\nmax_file_size = 100\n'
    )
    big = _make(base / "big", 60, size_bytes=101)
    exact = _make(base / "exact", 60, size_bytes=100)
    result = run("clean", "-c", config)
    assert result.code == 0
    assert _files(base) == {str(exact)}
    (line,) = _lines_naming(result, big)
    assert "oversize" in line


def test_total_quota_evicts_the_oldest_with_reason_over_quota(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    config = _config(
        tmp_path,
        f'[watch]\nbase_dir = "{base}"\n'
        "[limits]\nmax_total_size = 1000\nlow_watermark = 0.5\n",
    )
    files = [_make(base / f"q{i}", (10 - i) * 60, size_bytes=300) for i in range(5)]
    result = run("clean", "-c", config)
    assert result.code == 0
    assert _files(base) == {str(files[-1])}  # 300 bytes <= 500, the newest stays
    for path in files[:-1]:
        (line,) = _lines_naming(result, path)
        assert "over-quota" in line


@pytest.mark.parametrize("mode", ["r", "w", "path"])
def test_a_file_held_open_is_kept_and_counted_as_skipped(
    base: Path, run: _Runner, mode: str
) -> None:
    held = _make(base / "held", 2 * HOUR)
    free = _make(base / "free", 2 * HOUR)
    with hold_open(held, mode):
        result = run("clean", "--base-dir", base)
        assert result.code == 0
        assert Path(held).exists() and not Path(free).exists()
        assert _lines_naming(result, held) == []
        assert _count(result.summary, "skipped") == 1
        assert _count(result.summary, "file") == 1
    again = run("clean", "--base-dir", base)
    assert not Path(held).exists()
    assert _count(again.summary, "skipped") == 0


def test_a_symlink_to_a_sentinel_outside_is_removed_but_never_followed(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    outside = Path(os.path.realpath(tmp_path)) / "outside"
    (outside / "sub").mkdir(parents=True)
    sentinel = _make(outside / "sentinel", 5 * HOUR)
    deep = _make(outside / "sub" / "deep", 5 * HOUR)
    link = base / "link"
    link.symlink_to(sentinel)
    _age(link, 2 * HOUR)
    dir_link = base / "dirlink"
    dir_link.symlink_to(outside / "sub", target_is_directory=True)
    _age(dir_link, 2 * HOUR)
    fresh_target = _make(base / "fresh-target", 60)
    inner_link = base / "inner-link"
    inner_link.symlink_to(fresh_target)
    _age(inner_link, 2 * HOUR)
    result = run("clean", "--base-dir", base)
    assert result.code == 0
    assert Path(sentinel).read_bytes() == b"x" * 10
    assert Path(deep).read_bytes() == b"x" * 10
    assert Path(fresh_target).read_bytes() == b"x" * 10
    assert not os.path.lexists(link)
    assert not os.path.lexists(inner_link)


ODD_NAMES: list[bytes] = [
    b"-rf",
    b"--help",
    b"with space",
    b" leading space",
    b"new\nline",
    b"tab\there",
    b"non-utf8-\xff\xfe",
    "ünïcödé".encode(),
    b"quote'\"",
    b"back\\slash",
    b"*",
]


def _make_odd_files(base: Path) -> list[bytes]:
    paths = [os.fsencode(base) + b"/" + name for name in ODD_NAMES]
    for path in paths:
        _make(path, 2 * HOUR)
    return paths


def test_odd_names_are_deleted_and_printed_one_line_each(base: Path, run: _Runner) -> None:
    paths = _make_odd_files(base)
    result = run("clean", "--base-dir", base)
    assert result.code == 0
    assert os.listdir(os.fsencode(base)) == []
    assert len(result.lines) == len(paths) + 1, result.out
    for path in paths:
        assert len(_lines_naming(result, os.fsdecode(path))) == 1, os.fsdecode(path)


def _subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != CONFIG_PATH_ENV}
    env["TEMP_FILE_AGE_BY"] = "modified"  # files aged by their mtime, as in-process
    # What a UTF-8 desktop locale gives (en_US.UTF-8): a strict encoder on stdout and stderr.
    env["PYTHONIOENCODING"] = "utf-8:strict"
    return env


def test_clean_through_the_real_entry_point(base: Path) -> None:
    """`python -m tempwatch clean`: odd names reach a real, non-terminal stdout intact."""
    paths = _make_odd_files(base)
    env = _subprocess_env()
    done = subprocess.run(
        [sys.executable, "-m", "tempwatch", "clean", "--base-dir", str(base), "--max-age", "1h"],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert os.listdir(os.fsencode(base)) == []
    out = done.stdout.decode("utf-8")  # what a pipe receives must be valid UTF-8
    assert len(out.splitlines()) == len(paths) + 1, out
    assert b"\r" not in done.stderr, "progress was shown on a pipe"
    assert b"Traceback" not in done.stderr


def test_status_through_the_real_entry_point(base: Path) -> None:
    paths = _make_odd_files(base)
    (oldest,) = [p for p in paths if b"\xff" in p]
    _age(oldest, 3 * HOUR)  # the oldest file's name is shown: make it the non-UTF-8 one
    for args in (["status"], ["status", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "tempwatch", *args, "--base-dir", str(base)],
            capture_output=True,
            cwd=REPO,
            env=_subprocess_env(),
            timeout=50,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert b"Traceback" not in done.stderr
        out = done.stdout.decode("utf-8")
        if "--json" in args:
            assert json.loads(out)["files"] == len(paths)
    assert len(os.listdir(base)) == len(paths)


def test_check_config_through_the_real_entry_point(tmp_path: Path) -> None:
    env = _subprocess_env()
    env["TEMP_FILE_MAX_AGE"] = "forever"
    done = subprocess.run(
        [sys.executable, "-m", "tempwatch", "check-config", "--base-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=50,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "TEMP_FILE_MAX_AGE" in done.stderr


def test_special_files_are_left_alone_and_never_block(base: Path, run: _Runner) -> None:
    fifo = base / "fifo"
    os.mkfifo(fifo)  # opening it to read or overwrite would block the pass forever
    _age(fifo, 2 * HOUR)
    old = _make(base / "old", 2 * HOUR)
    result = run("clean", "--base-dir", base)
    assert result.code == 0
    assert fifo.is_fifo()
    assert not Path(old).exists()
    assert _lines_naming(result, fifo) == []


def _clean_on_a_terminal(base: Path, *flags: str) -> str:
    """Run `clean` with stderr on a pseudo-terminal; return what the terminal showed."""
    import pty

    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k != CONFIG_PATH_ENV}
    env["TEMP_FILE_AGE_BY"] = "modified"  # files aged by their mtime, as in-process
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tempwatch", "clean", "--base-dir", str(base), *flags],
            stdout=subprocess.PIPE,
            stderr=follower,
            cwd=REPO,
            env=env,
            timeout=50,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert done.returncode == 0
    return shown.decode(errors="replace")


def test_progress_shows_on_a_terminal_unless_quiet(base: Path) -> None:
    for i in range(2000):
        _make(base / f"a{i}", 2 * HOUR, size_bytes=1)
    shown = _clean_on_a_terminal(base)
    assert "\r" in shown and "removed" in shown, f"no progress on a terminal: {shown!r}"
    assert os.listdir(base) == []
    for i in range(2000):
        _make(base / f"b{i}", 2 * HOUR, size_bytes=1)
    assert without_hidden_process_warnings(_clean_on_a_terminal(base, "--quiet")) == ""
    assert os.listdir(base) == []


@pytest.mark.parametrize("parent_exists", [True, False])
def test_clean_on_a_missing_base_dir_exits_2_with_one_line(
    tmp_path: Path, run: _Runner, parent_exists: bool
) -> None:
    missing = tmp_path / "missing" if parent_exists else tmp_path / "no" / "such"
    result = run("clean", "--base-dir", missing)
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1, result.err
    assert str(missing) in result.err
    assert not missing.exists(), "clean must not create base_dir"


@pytest.mark.root
@needs_root
def test_a_failed_deletion_exits_1_and_the_pass_carries_on(base: Path, run: _Runner) -> None:
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr not found: cannot make a file undeletable as root")
    stuck = _make(base / "stuck", 2 * HOUR)
    other = _make(base / "other", 3 * HOUR)
    with _immutable(chattr, Path(stuck)):
        result = run("clean", "--base-dir", base)
        assert result.code == 1
        assert Path(stuck).exists() and not Path(other).exists()
        assert _lines_naming(result, stuck), "the failure is not reported"
        assert _count(result.summary, "error") == 1
        assert _count(result.summary, "file") == 1
    assert run("clean", "--base-dir", base).code == 0
    assert not Path(stuck).exists()


@contextmanager
def _immutable(chattr: str, path: Path) -> Iterator[None]:
    done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


# -- status -------------------------------------------------------------------------------


def _status_tree(base: Path) -> dict[str, Path]:
    (base / "d").mkdir()
    return {
        "seconds": Path(_make(base / "seconds", 20, size_bytes=1)),
        "minutes": Path(_make(base / "d" / "minutes", 5 * 60, size_bytes=20)),
        "hours": Path(_make(base / "hours", 2 * HOUR, size_bytes=300)),
        "days": Path(_make(base / "d" / "days", 2 * 86400, size_bytes=4000)),
    }


def test_status_json_counts_ages_and_what_a_clean_would_remove(
    base: Path, run: _Runner
) -> None:
    tree = _status_tree(base)
    with hold_open(tree["hours"], "r"):
        result = run("status", "--base-dir", base, "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["files"] == 4
    assert report["total_bytes"] == 4321
    assert report["oldest_path"] == str(tree["days"])
    assert 2 * 86400 - 60 < report["oldest_age_seconds"] < 2 * 86400 + 60
    buckets = report["buckets"]
    assert sum(b["files"] for b in buckets) == 4
    assert sum(b["size_bytes"] for b in buckets) == 4321
    assert sorted(b["files"] for b in buckets if b["files"]) == [1, 1, 1, 1]
    assert report["would_remove"] == {"expired": 1}
    assert report["would_remove_bytes"] == 4000
    assert report["skipped_open"] == 1
    assert {str(p) for p in tree.values()} == _files(base), "status must delete nothing"


def test_status_text_shows_counts_oldest_histogram_and_the_plan(
    base: Path, run: _Runner
) -> None:
    tree = _status_tree(base)
    result = run("status", "--base-dir", base)
    assert result.code == 0
    assert str(tree["days"]) in result.out
    assert re.search(r"\b4\b", result.out), "the file count is missing"
    assert "#" in result.out, "no histogram bars"
    plan = [line for line in result.lines if "remove" in line]
    assert plan and re.search(r"\b2\b", plan[0]), result.out
    assert {str(p) for p in tree.values()} == _files(base), "status must delete nothing"


def test_status_on_a_missing_base_dir_exits_2(tmp_path: Path, run: _Runner) -> None:
    result = run("status", "--base-dir", tmp_path / "missing", "--json")
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1


def test_status_of_an_empty_dir(base: Path, run: _Runner) -> None:
    result = run("status", "--base-dir", base, "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["files"] == 0 and report["oldest_path"] is None
    assert report["would_remove"] == {}


# -- environment and precedence -----------------------------------------------------------


def test_environment_base_dir_and_max_files_are_honoured(
    base: Path, run: _Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMP_FILE_BASE_DIR", str(base))
    monkeypatch.setenv("MAX_TEMP_FILES", "3")
    files = [_make(base / f"f{i}", (10 - i) * 60) for i in range(5)]
    result = run("clean")
    assert result.code == 0
    # 5 > 3: evict down to floor(3 * 0.9) = 2, the oldest first.
    assert _files(base) == {str(p) for p in files[3:]}
    for path in files[:3]:
        (line,) = _lines_naming(result, path)
        assert "over-count" in line


def test_environment_beats_the_config_file(
    tmp_path: Path, base: Path, run: _Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, f'[watch]\nbase_dir = "{base}"\n[limits]\nmax_files = 100\n')
    monkeypatch.setenv("MAX_TEMP_FILES", "3")
    files = [_make(base / f"f{i}", (10 - i) * 60) for i in range(5)]
    assert run("clean", "-c", config).code == 0
    assert _files(base) == {str(p) for p in files[3:]}


def test_max_files_flag_beats_the_environment(
    base: Path, run: _Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMP_FILE_BASE_DIR", str(base))
    monkeypatch.setenv("MAX_TEMP_FILES", "3")
    files = [_make(base / f"f{i}", (10 - i) * 60) for i in range(5)]
    result = run("clean", "--max-files", "100")
    assert result.code == 0, result.err
    assert _files(base) == {str(p) for p in files}


def test_base_dir_flag_beats_the_environment(
    tmp_path: Path, base: Path, run: _Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = Path(os.path.realpath(tmp_path)) / "other"
    other.mkdir()
    monkeypatch.setenv("TEMP_FILE_BASE_DIR", str(base))
    in_env_dir = _make(base / "env", 2 * HOUR)
    in_flag_dir = _make(other / "flag", 2 * HOUR)
    assert run("clean", "--base-dir", other).code == 0
    assert Path(in_env_dir).exists()
    assert not Path(in_flag_dir).exists()


@pytest.mark.parametrize(
    ("toml", "env", "flags"),
    [
        ("[cleanup]\nmax_agee = 1\n", {}, []),
        ("[limits]\nlow_watermark = 0\n", {}, []),
        ("[cleanup]\nmax_age = 1\nmax_age = 2\n", {}, []),
        ("", {"TEMP_FILE_MAX_AGE": "soon"}, []),
        ("", {"MAX_TEMP_FILES": "-1"}, []),
        ("", {"LOG_FORMAT": "xml"}, []),
        ("", {}, ["--max-age", "0"]),
        ("", {}, ["--max-age=-5m"]),
        ("", {}, ["--log-format", "yaml"]),
    ],
)
def test_an_invalid_config_never_deletes_anything(
    tmp_path: Path,
    base: Path,
    run: _Runner,
    monkeypatch: pytest.MonkeyPatch,
    toml: str,
    env: dict[str, str],
    flags: Sequence[str],
) -> None:
    config = _config(tmp_path, f'[watch]\nbase_dir = "{base}"\n{toml}')
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    expired = {str(_make(base / f"old{i}", 30 * 86400)) for i in range(3)}
    result = run("clean", "-c", config, "--max-age", "1s", *flags)
    assert result.code == 2
    assert _files(base) == expired
    assert result.out == ""
    assert len(result.err.splitlines()) == 1, result.err


# -- JSON logs ----------------------------------------------------------------------------


def _json_log(log_file: Path) -> list[dict[str, object]]:
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]


def test_json_log_file_has_one_object_per_line_with_the_deletion_fields(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    log_file = Path(os.path.realpath(tmp_path)) / "tempwatch.jsonl"
    old = Path(_make(base / "old", 2 * HOUR, size_bytes=123))
    big = Path(_make(base / "big", 60, size_bytes=5000))
    spaced = Path(_make(base / "-with space \"quoted\"", 3 * HOUR, size_bytes=7))
    keep = Path(_make(base / "keep", 60))
    result = run(
        "clean",
        "--base-dir", base,
        "--max-file-size", "4KiB",
        "--log-format", "json",
        "--log-file", log_file,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert keep.exists()
    deletions = [r for r in _json_log(log_file) if r.get("event") == "deleted"]
    by_path = {r["path"]: r for r in deletions}
    assert len(deletions) == 3
    assert set(by_path) == {str(old), str(big), str(spaced)}
    for path, reason, size, age in [
        (old, "expired", 123, 2 * HOUR),
        (big, "oversize", 5000, 60),
        (spaced, "expired", 7, 3 * HOUR),
    ]:
        record = by_path[str(path)]
        assert record["reason"] == reason
        assert record["size_bytes"] == size
        assert isinstance(record["age_seconds"], int | float)
        assert age - 30 < record["age_seconds"] < age + 30


def test_a_non_utf8_name_reaches_the_json_log(tmp_path: Path, base: Path, run: _Runner) -> None:
    log_file = Path(os.path.realpath(tmp_path)) / "tempwatch.jsonl"
    odd = _make(os.fsencode(base) + b"/odd\n\xff", 3 * HOUR, size_bytes=7)
    result = run("clean", "--base-dir", base, "--log-format", "json", "--log-file", log_file)
    assert result.code == 0, result.err
    assert not os.path.lexists(odd)
    deletions = [r for r in _json_log(log_file) if r.get("event") == "deleted"]
    assert len(deletions) == 1, "the deletion of a non-UTF-8 name was not logged"
    record = deletions[0]
    assert record["reason"] == "expired" and record["size_bytes"] == 7
    assert "odd" in str(record["path"])


def test_the_log_file_inside_base_dir_is_never_cleaned(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    log_file = base / "tempwatch.log"
    _make(log_file, 30 * 86400)
    config = _config(
        tmp_path,
        f'[watch]\nbase_dir = "{base}"\n[limits]\nmax_files = 1\n[log]\nfile = "{log_file}"\n',
    )
    others = [_make(base / f"f{i}", (i + 1) * 60) for i in range(3)]
    result = run("clean", "-c", config, "--max-age", "1h")
    assert result.code == 0, result.err
    assert log_file.exists()
    assert _lines_naming(result, log_file) == []
    assert not any(Path(p).exists() for p in others)
    # Its own log is not a candidate at all, not even one kept because it is open.
    assert _count(result.summary, "skipped") == 0


def test_a_newline_in_a_file_name_cannot_forge_a_text_log_line(
    tmp_path: Path, base: Path, run: _Runner
) -> None:
    log_file = Path(os.path.realpath(tmp_path)) / "tempwatch.log"
    forged = "2030-01-01 00:00:00.000 | INFO    | FORGED deleted everything"
    _make(os.fsencode(base) + b"/evil\n" + forged.encode(), 2 * HOUR)
    result = run("clean", "--base-dir", base, "--log-format", "text", "--log-file", log_file)
    assert result.code == 0, result.err
    assert os.listdir(base) == []
    lines = log_file.read_text(encoding="utf-8").splitlines()
    assert lines, "nothing was logged"
    assert not [line for line in lines if line.startswith(forged[:10])], lines


def test_clean_writes_to_the_stdout_of_the_moment(base: Path) -> None:
    """main() in-process with stdout redirected: every line must land in the redirect."""
    old = _make(base / "old", 2 * HOUR)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["clean", "--base-dir", str(base)])
    assert code == 0
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert str(old) in lines[0]


# -- the command line itself ----------------------------------------------------------------


def test_version(run: _Runner) -> None:
    from tempwatch import __version__

    with pytest.raises(SystemExit) as exited:
        run("--version")
    assert exited.value.code == 0
    assert __version__ in _last_output(run)


def _last_output(run: _Runner) -> str:
    captured = run._capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.parametrize(
    ("command", "present", "absent"),
    [
        ("run", ["--interval", "--observer", "--dry-run", "--log-file"], ["--json", "--quiet"]),
        ("clean", ["--dry-run", "--quiet", "--max-age"], ["--interval", "--observer", "--json"]),
        ("status", ["--json", "--max-age", "--base-dir"],
         ["--dry-run", "--log-file", "--interval", "--observer", "--quiet"]),
        ("check-config", ["--interval", "--observer", "--dry-run"], ["--json", "--quiet"]),
    ],
)
def test_each_command_has_a_description_and_only_its_flags(
    run: _Runner, command: str, present: list[str], absent: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(command, "--help")
    assert exited.value.code == 0
    text = _last_output(run)
    usage, _, rest = text.partition("\n\n")
    description = rest.partition("\n\n")[0]
    assert len(description.split()) >= 8, f"{command} has no description:\n{text}"
    for flag in present:
        assert flag in text, f"{command} --help lacks {flag}"
    for flag in absent:
        assert flag not in text, f"{command} --help lists {flag}, which does not apply"


@pytest.mark.parametrize("columns", [50, 120])
def test_help_is_wrapped_to_the_width_columns_gives(
    run: _Runner, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    for argv in (["status", "--help"], ["explain", "--help"]):  # the main help's text is raw
        with pytest.raises(SystemExit):
            run(*argv)
        widest = max(len(line) for line in _last_output(run).splitlines())
        # argparse keeps 2 columns free; filled up to near the edge, not cut at a fixed width
        assert columns - 12 < widest <= columns - 2, (argv, widest)


def test_a_flag_that_does_not_apply_is_refused(run: _Runner, base: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        run("status", "--base-dir", base, "--dry-run")
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--max-files", "ten"], '--max-files: expected an integer >= 0, got "ten"'),
        (["--max-files", "-3"], '--max-files: expected an integer >= 0, got "-3"'),
        (["--max-file-size", "lots"], '--max-file-size: expected a size'),
        (["--observer", "fanotify"], '--observer: expected one of "auto", "inotify"'),
    ],
)
def test_a_bad_flag_value_is_a_one_line_config_error(
    run: _Runner, base: Path, argv: list[str], expected: str
) -> None:
    (base / "keep").write_text("x")
    result = run("check-config", "--base-dir", base, *argv)
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1 and "usage:" not in result.err, result.err
    assert result.err.startswith(f"tempwatch: config error: {expected}"), result.err
    assert (base / "keep").exists()


def test_an_uppercase_duration_unit_is_refused_with_the_units_listed(
    run: _Runner, base: Path
) -> None:
    (base / "old").write_text("x")
    _age(base / "old", 3 * HOUR)
    result = run("clean", "--base-dir", base, "--max-age", "5M")
    assert result.code == 2
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith('tempwatch: config error: --max-age: expected a duration')
    assert "lowercase" in result.err
    for unit in ("d (days)", "h (hours)", "m (minutes)", "s (seconds)", "ms (milliseconds)"):
        assert unit in result.err
    assert (base / "old").exists(), "nothing is deleted on a config error"


def test_counts_agree_with_their_nouns(run: _Runner, base: Path) -> None:
    (base / "old").write_text("x")
    _age(base / "old", 3 * HOUR)
    status = run("status", "--base-dir", base)
    assert "would remove 1 file (" in status.out, status.out
    dry = run("clean", "--base-dir", base, "--dry-run")
    assert dry.summary.startswith("would remove 1 file ("), dry.summary
    assert dry.summary.endswith("0 errors"), dry.summary
    done = run("clean", "--base-dir", base)
    assert done.summary.startswith("removed 1 file ("), done.summary


def test_default_config_prints_the_shipped_commented_file(run: _Runner) -> None:
    result = run("default-config")
    assert result.code == 0
    assert result.out == (REPO / "config.toml").read_text("utf-8")
    assert "# " in result.out and tomllib.loads(result.out)["cleanup"]["max_age"] == "1h"


# -- where the config file comes from -------------------------------------------------------


def _toml_with_max_files(path: Path, base: Path, max_files: int) -> Path:
    path.write_text(f'[watch]\nbase_dir = "{base}"\n[limits]\nmax_files = {max_files}\n')
    return path


def test_config_search_path_flag_then_env_then_system_file(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    system = _toml_with_max_files(tmp_path / "etc.toml", base, 1)
    from_env = _toml_with_max_files(tmp_path / "env.toml", base, 2)
    given = _toml_with_max_files(tmp_path / "given.toml", base, 3)

    def check(*argv: str) -> tuple[int, str]:
        assert main(["check-config", *argv], system_config=system) == 0
        captured = capsys.readouterr()
        return tomllib.loads(captured.out)["limits"]["max_files"], captured.err

    assert check() == (1, f"tempwatch: config file: {system} (the default location)\n")
    monkeypatch.setenv("TEMPWATCH_CONFIG", str(from_env))
    assert check() == (2, f"tempwatch: config file: {from_env} ($TEMPWATCH_CONFIG)\n")
    assert check("-c", str(given)) == (3, f"tempwatch: config file: {given} (--config)\n")
    monkeypatch.delenv("TEMPWATCH_CONFIG")
    system.unlink()
    number, err = check("--base-dir", str(base))
    assert number == 10000
    assert err.startswith("tempwatch: config file: none given") and str(system) in err


def test_a_missing_file_named_by_the_environment_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEMPWATCH_CONFIG", str(tmp_path / "nope.toml"))
    assert main(["status"], system_config=tmp_path / "absent.toml") == 2
    err = capsys.readouterr().err
    assert err == f"tempwatch: config error: config file not found: {tmp_path / 'nope.toml'}\n"
