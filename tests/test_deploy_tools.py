"""The deploy files, checked by the real tools when they are installed: promtool for the
alert rules and their unit tests, systemd-analyze for the unit and its drop-in.

Each test skips, saying which tool is missing, where it is not installed;
`scripts/check-deploy` installs them and runs these tests along with the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy import DEPLOY, ROOT, load_unit, load_yaml

PROMTOOL = shutil.which("promtool") or os.environ.get("TEMPWATCH_PROMTOOL")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: prometheus; scripts/check-deploy)"
)
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (Debian: systemd)"
)
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


# -- Prometheus ------------------------------------------------------------------------------


def alert_names() -> list[str]:
    (rules,) = load_yaml(RULES)
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def test_every_alert_has_rule_tests_that_fire_it_and_keep_it_quiet() -> None:
    (tests,) = load_yaml(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name]
    fired: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            counts = fired if check["exp_alerts"] else quiet
            counts[check["alertname"]] = counts.get(check["alertname"], 0) + 1
    for name in alert_names():
        assert fired.get(name), f"{name}: no rule test where it fires"
        assert quiet.get(name), f"{name}: no rule test where it stays quiet"


@needs_promtool
def test_promtool_accepts_the_alert_rules() -> None:
    assert PROMTOOL is not None
    done = run(PROMTOOL, "check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


@needs_promtool
def test_promtool_rule_tests_pass() -> None:
    assert PROMTOOL is not None
    done = run(PROMTOOL, "test", "rules", RULE_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_rule_tests_catch_a_broken_alert(tmp_path: Path) -> None:
    # The tests can fail: with one alert's hold time dropped, its quiet case fires.
    broken = RULES.read_text().replace("for: 30m", "for: 0m", 1)
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = run(PROMTOOL, "test", "rules", tmp_path / RULE_TESTS.name)
    assert done.returncode != 0
    assert "TempwatchFilesPinnedOpen" in done.stdout + done.stderr


# -- systemd ---------------------------------------------------------------------------------


def installed_unit(tmp_path: Path, *, dropin: bool) -> Path:
    """The unit, and optionally its drop-in, laid out as the README installs them, with
    ExecStart= pointing at this checkout's tempwatch (the unit's own path need not exist on
    a development machine; test_deploy checks that path against the install instructions)."""
    unit_dir = tmp_path / "system"
    unit_dir.mkdir(parents=True)
    tempwatch = Path(sys.executable).with_name("tempwatch")
    assert tempwatch.exists(), f"{tempwatch}: the project is not installed in this venv"
    text = (DEPLOY / "tempwatch.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(\S+)", text, flags=re.M)
    (unit_dir / "tempwatch.service").write_text(
        text.replace(f"ExecStart={exec_start}", f"ExecStart={tempwatch}")
    )
    if dropin:
        (unit_dir / "tempwatch.service.d").mkdir()
        shutil.copy(DEPLOY / "tempwatch.service.d" / "metrics.conf",
                    unit_dir / "tempwatch.service.d" / "metrics.conf")
    return unit_dir


@needs_systemd_analyze
@pytest.mark.parametrize("dropin", [False, True], ids=["unit", "unit+metrics.conf"])
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, dropin: bool) -> None:
    assert SYSTEMD_ANALYZE is not None
    unit_dir = installed_unit(tmp_path, dropin=dropin)
    done = run(SYSTEMD_ANALYZE, "verify", unit_dir / "tempwatch.service",
               env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tempwatch.service" not in done.stderr, done.stderr


def exposure(unit_dir: Path) -> str:
    assert SYSTEMD_ANALYZE is not None
    done = run(SYSTEMD_ANALYZE, "security", "--offline=yes", unit_dir / "tempwatch.service",
               env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:"})
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"Overall exposure level for tempwatch\.service: (\d+\.\d+)", done.stdout)
    assert found, done.stdout[-2000:]
    return found.group(1)


@needs_systemd_analyze
def test_the_readme_quotes_the_security_exposure_systemd_analyze_gives(tmp_path: Path) -> None:
    base = exposure(installed_unit(tmp_path / "a", dropin=False))
    with_metrics = exposure(installed_unit(tmp_path / "b", dropin=True))
    readme = " ".join((ROOT / "README.md").read_text().split())
    quoted = (
        f"`systemd-analyze security --offline=yes` rates the unit {base} (\"OK\"), and "
        f"{with_metrics} with the metrics drop-in"
    )
    assert quoted in readme, f"README should say: {quoted}"


def test_the_unit_creates_base_dir_for_the_user_it_runs_as() -> None:
    service = load_unit(DEPLOY / "tempwatch.service")["Service"]
    (prep,) = service["ExecStartPre"]
    user, group = service["User"][0], service["Group"][0]
    assert f"-o {user} -g {group}" in prep, prep
