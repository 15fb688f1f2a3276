"""A pass that stops when asked, a dry run that says each verdict once, capped log lists."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from support import wait_for

from tempwatch.cleaner import PassReport
from tempwatch.config import CleanupConfig, Config, WatchConfig
from tempwatch.deleter import DeleteResult
from tempwatch.lognoise import SaidOnce, capped
from tempwatch.policy import Decision
from tempwatch.service import Service

HOUR = 3600.0
OLD = 1_000_000.0  # an mtime long past: registered at start, expired at once


def config_for(base: Path, *, interval_seconds: float = 0.05, dry_run: bool = False) -> Config:
    return Config(
        watch=WatchConfig(base_dir=base, rescan_interval_seconds=HOUR),
        # Aged by atime: old_files sets it back (a ctime cannot be), and appending to a
        # file leaves it, so a file can change size and stay expired.
        cleanup=CleanupConfig(
            max_age_seconds=HOUR, interval_seconds=interval_seconds, dry_run=dry_run,
            age_by=frozenset({"accessed"}),
        ),
    )


def old_files(base: Path, count: int, *, size_bytes: int = 0) -> list[Path]:
    paths = []
    for i in range(count):
        path = base / f"d{i % 7}" / f"f{i:05}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * size_bytes)
        os.utime(path, (OLD, OLD))
        paths.append(path)
    return paths


class Recorder:
    """A CleanupListener counting what it hears; may hold the first deletion until a stop."""

    def __init__(self, *, hold_first_until_stop: bool = False) -> None:
        self.service: Service | None = None
        self.deleted = 0
        self.passes: list[PassReport] = []
        self.first_deleted = threading.Event()
        self._hold = hold_first_until_stop

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        self.deleted += 1
        if self.deleted == 1 and self._hold:
            self.first_deleted.set()
            service = self.service
            assert service is not None
            wait_for(lambda: service.is_stopping, message="the stop request")

    def on_skipped_open(self, decision: Decision) -> None:
        pass

    def on_failed(self, decision: Decision, result: DeleteResult) -> None:
        pass

    def on_pass(self, report: PassReport) -> None:
        self.passes.append(report)


def test_a_stop_ends_the_pass_after_the_file_in_hand(base: Path, log_lines: list[str]) -> None:
    paths = old_files(base, 300)
    recorder = Recorder(hold_first_until_stop=True)
    service = Service(config_for(base), listener=recorder)
    recorder.service = service
    service.start()
    try:
        wait_for(recorder.first_deleted.is_set, message="the pass's first deletion")
    finally:
        service.stop()
    # The stop was requested while the first file was being reported: not one more went.
    assert recorder.deleted == 1
    assert sum(p.exists() for p in paths) == 299
    assert not service.is_working
    summary = [line for line in log_lines if line.startswith("INFO pass ")]
    assert summary, log_lines
    assert summary[-1].rstrip().endswith("stopped early, 299 files left for the next pass")
    assert not any(" stop " in line for line in log_lines), "no thread outlived the stop"
    assert recorder.passes[-1].unfinished == 299


def test_a_dry_run_says_each_would_be_deletion_once(base: Path, log_lines: list[str]) -> None:
    paths = old_files(base, 3, size_bytes=1)
    recorder = Recorder()
    with Service(config_for(base, dry_run=True), listener=recorder):
        wait_for(lambda: len(recorder.passes) >= 4, message="four dry-run passes")
        said = [line for line in log_lines if line.startswith("INFO would-delete would delete")]
        assert len(said) == 3, said
        assert sum(line.startswith("DEBUG would-delete would delete") for line in log_lines) >= 6
        passes = [line for line in log_lines if line.startswith("INFO pass ")]
        assert len(passes) >= 4 and all("would delete 3 " in line for line in passes)
        # The file changed (its size, at its close): its verdict is said again, once.
        with paths[0].open("ab") as f:
            f.write(b"more")
        seen = len(recorder.passes)
        wait_for(lambda: len(recorder.passes) >= seen + 3, message="three more passes")
        said = [line for line in log_lines if line.startswith("INFO would-delete would delete")]
        assert len(said) == 4, said
        assert said[-1].startswith(f"INFO would-delete would delete {paths[0]} (expired")
    assert all(p.exists() for p in paths)


def test_said_once_repeats_only_on_a_change() -> None:
    said = SaidOnce()
    assert said.is_new("/b/x", 7, 10, "expired")
    assert not said.is_new("/b/x", 7, 10, "expired")
    assert said.is_new("/b/x", 7, 10, "over-count"), "a new verdict"
    assert said.is_new("/b/x", 8, 10, "over-count"), "another file under the name"
    assert said.is_new("/b/x", 8, 11, "over-count"), "the file grew"
    assert said.is_new("/b/y", 9, 0, "expired")
    said.keep_only({"/b/y"})
    assert len(said) == 1
    assert said.is_new("/b/x", 8, 11, "over-count"), "forgotten: judged again, said again"


def test_capped_lists_a_few_and_counts_the_rest() -> None:
    assert capped([]) == ""
    assert capped(["a", "b"]) == "a, b"
    assert capped([str(i) for i in range(5)]) == "0, 1, 2, 3, 4"
    assert capped([str(i) for i in range(450)]) == "0, 1, 2, 3, 4 and 445 more"
    assert capped("abc", limit=1) == "a and 2 more"


def test_a_rescan_line_lists_a_few_reasons_and_debug_has_them_all(
    base: Path, log_lines: list[str]
) -> None:
    config = config_for(base, interval_seconds=HOUR)
    with Service(config) as service:
        before = service.stats.rescans
        for i in range(450):
            service.request_rescan(f"unwatched directory {base}/d{i:03}")
        wait_for(lambda: service.stats.rescans > before, message="the rescan")
    rescans = [line for line in log_lines if line.startswith("WARNING rescan ")]
    assert len(rescans) == 1 and len(rescans[0]) < 1000, rescans
    assert "and 445 more)" in rescans[0]
    full = [line for line in log_lines if line.startswith("DEBUG rescan-reasons ")]
    assert len(full) == 1 and full[0].count("unwatched directory") == 450
