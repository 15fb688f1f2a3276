"""The command line: `tempwatch run | clean | status | check-config | default-config | ...`.

The only place that turns typed errors into one-line messages and exit codes:
0 success, 1 a deletion failed or another instance runs, 2 a configuration or usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tempwatch.cliargs import COMMANDS, OVERRIDES, build_parser, override_labels
from tempwatch.errors import ConfigError, TempwatchError
from tempwatch.units import count, format_age, format_size

if TYPE_CHECKING:
    from tempwatch.cleaner import PassReport
    from tempwatch.config import Config
    from tempwatch.deleter import DeleteResult
    from tempwatch.policy import Decision

__all__ = ["main", "run_main"]

_WHOLE_NUMBER = re.compile(r"\s*[0-9]+\s*")


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    found: dict[str, object] = {}
    for override in OVERRIDES:
        value = getattr(args, override.dest, None)
        if value is None:
            continue
        # The loader wants counts as integers (TOML has them); anything else goes as given,
        # for the loader to reject in the words it uses for a bad config value.
        if override.key == "limits.max_files" and _WHOLE_NUMBER.fullmatch(value):
            value = int(value)
        found[override.key] = value
    if getattr(args, "dry_run", None):
        found["cleanup.dry_run"] = True
    return found


def main(argv: Sequence[str] | None = None, *, system_config: Path | None = None) -> int:
    """Run the command line; returns the exit code.

    Without --config the file is $TEMPWATCH_CONFIG, else `system_config` (by default
    /etc/tempwatch/config.toml) if it exists.
    """
    given = list(sys.argv[1:] if argv is None else argv)
    # The command comes first (the only options before it, --help and --version, need the
    # whole parser): then its parser alone is built.
    named = {command.name for command in COMMANDS}
    only = given[0] if given and given[0] in named else None
    args = build_parser(only).parse_args(given)  # --help exits here, before the config loads
    from tempwatch.configload import SYSTEM_CONFIG_PATH, find_config_file, load_config

    system_config = SYSTEM_CONFIG_PATH if system_config is None else system_config
    if args.command == "default-config":
        return _default_config()
    if args.command in ("completion", "man"):
        from tempwatch.clidocs import completion_script, man_page

        sys.stdout.write(
            completion_script(args.shell) if args.command == "completion" else man_page()
        )
        return 0
    overrides = _overrides(args)
    labels = override_labels()

    def load() -> Config:
        path, _why = find_config_file(args.config, system_path=system_config)
        return load_config(path, overrides=overrides, labels=labels)

    try:
        if args.command == "check-config":
            return _check_config(load, args.config, system_config)
        config = load()
        if args.command == "run":
            from tempwatch.daemon import run_daemon  # watchdog is imported only to watch
            from tempwatch.logsetup import configure_logging

            return run_daemon(load, configure_logging=lambda c: configure_logging(c.log))
        if args.command == "health":
            return _health(config, as_json=args.json, timeout_seconds=args.timeout)
        if args.command == "status":
            return _status(config, as_json=args.json)
        if args.command == "explain":
            return _explain(config, args.paths, as_json=args.json)
        return _clean(config, quiet=args.quiet)
    except ConfigError as e:
        _fail(f"config error: {e}")
        return 2
    except TempwatchError as e:
        _fail(str(e))
        return 2


def _check_config(load: Callable[[], Config], given: str | None, system_config: Path) -> int:
    from tempwatch.configload import find_config_file

    path, why = find_config_file(given, system_path=system_config)
    config = load()
    # stdout stays valid TOML for `check-config > file`; which file was read is for people.
    print(f"tempwatch: config file: {path} ({why})" if path else f"tempwatch: config file: {why}",
          file=sys.stderr)
    print(config.to_toml(), end="")
    return 0


def _default_config() -> int:
    from importlib.resources import files

    sys.stdout.write(files("tempwatch").joinpath("default-config.toml").read_text("utf-8"))
    return 0


def _fail(message: str) -> None:
    print(f"tempwatch: {message}", file=sys.stderr)


def _health(config: Config, *, as_json: bool, timeout_seconds: float) -> int:
    """0 when every directory's service answers healthy or degraded, 1 otherwise."""
    from tempwatch.healthcheck import ask_each, is_passing, render_json, render_text

    base_dirs = [str(directory.watch.base_dir) for directory in config.each_directory()]
    answers = ask_each(base_dirs, timeout_seconds=timeout_seconds)
    if len(answers) == 1 and answers[0].unreachable is not None:
        _fail(answers[0].unreachable)
        return 1
    print(render_json(answers) if as_json else render_text(answers))
    return 0 if is_passing(answers) else 1


def _status(config: Config, *, as_json: bool) -> int:
    from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles
    from tempwatch.status import gather_status, render_text

    reports = []
    for directory in config.each_directory():
        open_paths = (
            LazyOpenFiles(str(directory.watch.base_dir)) if directory.cleanup.skip_open_files
            else NO_OPEN_FILES
        )
        reports.append(gather_status(directory, open_paths=open_paths))
    if not config.directories:
        print(reports[0].to_json() if as_json else render_text(reports[0]))
    elif as_json:
        print(json.dumps({"directories": [json.loads(r.to_json()) for r in reports]}, indent=2))
    else:
        print("\n\n".join(render_text(report) for report in reports))
    return 0


def _explain(config: Config, paths: Sequence[str], *, as_json: bool) -> int:
    """Explain each path; 2 if one lies outside every configured directory, else 0."""
    from tempwatch.explain import explain_path, governing_directory, render_text
    from tempwatch.openfiles import NO_OPEN_FILES, LazyOpenFiles

    sweeps: dict[str, LazyOpenFiles] = {}  # one sweep per directory asked about
    found, status = [], 0
    for path in paths:
        directory = governing_directory(path, config)
        if directory is None:
            _fail(f"{path} is below no configured directory: not governed by tempwatch")
            status = 2
            continue
        base = str(directory.watch.base_dir)
        open_paths = (
            sweeps.setdefault(base, LazyOpenFiles(base)) if directory.cleanup.skip_open_files
            else NO_OPEN_FILES
        )
        found.append(explain_path(path, directory, open_paths=open_paths))
    if as_json:
        print("[" + ",\n".join(facts.to_json() for facts in found) + "]")
    else:
        print("\n\n".join(render_text(facts) for facts in found))
    return status


class _Printer:
    """Prints one line per deletion on stdout and, on a terminal, progress on stderr.

    Lines are written in blocks: a clean of 100k files must not cost 100k write calls when
    stdout is unbuffered. A failure line and the end of the pass flush what is pending.
    """

    _BLOCK_LINES = 512

    def __init__(self, *, dry_run: bool, progress: TextIO | None, out: TextIO | None = None):
        self._verb = "would delete" if dry_run else "deleted"
        self._progress = progress
        self._out = out if out is not None else sys.stdout
        self._pending: list[str] = []
        self._ages: dict[int, str] = {}
        self._done = 0
        self._shown_at = 0.0

    def on_deleted(self, decision: Decision, result: DeleteResult) -> None:
        seconds = decision.age_seconds
        if seconds >= 10:  # shown in whole seconds: files of a pass share a few ages
            whole = round(seconds)
            age = self._ages.get(whole)
            if age is None:
                if len(self._ages) > 4096:
                    self._ages.clear()
                age = self._ages[whole] = format_age(whole)
        else:
            age = format_age(seconds)
        self._pending.append(
            f"{self._verb} {decision.path!r} ({decision.reason.value}, "
            f"age {age}, {format_size(result.size_bytes)})\n"
        )
        self._done += 1
        if len(self._pending) >= self._BLOCK_LINES:
            self.flush()
            if self._progress is not None and time.monotonic() - self._shown_at > 0.1:
                self._shown_at = time.monotonic()
                self._progress.write(f"\rtempwatch: {self._done} files removed")
                self._progress.flush()

    def on_skipped_open(self, decision: Decision) -> None:
        pass

    def on_failed(self, decision: Decision, result: DeleteResult) -> None:
        self._pending.append(
            f"failed {decision.path!r} ({decision.reason.value}): {result.error}\n"
        )
        self.flush()

    def on_pass(self, report: PassReport) -> None:
        self.flush()
        if self._progress is not None and self._shown_at:
            self._progress.write("\r\033[K")
            self._progress.flush()

    def flush(self) -> None:
        """Write the pending lines."""
        if self._pending:
            self._out.write("".join(self._pending))
            self._pending.clear()


def _clean(config: Config, *, quiet: bool) -> int:
    from tempwatch.logsetup import configure_logging
    from tempwatch.oneshot import clean_once

    # Each deletion is printed on stdout; the stderr log keeps to warnings so a terminal
    # does not show every line twice. A log file, if set, still gets every event.
    configure_logging(config.log, stream=sys.stderr, stream_level="WARNING")
    progress = sys.stderr if sys.stderr.isatty() and not quiet else None
    # dry_run may differ between directories: each says what it did in its own words.
    totals = {False: [0, 0], True: [0, 0]}  # dry run? -> files, bytes
    skipped = failed = 0
    for directory in config.each_directory():
        dry_run = directory.cleanup.dry_run
        printer = _Printer(dry_run=dry_run, progress=progress)
        report, _state = clean_once(directory, listener=printer)
        totals[dry_run][0] += len(report.deleted)
        totals[dry_run][1] += report.deleted_bytes
        skipped += len(report.skipped_open)
        failed += len(report.failed)
        if config.directories:
            print(
                f"{directory.watch.base_dir}: {_removed(dry_run)} "
                f"{count(len(report.deleted), 'file')} ({format_size(report.deleted_bytes)})"
            )
    kinds = sorted({directory.cleanup.dry_run for directory in config.each_directory()})
    done = ", ".join(
        f"{_removed(dry_run)} {count(totals[dry_run][0], 'file')} "
        f"({format_size(totals[dry_run][1])})"
        for dry_run in kinds
    )
    print(f"{done}, {skipped} skipped as open, {count(failed, 'error')}")
    return 1 if failed else 0


def _removed(dry_run: bool) -> str:
    return "would remove" if dry_run else "removed"


def run_main() -> None:
    """Console-script entry point."""
    sys.exit(main())

