"""Log sinks, as text or JSON lines. Only the CLI calls this: the library adds no sinks.

JSON lines are flat objects: time, level, message, and every bound field (event, path,
reason, age_seconds, size_bytes, ...) at the top level, so `jq 'select(.event=="deleted")'`
works on the log file. Records from the stdlib `logging` module (watchdog's among them)
go into the same sinks.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, TextIO

from loguru import logger

from tempwatch.config import LogConfig
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
    record["extra"]["_line"] = printable(record["message"])
    return _TEXT_FORMAT


def _json_format(record: Record) -> str:
    fields: dict[str, object] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
    }
    fields.update(
        (key, value if isinstance(value, int | float | str | bool) or value is None else str(value))
        for key, value in record["extra"].items()
        if not key.startswith("_")
    )
    if record["exception"] is not None:
        fields["exception"] = str(record["exception"].value)
    # ASCII escapes keep a non-UTF-8 file name (held as surrogates) writable and readable.
    record["extra"]["_json"] = json.dumps(fields, ensure_ascii=True)
    return "{extra[_json]}\n"


def configure_logging(
    config: LogConfig, *, stream: TextIO | None = None, stream_level: str | None = None
) -> None:
    """Replace every loguru sink with stderr (and the optional file) as `config` says.

    `stream_level` raises the terminal sink's level (never lowers it); the file sink keeps
    the configured level.
    """
    logger.remove()
    logger.enable("tempwatch")
    json_lines = config.format == "json"
    target = stream if stream is not None else sys.stderr
    level = config.level
    if stream_level is not None and logger.level(stream_level).no > logger.level(level).no:
        level = stream_level
    logger.add(
        target,
        level=level,
        format=_json_format if json_lines else _text_format,
        colorize=False if json_lines else None,
        backtrace=False,
        diagnose=False,
    )
    if config.file is not None:
        logger.add(
            str(config.file),
            level=config.level,
            format=_json_format if json_lines else _text_format,
            colorize=False,
            rotation=config.rotation,
            # A bare number is a count of files to keep, which loguru takes as an int.
            retention=int(config.retention)
            if config.retention is not None and config.retention.isdigit()
            else config.retention,
            backtrace=False,
            diagnose=False,
        )
    route_stdlib_logging()


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
