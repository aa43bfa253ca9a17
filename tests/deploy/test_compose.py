"""The four Compose files, checked statically (no Docker engine here).

Each file must validate against the Compose specification after interpolation with `.env`
(the way `docker compose` reads it), take every credential from `.env` with `${VAR:?...}`,
and agree with the contract in docs/deployment.md (services, ports, NodePorts, health
endpoints, settings), with each other, with prometheus.yml and the Grafana provisioning,
with the settings the code reads, with the images `make image-names` lists and with the
README's port table.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from readmission.ops import credentials
from readmission.settings import VARIABLES, ApiSettings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
RUNTIME = (
    "docker-compose-airflow.yaml",
    "docker-compose-resto-back.yaml",
    "docker-compose-jupyter.yaml",
)
KOMPOSE = "docker-compose-kubernete.yaml"
FILES = (*RUNTIME, KOMPOSE)
NETWORK = "airflow_backend"
OWN_IMAGE = re.compile(r"^(?P<registry>.+)/(?P<name>[a-z]+)-mlops-p3:(?P<tag>[^:/]+)$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET")
#: Environment keys that are no setting of ours: read by a third-party program in the image.
CONTAINER_KEYS = {"JUPYTER_TOKEN", "AIRFLOW_ADMIN_USER", "AIRFLOW_ADMIN_PASSWORD"}
#: ... or what the credentials check reads (readmission/ops/credentials.py).
CONTAINER_KEYS |= {*credentials.SECRET_KEYS, *credentials.USER_KEYS, credentials.DEV_FLAG}
CONTAINER_PREFIXES = ("AIRFLOW__",)
#: Services that run our code and so may only be given our settings (or container keys).
OWN_CODE = ("fast-api", "streamlit", "locust", "jupyter", "airflow-")
ONE_SHOT = ("airflow-init", "minio-init", "airflow-credentials", "credentials-check")
#: The credentials check each runtime project runs before its services start.
CREDENTIALS_CHECK = {
    "docker-compose-airflow.yaml": ("airflow-credentials", ["mlops-postgres"]),
    "docker-compose-resto-back.yaml": ("credentials-check", ["minio", "mlflow", "grafana"]),
}
#: Where each stateful service keeps its data: a named volume in every file it appears in.
DATA_PATHS = {
    "mlops-postgres": "/var/lib/postgresql/data",
    "minio": "/data",
    "prometheus": "/prometheus",
    "grafana": "/var/lib/grafana",
}
#: A probe other than the documented endpoint (the image has no HTTP client): `mc ready`
#: asks MinIO's health API.
PROBE_EQUIVALENTS = {"minio": "mc ready local"}


# --- interpolation, as `docker compose` does it -------------------------------------------

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.DOTALL)


class InterpolationError(ValueError):
    """A required variable is unset, or a reference is malformed."""


@dataclass
class Interpolator:
    env: Mapping[str, str]
    refs: list[tuple[str, str]] = field(default_factory=list)  # (name, operator or "")

    def text(self, value: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match["escaped"]:
                return "$"
            if match["named"]:
                return self._resolve(match["named"], "", "")
            braced = _BRACED.match(match["braced"])
            if braced is None or "${" in match["braced"]:
                raise InterpolationError(f"malformed reference ${{{match['braced']}}}")
            return self._resolve(braced["name"], braced["op"] or "", braced["arg"] or "")

        return _VARIABLE.sub(replace, value)

    def _resolve(self, name: str, op: str, arg: str) -> str:
        self.refs.append((name, op))
        value = self.env.get(name)
        empty = value is None or (op.startswith(":") and value == "")
        if op in {":-", "-"}:
            return arg if empty else value
        if op in {":?", "?"}:
            if empty:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op in {":+", "+"}:
            return "" if empty else arg
        if value is None:
            raise InterpolationError(f"{name} is not set and has no default")
        return value

    def tree(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, list):
            return [self.tree(item) for item in node]
        if isinstance(node, dict):
            return {key: self.tree(value) for key, value in node.items()}
        return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; a value may refer to keys defined above it (Compose's .env rules)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = Interpolator(env).text(value)
    return env


@cache
def dotenv() -> dict[str, str]:
    return read_env_file(ROOT / ".env")


@cache
def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def compose(name: str, **overrides: str) -> dict[str, Any]:
    """The file as Compose sees it: interpolated with .env, the shell's values winning."""
    return Interpolator({**dotenv(), **overrides}).tree(raw(name))


def services(name: str, **overrides: str) -> dict[str, dict[str, Any]]:
    return compose(name, **overrides)["services"]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def ports(service: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    """(published, container) pairs of the short or long syntax."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published = port.get("published")
            found.append((int(published) if published else None, int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        container = int(parts[-1])
        found.append((int(parts[-2]) if len(parts) > 1 else None, container))
    return found


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume of the short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume.get("source", ""), volume["target"]))
        else:
            source, _, rest = str(volume).partition(":")
            found.append((source, rest.split(":")[0]))
    return found


def healthcheck_test(service: Mapping[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test", "")
    return " ".join(test) if isinstance(test, list) else str(test)


# --- the contract: docs/deployment.md, README ----------------------------------------------


def markdown_table(text: str, header: Iterable[str]) -> list[dict[str, str]] | None:
    """Rows of the first table whose header cells are exactly `header` (None if absent)."""
    wanted = [cell.strip().lower() for cell in header]
    lines = text.splitlines()
    for index, line in enumerate(lines):
        cells = [cell.strip().lower() for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells == wanted:
            rows = []
            for row in lines[index + 2 :]:
                if not row.lstrip().startswith("|"):
                    break
                values = [cell.strip() for cell in row.strip().strip("|").split("|")]
                rows.append(dict(zip(wanted, values, strict=True)))
            return rows
    return None


def numbers(cell: str) -> list[int]:
    return [int(n) for n in re.findall(r"\b\d{2,5}\b", cell.split("(")[0])]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@dataclass(frozen=True)
class Documented:
    service: str
    container: tuple[int, ...]
    host: tuple[int, ...]
    nodeports: tuple[int, ...]
    health: str | None  # the probe: a path or a command
    one_shot: str | None  # what a one-shot service makes instead


@cache
def documented() -> dict[str, Documented]:
    text = (ROOT / "docs" / "deployment.md").read_text()
    header = ["service", "image", "container port", "host port (compose)"]
    header += ["nodeport (kubernetes)", "health"]
    rows = markdown_table(text, header)
    assert rows, "docs/deployment.md has no services table"
    table = {}
    for row in rows:
        name = ticked(row["service"])[0]
        health = ticked(row["health"])
        one_shot = row["health"].lower().startswith("one-shot")
        table[name] = Documented(
            service=name,
            container=tuple(numbers(row["container port"])),
            host=tuple(numbers(row["host port (compose)"])),
            nodeports=tuple(numbers(row["nodeport (kubernetes)"])),
            health=health[0] if health and not one_shot else None,
            one_shot=health[0] if health and one_shot else None,
        )
    return table


def runtime_services() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every service of the three runtime files, with the file defining it."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in RUNTIME:
        for service, spec in services(name).items():
            assert service not in found, f"{service} is defined in {found[service][0]} and {name}"
            found[service] = (name, spec)
    return found


# --- the files are valid Compose -----------------------------------------------------------


@cache
def validator() -> jsonschema.protocols.Validator:
    # The spec names draft 07 (as "https://json-schema.org/draft-07/schema", an alias
    # jsonschema does not resolve), so the validator is chosen here.
    schema = json.loads(SCHEMA.read_text())
    assert "draft-07" in schema["$schema"]
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("name", FILES)
def test_file_validates_against_the_compose_spec(name):
    errors = sorted(validator().iter_errors(compose(name)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_the_schema_rejects_a_misspelt_key():
    broken = {"services": {"api": {"image": "x", "healthchek": {"test": ["CMD", "true"]}}}}
    assert list(validator().iter_errors(broken)), "the schema should refuse unknown keys"


def test_interpolation_follows_compose():
    interpolate = Interpolator({"A": "1", "EMPTY": ""}).text
    assert interpolate("${A}-${B:-2}-${EMPTY:-3}-${EMPTY-4}-$$A-$A") == "1-2-3--$A-1"
    with pytest.raises(InterpolationError, match="B: set B"):
        interpolate("${B:?set B}")
    with pytest.raises(InterpolationError, match="EMPTY"):
        interpolate("${EMPTY:?required}")
    with pytest.raises(InterpolationError, match="no default"):
        interpolate("${C}")


@pytest.mark.parametrize("name", FILES)
def test_every_variable_without_a_default_is_in_the_env_file(name):
    interpolator = Interpolator(dotenv())
    interpolator.tree(raw(name))  # raises when a required variable is missing
    required = {ref for ref, op in interpolator.refs if op in {"", ":?", "?"}}
    assert required <= set(dotenv()), f"not in .env: {sorted(required - set(dotenv()))}"
    assert required, f"{name} takes nothing from .env"


# --- credentials ---------------------------------------------------------------------------


def secret_keys() -> set[str]:
    return {key for key in dotenv() if SECRET_NAME.search(key)}


def test_env_file_holds_the_airflow_secrets():
    from cryptography.fernet import Fernet

    env = dotenv()
    Fernet(env["AIRFLOW_FERNET_KEY"].encode())  # raises unless a valid Fernet key
    for key in ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"):
        assert len(env[key]) >= 32, f"{key} is too short to sign anything"


@pytest.mark.parametrize("name", FILES)
def test_credentials_come_from_the_env_file_and_are_required(name):
    text = (ROOT / name).read_text()
    interpolator = Interpolator(dotenv())
    interpolator.tree(raw(name))
    for ref, op in interpolator.refs:
        if ref in secret_keys():
            assert op == ":?", f"{name}: ${{{ref}}} must be ${{{ref}:?message}} (no default)"
    for key in secret_keys():
        value = dotenv()[key]
        assert value not in text, f"{name} holds the value of {key} itself"
    # Every environment value that is a credential or a URL with a password refers to .env.
    for service, spec in raw(name)["services"].items():
        for key, value in environment(spec).items():
            credential = SECRET_NAME.search(key) or key == "AWS_SECRET_ACCESS_KEY"
            if credential and key not in {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"}:
                assert "${" in value, f"{name}: {service}.{key} is written in the file"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
                where = f"{name}: {service}.{key} has a password that is not a required variable"
                assert password.startswith("${"), where
                assert ":?" in password, where


# --- services, ports, NodePorts ------------------------------------------------------------


def test_runtime_services_are_the_documented_ones():
    runtime = runtime_services()
    for service in documented():
        assert service in runtime, f"{service} (docs/deployment.md) is in no Compose file"
    undocumented = {s for s in runtime if s not in documented() and not s.startswith("airflow-")}
    assert not undocumented, f"services missing from docs/deployment.md: {sorted(undocumented)}"
    assert {s for s in runtime if s.startswith("airflow-")} >= {
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }


def test_runtime_ports_are_the_documented_ones():
    runtime = runtime_services()
    for service, doc in documented().items():
        name, spec = runtime[service]
        expected = sorted(zip(doc.host, doc.container, strict=True))
        assert sorted(ports(spec)) == expected, f"{name}: ports of {service}"
    published = [p for _, spec in runtime.values() for p, _ in ports(spec)]
    assert len(published) == len(set(published)), "a host port is published twice"
    # Only the documented services publish a port (Airflow: the api-server alone).
    for service, (name, spec) in runtime.items():
        if service not in documented():
            assert not ports(spec), f"{name}: {service} publishes a port"


def test_kompose_input_has_the_cluster_services_and_nodeports():
    kube = services(KOMPOSE)
    cluster = {s for s, doc in documented().items() if doc.nodeports} | {"minio-init"}
    assert set(kube) == cluster
    for service, doc in documented().items():
        if not doc.nodeports:
            continue
        spec = kube[service]
        labels = spec.get("labels") or {}
        assert labels.get("kompose.service.type") == "nodeport", service
        container = tuple(c for _, c in ports(spec))
        assert container == doc.container, f"{service}: container ports"
        if len(container) == 1:
            nodeports = {container[0]: int(labels["kompose.service.nodeport.port"])}
        else:
            # Kompose would give its one NodePort label to every port: the pair is recorded
            # beside it and set in the manifest.
            assert "kompose.service.nodeport.port" not in labels, service
            nodeports = {int(k): int(v) for k, v in spec["x-nodeports"].items()}
        assert nodeports == dict(zip(doc.container, doc.nodeports, strict=True)), service
    all_nodeports = [n for doc in documented().values() for n in doc.nodeports]
    assert len(all_nodeports) == len(set(all_nodeports))
    assert all(30000 <= n <= 32767 for n in all_nodeports)


def test_ports_and_images_agree_across_the_files():
    runtime = runtime_services()
    for service, spec in services(KOMPOSE).items():
        _, local = runtime[service]
        assert [c for _, c in ports(spec)] == [c for _, c in ports(local)], service
        assert spec["image"] == local["image"], f"{service}: a different image in {KOMPOSE}"
        assert "build" not in spec, f"{KOMPOSE}: {service} is built; the cluster pulls it"
    api_port = ApiSettings().port
    assert api_port == int(dotenv()["API_PORT"]) == documented()["fast-api"].container[0]
    for name in (RUNTIME[1], KOMPOSE):
        assert environment(services(name)["fast-api"])["API_PORT"] == str(api_port), name


def test_prometheus_scrapes_the_api_where_compose_serves_it():
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    for name in (RUNTIME[1], KOMPOSE):
        reachable = {f"{s}:{c}" for s, spec in services(name).items() for _, c in ports(spec)}
        assert targets["fast-api"] in reachable, f"{name}: nothing serves {targets['fast-api']}"
        assert targets["prometheus"] == f"localhost:{documented()['prometheus'].container[0]}"


@pytest.mark.parametrize("name", [RUNTIME[1], KOMPOSE])
def test_prometheus_and_grafana_mount_what_their_configs_expect(name):
    spec = services(name)
    prometheus = {target: source for source, target in mounts(spec["prometheus"])}
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        inside = Path("/etc/prometheus") / rule_file
        folder = next(t for t in prometheus if inside.is_relative_to(t) and t != "/prometheus")
        local = ROOT / prometheus[folder] / inside.relative_to(folder)
        assert local.is_file(), f"{rule_file} is not mounted from the repository"
    grafana = {target: source for source, target in mounts(spec["grafana"])}
    assert grafana["/etc/grafana/provisioning"] == "./grafana/provisioning"
    for provider_file in (ROOT / "grafana" / "provisioning" / "dashboards").glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            source = grafana[provider["options"]["path"]]
            assert list((ROOT / source).glob("*.json")), f"no dashboards at {source}"
    url = environment(spec["grafana"])["PROMETHEUS_URL"]
    assert url == f"http://prometheus:{documented()['prometheus'].container[0]}"


@pytest.mark.parametrize("name", FILES)
def test_bind_mounts_exist_and_data_lives_in_named_volumes(name):
    doc = compose(name)
    named = set(doc.get("volumes") or {})
    for service, spec in doc["services"].items():
        for source, _ in mounts(spec):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {service} mounts missing {source}"
            else:
                assert source in named, f"{name}: {service} uses undeclared volume {source}"
        if service in DATA_PATHS:
            sources = {t: s for s, t in mounts(spec)}
            assert sources.get(DATA_PATHS[service]) in named, f"{name}: {service} data"


# --- settings the services read ------------------------------------------------------------


@cache
def setting_names() -> set[str]:
    names = set(VARIABLES)
    load_logic = (ROOT / "locust" / "load_logic.py").read_text()
    names |= set(re.findall(r'validation_alias="([A-Z0-9_]+)"', load_logic))
    ui_logic = (ROOT / "streamlit" / "ui_logic.py").read_text()
    names |= set(re.findall(r'env\.get\("([A-Z0-9_]+)"', ui_logic))
    assert {"API_URL", "MLFLOW_UI_URL", "LOAD_USERS", "DATA_DATABASE_URL"} <= names
    return names


@pytest.mark.parametrize("name", FILES)
def test_our_services_get_only_settings_the_code_reads(name):
    for service, spec in services(name).items():
        if not service.startswith(OWN_CODE):
            continue
        for key in environment(spec):
            if key in CONTAINER_KEYS or key.startswith(CONTAINER_PREFIXES):
                continue
            assert key in setting_names(), f"{name}: {service}.{key} is read by nothing"


def documented_settings() -> list[tuple[list[str], list[str]]]:
    """(service patterns, variable references) of the settings table."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    rows = markdown_table(text, ["service", "variables"])
    assert rows, "docs/deployment.md has no settings table"
    return [
        ([s.strip() for s in row["service"].split(",")], ticked(row["variables"])) for row in rows
    ]


@pytest.mark.parametrize("name", FILES)
def test_services_receive_the_documented_settings(name):
    raw_services = raw(name)["services"]
    checked = 0
    for patterns, variables in documented_settings():
        group = [
            s
            for s in raw_services
            if any(s == p or (p.endswith("*") and s.startswith(p[:-1])) for p in patterns)
        ]
        if not group:
            continue
        keys = {k for s in group for k in environment(raw_services[s])}
        referenced = {
            ref
            for s in group
            for value in environment(raw_services[s]).values()
            for ref in re.findall(r"\$\{([A-Za-z_]\w*)", value)
        }
        values = {k: v for s in group for k, v in environment(compose(name)["services"][s]).items()}
        for variable in variables:
            names, _, expected = variable.partition("=")
            for var in names.split("/"):  # `MINIO_ROOT_USER`/`MINIO_ROOT_PASSWORD` style
                if not re.fullmatch(r"[A-Z][A-Z0-9_]*", var):
                    continue  # a path, a URL, a wildcard such as LOAD_*
                assert var in keys | referenced, f"{name}: {patterns} should receive {var}"
                if expected and var in values:
                    assert values[var] == expected, f"{name}: {patterns} {var}"
                checked += 1
    assert checked, f"{name}: no documented setting was checked"


# --- health, dependencies, restarts, networks ----------------------------------------------


def test_every_documented_health_endpoint_is_probed():
    runtime = runtime_services()
    kube = services(KOMPOSE)
    for service, doc in documented().items():
        if doc.one_shot:
            places = [(runtime[service][0], runtime[service][1])]
            if doc.nodeports or service in kube:  # a cluster service (minio-init: a Job)
                places.append((KOMPOSE, kube[service]))
            for name, spec in places:
                command = " ".join(spec.get("command") or [])
                assert doc.one_shot in command, f"{name}: {service} does not make {doc.one_shot}"
            continue
        assert doc.health, f"docs/deployment.md: no probe for {service}"
        probe = PROBE_EQUIVALENTS.get(service, doc.health)
        name, spec = runtime[service]
        assert probe in healthcheck_test(spec), f"{name}: {service} does not probe {probe}"
        if service in kube:
            labels = kube[service].get("labels") or {}
            probes = {
                labels.get("kompose.service.healthcheck.liveness.http_get_path"),
                labels.get("kompose.service.healthcheck.readiness.http_get_path"),
                healthcheck_test(kube[service]) or None,
            }
            assert any(p and doc.health in p for p in probes), f"{KOMPOSE}: {service} probe"
            assert "healthcheck" in kube[service], f"{KOMPOSE}: Kompose needs the block"


@pytest.mark.parametrize("name", RUNTIME)
def test_long_running_services_have_a_healthcheck_and_a_restart_policy(name):
    for service, spec in services(name).items():
        if service in ONE_SHOT:
            assert spec.get("restart", "no") in {"no", "on-failure"}, f"{name}: {service}"
            continue
        assert healthcheck_test(spec), f"{name}: {service} has no healthcheck"
        assert not (spec.get("healthcheck") or {}).get("disable"), f"{name}: {service}"
        assert spec.get("restart") in {"unless-stopped", "always"}, f"{name}: {service}"


@pytest.mark.parametrize("name", FILES)
def test_dependencies_wait_for_health_or_completion(name):
    spec = services(name)
    for service, body in spec.items():
        depends = body.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: {service} depends_on needs conditions"
        for target, condition in depends.items():
            assert target in spec, f"{name}: {service} waits for {target}, not in this file"
            wanted = condition.get("condition")
            if wanted == "service_healthy":
                assert healthcheck_test(spec[target]), f"{name}: {target} has no healthcheck"
            elif wanted == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name}: {target} is not a one-shot service"
            else:
                pytest.fail(f"{name}: {service} -> {target}: condition {wanted!r}")


@pytest.mark.parametrize("name", RUNTIME)
def test_services_share_the_external_network(name):
    doc = compose(name)
    assert doc["networks"] == {NETWORK: {"external": True}}
    for service, spec in doc["services"].items():
        assert spec.get("networks") == [NETWORK], f"{name}: {service} is not on {NETWORK}"


def test_each_runtime_file_is_its_own_compose_project():
    """Named in the file, not after the folder: the three files share one folder, and under
    its name (Compose's default) each `up` reported the others' containers as orphans, which
    `--remove-orphans` deleted (seen in the real run: the jupyter file's `down` removed
    Airflow and PostgreSQL)."""
    names = {name: compose(name).get("name") for name in RUNTIME}
    assert all(names.values()), f"a runtime file without a top-level name: {names}"
    assert len(set(names.values())) == len(RUNTIME), names


@pytest.mark.parametrize("name", FILES)
def test_header_says_how_to_start_it(name):
    header = []
    for line in (ROOT / name).read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header_text = "\n".join(header)
    if name == KOMPOSE:
        assert f"kompose convert -f {KOMPOSE}" in header_text
        assert "kubectl apply -k kompose/" in header_text
        return
    order = [
        "make images",
        "docker network create airflow_backend",
        "docker compose -f docker-compose-airflow.yaml up airflow-init",
        "docker compose -f docker-compose-airflow.yaml up -d --wait",
    ]
    order += [f"docker compose -f {n} up -d --wait" for n in RUNTIME[1 : RUNTIME.index(name) + 1]]
    positions = [header_text.find(step) for step in order]
    assert -1 not in positions, f"{name}: missing {order[positions.index(-1)]!r}"
    assert positions == sorted(positions), f"{name}: the start commands are out of order"


# --- images --------------------------------------------------------------------------------


def make_image_names(registry: str, tag: str) -> list[str]:
    """`make image-names`: the seven images `make images` builds."""
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "image-names", f"REGISTRY={registry}", f"TAG={tag}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.split()


def documented_images(registry: str, tag: str) -> list[str]:
    text = (ROOT / "docs" / "deployment.md").read_text()
    rows = markdown_table(text, ["image", "dockerfile", "extras", "runs"])
    assert rows, "docs/deployment.md has no images table"
    return [
        ticked(row["image"])[0].replace("$(REGISTRY)", registry).replace("$(TAG)", tag)
        for row in rows
    ]


def test_images_are_the_ones_make_builds():
    registry, tag = "registry.example:5000/team", "9.9.9"
    built = make_image_names(registry, tag)
    assert sorted(built) == sorted(documented_images(registry, tag))
    assert len(built) == 7, built
    assert all(OWN_IMAGE.match(image) for image in built), built
    named = set()
    for name in FILES:
        for service, spec in services(name, REGISTRY=registry, TAG=tag).items():
            if OWN_IMAGE.match(spec["image"]):
                assert spec["image"] in built, f"{name}: {service} image {spec['image']}"
                named.add(spec["image"])
    assert named == set(built), f"images no Compose file runs: {sorted(set(built) - named)}"


def test_third_party_images_are_pinned_and_the_same_everywhere():
    pins: dict[str, set[str]] = {}
    for name in FILES:
        for spec in services(name).values():
            if not OWN_IMAGE.match(spec["image"]):
                repository, _, tag = spec["image"].rpartition(":")
                assert repository, f"{name}: {spec['image']} has no tag"
                assert tag != "latest", f"{name}: {spec['image']} is not pinned"
                pins.setdefault(repository, set()).add(tag)
    assert set(pins) == {"minio/minio", "minio/mc", "prom/prometheus", "grafana/grafana"}
    for manifest in (ROOT / "kompose").rglob("*.yaml"):
        for image in re.findall(r"^\s*image:\s*[\"']?([^\s\"']+)", manifest.read_text(), re.M):
            repository, _, tag = image.rpartition(":")
            if repository in pins:
                pins[repository].add(tag)
    assert all(len(tags) == 1 for tags in pins.values()), f"pins disagree: {pins}"


# --- the README's port table (written by the lead) -----------------------------------------


def test_readme_port_table_matches_the_contract():
    header = ["service", "container port", "host port (Compose)", "NodePort (Kubernetes)"]
    rows = markdown_table((ROOT / "README.md").read_text(), header)
    assert rows, "README.md has no table | " + " | ".join(header) + " |"
    table = {ticked(r["service"])[0] if ticked(r["service"]) else r["service"]: r for r in rows}
    for service, doc in documented().items():
        if not doc.container:
            continue
        row = table.get(service)
        assert row is not None, f"README port table: no row for {service}"
        assert tuple(numbers(row["container port"])) == doc.container, service
        assert tuple(numbers(row["host port (compose)"])) == doc.host, service
        assert tuple(numbers(row["nodeport (kubernetes)"])) == doc.nodeports, service


@pytest.mark.parametrize("name", sorted(CREDENTIALS_CHECK))
def test_no_password_is_used_before_the_credentials_check_passed(name):
    """The services that hold the admin and database passwords wait for the check, which
    gets every credential of .env (the three projects share it)."""
    check, guarded = CREDENTIALS_CHECK[name]
    spec = services(name)
    command = spec[check]["command"]
    assert command[-3:] == ["-m", "readmission", "check-credentials"], command
    given = set(environment(spec[check]))
    assert set(credentials.SECRET_KEYS) | {credentials.DEV_FLAG} <= given
    for service in guarded:
        condition = (spec[service].get("depends_on") or {}).get(check, {}).get("condition")
        assert condition == "service_completed_successfully", f"{name}: {service}"
    assert OWN_IMAGE.match(spec[check]["image"]), "the check runs our package"


#: Services that write inside their image: Airflow (logs and state under AIRFLOW_HOME) and
#: JupyterLab (its runtime files and workspaces in the home folder).
WRITABLE_ROOT = (
    *(f"airflow-{part}" for part in ("apiserver", "scheduler", "dag-processor", "triggerer")),
    "airflow-init",
    "jupyter",
)


@pytest.mark.parametrize("name", RUNTIME)
def test_containers_are_read_only_without_capabilities(name):
    for service, spec in services(name).items():
        if service in WRITABLE_ROOT:
            continue
        assert spec.get("read_only") is True, f"{name}: {service} root filesystem is writable"
        assert "/tmp" in (spec.get("tmpfs") or []), f"{name}: {service} has no tmpfs /tmp"
        assert spec.get("cap_drop") == ["ALL"], f"{name}: {service} keeps capabilities"
        assert "no-new-privileges:true" in (spec.get("security_opt") or []), service
        for volume in spec.get("volumes") or []:  # the project's files: mounted read-only
            if isinstance(volume, str) and volume.startswith("."):
                assert volume.endswith(":ro"), f"{name}: {service} mounts {volume} writable"


def test_readme_compose_commands_are_what_the_compose_test_runs():
    """The README's Docker Compose section is the run `make compose-test` makes: its start
    and stop blocks are the harness's UP and DOWN, its headless Locust run is the test's."""
    from tests.compose import stack

    blocks = stack.readme_commands()
    assert list(stack.UP) in blocks, "README's start block != tests/compose/stack.py UP"
    assert list(stack.DOWN) in blocks, "README's stop block != tests/compose/stack.py DOWN"
    assert any(stack.LOCUST_HEADLESS in block for block in blocks)
    assert stack.readme_predict_body(), "the README's /predict example, which the test sends"
    makefile = (ROOT / "Makefile").read_text()
    assert "python -m tests.compose.stack up" in makefile
    assert "python -m tests.compose.stack down" in makefile
