"""Shell completion scripts and the man page, both generated from the command line's parser.

Generated, not written by hand, so they cannot drift from `tempwatch --help`: shtab turns
the parser into bash and zsh completion, argparse-manpage into a roff page. Imported only
by `tempwatch completion` and `tempwatch man`.
"""

from __future__ import annotations

import argparse

from tempwatch import __version__
from tempwatch.cliargs import build_parser
from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS, SYSTEM_CONFIG_PATH

__all__ = ["SHELLS", "completion_script", "man_page"]

SHELLS = ("bash", "zsh")

# Metavars whose values are paths, so the shell completes file or directory names there.
_FILE_METAVARS = frozenset({"FILE"})
_DIR_METAVARS = frozenset({"DIR"})


def completion_script(shell: str) -> str:
    """The completion script for `shell` ("bash" or "zsh"), commands, flags and paths."""
    import shtab

    parser = build_parser()
    for action in _all_actions(parser):
        if action.metavar in _FILE_METAVARS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.metavar in _DIR_METAVARS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    script: str = shtab.complete(parser, shell=shell)
    return script


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_actions(sub)
    return found


def man_page() -> str:
    """The tempwatch(1) man page in roff, with the environment variables and files."""
    from argparse_manpage.manpage import Manpage

    page = Manpage(build_parser())
    page.source = f"tempwatch {__version__}"
    page.manual = "tempwatch manual"
    page.description = "keeps temporary directories from leaking"
    variables = {CONFIG_PATH_ENV: "the config file, when --config is not given", **{
        name: f"overrides {key}" for name, key in ENV_VARS.items()
    }}
    page.add_section("environment", ">", "\n".join(
        f".TP\n.B {name}\n{meaning}" for name, meaning in variables.items()
    ))
    page.add_section("files", ">", (
        f".TP\n.I {SYSTEM_CONFIG_PATH}\nthe config file read when neither --config nor "
        f"${CONFIG_PATH_ENV} names one; `tempwatch default-config` prints a commented one.\n"
        ".TP\n.I BASE_DIR/.tempwatch.lock\nthe lock that keeps one service per directory; "
        "it holds the service's pid and metrics port."
    ))
    return str(page)
