"""The command line's quick paths import no heavy dependency, and the library's logger stays off
until the program enables it, whichever of tempwatch and loguru is imported first.

Each case runs in a fresh interpreter: what is imported, and when, is the thing under test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("loguru", "watchdog", "psutil", "prometheus_client", "asyncio")


def _python(code: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        cwd=cwd, timeout=120,
    )


def _heavy_after(commands: str, tmp_path: Path) -> list[str]:
    code = f"""
        import contextlib, io, os, sys
        os.environ.pop("TEMPWATCH_CONFIG", None)
        from tempwatch.cli import main
        for argv in {commands}:
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv, system_config=__import__("pathlib").Path("/nonexistent"))
                except SystemExit as e:
                    code = e.code
            assert code == 0, (argv, code)
        print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
    """
    done = _python(code)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_the_command_line_imports_no_heavy_dependency() -> None:
    done = _python(f"""
        import sys
        import tempwatch.cli
        print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_help_and_status_of_an_empty_directory_import_no_heavy_dependency(
    tmp_path: Path,
) -> None:
    commands = repr([["--help"], ["status", "--help"], ["status", "--base-dir", str(tmp_path)],
                     ["status", "--json", "--base-dir", str(tmp_path)]])
    assert _heavy_after(commands, tmp_path) == []


def test_status_of_an_empty_directory_loads_nothing_that_only_deletes(tmp_path: Path) -> None:
    done = _python(f"""
        import contextlib, io, sys
        from pathlib import Path
        from tempwatch.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["status", "--base-dir", {str(tmp_path)!r}], system_config=Path("/nonexistent"))
        deleting = ("tempwatch.deleter", "tempwatch.cleaner", "tempwatch.healthsocket", "socket")
        print(" ".join(sorted(m for m in sys.modules if m in deleting)))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_status_without_a_config_file_loads_no_parser_it_does_not_use(tmp_path: Path) -> None:
    # The TOML parser (with datetime) is for a file, difflib for a "did you mean" in an error,
    # fractions for a duration or size written as text, tempfile for the default directory:
    # `status --base-dir DIR` needs none of them.
    done = _python(f"""
        import contextlib, io, os, sys
        from pathlib import Path
        for name in [n for n in os.environ if n.startswith(("TEMP_FILE_", "TEMPWATCH_"))]:
            del os.environ[name]
        from tempwatch.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["status", "--base-dir", {str(tmp_path)!r}], system_config=Path("/nonexistent"))
        unused = ("tomllib", "tomli", "difflib", "fractions", "tempfile", "shutil")
        print(" ".join(sorted(m for m in sys.modules if m in unused)))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_a_config_file_and_a_misspelt_key_still_load_what_they_need(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[watch]\nbase_dir = "{tmp_path}"\n[cleanup]\nmax_ag = "1h"\n')
    done = _python(f"""
        from tempwatch.cli import main
        raise SystemExit(main(["status", "--config", {str(config)!r}]))
    """)
    assert done.returncode == 2
    assert 'unknown key "cleanup.max_ag" (did you mean "cleanup.max_age"?)' in done.stderr


_PROBE = """
    def probe(logger, text):
        # A record made in a tempwatch module: loguru names it by the caller's __name__.
        exec("logger.warning(text)", {"__name__": "tempwatch.probe", "logger": logger,
                                      "text": text})
"""


def _records(body: str) -> list[str]:
    done = _python(textwrap.dedent(_PROBE) + textwrap.dedent(body))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_library_is_silent_when_tempwatch_is_imported_before_loguru() -> None:
    seen = _records("""
        import sys
        import tempwatch
        from tempwatch.lazylog import logger as lazy
        assert "loguru" not in sys.modules
        from loguru import logger
        logger.remove()
        logger.add(sys.stdout, format="{name}:{message}")
        probe(lazy, "before-enable")
        logger.enable("tempwatch")
        probe(lazy, "after-enable")
    """)
    assert seen == ["tempwatch.probe:after-enable"]


def test_an_enable_made_before_the_first_record_is_kept() -> None:
    # The program enables the library after importing both, before tempwatch has logged or
    # touched loguru: the first record must not switch the library off again.
    seen = _records("""
        import sys
        import tempwatch
        from loguru import logger
        logger.remove()
        logger.add(sys.stdout, format="{name}:{message}")
        logger.enable("tempwatch")
        from tempwatch.lazylog import logger as lazy
        probe(lazy, "first")
        probe(lazy, "second")
    """)
    assert seen == ["tempwatch.probe:first", "tempwatch.probe:second"]


def test_the_library_is_silent_when_loguru_is_imported_first() -> None:
    seen = _records("""
        import sys
        from loguru import logger
        logger.remove()
        logger.add(sys.stdout, format="{name}:{message}")
        logger.enable("tempwatch")  # made before tempwatch existed: importing it turns it off
        import tempwatch
        from tempwatch.lazylog import logger as lazy
        probe(lazy, "silent")
        logger.enable("tempwatch")
        probe(lazy, "heard")
    """)
    assert seen == ["tempwatch.probe:heard"]


def test_the_lazy_logger_is_loguru_s_own_after_first_use() -> None:
    done = _python("""
        from tempwatch.lazylog import logger as lazy
        from loguru import logger
        assert lazy.info == logger.info and lazy.level("INFO").no == 20
        assert type(lazy).__name__ == "_LazyLogger"
        import loguru
        assert loguru.__loader__.__class__.__name__ != "_DisablingLoader"
        assert loguru.__spec__.loader is loguru.__loader__
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_only_the_log_setup_imports_loguru_itself() -> None:
    # Any other module importing it at the top would put loguru (and asyncio) back on the
    # path of `--help` and `status`, whichever command first imported that module.
    offenders = []
    for module in sorted((REPO / "tempwatch").glob("*.py")):
        if module.name in ("logsetup.py", "lazylog.py"):
            continue
        for line in module.read_text(encoding="utf-8").splitlines():
            if line.startswith(("from loguru", "import loguru")):
                offenders.append(f"{module.name}: {line}")
    assert offenders == [], "use `from tempwatch.lazylog import logger`"
