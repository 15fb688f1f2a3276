"""Log sinks, as text or JSON lines. Only the CLI calls this: the library adds no sinks.

JSON lines are flat objects: time, level, message, and every bound field (event, path,
reason, age_seconds, size_bytes, ...) at the top level, so `jq 'select(.event=="deleted")'`
works on the log file. Records from the stdlib `logging` module (watchdog's among them)
go into the same sinks.

Each record is formatted once, however many sinks it goes to, and the sinks write a batch
of lines in one system call (tempwatch.logsinks).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

from loguru import logger

# Loguru's file sink, not exported: used so that rotation and retention stay exactly what
# loguru documents while lines reach it in batches.
from loguru._file_sink import FileSink

from tempwatch import loglane
from tempwatch.config import LogConfig
from tempwatch.loglane import json_line
from tempwatch.logsinks import LineBatcher, stream_writer
from tempwatch.units import printable

if TYPE_CHECKING:
    from loguru import Record

__all__ = ["configure_logging", "route_stdlib_logging"]

_TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | "
    "{extra[_line]}\n"
)


def _text_format(record: Record) -> str:
    # A file name may hold a newline: escaped, it cannot forge a log line of its own.
    # Escaped once per record, whatever the number of sinks.
    extra = record["extra"]
    if "_line" not in extra:
        extra["_line"] = printable(record["message"])
    return _TEXT_FORMAT


def _json_format(record: Record) -> str:
    # The line is made once per record: every sink after the first finds it in extra.
    extra = record["extra"]
    if "_json" not in extra:
        extra["_json"] = _json_line(record)
    return "{extra[_json]}\n"


def _json_line(record: Record) -> str:
    extra: dict[str, object] = record["extra"]
    if record["exception"] is not None:
        extra = {**extra, "exception": str(record["exception"].value)}
    return json_line(record["time"].isoformat(), record["level"].name, record["message"], extra)


def configure_logging(
    config: LogConfig, *, stream: TextIO | None = None, stream_level: str | None = None
) -> None:
    """Replace every loguru sink with stderr (and the optional file) as `config` says.

    `stream_level` raises the terminal sink's level (never lowers it); the file sink keeps
    the configured level.
    """
    loglane.uninstall()
    logger.remove()
    logger.enable("tempwatch")
    json_lines = config.format == "json"
    target = stream if stream is not None else sys.stderr
    level = config.level
    if stream_level is not None and logger.level(stream_level).no > logger.level(level).no:
        level = stream_level
    stream_sink = LineBatcher(stream_writer(target))
    stream_id = logger.add(
        stream_sink,
        level=level,
        format=_json_format if json_lines else _text_format,
        colorize=False if json_lines else _is_terminal(target),
        backtrace=False,
        diagnose=False,
    )
    lane = [(logger.level(level).no, stream_sink)]
    ids = [stream_id]
    if config.file is not None:
        file_sink = _file_sink(config)
        ids.append(
            logger.add(
                file_sink,
                level=config.level,
                format=_json_format if json_lines else _text_format,
                colorize=False,
                backtrace=False,
                diagnose=False,
            )
        )
        lane.append((logger.level(config.level).no, file_sink))
    loglane.install(lane, ids, writes_json=json_lines)
    route_stdlib_logging()


def _file_sink(config: LogConfig) -> LineBatcher:
    """Loguru's own file sink (rotation, retention), fed a batch of lines at a time."""
    # A bare number is a count of files to keep, which loguru takes as an int.
    retention: str | int | None = config.retention
    if config.retention is not None and config.retention.isdigit():
        retention = int(config.retention)
    sink = FileSink(  # type: ignore[no-untyped-call]
        str(config.file), rotation=config.rotation, retention=retention
    )
    return LineBatcher(sink.write, sink.stop)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _ToLoguru(logging.Handler):
    """Hands stdlib log records to loguru, keeping their level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(event="library-log", source=record.name).opt(
            exception=record.exc_info if record.exc_info else None
        ).log(level, "{}: {}", record.name, record.getMessage())


def route_stdlib_logging(level: int = logging.INFO) -> None:
    """Send records of the stdlib `logging` module (watchdog's) into loguru's sinks."""
    root = logging.getLogger()
    if not any(isinstance(handler, _ToLoguru) for handler in root.handlers):
        root.addHandler(_ToLoguru())
    root.setLevel(min(root.level or level, level))
