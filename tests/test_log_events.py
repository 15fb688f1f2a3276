"""What `tempwatch run` logs for an operator: dry runs, renames and moves, the settings in
force at start and what a reload changed, and the reserved holder of a skipped open file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import hold_open
from test_daemon import Daemon, write_config

HOUR = 3600


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return (tmp_path / "base").resolve()


def _started(config: Path) -> Iterator[Daemon]:
    child = Daemon(config)
    try:
        child.wait_event("started")
        yield child
    finally:
        child.close()


def _old_file(path: Path) -> Path:
    path.write_text("x")
    old = time.time() - 2 * HOUR
    os.utime(path, (old, old))
    return path


def test_a_dry_run_logs_would_delete_never_deleted(tmp_path: Path, base: Path) -> None:
    base.mkdir()
    old = _old_file(base / "old")
    config = tmp_path / "cfg.toml"
    write_config(config, base, max_age="1h", interval="100ms", age_by=["modified"])
    config.write_text(config.read_text().replace("[cleanup]", "[cleanup]\ndry_run = true"))
    for daemon in _started(config):
        daemon.wait_event("would-delete", path=str(old), reason="expired")
        assert not daemon.saw("deleted"), "a dry run logged a deletion"
        assert old.exists()


def test_renames_moves_out_and_external_deletes_are_logged_at_debug(
    tmp_path: Path, base: Path
) -> None:
    config = tmp_path / "cfg.toml"
    write_config(config, base, max_age="1h", interval="1h")
    outside = tmp_path / "outside"
    outside.mkdir()
    for daemon in _started(config):
        first, renamed = base / "first", base / "renamed"
        first.write_text("x")
        daemon.wait_event("registered", path=str(first))
        first.rename(renamed)
        daemon.wait_event("renamed", src_path=str(first), dest_path=str(renamed),
                          path=str(renamed), level="DEBUG")
        renamed.rename(outside / "away")
        daemon.wait_event("unregistered", cause="moved-out", path=str(renamed), level="DEBUG")
        doomed = base / "doomed"
        doomed.write_text("x")
        daemon.wait_event("registered", path=str(doomed))
        doomed.unlink()
        daemon.wait_event("unregistered", cause="deleted", path=str(doomed), level="DEBUG")
        (base / "d").mkdir()
        (base / "d" / "inner").write_text("x")
        daemon.wait_event("registered", path=str(base / "d" / "inner"))
        (base / "d").rename(base / "e")
        daemon.wait_event("renamed", src_path=str(base / "d"), dest_path=str(base / "e"), files=1)


def test_settings_are_logged_at_start_and_changes_at_reload(tmp_path: Path, base: Path) -> None:
    config = tmp_path / "cfg.toml"
    write_config(config, base, max_age="1h", interval="1h")
    for daemon in _started(config):
        daemon.wait_event("settings")
        (record,) = [r for r in daemon.records() if r.get("event") == "settings"]
        settings = record["settings"]
        assert isinstance(settings, dict)
        assert settings["cleanup.max_age"] == "1h"
        assert settings["cleanup.interval"] == "1h"
        assert settings["limits.max_files"] == 10000
        assert settings["watch.base_dir"] == str(base)
        assert 'cleanup.max_age="1h"' in str(record["message"])
        assert "watch.recursive=true" in str(record["message"])
        write_config(config, base, max_age="2h", interval="1h")
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload", changes={"cleanup.max_age": ["1h", "2h"]})
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("reload", changes={})
        messages = [str(r["message"]) for r in daemon.records() if r.get("event") == "reload"]
        assert messages == [
            f"configuration reloaded for {base}: cleanup.max_age 1h -> 2h",
            f"configuration reloaded for {base}: nothing changed",
        ]


def test_a_skipped_open_file_names_its_holders(tmp_path: Path, base: Path) -> None:
    base.mkdir()
    held = _old_file(base / "held")
    config = tmp_path / "cfg.toml"
    write_config(config, base, max_age="1h", interval="100ms", age_by=["modified"])
    with hold_open(held) as pid:
        for daemon in _started(config):
            daemon.wait_event("skipped-open", path=str(held))
            record = next(r for r in daemon.records() if r.get("event") == "skipped-open")
            assert str(pid) in str(record["holders"]), record
    assert held.exists()


def test_the_readme_jq_filter_counts_deletions_and_not_a_dry_runs(tmp_path: Path) -> None:
    """The README's `jq 'select(.event == "deleted")'`, run on the JSON log of `clean`."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    filters = re.findall(r"jq -c '(select\(\.event == \"[a-z-]+\"\))'", readme)
    assert 'select(.event == "deleted")' in filters, filters
    base = tmp_path / "base"
    base.mkdir()
    for name in ("a", "b"):
        _old_file(base / name)

    def clean(log: Path, *flags: str) -> list[str]:
        subprocess.run(
            [sys.executable, "-m", "tempwatch", "clean", "--base-dir", str(base),
             "--log-format", "json", "--log-file", str(log), *flags],
            check=True, capture_output=True, timeout=60,
            # The files are aged by setting their mtime back; ctime cannot be.
            env={**os.environ, "TEMP_FILE_AGE_BY": "modified"},
        )
        found = {}
        for expression in filters:
            out = subprocess.run([jq, "-c", expression, str(log)], check=True,
                                 capture_output=True, text=True, timeout=30).stdout
            found[expression] = len(out.splitlines())
        return [f"{expression}: {n}" for expression, n in found.items()]

    dry = clean(tmp_path / "dry.jsonl", "--dry-run")
    assert 'select(.event == "deleted"): 0' in dry, dry
    assert 'select(.event == "would-delete"): 2' in dry, dry
    real = clean(tmp_path / "real.jsonl")
    assert 'select(.event == "deleted"): 2' in real, real
    assert 'select(.event == "would-delete"): 0' in real, real
