"""`run`, `clean`, `status` and the library agree on which files go: one tree, four askers.

All four use the one age definition (`tempwatch.age`), the default `age_by`. The tree:

- old: created at the start, its mtime two days back: goes.
- written: created at the start, written again later: young by its write, kept.
- moved: made outside with a two-day-old mtime, moved in later: young by the move, kept.
- extracted: made later with a two-day-old mtime, as tar leaves an archive's member
  (old mtime, new ctime): kept.
- link: a dangling symlink made at the start: goes for run, clean and status (its target
  is never touched). `register_file` refuses symlinks (a program hands the library its own
  regular files), so the library does not judge it.
- app.pid: old, governed by a `keep = true` rule: kept by all four (the library, given the
  same rule, refuses to register it, as the service never registers it).

Old means older than max_age by every timestamp, ctime included, and ctime cannot be set
back: the test waits for max_age to pass once, with a deadline, between the two halves of
the tree. The real clock is used throughout; max_age leaves the four judgments ample time.

`run` is `tempwatch run` (dry run: it logs what it would delete, as JSON; written was old
until its write, so only a pass after the second half counts); `status` asks it
(and judges with the service's own config); `clean` is the CLI in its own process; the
library registers the regular files as a program would and deletes for real, last. Each
file has a size of its own power of two, so the bytes `status` would remove name the set.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from support import wait_for
from test_ops_e2e import REPO, Child

from tempwatch import TempFileManager
from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS

MAX_AGE_SECONDS = 20.0  # the four judgments must fit in it, on a loaded machine too
TWO_DAYS = 2 * 86400.0
LINK_TARGET = "nowhere-" + "x" * 24  # 32 bytes: a symlink's size is its target's length


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in [*ENV_VARS, CONFIG_PATH_ENV]:
        monkeypatch.delenv(variable, raising=False)


def _made_old(path: Path) -> Path:
    """Its mtime and atime two days back (the ctime becomes now: no program can set it)."""
    then = time.time() - TWO_DAYS
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def _file(path: Path, size: int) -> Path:
    path.write_bytes(b"x" * size)
    return path


def _tempwatch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tempwatch", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )


def _finished(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    return out


_WOULD_DELETE = re.compile(r"^would delete (?P<path>'.*'|\".*\") \(")


def _cleaned(out: str) -> set[str]:
    """The paths `tempwatch clean --dry-run` says it would delete."""
    paths: set[str] = set()
    for line in out.splitlines():
        match = _WOULD_DELETE.match(line)
        if match:
            paths.add(ast.literal_eval(match["path"]))
    return paths


def _records(child: Child, event: str) -> list[dict[str, object]]:
    found = []
    for line in list(child.lines):
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("event") == event:
            found.append(record)
    return found


def _at(iso_time: object) -> datetime:
    return datetime.fromisoformat(str(iso_time))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_run_clean_status_and_the_library_agree_on_which_files_go(tmp_path: Path) -> None:
    base = tmp_path.resolve() / "base"
    outside = tmp_path.resolve() / "outside"
    base.mkdir()
    outside.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        '[log]\nformat = "json"\nlevel = "DEBUG"\n[metrics]\nenabled = false\n'
        '[cleanup]\ninterval = "300ms"\ndry_run = true\n'
        f'[[directory]]\npath = "{base}"\nmax_age = "{MAX_AGE_SECONDS:g}s"\n'
        '[[directory.rule]]\nmatch = "*.pid"\nkeep = true\n'
    )
    run = Child(config)
    library = TempFileManager(  # the default age_by
        base, max_age=MAX_AGE_SECONDS, rules=[{"match": "*.pid", "keep": True}]
    )
    try:
        def serving() -> bool:
            assert run.proc.poll() is None, run.log()
            return bool(_records(run, "started")) and bool(_records(run, "pass"))

        wait_for(serving, timeout=60, message="tempwatch run started and passing")

        # The first half: files that exist from the start.
        old = _made_old(_file(base / "old", 1))
        written = _file(base / "written", 1)
        pid = _made_old(_file(base / "app.pid", 16))
        link = base / "link"
        os.symlink(LINK_TARGET, link)
        _made_old(link)
        source = _made_old(_file(outside / "moved", 4))
        for path in (old, written):
            assert library.register_file(path)
        assert not library.register_file(link), "the library refuses symlinks"
        assert not library.register_file(pid), "nor registers a file a keep rule governs"
        first_half_at = max(p.lstat().st_ctime for p in (old, written, pid, link))
        wait_for(
            lambda: time.time() > first_half_at + MAX_AGE_SECONDS + 0.5,
            timeout=MAX_AGE_SECONDS + 30,
            message="the first half older than max_age by every timestamp",
        )

        # The second half: uses, a move and an extraction, all just now.
        second_half_at = time.time()
        with open(written, "ab") as handle:
            handle.write(b"x")  # 2 bytes now, closed after the write as a logger does
        moved = base / "moved"
        source.rename(moved)
        extracted = _made_old(_file(base / "extracted", 8))
        for path in (moved, extracted):
            assert library.register_file(path)
        young = {str(written), str(moved), str(extracted), str(pid)}
        goes = {str(old), str(link)}

        # status and clean, each in its own process, at once.
        status = _tempwatch("status", "--json", "-c", str(config))
        clean = _tempwatch("clean", "-c", str(config))
        by_status = json.loads(_finished(status))["directories"][0]
        by_clean = _cleaned(_finished(clean))
        # run: what it would delete in a pass that began after the second half: the one
        # between the next two pass summaries (at DEBUG, a dry run repeats its verdicts).
        passes = len(_records(run, "pass"))
        wait_for(lambda: len(_records(run, "pass")) >= passes + 2, timeout=30,
                 message="two more passes of tempwatch run")
        summaries = _records(run, "pass")
        began, ended = summaries[passes]["time"], summaries[passes + 1]["time"]
        by_run = {
            str(r["path"])
            for r in _records(run, "would-delete")
            if _at(began) < _at(r["time"]) <= _at(ended)
        }
        # The library last, deleting for real.
        by_library = library.cleanup()
        judged_within = time.time() - second_half_at
    finally:
        library.close()
        assert run.stop() == 0, run.log()

    assert judged_within < MAX_AGE_SECONDS, (
        f"the judgments took {judged_within:.1f}s, longer than max_age: the young half "
        "had aged by the end"
    )
    assert by_run == goes, f"run: {sorted(by_run)}"
    assert by_clean == goes, f"clean: {sorted(by_clean)}"
    assert by_status["config_from"] == "service", "status judged with the service's config"
    assert by_status["would_remove"] == {"expired": 2}, by_status
    assert by_status["would_remove_bytes"] == 1 + len(LINK_TARGET), "old and link, by size"
    # The library judged the regular files it was given: old goes, the young three stay.
    assert by_library == 1
    assert not old.exists()
    assert sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) == sorted(
        Path(p).name for p in young | {str(link)}
    )
    assert os.readlink(link) == LINK_TARGET
