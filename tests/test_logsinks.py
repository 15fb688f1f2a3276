"""Log lines written in batches: every line reaches its sink, in order, formatted once."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from tempwatch import loglane, logsetup
from tempwatch.cleaner import execute_plan
from tempwatch.config import LogConfig
from tempwatch.deleter import Deleter
from tempwatch.logsinks import (
    LineBatcher,
    batched_lines,
    close_to_other_threads,
    dropped_lines,
    reopen_to_all_threads,
)
from tempwatch.policy import Decision, Plan, Reason


@pytest.fixture
def json_log(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The CLI's sinks, JSON lines to a file and to a stream file; removed afterwards."""
    log_file = tmp_path / "tempwatch.log"
    stream_file = tmp_path / "stderr.log"
    with open(stream_file, "w", encoding="utf-8") as stream:
        logsetup.configure_logging(LogConfig(format="json", file=log_file), stream=stream)
        try:
            yield log_file, stream_file
        finally:
            logger.remove()
            logger.disable("tempwatch")


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_deletion_line_of_a_burst_reaches_both_sinks_in_order(
    base: Path, json_log: tuple[Path, Path]
) -> None:
    paths = [str(base / f"f{index:05d}") for index in range(3000)]
    for path in paths:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    plan = Plan(
        deletions=tuple(
            Decision(path, Reason.OVER_COUNT, 5.0, 0, os.lstat(path).st_ino) for path in paths
        )
    )

    report = execute_plan(plan, None, Deleter(base))

    assert len(report.deleted) == len(paths)
    assert os.listdir(base) == []
    for sink in json_log:
        deleted = [r for r in _records(sink) if r["event"] == "deleted"]
        assert [r["path"] for r in deleted] == paths, sink
        assert {r["reason"] for r in deleted} == {"over-count"}


def test_lines_from_other_threads_during_a_batch_all_arrive_each_in_its_order(
    json_log: tuple[Path, Path],
) -> None:
    def chatter(name: str) -> None:
        for index in range(2000):
            logger.bind(event="chatter", who=name, n=index).info("line {}", index)

    with batched_lines():
        threads = [threading.Thread(target=chatter, args=(f"t{k}",)) for k in range(3)]
        for thread in threads:
            thread.start()
        chatter("main")
        for thread in threads:
            thread.join()

    records = _records(json_log[0])
    for name in ("main", "t0", "t1", "t2"):
        assert [r["n"] for r in records if r.get("who") == name] == list(range(2000)), name
    # The same lines in both sinks (threads may interleave differently in each).
    key = json.dumps
    assert sorted(map(key, _records(json_log[1]))) == sorted(map(key, records))


def test_a_line_outside_a_batch_is_written_at_once(json_log: tuple[Path, Path]) -> None:
    logger.bind(event="probe").warning("written now")

    for sink in json_log:
        assert [r["message"] for r in _records(sink)] == ["written now"]


def test_each_record_is_formatted_once_whatever_the_number_of_sinks(
    json_log: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = logsetup._json_line

    def counting(record: object) -> str:
        line = real(record)  # type: ignore[arg-type]
        made.append(line)
        return line

    monkeypatch.setattr(logsetup, "_json_line", counting)
    with batched_lines():
        for index in range(10):
            logger.bind(event="probe").info("line {}", index)

    assert len(made) == 10
    for sink in json_log:
        assert [json.dumps(r) for r in _records(sink)] == [
            json.dumps(json.loads(line)) for line in made
        ]


def test_a_batch_is_written_in_one_call_and_its_limits_write_early() -> None:
    writes: list[str] = []
    now = [0.0]
    sink = LineBatcher(writes.append, clock=lambda: now[0])
    try:
        sink.write("alone\n")
        assert writes == ["alone\n"]  # no batch open: at once

        with batched_lines():
            for index in range(100):
                sink.write(f"{index}\n")
            assert writes == ["alone\n"]
        assert writes[1:] == ["".join(f"{index}\n" for index in range(100))]

        with batched_lines():
            sink.write("old\n")
            now[0] += 1.0  # the oldest pending line is a second old
            sink.write("new\n")
            assert writes[-1] == "old\nnew\n"
            big = "x" * (64 * 1024) + "\n"
            sink.write(big)
            assert writes[-1] == big
    finally:
        sink.stop()


def test_stop_writes_what_is_pending() -> None:
    writes: list[str] = []
    stopped: list[bool] = []
    sink = LineBatcher(writes.append, lambda: stopped.append(True))
    with batched_lines():
        sink.write("pending\n")
        sink.stop()  # loguru's remove(), as at a reload, in the middle of a batch
        assert writes == ["pending\n"] and stopped == [True]
    assert writes == ["pending\n"]


def test_once_closed_to_other_threads_their_lines_are_dropped_and_counted(
    json_log: tuple[Path, Path],
) -> None:
    log_file, _ = json_log
    with batched_lines():
        logger.bind(event="before").info("pending when the log closes")
        close_to_other_threads()
    try:
        late = threading.Thread(target=lambda: [
            logger.bind(event="late").info("too late"),
            loglane.log("INFO", "deleted {path}", event="deleted", path="/t/late"),
        ])
        late.start()
        late.join()
        logger.bind(event="stopped").info("stopped")  # the closing thread's own line
        assert dropped_lines() == 2
    finally:
        reopen_to_all_threads()
    assert [r["event"] for r in _records(log_file)] == ["before", "stopped"]
    assert dropped_lines() == 0


def test_the_fast_lane_writes_what_loguru_would_have_written(
    json_log: tuple[Path, Path],
) -> None:
    template = "{verb} {path} ({reason}, age {age_seconds:.0f}s, {size_bytes} bytes)"
    fields: dict[str, object] = {
        "verb": "deleted", "event": "deleted", "path": "/t/caf\udce9\nx", "reason": "expired",
        "age_seconds": 12.5, "size_bytes": 3,
    }
    loglane.log("INFO", template, **fields)
    logger.log("INFO", template, **fields)
    loglane.log("DEBUG", template, **fields)  # below both sinks' level: nowhere

    for sink in json_log:
        lane, plain = _records(sink)
        assert lane.pop("time") and plain.pop("time")
        assert lane == plain, sink
        assert lane["path"] == "/t/caf\udce9\nx" and lane["message"].startswith("deleted /t/")


@pytest.mark.parametrize(
    ("path", "age_seconds", "size_bytes"),
    [
        ("/t/plain", 12.5, 3),
        ("/t/caf\udce9\nx \"quoted\" back\\slash\ttab", 0.001, 0),
        ("/t/\u00e9t\u00e9 \U0001f600 \x7f\x01", 86400.0, 2**40),
        ("/t/whole", 7, 1),
        ("/t/tiny", 1e-05, 5),
        ("/t/huge", 1.5e16, 5),
    ],
)
def test_a_deletion_line_is_the_one_loguru_would_have_written(
    json_log: tuple[Path, Path], path: str, age_seconds: float, size_bytes: int
) -> None:
    # log_deletion writes its line field by field; loguru's format goes through json_line.
    fields: dict[str, object] = {
        "verb": "would delete", "event": "would-delete", "path": path, "reason": "expired",
        "age_seconds": age_seconds, "size_bytes": size_bytes,
    }
    loglane.log_deletion(
        "INFO", "would delete", "would-delete", path, "expired", age_seconds, size_bytes
    )
    logger.log("INFO", loglane.DELETION_TEMPLATE, **fields)
    loglane.log_deletion("DEBUG", "deleted", "deleted", path, "expired", 1.0, 1)  # nowhere

    for sink in json_log:
        raw = sink.read_text(encoding="utf-8").splitlines()
        assert len(raw) == 2, sink
        lane, plain = (re.sub(r'^\{"time": "[^"]*", ', "", line) for line in raw)
        assert lane == plain, sink
        assert json.loads(raw[0])["path"] == path


def test_a_deletion_line_is_stamped_as_loguru_stamps_its_records(
    json_log: tuple[Path, Path],
) -> None:
    before = dt.datetime.now().astimezone()
    for _ in range(200):  # some lines land on a new second, some at microsecond 0 perhaps
        loglane.log_deletion("INFO", "deleted", "deleted", "/t/x", "expired", 1.0, 1)
    logger.bind(event="plain").info("loguru's own")
    after = dt.datetime.now().astimezone()
    stamps = [json.loads(line)["time"] for line in json_log[0].read_text().splitlines()]
    parsed = [dt.datetime.fromisoformat(stamp) for stamp in stamps]
    assert all(before <= moment <= after for moment in parsed)
    assert parsed == sorted(parsed)
    # The same form as loguru's: date, time, six-digit microseconds (if any), offset.
    shape = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?[+-]\d\d:\d\d$")
    assert all(shape.match(stamp) for stamp in stamps), stamps[-1]
    assert stamps[-1][-6:] == stamps[0][-6:]


def test_a_sink_added_after_the_cli_hears_every_deletion_line(
    base: Path, json_log: tuple[Path, Path], log_lines: list[str]
) -> None:
    paths = [str(base / f"f{index:03d}") for index in range(50)]
    for path in paths:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    plan = Plan(deletions=tuple(Decision(p, Reason.EXPIRED, 5.0, 0, 0) for p in paths))

    execute_plan(plan, None, Deleter(base, lease_probe=False))

    assert [line for line in log_lines if " deleted " in line] == [
        f"INFO deleted deleted {path} (expired, age 5s, 0 bytes)\n" for path in paths
    ]
    deleted = [r["path"] for r in _records(json_log[0]) if r["event"] == "deleted"]
    assert deleted == paths


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_record_below_every_sink_is_not_built_until_another_sink_is_added(
    tmp_path: Path, fmt: str
) -> None:
    # `clean` keeps the terminal to warnings and prints its own line per file: the deletion
    # record need not be built then, but a sink added later (a library user's) hears it.
    stream_file = tmp_path / "stderr.log"
    heard: list[str] = []
    with open(stream_file, "w", encoding="utf-8") as stream:
        logsetup.configure_logging(LogConfig(format=fmt), stream=stream, stream_level="WARNING")
        try:
            assert not loglane.is_heard("INFO") and loglane.is_heard("WARNING")
            extra = logger.add(heard.append, level="INFO", format="{message}")
            assert loglane.is_heard("INFO")
            logger.remove(extra)
            assert not loglane.is_heard("INFO")
        finally:
            logger.remove()
            logger.disable("tempwatch")
    assert loglane.is_heard("INFO")  # the CLI's sinks gone: loguru decides again


def test_with_a_log_file_at_info_every_deletion_is_heard(tmp_path: Path) -> None:
    with open(tmp_path / "stderr.log", "w", encoding="utf-8") as stream:
        logsetup.configure_logging(
            LogConfig(format="text", file=tmp_path / "t.log"), stream=stream,
            stream_level="WARNING",
        )
        try:
            assert loglane.is_heard("INFO") and not loglane.is_heard("DEBUG")
        finally:
            logger.remove()
            logger.disable("tempwatch")
