"""The command line's grammar: subcommands, which flags apply to each, and their help.

Kept apart from `cli.py` (which runs the commands) and free of heavy imports, so that
`tempwatch --help`, shell completion and the man page generator load nothing but argparse.
Flag values stay strings here: the config loader parses and validates them, so a bad flag
value gets the same one-line message as a bad config value, not a usage dump.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple

from tempwatch import __version__

__all__ = ["COMMANDS", "OVERRIDES", "Override", "build_parser", "override_labels"]

PROG = "tempwatch"


class Override(NamedTuple):
    """A flag that overrides one config key, and the commands it means something to."""

    flag: str
    key: str
    metavar: str
    help: str
    commands: frozenset[str]

    @property
    def dest(self) -> str:
        """The argparse attribute name."""
        return self.flag.lstrip("-").replace("-", "_")


_ALL = frozenset({"run", "clean", "status", "explain", "check-config"})  # what goes, and when
_WATCHES = frozenset({"run", "check-config"})  # a service that keeps running
_LOGS = frozenset({"run", "clean", "check-config"})  # commands that log events

OVERRIDES: tuple[Override, ...] = (
    Override("--base-dir", "watch.base_dir", "DIR", "directory to watch and clean",
             _ALL | {"health"}),
    Override(
        "--max-age", "cleanup.max_age", "DURATION",
        'age after which a file expires ("90s", "5m", "1h", "7d"; lowercase units)', _ALL,
    ),
    Override("--interval", "cleanup.interval", "DURATION", "time between cleanup passes",
             _WATCHES),
    Override("--max-files", "limits.max_files", "N", "maximum number of files (0: unlimited)",
             _ALL),
    Override("--max-file-size", "limits.max_file_size", "SIZE",
             'per-file size limit ("100MiB"; 0: none)', _ALL),
    Override("--max-total-size", "limits.max_total_size", "SIZE",
             'total size quota ("10GiB"; 0: none)', _ALL),
    Override("--observer", "watch.observer", "KIND", "auto, inotify or polling", _WATCHES),
    Override("--log-level", "log.level", "LEVEL", "DEBUG, INFO, WARNING, ERROR, ...", _LOGS),
    Override("--log-format", "log.format", "FORMAT", "text or json", _LOGS),
    Override("--log-file", "log.file", "FILE", "also log to this file", _LOGS),
)

_DRY_RUN_COMMANDS = frozenset({"run", "clean", "check-config"})  # commands that delete

_CONFIG_HELP = (
    "TOML config file (default: $TEMPWATCH_CONFIG, else /etc/tempwatch/config.toml if it "
    "exists, else built-in defaults)"
)

_EPILOG = """\
configuration, lowest to highest precedence: built-in defaults, the TOML file, environment
variables, flags. `tempwatch default-config` prints a commented config file to start from.

exit codes: 0 done; 1 a deletion failed, or another instance already watches the directory;
2 a configuration or usage error (one line on stderr says what to fix; nothing is deleted).
"""


class _Command(NamedTuple):
    name: str
    help: str
    description: str


COMMANDS: tuple[_Command, ...] = (
    _Command(
        "run", "run the watcher service",
        "Watch base_dir and keep it clean until stopped: register every file created there, "
        "delete files older than max_age at each pass, evict the oldest files beyond the "
        "limits as they arrive, and never delete a file that a process holds open. SIGINT or "
        "SIGTERM stops it (a second one forces), SIGHUP reloads the configuration.",
    ),
    _Command(
        "clean", "one cleanup pass, then exit",
        "One cleanup pass over base_dir as it is on disk, ages taken from each file's mtime, "
        "then exit. Prints one line per file deleted (with --dry-run: that would be) with "
        "its reason, then a summary. Open files are skipped.",
    ),
    _Command(
        "status", "what is piling up, deleting nothing",
        "Show the files in base_dir by age, what a clean would remove now and why, and "
        "whether a service is running on the directory. Deletes nothing.",
    ),
    _Command(
        "check-config", "validate and print the effective configuration",
        "Validate the configuration and print the effective values after every layer "
        "(defaults, file, environment, flags) as TOML on stdout; which file was read goes "
        "to stderr and in a comment line.",
    ),
    _Command(
        "explain", "why each file would go or stay (exit 2: outside)",
        "For each PATH, say which rule governs it, how old it is by the configured clock, "
        "whether it is open, and whether a clean now would delete it and why; deletes "
        "nothing. Exit 2 if a path lies outside every configured directory.",
    ),
    _Command(
        "health", "ask the running service how it is (exit 1: unhealthy)",
        "Ask the service running on each configured directory (with --base-dir, that one) "
        "for its health, over its socket in the directory (no network, whatever the metrics "
        "settings), one line per directory: exit 0 if every one answers healthy or degraded, "
        "1 if any is unhealthy or does not answer. For container health checks and probes.",
    ),
    _Command(
        "default-config", "print the commented default config file",
        "Print the commented default configuration, every key with its default and its "
        "environment variable, to start a config file from: "
        "tempwatch default-config > /etc/tempwatch/config.toml",
    ),
    _Command(
        "completion", "print a shell completion script (bash, zsh)",
        "Print the completion script for bash or zsh, generated from this command line, "
        "to install where the shell loads completions: "
        "tempwatch completion bash > /etc/bash_completion.d/tempwatch, or "
        "tempwatch completion zsh > /usr/local/share/zsh/site-functions/_tempwatch",
    ),
    _Command(
        "man", "print the tempwatch(1) man page",
        "Print the man page in roff, generated from this command line: "
        "tempwatch man > /usr/local/share/man/man1/tempwatch.1",
    ),
)

_NO_CONFIG = frozenset({"default-config", "completion", "man"})  # they read no config


def _terminal_columns() -> int:
    """The width help is wrapped to: $COLUMNS, else the terminal's, else 80.

    What argparse asks `shutil.get_terminal_size` for; asked here because importing shutil
    (with the compression modules it loads) cost a few ms of every start, help or not:
    argparse builds a formatter for each argument it adds.
    """
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns or 80) if stdout else 80
    except (ValueError, OSError):  # closed, or not a terminal
        return 80


class _HelpFormatter(argparse.HelpFormatter):
    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        # argparse itself takes 2 columns off the terminal's width.
        width = _terminal_columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _RawDescriptionFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The main help: the description and the epilog keep their line breaks."""


def override_labels() -> dict[str, str]:
    """Config key -> flag, to name the flag in an error about its value."""
    return {override.key: override.flag for override in OVERRIDES}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line (also read by the man page and shell completion generators).

    With `only` a command's name, that command alone: what `main` parses once it knows the
    command, since each subcommand's parser costs its start-up (argparse asks gettext for
    every help string of every parser it builds).
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keeps temporary directories from leaking: watches a directory, expires\n"
        "files by age, enforces count and size limits, never deletes a file in use.",
        epilog=_EPILOG,
        formatter_class=_RawDescriptionFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if only is not None and command.name != only:
            continue
        sub = commands.add_parser(
            command.name, help=command.help, description=command.description,
            formatter_class=_HelpFormatter,
        )
        _add_flags(sub, command.name)
    return parser


def _add_flags(sub: argparse.ArgumentParser, name: str) -> None:
    if name == "completion":
        sub.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete for")
    if name in _NO_CONFIG:
        return
    sub.add_argument("-c", "--config", metavar="FILE", help=_CONFIG_HELP)
    for override in OVERRIDES:
        if name in override.commands:
            sub.add_argument(override.flag, metavar=override.metavar, help=override.help)
    if name in _DRY_RUN_COMMANDS:
        sub.add_argument(
            "--dry-run", action="store_true", default=None,
            help="decide and report, delete nothing",
        )
    if name == "clean":
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    if name == "explain":
        sub.add_argument("paths", nargs="+", metavar="PATH", help="files to explain")
    if name in ("status", "health", "explain"):
        sub.add_argument("--json", action="store_true", help="print JSON")
    if name == "health":
        sub.add_argument(
            "--timeout", type=float, default=5.0, metavar="SECONDS", help="wait this long at most"
        )
