"""tempwatch: keeps temporary directories from leaking.

The library API: `TempFileManager` for programs that manage their own temp files, and
helpers that create a temp file with contents and remove it. The library logs through
loguru but adds no sinks and starts disabled: call `logger.enable("tempwatch")` to see it.
"""

from __future__ import annotations

from loguru import logger

from tempwatch.errors import (
    AlreadyRunningError,
    ConfigError,
    OutsideBaseDirError,
    TempFileError,
    TempwatchError,
)
from tempwatch.manager import TempFileManager
from tempwatch.tempfiles import cleanup_temporary_file, create_temporary_file, temporary_file

__all__ = [
    "AlreadyRunningError",
    "ConfigError",
    "OutsideBaseDirError",
    "TempFileError",
    "TempFileManager",
    "TempwatchError",
    "__version__",
    "cleanup_temporary_file",
    "create_temporary_file",
    "temporary_file",
]

__version__ = "0.1.0"

logger.disable("tempwatch")
