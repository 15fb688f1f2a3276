"""The package's loguru logger, imported on first use, and the library's logger off by default.

Importing loguru costs about 100 ms (it imports asyncio and logging): more than the whole
budget of `tempwatch --help` or `tempwatch status`, which log nothing. So the modules of the
package log through `logger` from here. The first attribute asked of it imports loguru; from
then on it hands out loguru's own bound methods (kept on the proxy, so later calls cost a
plain attribute lookup), and loguru still finds the calling module's `__name__` in the
caller's frame: `logger.disable("tempwatch")` and `enable` act on these records as before.

The library logs nothing until the program enables it (`logger.enable("tempwatch")`).
Importing loguru just to disable it would cost what this module saves, so
`disable_library_logger` disables at once if loguru is already imported, and otherwise at the
moment anyone imports it (a one-shot import hook): the disable still comes before any
`enable` a program can call, whichever of tempwatch and loguru it imports first.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    from loguru import Logger

__all__ = ["disable_library_logger", "logger"]

_PACKAGE = "tempwatch"


class _LazyLogger:
    """Stands for loguru's logger; imports loguru at the first attribute asked of it."""

    def __getattr__(self, name: str) -> Any:
        from loguru import logger as real

        value = getattr(real, name)
        # Methods of the one root logger never change: keep them, so the next call does not
        # come back here.
        if callable(value):
            object.__setattr__(self, name, value)
        return value


# Typed as loguru's Logger: every use goes through `__getattr__` to the real one.
logger = cast("Logger", _LazyLogger())


class _DisablingLoader:
    """Runs loguru's own loader, then disables the package's records before anyone can log."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self._inner.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        # Put loguru's own loader back first: nothing later sees this wrapper.
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        self._inner.exec_module(module)
        module.logger.disable(_PACKAGE)


class _OnLoguruImport:
    """A meta path finder that only notices the first import of loguru, then leaves."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "loguru":
            return None
        _remove_hook()
        from importlib.util import find_spec

        spec = find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = cast("Any", _DisablingLoader(spec.loader))
        return spec


_HOOK = _OnLoguruImport()


def _remove_hook() -> None:
    while _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def disable_library_logger() -> None:
    """Turn off the package's records, now if loguru is loaded, else when it is imported."""
    loaded = sys.modules.get("loguru")
    if loaded is not None:
        loaded.logger.disable(_PACKAGE)
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
