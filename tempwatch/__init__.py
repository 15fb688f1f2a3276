"""tempwatch: keeps temporary directories from leaking.

The library API: `TempFileManager` for programs that manage their own temp files, and
helpers that create a temp file with contents and remove it. The library logs through
loguru but adds no sinks and starts disabled: call `logger.enable("tempwatch")` to see it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tempwatch.errors import (
    AlreadyRunningError,
    ConfigError,
    OutsideBaseDirError,
    TempFileError,
    TempwatchError,
)
from tempwatch.lazylog import disable_library_logger

if TYPE_CHECKING:
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

# Without importing loguru (see lazylog): the command line does not pay for it unless it logs.
disable_library_logger()

# The library API is imported on first use, so that the command line (`tempwatch --help`,
# `status`, shell completion) does not pay for psutil and the deleter until it needs them.
_LAZY = {
    "TempFileManager": "tempwatch.manager",
    "cleanup_temporary_file": "tempwatch.tempfiles",
    "create_temporary_file": "tempwatch.tempfiles",
    "temporary_file": "tempwatch.tempfiles",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tempwatch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
