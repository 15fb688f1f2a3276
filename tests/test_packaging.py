"""What a user gets outside the checkout: the sdist and the wheel, the default config, the
licence, shell completion and the man page; and the pinned dev install."""

from __future__ import annotations

import email
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tempwatch.cli import main

REPO = Path(__file__).resolve().parents[1]
IN_CHECKOUT = (REPO / ".git").exists()


def _output(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


# -- the sdist and the wheel ----------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist, and the wheel built from that sdist (as `python -m build` does)."""
    pytest.importorskip("build", reason="the dev extra's `build` builds the distributions")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("tempwatch-*.tar.gz")
    (wheel,) = out.glob("tempwatch-*.whl")
    return sdist, wheel


def _tracked(*folders: str) -> set[str]:
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--", *folders],
        capture_output=True, text=True, check=True,
    ).stdout
    return {line for line in listed.splitlines() if line and (REPO / line).is_file()}


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_the_sdist_carries_what_its_tests_need(built: tuple[Path, Path], tmp_path: Path) -> None:
    sdist, _wheel = built
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        names = {name.partition("/")[2] for name in archive.getnames()}
        archive.extractall(tmp_path, filter="data")
    for needed in ("LICENSE", "README.md", "config.toml", "constraints.txt",
                   "tests/conftest.py", "tests/support.py", "scripts/bench_lib/__init__.py",
                   "tempwatch/default-config.toml"):
        assert needed in names, f"the sdist lacks {needed}"
    if IN_CHECKOUT and shutil.which("git"):
        missing = _tracked("tests", "scripts", "deploy", "tempwatch") - names
        assert not missing, f"the sdist lacks tracked files: {sorted(missing)}"
    # Collection is where a missing conftest or helper fails; run it from the sdist's tree.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / top, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\d{3,} tests collected", done.stdout), done.stdout[-500:]


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_the_wheel_carries_the_licence_and_the_default_config(
    built: tuple[Path, Path],
) -> None:
    _sdist, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        config = archive.read("tempwatch/default-config.toml").decode("utf-8")
        (licence,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(licence).startswith(b"MIT License")
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert config == (REPO / "config.toml").read_text("utf-8"), "not the shipped config"
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Version"] == importlib.metadata.version("tempwatch")
    requires = " ".join(metadata.get_all("Requires-Dist") or [])
    assert "shtab" in requires and "argparse-manpage" in requires


def test_default_config_is_the_shipped_file_and_loads_to_the_defaults(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    text = _output(capsys, "default-config")
    assert text == (REPO / "config.toml").read_text("utf-8")
    path = tmp_path / "config.toml"
    path.write_text(text.replace('base_dir = "/tmp/tempwatch"', f'base_dir = "{tmp_path}/b"'))
    assert main(["check-config", "-c", str(path)]) == 0


# -- completion and the man page ------------------------------------------------------------


def _bash_complete(script: str, *words: str) -> list[str]:
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
        f"_shtab_tempwatch tempwatch '{words[-1]}' '{words[-2]}'\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_completes_commands_and_each_commands_flags(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    script = tmp_path / "tempwatch.bash"
    script.write_text(_output(capsys, "completion", "bash"))
    assert _bash_complete(str(script), "tempwatch", "st") == ["status"]
    assert "check-config" in _bash_complete(str(script), "tempwatch", "")
    flags = _bash_complete(str(script), "tempwatch", "status", "--")
    assert "--json" in flags and "--max-age" in flags
    assert "--dry-run" not in flags and "--observer" not in flags


def test_zsh_completion_loads_in_zsh(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    script = tmp_path / "_tempwatch"
    script.write_text(_output(capsys, "completion", "zsh"))
    assert script.read_text().startswith("#compdef tempwatch")
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    program = (
        f"fpath=({tmp_path} $fpath); autoload -Uz compinit; compinit -u -d {tmp_path}/dump; "
        "autoload -Uz _tempwatch; print -r -- ${_comps[tempwatch]}"
    )
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True,
                          timeout=30, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "_tempwatch", done.stdout + done.stderr


def test_the_man_page_documents_every_command_and_renders(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = _output(capsys, "man")
    assert page.startswith('.TH TEMPWATCH "1"')
    for word in ("run", "clean", "status", "check\\-config", "ENVIRONMENT", "TEMPWATCH_CONFIG",
                 "/etc/tempwatch/config.toml", "\\-\\-max\\-age"):
        assert word in page, f"the man page lacks {word}"
    if shutil.which("man") is None:
        pytest.skip("man is not installed to render the page")
    path = tmp_path / "tempwatch.1"
    path.write_text(page)
    done = subprocess.run(["man", "-l", str(path)], capture_output=True, text=True,
                          timeout=60, env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin",
                                           "MANWIDTH": "80"})
    assert done.returncode == 0, done.stderr
    assert "TEMPWATCH(1)" in done.stdout and "COMMAND 'tempwatch status'" in done.stdout


def test_help_imports_no_heavy_dependency() -> None:
    """`tempwatch --help` and completion stay quick: nothing past argparse (see test_lazylog)."""
    code = (
        "import sys\n"
        "from tempwatch.cli import main\n"
        "for argv in (['--help'], ['status', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('watchdog', 'psutil', 'prometheus_client', 'shtab', 'argparse_manpage',\n"
        "         'tempwatch.manager', 'tempwatch.deleter', 'tempwatch.service')\n"
        "sys.stderr.write(' '.join(sorted(m for m in sys.modules if m.startswith(heavy))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    assert "usage: tempwatch" in done.stdout
    assert done.stderr.strip() == "", f"--help imported: {done.stderr.strip()}"


def test_the_library_api_still_imports_from_the_package() -> None:
    import tempwatch

    assert tempwatch.TempFileManager.__name__ == "TempFileManager"
    assert callable(tempwatch.create_temporary_file) and callable(tempwatch.temporary_file)
    assert "TempFileManager" in dir(tempwatch)
    with pytest.raises(AttributeError):
        _ = tempwatch.no_such_name  # type: ignore[attr-defined]


# -- the pinned dev install -----------------------------------------------------------------


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_constraints_pin_every_dependency_and_the_venv_uses_them() -> None:
    pins = _pins()
    requires = importlib.metadata.requires("tempwatch") or []
    for requirement in requires:
        name = re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0]).lower()
        if "python_version < '3.11'" in requirement or 'python_version < "3.11"' in requirement:
            continue  # only another Python needs it; pinned where it is installed
        assert name in pins, f"constraints.txt does not pin {name}"
    if not (REPO / ".venv" / ".tempwatch-installed-dev").is_file():
        pytest.skip("not in the .venv that scripts/test makes")
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("not running in the checkout's .venv")
    for name, version in pins.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # pinned for another Python or platform
        assert installed == version, f"{name} {installed} installed, constraints.txt says {version}"
