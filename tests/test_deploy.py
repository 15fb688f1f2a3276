"""The deploy files parse, and their ports, paths and probe URLs match the code's defaults.

Defaults come from tempwatch.config and from the shipped config.toml, never from numbers
written here. PyYAML is not a dependency, so the YAML files are read by a small loader for
the subset they use (block mappings and sequences, flow lists, quoted and block scalars);
it rejects what it does not understand, so a broken file fails the test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import wait_for

from tempwatch.config import MetricsConfig
from tempwatch.configload import CONFIG_PATH_ENV, ENV_VARS, load_config
from tempwatch.instance import BASE_DIR_MODE
from tempwatch.metrics import Metrics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DEFAULT_PORT = MetricsConfig().port
CAPABILITIES = {"DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "LEASE", "SYS_PTRACE"}


# -- readers --------------------------------------------------------------------------------


class YamlError(ValueError):
    pass


def _strip_comment(text: str) -> str:
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1] in " \t"):
            return text[:index].rstrip()
    return text.rstrip()


def _split_flow(text: str) -> list[str]:
    items, current, quote = [], "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ",":
            items.append(current.strip())
            current = ""
            continue
        current += char
    return [item for item in [*items, current.strip()] if item]


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlError(f"unterminated string: {text}")
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"unterminated string: {text}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlError(f"unterminated list: {text}")
        return [_scalar(item) for item in _split_flow(text[1:-1])]
    if text.startswith(("{", "&", "*", "!")):
        raise YamlError(f"unsupported YAML: {text}")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


_KEY = re.compile(r"""([A-Za-z0-9_./-]+|"[^"]*"|'[^']*'):(?: +(.*))?$""")


class _Loader:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.i = 0

    def _next(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise YamlError(f"line {self.i + 1}: tab in indentation")
            content = _strip_comment(line.strip())
            if content:
                return len(line) - len(line.lstrip(" ")), content
            self.i += 1
        return None

    def document(self) -> Any:
        found = self._next()
        if found is None:
            return None
        value = self._block(found[0])
        if self._next() is not None:
            raise YamlError(f"line {self.i + 1}: unexpected content")
        return value

    def _block(self, indent: int) -> Any:
        found = self._next()
        assert found is not None
        return self._seq(indent) if found[1].startswith("-") else self._map(indent)

    def _map(self, indent: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        while (found := self._next()) is not None and found[0] >= indent:
            column, content = found
            if column > indent:
                raise YamlError(f"line {self.i + 1}: bad indentation")
            match = _KEY.match(content)
            if match is None:
                raise YamlError(f"line {self.i + 1}: expected `key: value`, got {content!r}")
            key = _scalar(match.group(1))
            if key in result:
                raise YamlError(f"line {self.i + 1}: duplicate key {key}")
            self.i += 1
            result[key] = self._value(match.group(2) or "", indent)
        return result

    def _value(self, rest: str, indent: int) -> Any:
        if rest in ("|", "|-", ">", ">-"):
            return self._block_scalar(rest, indent)
        if rest:
            return _scalar(rest)
        found = self._next()
        if found is None:
            return None
        if found[0] > indent:
            return self._block(found[0])
        if found[0] == indent and found[1].startswith("- "):
            return self._seq(indent)
        return None

    def _seq(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while (found := self._next()) is not None and found[0] >= indent:
            column, content = found
            if column > indent:
                raise YamlError(f"line {self.i + 1}: bad indentation in a list")
            if not (content == "-" or content.startswith("- ")):
                break  # the next key of the enclosing mapping
            text = content[1:].strip()
            if not text:
                self.i += 1
                deeper = self._next()
                items.append(None if deeper is None else self._block(deeper[0]))
            elif _KEY.match(text) and not text.startswith(("'", '"')):
                item_column = self.lines[self.i].index(text, column + 1)
                self.lines[self.i] = " " * item_column + self.lines[self.i][item_column:]
                items.append(self._map(item_column))
            else:
                self.i += 1
                items.append(_scalar(text))
        return items

    def _block_scalar(self, style: str, indent: int) -> str:
        lines: list[str] = []
        block_indent: int | None = None
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip():
                column = len(line) - len(line.lstrip(" "))
                if column <= indent:
                    break
                block_indent = column if block_indent is None else block_indent
                lines.append(line[block_indent:])
            else:
                lines.append("")
            self.i += 1
        while lines and not lines[-1]:
            lines.pop()
        text = "\n".join(lines) if style.startswith("|") else " ".join(lines)
        return text if style.endswith("-") else text + "\n"


def load_yaml(path: Path) -> list[Any]:
    """Every document of a YAML file, in the subset the deploy files use."""
    documents = re.split(r"^---[ \t]*$", path.read_text(), flags=re.MULTILINE)
    return [doc for doc in (_Loader(text).document() for text in documents) if doc is not None]


def load_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file: section -> key -> every value given, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: bad section {line}"
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}:{number}: not key=value: {line}"
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key), f"{path.name}:{number}: bad key"
        current.setdefault(key, []).append(value.strip())
    assert not pending, f"{path.name}: ends inside a continued line"
    return sections


def load_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        pending = ""
        assert instruction.isupper(), f"{path.name}: not an instruction: {instruction}"
        instructions.append((instruction, args.strip()))
    assert not pending, f"{path.name}: ends inside a continued line"
    return instructions


def exported_metric_names() -> set[str]:
    """Every sample name a scrape of the service shows (counters with _total, ...)."""
    body, _ = Metrics().render()
    names = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {"histogram": ("_bucket", "_sum", "_count")}.get(kind, ("",))
            names.update(name + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:temp_files?|tempwatch)_[a-z_]+", expr))


# -- expectations from the code -------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dir() -> str:
    """The base_dir of the shipped config.toml, as the loader resolves it."""
    return str(load_config(ROOT / "config.toml", env={}).watch.base_dir)


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return load_dockerfile(DEPLOY / "Dockerfile")


def _env_of(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in dockerfile:
        if instruction == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


@pytest.fixture(scope="module")
def container_config_path(dockerfile: list[tuple[str, str]]) -> str:
    return _env_of(dockerfile)[CONFIG_PATH_ENV]


def test_the_default_metrics_port_is_clear_of_prometheus_and_its_exporters() -> None:
    # Prometheus (9090), its Pushgateway (9091) and Alertmanager (9093) share hosts with the
    # services they scrape, and the exporter range 9100-9999 is allocated in full.
    assert DEFAULT_PORT not in (9090, 9091, 9093)
    assert not 9100 <= DEFAULT_PORT <= 9999
    assert 1024 < DEFAULT_PORT < 32768  # not privileged, below Linux's ephemeral range


# -- systemd --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    unit = load_unit(DEPLOY / "tempwatch.service")
    assert set(unit) == {"Unit", "Service", "Install"}
    return unit["Service"]


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: expected one value, got {values}"
    return values[0]


def words(section: dict[str, list[str]], key: str) -> set[str]:
    return {word for value in section.get(key, []) for word in value.split()}


def test_unit_is_type_notify_with_a_watchdog(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert re.fullmatch(r"[1-9][0-9]*(s|min)?", one(service, "WatchdogSec"))
    assert one(service, "Restart") == "on-failure"
    assert "-HUP" in one(service, "ExecReload").split()


def test_unit_runs_the_cli_on_the_container_config_path(
    service: dict[str, list[str]], container_config_path: str
) -> None:
    argv = shlex.split(one(service, "ExecStart"))
    assert Path(argv[0]).name == "tempwatch" and argv[1] == "run"
    assert argv[argv.index("--config") + 1] == container_config_path


def test_unit_runs_tempwatch_where_the_readme_installs_it(
    service: dict[str, list[str]],
) -> None:
    # systemd-analyze verify (and the start) fail when ExecStart= names a missing file: the
    # README's install commands must put tempwatch at that path, and say so.
    executable = shlex.split(one(service, "ExecStart"))[0]
    section = operations_section().split("### Running under systemd", 1)[1]
    install_block = section.split("```sh", 1)[1].split("```", 1)[0]
    assert executable in install_block, f"the README's systemd install should name {executable}"


def test_unit_may_write_base_dir_only(service: dict[str, list[str]], base_dir: str) -> None:
    assert one(service, "ProtectSystem") == "strict"
    assert service["ReadWritePaths"] == [base_dir]
    # ReadWritePaths= fails the start if the directory is missing: it is created first,
    # outside the sandbox ("+").
    shell, flag, script = shlex.split(one(service, "ExecStartPre"))
    assert (shell, flag) == ("+/bin/sh", "-c")
    words_ = shlex.split(script)
    assert words_[:3] == ["test", "-d", base_dir] and words_[-1] == base_dir
    assert int(words_[words_.index("-m") + 1], 8) == BASE_DIR_MODE  # as the service makes it
    # A private /tmp would hide the real base_dir: the service would clean an empty copy.
    assert service.get("PrivateTmp", ["no"]) == ["no"]
    assert "invisible" not in service.get("ProtectProc", [])  # must see other processes
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateDevices", "ProtectKernelTunables"):
        assert one(service, key) == "yes", key


def test_unit_creates_base_dir_for_its_user_and_leaves_an_existing_one_alone(
    service: dict[str, list[str]], base_dir: str, tmp_path: Path
) -> None:
    _shell, _flag, script = shlex.split(one(service, "ExecStartPre"))
    words_ = shlex.split(script)
    # Owned by the user the service runs as, or it could not take its lock there.
    assert words_[words_.index("-o") + 1] == one(service, "User")
    assert words_[words_.index("-g") + 1] == one(service, "Group")
    # Run it (as the user running the tests) on a directory of our own.
    target = tmp_path / "made"
    local = script.replace(base_dir, shlex.quote(str(target)))
    local = local.replace(f"-o {one(service, 'User')}", f"-o {os.geteuid()}")
    local = local.replace(f"-g {one(service, 'Group')}", f"-g {os.getegid()}")
    subprocess.run(["/bin/sh", "-c", local], check=True)
    assert target.stat().st_mode & 0o7777 == BASE_DIR_MODE
    target.chmod(0o1777)  # what an operator chose for a shared temp dir
    subprocess.run(["/bin/sh", "-c", local], check=True)
    assert target.stat().st_mode & 0o7777 == 0o1777


def test_unit_has_no_network_unless_metrics_are_on(service: dict[str, list[str]]) -> None:
    assert one(service, "PrivateNetwork") == "yes"
    assert words(service, "RestrictAddressFamilies") == {"AF_UNIX"}
    dropin = load_unit(DEPLOY / "tempwatch.service.d" / "metrics.conf")["Service"]
    assert one(dropin, "PrivateNetwork") == "no"
    assert words(dropin, "RestrictAddressFamilies") == {"AF_INET", "AF_INET6"}
    variable, _, flag = one(dropin, "Environment").partition("=")
    assert ENV_VARS[variable] == "metrics.enabled"
    assert load_config(env={variable: flag}).metrics.enabled


def test_unit_keeps_only_the_capabilities_a_cleaner_needs(service: dict[str, list[str]]) -> None:
    caps = {cap.removeprefix("CAP_") for cap in words(service, "CapabilityBoundingSet")}
    assert caps and caps <= CAPABILITIES
    assert service.get("AmbientCapabilities", [""]) == [""]
    assert "@system-service" in words(service, "SystemCallFilter")
    assert one(service, "SystemCallArchitectures") == "native"


# -- Docker ---------------------------------------------------------------------------------


def test_dockerfile_base_user_and_port(dockerfile: list[tuple[str, str]]) -> None:
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    users = [args for instruction, args in dockerfile if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", str(DEFAULT_PORT)) in dockerfile


def healthcheck_argv(dockerfile: list[tuple[str, str]]) -> list[str]:
    (check,) = [args for instruction, args in dockerfile if instruction == "HEALTHCHECK"]
    options, _, command = check.partition(" CMD ")
    assert "--timeout=5s" in options.split()
    argv = json.loads(command)
    assert isinstance(argv, list)
    return [str(arg) for arg in argv]


def test_dockerfile_healthcheck_asks_the_service_without_the_network(
    dockerfile: list[tuple[str, str]],
) -> None:
    argv = healthcheck_argv(dockerfile)
    assert argv[:2] == ["tempwatch", "health"]
    assert float(argv[argv.index("--timeout") + 1]) < 5  # inside Docker's own timeout


def test_dockerfile_healthcheck_works_with_metrics_off(
    dockerfile: list[tuple[str, str]], tmp_path: Path
) -> None:
    # The repository's config.toml has metrics off: the image's check must still answer.
    base = tmp_path / "base"
    config = tmp_path / "config.toml"
    shipped = (ROOT / "config.toml").read_text()
    config.write_text(shipped.replace('base_dir = "/tmp/tempwatch"', f'base_dir = "{base}"'))
    assert not load_config(config, env={}).metrics.enabled
    env = {**os.environ, CONFIG_PATH_ENV: str(config)}  # as the image sets it
    check = [sys.executable, "-m", "tempwatch", *healthcheck_argv(dockerfile)[1:]]

    def ask() -> int:
        return subprocess.run(check, env=env, cwd=ROOT, capture_output=True, timeout=50).returncode

    assert ask() == 1  # nothing runs yet: unhealthy
    service = subprocess.Popen([sys.executable, "-m", "tempwatch", "run"], env=env, cwd=ROOT,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ask() == 0, timeout=30, message="the health check passing")
    finally:
        service.terminate()
        assert service.wait(timeout=10) == 0
    assert ask() == 1


def test_dockerfile_ships_a_config_at_the_path_it_reads(
    dockerfile: list[tuple[str, str]], container_config_path: str
) -> None:
    assert container_config_path == "/etc/tempwatch/config.toml"
    copies = [shlex.split(args) for instruction, args in dockerfile if instruction == "COPY"]
    assert ["deploy/container/config.toml", container_config_path] in copies
    for *sources, _target in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_container_config_serves_metrics_on_the_default_port(
    dockerfile: list[tuple[str, str]], base_dir: str
) -> None:
    config = load_config(DEPLOY / "container" / "config.toml", env={})
    assert config.metrics.enabled
    assert config.metrics.port == DEFAULT_PORT
    assert config.metrics.address == "0.0.0.0"  # reachable through the published port
    assert str(config.watch.base_dir) == base_dir
    volumes = [json.loads(args) for instruction, args in dockerfile if instruction == "VOLUME"]
    assert [base_dir] in volumes


# -- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube() -> dict[str, dict[str, Any]]:
    documents = load_yaml(DEPLOY / "kubernetes" / "daemonset.yaml")
    return {doc["kind"]: doc for doc in documents}


def test_daemonset_probes_healthz_on_the_metrics_port(kube: dict[str, dict[str, Any]]) -> None:
    assert set(kube) == {"Namespace", "ConfigMap", "DaemonSet"}
    pod = kube["DaemonSet"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": DEFAULT_PORT}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz", probe
        assert ports.get(http["port"], http["port"]) == DEFAULT_PORT, probe
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(DEFAULT_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_every_probe_has_an_explicit_timeout(kube: dict[str, dict[str, Any]]) -> None:
    (container,) = kube["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert 0 < container[probe]["timeoutSeconds"] < container[probe]["periodSeconds"] + 1


def test_the_namespace_says_its_pods_are_privileged(kube: dict[str, dict[str, Any]]) -> None:
    # hostPID, hostPath and added capabilities break Pod Security "baseline": a cluster
    # enforcing it would refuse the pods, so the namespace asks for "privileged" openly.
    spec = kube["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    labels = kube["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert "pod-security.kubernetes.io/enforce" in operations_section()


def test_apparmor_does_not_hide_the_host_processes(kube: dict[str, dict[str, Any]]) -> None:
    pod = kube["DaemonSet"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    key = f"container.apparmor.security.beta.kubernetes.io/{container['name']}"
    assert pod["metadata"]["annotations"][key] == "unconfined"


def test_daemonset_mounts_the_host_dir_at_base_dir(
    kube: dict[str, dict[str, Any]], base_dir: str, container_config_path: str
) -> None:
    spec = kube["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    temp = volumes["temp-dir"]["hostPath"]
    assert temp["path"] == mounts["temp-dir"] == base_dir
    assert mounts["config"] == os.path.dirname(container_config_path)
    assert volumes["config"]["configMap"]["name"] == kube["ConfigMap"]["metadata"]["name"]
    assert container["args"][container["args"].index("--config") + 1] == container_config_path


def test_configmap_is_the_container_config(kube: dict[str, dict[str, Any]]) -> None:
    text = kube["ConfigMap"]["data"]["config.toml"]
    shipped = (DEPLOY / "container" / "config.toml").read_text()
    assert tomllib.loads(text) == tomllib.loads(shipped)


def test_daemonset_sees_host_processes_with_least_privilege(
    kube: dict[str, dict[str, Any]],
) -> None:
    spec = kube["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["hostPID"] is True  # else every file of another pod looks closed
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) <= CAPABILITIES
    limits = container["resources"]["limits"]
    assert set(limits) == {"cpu", "memory"}


# -- Prometheus and Grafana -----------------------------------------------------------------


def test_scrape_config_targets_the_default_port() -> None:
    (config,) = load_yaml(DEPLOY / "prometheus" / "scrape.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    static = jobs["tempwatch"]
    assert static["metrics_path"] == "/metrics"
    assert static["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULT_PORT}"]
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()


def test_alert_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_names()
    (rules,) = load_yaml(DEPLOY / "prometheus" / "alerts.yml")
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) >= 5
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"]
        unknown = metric_names_in(alert["expr"]) - exported
        assert not unknown, f"{alert['alert']}: {unknown} is not exported"
    alerted = set().union(*(metric_names_in(alert["expr"]) for alert in alerts))
    assert "tempwatch_pinned_bytes" in alerted
    assert "temp_files_cleanup_errors_total" in alerted


def test_dashboard_charts_what_the_issue_asks_with_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "tempwatch.json").read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    used = set().union(*(metric_names_in(expr) for expr in exprs))
    assert not used - exported_metric_names(), "the dashboard charts a metric nobody exports"
    assert any("temp_files_cleaned_total" in e and "by (reason)" in e for e in exprs)
    for wanted in (
        "temp_files_active",
        "temp_files_bytes",
        "tempwatch_pinned_bytes",
        "tempwatch_inotify_overflows_total",
    ):
        assert wanted in used, wanted


# -- docs -----------------------------------------------------------------------------------


def operations_section() -> str:
    """The README's Operations section, up to the next top-level section."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Operations\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def test_operations_doc_names_every_metric_and_no_other() -> None:
    text = operations_section()
    families = {
        re.sub(r"_(total|bucket|sum|count|created)$", "", name)
        for name in exported_metric_names()
    }
    for family in families:
        assert family in text, f"{family} is not documented"
    documented = metric_names_in(text)
    allowed = exported_metric_names() | families
    assert not documented - allowed, f"documented but not exported: {documented - allowed}"


def test_operations_doc_says_the_image_was_not_built_here() -> None:
    text = " ".join(operations_section().split())
    assert "No Docker engine runs on the machines" in text


# -- the readers themselves: a broken file must fail, not parse into something else ---------


@pytest.mark.parametrize(
    "text",
    [
        "a:\n  b: 1\n   c: 2\n",  # deeper indentation than its sibling
        "a:\n\tb: 1\n",  # tab indentation
        'a: "unterminated\n',
        "a: [1, 2\n",
        "a: 1\na: 2\n",  # duplicate key
        "a:\n  - 1\n  b: 2\n",  # a key where a list item belongs
        "just a sentence\n",
    ],
)
def test_the_yaml_reader_rejects_broken_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(YamlError):
        load_yaml(path)


def test_the_yaml_reader_reads_the_subset(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "# comment\nkind: Thing  # trailing\nlist:\n  - name: a\n    port: 80\n  - plain\n"
        'flow: [a, "b c"]\ncompact:\n- 1\n- 2\ntext: |\n  line one\n  line two\n'
        "folded: >-\n  one\n  two\nflag: true\n---\nsecond: ~\n"
    )
    assert load_yaml(path) == [
        {
            "kind": "Thing",
            "list": [{"name": "a", "port": 80}, "plain"],
            "flow": ["a", "b c"],
            "compact": [1, 2],
            "text": "line one\nline two\n",
            "folded": "one two",
            "flag": True,
        },
        {"second": None},
    ]


def test_the_unit_reader_rejects_lines_that_are_not_key_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.service"
    path.write_text("[Service]\nType notify\n")
    with pytest.raises(AssertionError, match="not key=value"):
        load_unit(path)
