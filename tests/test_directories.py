"""Several directories in one config and one process: the [[directory]] shape, the host."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from support import wait_for

from tempwatch.cli import main
from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS, load_config
from tempwatch.errors import AlreadyRunningError, ConfigError
from tempwatch.host import Host
from tempwatch.metrics import LabelledMetrics, Metrics
from tempwatch.openfiles import OpenFiles
from tempwatch.service import Service


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENV_VARS, CONFIG_PATH_ENV]:
        monkeypatch.delenv(variable, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def dirs(tmp_path: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        directory = tmp_path.resolve() / name
        directory.mkdir(parents=True, exist_ok=True)
        made.append(directory)
    return made


# --- the config shape -------------------------------------------------------------------


def test_each_directory_takes_the_top_level_defaults_and_its_own_keys(tmp_path: Path) -> None:
    a, b = dirs(tmp_path, "a", "b")
    config = load_config(write(tmp_path / "c.toml", f"""
[cleanup]
max_age = "1h"
[limits]
max_files = 50

[[directory]]
path = "{a}"
max_age = "10d"
age_by = ["modified", "changed"]

[[directory.rule]]
match = "*.pid"
keep = true

[[directory.rule]]
match = "*.log"
max_age = "7d"

[[directory]]
path = "{b}"
max_total_size = "2GiB"
"""), env={})
    first, second = config.each_directory()
    assert first.watch.base_dir == a and second.watch.base_dir == b
    assert first.cleanup.max_age_seconds == 864000 and second.cleanup.max_age_seconds == 3600
    assert first.cleanup.age_by == {"modified", "changed"}
    assert first.limits.max_files == second.limits.max_files == 50
    assert second.limits.max_total_size_bytes == 2 * 1024**3
    assert [rule.match for rule in first.rules] == ["*.pid", "*.log"]
    assert first.rules[0].keep and first.rules[1].max_age_seconds == 7 * 86400
    assert second.rules == ()
    again = load_config(write(tmp_path / "effective.toml", config.to_toml()), env={})
    assert again == config, "check-config's output reads back to the same config"


def test_environment_and_flags_apply_to_every_directory(tmp_path: Path) -> None:
    a, b = dirs(tmp_path, "a", "b")
    path = write(tmp_path / "c.toml", f"""
[[directory]]
path = "{a}"
max_age = "10d"
[[directory]]
path = "{b}"
""")
    config = load_config(path, env={"TEMP_FILE_MAX_AGE": "5m"}, overrides={"limits.max_files": 7})
    assert [d.cleanup.max_age_seconds for d in config.each_directory()] == [300, 300]
    assert [d.limits.max_files for d in config.each_directory()] == [7, 7]
    only = load_config(path, env={}, overrides={"watch.base_dir": str(a)})
    assert only.directories == () and only.cleanup.max_age_seconds == 864000, "--base-dir: it alone"
    with pytest.raises(ConfigError, match="TEMP_FILE_BASE_DIR"):
        load_config(path, env={"TEMP_FILE_BASE_DIR": str(a)})


def test_a_directory_inside_another_is_governed_by_its_own_entry_only(tmp_path: Path) -> None:
    (outer,) = dirs(tmp_path, "outer")
    (inner,) = dirs(tmp_path, "outer/app")
    config = load_config(write(tmp_path / "c.toml", f"""
[[directory]]
path = "{outer}"
[[directory]]
path = "{inner}"
max_age = "1s"
"""), env={})
    with Host(config) as host:
        (inner / "f").write_bytes(b"x")
        (outer / "g").write_bytes(b"x")
        services = host.services
        wait_for(lambda: str(inner / "f") in services[str(inner)].registry, message="inner")
        wait_for(lambda: str(outer / "g") in services[str(outer)].registry, message="outer")
        assert str(inner / "f") not in services[str(outer)].registry, "the outer skips it"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('path = "{a}"\nfoo = 1', 'directory\\[1\\] \\(.*\\): unknown key "foo"'),
        (
            'path = "{a}"\nlevel = "debug"',
            'directory\\[1\\] .*"level" is process-wide: set it in \\[log\\]',
        ),
        ('path = "{a}"\nmax_age = "soon"', "directory\\[1\\] .*max_age: expected"),
        ('max_age = "1h"', "directory\\[1\\]: every \\[\\[directory\\]\\] needs a path"),
        ('path = "/"', "directory\\[1\\].path: expected a directory other than the root"),
        (
            'path = "{a}"\n[[directory]]\npath = "{a}/"',
            "directory\\[2\\].path: .* is already directory\\[1\\]",
        ),
        (
            'path = "{a}"\n[[directory.rule]]\nmatch = "/abs"\nkeep = true',
            "directory\\[1\\].rule\\[1\\].match",
        ),
        (
            'path = "{a}"\n[[directory.rule]]\nmatch = "*.pid"\nkeep = true\nmax_age = "1h"',
            "rule\\[1\\]: keep = true never deletes",
        ),
        (
            'path = "{a}"\n[[directory.rule]]\nmatch = "*.pid"\nmaxage = "1h"',
            'rule\\[1\\]: unknown key "maxage"',
        ),
    ],
)
def test_every_invalid_entry_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, entry: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (a,) = dirs(tmp_path, "a")
    (a / "old").write_bytes(b"x")
    path = write(tmp_path / "c.toml", "[[directory]]\n" + entry.format(a=a) + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
    assert main(["clean", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert (a / "old").exists(), "nothing deleted"


def test_base_dir_at_the_top_cannot_be_combined_with_directories(tmp_path: Path) -> None:
    a, b = dirs(tmp_path, "a", "b")
    path = write(tmp_path / "c.toml", f'[watch]\nbase_dir = "{a}"\n[[directory]]\npath = "{b}"\n')
    with pytest.raises(ConfigError, match="watch.base_dir: cannot be combined"):
        load_config(path, env={})


# --- one process -------------------------------------------------------------------------


def three_directories(tmp_path: Path) -> tuple[Path, list[Path]]:
    a, b, c = dirs(tmp_path, "a", "b", "c")
    config = write(tmp_path / "c.toml", f"""
[cleanup]
interval = "1h"
max_age = "10d"
age_by = ["modified"]
[[directory]]
path = "{a}"
max_age = "1h"
[[directory]]
path = "{b}"
max_files = 2
low_watermark = 0.5
[[directory]]
path = "{c}"
""")
    return config, [a, b, c]


def test_three_directories_in_one_process_with_their_own_limits_and_one_sweep(
    tmp_path: Path,
) -> None:
    path, (a, b, c) = three_directories(tmp_path)
    for directory in (a, b, c):
        for i in range(3):
            (directory / f"f{i}").write_bytes(b"x")
            then = time.time() - 2 * 86400 + i
            os.utime(directory / f"f{i}", (then, then))  # two days old
    swept: list[str] = []

    def sweep(prefix: str) -> OpenFiles:
        swept.append(prefix)
        return OpenFiles(frozenset(), frozenset(), 0, 0)

    with Host(load_config(path, env={}), sweep=sweep) as host:
        assert set(host.services) == {str(a), str(b), str(c)}
        swept.clear()
        reports = host.run_passes_now()
        assert len(swept) == 1 and host.sweeps >= 1, "one sweep for every directory's pass"
        assert swept[0] == str(tmp_path.resolve())
        assert len(reports[str(a)].deleted) == 3, "a: all older than 1h"
        assert len(reports[str(c)].deleted) == 0, "c: none older than 10 days"
        wait_for(lambda: len(os.listdir(b)) <= 2, message="b: held to its count")
        assert len(os.listdir(c)) == 3 + 1  # and its lock file


def test_one_lock_per_directory_names_the_holder(tmp_path: Path) -> None:
    path, (a, _, _) = three_directories(tmp_path)
    config = load_config(path, env={})
    with Host(config):
        with pytest.raises(AlreadyRunningError, match=str(os.getpid())):
            Service(config.each_directory()[0]).start()


def test_reload_adds_and_removes_a_directory_without_disturbing_the_others(
    tmp_path: Path,
) -> None:
    a, b, c = dirs(tmp_path, "a", "b", "c")
    entry = '[[directory]]\npath = "{}"\n'
    first = write(tmp_path / "1.toml", entry.format(a) + entry.format(b))
    second = write(tmp_path / "2.toml", entry.format(a) + entry.format(c))
    with Host(load_config(first, env={})) as host:
        kept = host.services[str(a)]
        (a / "before").write_bytes(b"x")
        wait_for(lambda: str(a / "before") in kept.registry, message="registered")
        host.reload(load_config(second, env={}))
        assert set(host.services) == {str(a), str(c)}
        assert host.services[str(a)] is kept and str(a / "before") in kept.registry
        assert not (b / ".tempwatch.lock").exists() or _lock_free(b), "b's lock released"
        (c / "new").write_bytes(b"x")
        wait_for(lambda: str(c / "new") in host.services[str(c)].registry, message="c served")


def _lock_free(directory: Path) -> bool:
    import fcntl

    with open(directory / ".tempwatch.lock") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def test_the_pass_loop_runs_each_directory_at_its_interval(tmp_path: Path) -> None:
    a, b = dirs(tmp_path, "a", "b")
    path = write(tmp_path / "c.toml", f"""
[cleanup]
max_age = "200ms"
[[directory]]
path = "{a}"
interval = "100ms"
[[directory]]
path = "{b}"
interval = "1h"
""")
    with Host(load_config(path, env={})):
        (a / "f").write_bytes(b"x")
        (b / "f").write_bytes(b"x")
        wait_for(lambda: not (a / "f").exists(), message="a's passes every 100ms")
        assert (b / "f").exists(), "b's first pass is an hour away"


def test_clean_and_status_cover_every_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, (a, b, c) = three_directories(tmp_path)
    for directory in (a, b, c):
        (directory / "old").write_bytes(b"x")
        then = time.time() - 2 * 86400
        os.utime(directory / "old", (then, then))
    assert main(["status", "-c", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [d["base_dir"] for d in status["directories"]] == [str(a), str(b), str(c)]
    assert [sum(d["would_remove"].values()) for d in status["directories"]] == [1, 0, 0]
    assert main(["clean", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("removed 1 file (")
    assert not (a / "old").exists() and (b / "old").exists() and (c / "old").exists()
    assert main(["clean", "-c", str(path), "--base-dir", str(b), "--max-age", "1s"]) == 0
    assert not (b / "old").exists() and (c / "old").exists(), "--base-dir: just that one"


def test_clean_says_would_for_a_directory_in_dry_run_and_did_for_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = dirs(tmp_path, "a", "b")
    then = time.time() - 2 * 86400
    for directory in (a, b):
        (directory / "old").write_bytes(b"x")
        os.utime(directory / "old", (then, then))
    path = write(
        tmp_path / "c.toml",
        '[cleanup]\nmax_age = "1h"\nage_by = ["modified"]\n'
        f'[[directory]]\npath = "{a}"\ndry_run = true\n[[directory]]\npath = "{b}"\n',
    )
    assert main(["clean", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.partition(" (expired")[0] for line in out] == [
        f"would delete {str(a / 'old')!r}",
        f"{a}: would remove 1 file (1 B)",
        f"deleted {str(b / 'old')!r}",
        f"{b}: removed 1 file (1 B)",
        "removed 1 file (1 B), would remove 1 file (1 B), 0 skipped as open, 0 errors",
    ]
    assert (a / "old").exists() and not (b / "old").exists()


def test_metrics_carry_a_directory_label_with_the_configured_directories_only() -> None:
    by_directory = {"/srv/a": Metrics(), "/srv/b": Metrics()}
    body, _ = LabelledMetrics(lambda: by_directory).render()
    text = body.decode()
    assert 'temp_files_active{directory="/srv/a"}' in text
    assert 'temp_files_active{directory="/srv/b"}' in text
    labels = {line.split('directory="')[1].split('"')[0] for line in text.splitlines()
              if 'directory="' in line}
    assert labels == {"/srv/a", "/srv/b"}
    assert text.count("# TYPE temp_files_active gauge") == 1, "one family, two samples"


def test_no_thread_is_left_behind_by_a_host(tmp_path: Path) -> None:
    path, _ = three_directories(tmp_path)
    before = threading.active_count()
    with Host(load_config(path, env={})):
        pass
    wait_for(lambda: threading.active_count() <= before, message="threads joined")


def test_run_serves_several_directories_labels_metrics_and_reloads_on_sighup(
    tmp_path: Path,
) -> None:
    from test_ops_e2e import Child, free_port, healthz, scrape, wait_up

    a, b, c = dirs(tmp_path, "a", "b", "c")
    port = free_port()
    config = tmp_path / "c.toml"
    head = f'[metrics]\nenabled = true\nport = {port}\n[cleanup]\ninterval = "100ms"\n'
    entry = '[[directory]]\npath = "{}"\nmax_age = "{}"\n'
    config.write_text(head + entry.format(a, "200ms") + entry.format(b, "1h"))
    child = Child(config)
    url = f"http://127.0.0.1:{port}"

    def labels() -> set[str]:
        return {
            dict(labels)["directory"]
            for (name, labels), _ in scrape(url).items()
            if name == "temp_files_active"
        }

    try:
        wait_up(child, url)
        assert labels() == {str(a), str(b)}
        status, body = healthz(url)
        assert set(body["directories"]) == {str(a), str(b)}  # type: ignore[arg-type]
        (a / "short").write_bytes(b"x")
        (b / "long").write_bytes(b"x")
        wait_for(lambda: not (a / "short").exists(), message="a: 200ms max_age")
        assert (b / "long").exists()
        config.write_text(head + entry.format(a, "200ms") + entry.format(c, "200ms"))
        child.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: labels() == {str(a), str(c)}, message="b removed, c added")
        (c / "new").write_bytes(b"x")
        wait_for(lambda: not (c / "new").exists(), message="c cleaned after the reload")
        assert (b / "long").exists(), "b is no longer served"
    finally:
        assert child.stop() == 0, child.log()
