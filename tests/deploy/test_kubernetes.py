"""The Kubernetes manifests (kompose/), checked statically: no cluster runs here.

A copy of kompose/ gets its secrets/*.env from the project's .env (secrets_from_env.py, as
`make k8s-secrets` does), then `kubectl kustomize` renders the base and the
airflow-in-cluster overlay; every rendered object is checked against the Kubernetes schemas
and against the contract of docs/deployment.md (ports, NodePorts, images, health endpoints,
Secret names), plus the hardening rules: probes, resources, non-root, no secret in plain env.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import kubernetes_validate
import pytest
import yaml

from readmission.ops import monitoring
from tests.support.envfile import secrets_script

ROOT = Path(__file__).resolve().parents[2]
KOMPOSE = ROOT / "kompose"
BASE = KOMPOSE / "base"
OVERLAY = "overlays/airflow-in-cluster"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
#: A schema version kubernetes-validate bundles (minikube's default is newer; nothing used
#: here changed since).
K8S_VERSION = "1.32.0"
SECRETS = {
    "mlops-postgres-credentials",
    "minio-credentials",
    "grafana-admin",
    "airflow-admin",
    "jupyter-token",
}
THIRD_PARTY = {"minio/minio", "minio/mc", "prom/prometheus", "grafana/grafana"}
#: The non-root user each image runs as (docs/deployment.md; the official images' own ids;
#: minio/minio declares none, any non-root id owning the volume through fsGroup works).
UIDS = {
    "postgres-mlops-p3": 999,
    "grafana/grafana": 472,
    "prom/prometheus": 65534,
    "minio/minio": 1000,
    "minio/mc": 1000,
}
PROJECT_UID = 10001
#: Containers whose root filesystem stays writable, each for a reason in its file's header.
WRITABLE_ROOT = {
    "jupyter",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-db-migrate",
    "wait-for-migrations",
}
#: Headless Services (no NodePort) and the Deployment whose pods they list.
HEADLESS = {"fast-api-pods": "fast-api"}
NEW_NODEPORTS = {"airflow-apiserver": [30880]}  # the overlay's, not in the hybrid table
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")
VAR_REF = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")
URL_CREDENTIALS = re.compile(r"://([^/:@\s]+):([^@\s]+)@")
URL_HOST = re.compile(r"\b(?:https?|postgresql[+a-z_]*)://(?:[^/@\s]*@)?([A-Za-z0-9.\-]+)")
IP_LITERAL = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")


# --- helpers ----------------------------------------------------------------------------


def _load_script() -> ModuleType:
    return secrets_script()


def _table(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose first column is `first_header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _numbers(cell: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", cell)]


def _pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return obj["spec"]["template"]["spec"]
    return None


def _containers(objects: list[dict]) -> Iterator[tuple[dict, dict, dict, bool]]:
    """(object, pod spec, container, is_init) for every container of every workload."""
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        for container in spec.get("initContainers", []):
            yield obj, spec, container, True
        for container in spec["containers"]:
            yield obj, spec, container, False


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _image_repo(image: str) -> str:
    """`readmission/fastapi-mlops-p3:0.1.0` -> `fastapi-mlops-p3`; third party: `owner/name`."""
    name = image.rsplit(":", 1)[0]
    repo = name.split("/")[-1]
    return repo if repo.endswith("-mlops-p3") else name


def _kustomize(folder: Path) -> list[dict]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env_values() -> dict[str, str]:
    return _load_script().read_env_file(ROOT / ".env")


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kompose/ copied (without any secrets/*.env of the checkout), secrets written from .env."""
    target = tmp_path_factory.mktemp("k8s") / "kompose"
    shutil.copytree(
        KOMPOSE,
        target,
        ignore=lambda _dir, names: [
            n for n in names if n.endswith(".env") and Path(_dir).name == "secrets"
        ],
    )
    result = subprocess.run(
        [
            sys.executable,
            str(target / "secrets_from_env.py"),
            "--env-file",
            str(ROOT / ".env"),
            "--root",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def base(copy: Path) -> list[dict]:
    return _kustomize(copy)


@pytest.fixture(scope="module")
def overlay(copy: Path) -> list[dict]:
    return _kustomize(copy / OVERLAY)


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> list[dict]:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def services_table() -> dict[str, dict[str, str]]:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    return {row["service"].split()[0].strip("`"): row for row in _table(text, "service")}


# --- secrets ----------------------------------------------------------------------------


def test_secrets_are_written_from_env(copy: Path, env_values: dict[str, str]) -> None:
    script = _load_script()
    examples = sorted(copy.glob("**/secrets/*.env.example"))
    assert {e.name.removesuffix(".env.example") for e in examples} == SECRETS | {"airflow-internal"}
    for example in examples:
        placeholders = script.read_env_file(example)
        written = script.read_env_file(example.with_suffix(""))
        assert list(written) == list(placeholders), example.name
        for key, placeholder in placeholders.items():
            if placeholder.startswith("<generate"):
                assert len(written[key]) >= 32, key
            else:
                assert written[key] == env_values[key], key


def test_generated_keys_survive_a_rerun_and_fernet_key_is_valid(copy: Path) -> None:
    secrets_file = copy / OVERLAY / "secrets" / "airflow-internal.env"
    before = secrets_file.read_text()
    _load_script().write_secrets(ROOT / ".env", copy)
    assert secrets_file.read_text() == before
    fernet = _load_script().read_env_file(secrets_file)["AIRFLOW__CORE__FERNET_KEY"]
    assert len(base64.urlsafe_b64decode(fernet)) == 32


def test_secrets_script_refuses_a_password_unfit_for_urls(tmp_path: Path) -> None:
    root = tmp_path / "k"
    shutil.copytree(BASE / "secrets", root / "secrets")
    env = (
        (ROOT / ".env")
        .read_text()
        .replace("MLFLOW_DB_PASSWORD=dev-mlflow-change-me", "MLFLOW_DB_PASSWORD=p@ss/word")
    )
    assert "p@ss/word" in env
    (tmp_path / ".env").write_text(env)
    with pytest.raises(SystemExit, match="MLFLOW_DB_PASSWORD goes into connection URLs"):
        _load_script().write_secrets(tmp_path / ".env", root)


@pytest.mark.parametrize(
    ("replace", "by", "flag", "message"),
    [
        (
            "GF_SECURITY_ADMIN_PASSWORD=dev-grafana-change-me",
            "GF_SECURITY_ADMIN_PASSWORD=admin",
            "true",
            "GF_SECURITY_ADMIN_PASSWORD: a well-known default password",
        ),
        (
            "MINIO_ROOT_PASSWORD=dev-minio-change-me",
            "MINIO_ROOT_PASSWORD=minioadmin",
            "true",
            "MINIO_ROOT_PASSWORD: a well-known default password",
        ),
        (
            "READMISSION_DEV_CREDENTIALS=true",
            "READMISSION_DEV_CREDENTIALS=false",
            "false",
            "POSTGRES_PASSWORD: the development value of .env",
        ),
    ],
)
def test_secrets_script_refuses_weak_credentials_and_writes_nothing(
    tmp_path: Path, capsys, replace: str, by: str, flag: str, message: str
) -> None:
    root = tmp_path / "k"
    shutil.copytree(BASE / "secrets", root / "secrets")
    env = (ROOT / ".env").read_text()
    assert replace in env
    (tmp_path / ".env").write_text(env.replace(replace, by))
    with pytest.raises(SystemExit, match="refusing to write the Secrets"):
        _load_script().write_secrets(tmp_path / ".env", root)
    assert message in capsys.readouterr().err
    assert not list((root / "secrets").glob("*.env")), "nothing written"
    assert f"READMISSION_DEV_CREDENTIALS={flag}" in (tmp_path / ".env").read_text()


def test_no_secret_values_are_tracked_by_git() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "kompose"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked, "kompose/ is not tracked"
    assert not [p for p in tracked if "/secrets/" in p and not p.endswith(".env.example")]


# --- rendering and schemas --------------------------------------------------------------


def test_base_renders_the_whole_hybrid_deployment(base: list[dict]) -> None:
    workloads = {
        "mlops-postgres",
        "minio",
        "mlflow",
        "fast-api",
        "streamlit",
        "locust",
        "prometheus",
        "grafana",
        "jupyter",
    }
    assert set(_by_kind(base, "Deployment")) == workloads
    assert set(_by_kind(base, "Service")) == workloads | HEADLESS.keys()
    assert set(_by_kind(base, "Job")) == {"minio-init"}
    assert set(_by_kind(base, "PersistentVolumeClaim")) == {
        "mlops-postgres-data",
        "minio-data",
        "prometheus-data",
    }
    assert set(_by_kind(base, "Secret")) == SECRETS
    assert {n.rsplit("-", 1)[0] for n in _by_kind(base, "ConfigMap")} == {
        "readmission-settings",
        "prometheus-config",
        "grafana-datasources",
        "grafana-dashboard-providers",
        "grafana-dashboards",
    }
    job = _by_kind(base, "Job")["minio-init"]["spec"]["template"]["spec"]["containers"][0]
    assert "local/mlflows3" in job["args"]
    assert "--ignore-existing" in job["args"]


def test_overlay_adds_airflow_to_the_base(base: list[dict], overlay: list[dict]) -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in base}
    added = {(o["kind"], o["metadata"]["name"]) for o in overlay} - names
    assert {name for kind, name in added if kind == "Deployment"} == {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    assert ("Job", "airflow-db-migrate") in added
    assert ("Service", "airflow-apiserver") in added
    assert ("Secret", "airflow-internal") in added
    assert ("PersistentVolumeClaim", "airflow-data") in added
    scheduler = _by_kind(overlay, "Deployment")["airflow-scheduler"]["spec"]["template"]
    mounts = {m["mountPath"] for m in scheduler["spec"]["containers"][0]["volumeMounts"]}
    assert "/opt/airflow/data" in mounts
    migrate = _by_kind(overlay, "Job")["airflow-db-migrate"]["spec"]["template"]["spec"]
    assert "airflow db migrate" in migrate["containers"][0]["args"][0]
    config = next(o for o in overlay if o["metadata"]["name"].startswith("airflow-config"))
    assert config["data"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert config["data"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/"
    )


def test_every_object_validates_against_the_kubernetes_schemas(rendered: list[dict]) -> None:
    assert rendered
    for obj in rendered:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_references_resolve(rendered: list[dict]) -> None:
    """Every Secret, ConfigMap and claim a pod names exists, with the keys it names."""
    secrets = {n: o.get("data", {}) for n, o in _by_kind(rendered, "Secret").items()}
    configmaps = _by_kind(rendered, "ConfigMap")
    claims = _by_kind(rendered, "PersistentVolumeClaim")
    for obj, spec, container, _init in _containers(rendered):
        where = f"{obj['metadata']['name']}/{container['name']}"
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, where
            else:
                assert source["configMapRef"]["name"] in configmaps, where
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], (where, ref)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, where
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, where


# --- the contract: ports, images, health ------------------------------------------------


def test_nodeports_and_container_ports_match_the_contract(
    rendered: list[dict], services_table: dict[str, dict[str, str]]
) -> None:
    services = _by_kind(rendered, "Service")
    deployments = _by_kind(rendered, "Deployment")
    seen_nodeports = []
    for name, service in services.items():
        if name in HEADLESS:
            continue  # test_the_api_pods_are_scraped_one_by_one
        row = services_table[name]
        container_ports = _numbers(row["container port"])
        nodeports = NEW_NODEPORTS.get(name) or _numbers(row["NodePort (Kubernetes)"])
        ports = service["spec"]["ports"]
        assert service["spec"]["type"] == "NodePort", name
        assert [p["port"] for p in ports] == container_ports, name
        assert [p["targetPort"] for p in ports] == container_ports, name
        assert [p["nodePort"] for p in ports] == nodeports, name
        seen_nodeports += nodeports
        pod = deployments[name]["spec"]["template"]["spec"]
        declared = {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        assert set(container_ports) <= declared, name
    assert len(seen_nodeports) == len(set(seen_nodeports))
    assert all(30000 <= port <= 32767 for port in seen_nodeports)
    # The hybrid deployment's table in full: every service with a NodePort has its Service.
    expected = {n for n, row in services_table.items() if _numbers(row["NodePort (Kubernetes)"])}
    assert expected <= set(services)


def test_images_are_the_projects_or_pinned_third_party(rendered: list[dict]) -> None:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    project = {
        row["image"].strip("`").replace("$(REGISTRY)", "readmission").replace("$(TAG)", "0.1.0")
        for row in _table(text, "image")
    }
    assert len(project) == 7
    for obj, _spec, container, _init in _containers(rendered):
        image = container["image"]
        if image in project:
            continue
        name, _, tag = image.partition(":")
        assert name in THIRD_PARTY, (obj["metadata"]["name"], image)
        assert tag not in {"", "latest"}, image


def test_images_are_the_ones_the_makefile_builds(rendered: list[dict]) -> None:
    result = subprocess.run(
        ["make", "-s", "image-names", "REGISTRY=readmission", "TAG=0.1.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"`make image-names` failed: {result.stderr}"
    built = set(result.stdout.split())
    assert len(built) == 7
    ours = {c["image"] for _o, _s, c, _i in _containers(rendered)} - {
        c["image"]
        for _o, _s, c, _i in _containers(rendered)
        if c["image"].partition(":")[0] in THIRD_PARTY
    }
    assert ours
    assert ours <= built


def test_kustomize_images_retarget_every_project_image(copy: Path, tmp_path: Path) -> None:
    """`images:` in the kustomizations covers each project image: a new tag reaches all."""
    retargeted = tmp_path / "kompose"
    shutil.copytree(copy, retargeted)
    for path in [
        retargeted / "base" / "kustomization.yaml",
        retargeted / OVERLAY / "kustomization.yaml",
    ]:
        kustomization = yaml.safe_load(path.read_text())
        for entry in kustomization["images"]:
            entry["newName"] = entry["newName"].replace("readmission/", "registry.example/")
            entry["newTag"] = "9.9.9"
        path.write_text(yaml.safe_dump(kustomization))
    images = {c["image"] for _o, _s, c, _i in _containers(_kustomize(retargeted / OVERLAY))}
    ours = {i for i in images if i.partition(":")[0] not in THIRD_PARTY}
    assert len(ours) == 7
    assert all(i.startswith("registry.example/") and i.endswith(":9.9.9") for i in ours), ours


def test_probes_use_the_documented_health_endpoints(
    rendered: list[dict], services_table: dict[str, dict[str, str]]
) -> None:
    for name, deployment in _by_kind(rendered, "Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in container, name
            assert "readinessProbe" in container, name
            row = services_table.get(name)
            if row is None:
                continue  # Airflow's other components: no documented endpoint, exec probes
            documented = set(re.findall(r"`([^`]+)`", row["health"]))
            probes = [
                container[k]
                for k in ("startupProbe", "livenessProbe", "readinessProbe")
                if k in container
            ]
            used = {p["httpGet"]["path"] for p in probes if "httpGet" in p}
            used |= {" ".join(p["exec"]["command"]) for p in probes if "exec" in p}
            for endpoint in documented:
                assert any(endpoint in probe for probe in used), (name, endpoint, used)
    api = _by_kind(rendered, "Deployment")["fast-api"]["spec"]["template"]["spec"]
    assert api["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/health"
    assert api["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/ready"


# --- hardening --------------------------------------------------------------------------


def test_workloads_run_non_root_with_resources(rendered: list[dict]) -> None:
    for obj, spec, container, _init in _containers(rendered):
        where = f"{obj['metadata']['name']}/{container['name']}"
        pod_context = spec["securityContext"]
        uid = UIDS.get(_image_repo(container["image"]), PROJECT_UID)
        assert pod_context["runAsNonRoot"] is True, where
        assert pod_context["runAsUser"] == uid, where
        assert pod_context["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        assert context.get("runAsUser", uid) != 0, where
        read_only = context.get("readOnlyRootFilesystem", False)
        assert read_only is (container["name"] not in WRITABLE_ROOT), where
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), (where, bound)


def test_no_secret_value_in_plain_env(copy: Path, rendered: list[dict]) -> None:
    script = _load_script()
    secret_values = {
        value
        for path in copy.glob("**/secrets/*.env")
        for key, value in script.read_env_file(path).items()
        if SECRET_NAME.search(key)
    }
    assert len(secret_values) >= 8
    for obj, _spec, container, _init in _containers(rendered):
        for var in container.get("env", []):
            where = f"{obj['metadata']['name']}/{container['name']}: {var['name']}"
            value = var.get("value")
            if SECRET_NAME.search(var["name"]) and not var["name"].endswith("_FILE"):
                assert value is None or VAR_REF.fullmatch(value), where
                if value is None:
                    assert "secretKeyRef" in var["valueFrom"], where
            for match in URL_CREDENTIALS.finditer(value or ""):
                assert VAR_REF.fullmatch(match.group(2)), where
    # Nothing but the Secrets holds a secret value, encoded or not.
    for obj in rendered:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        for value in secret_values:
            assert value not in text, obj["metadata"]["name"]
            assert base64.b64encode(value.encode()).decode() not in text
        if obj["kind"] == "ConfigMap" and not obj["metadata"]["name"].startswith("grafana"):
            assert not [k for k in obj["data"] if SECRET_NAME.search(k)], obj["metadata"]


def test_fast_api_scales_out(base: list[dict]) -> None:
    deployment = _by_kind(base, "Deployment")["fast-api"]
    assert deployment["spec"]["replicas"] >= 2
    hpa = _by_kind(base, "HorizontalPodAutoscaler")["fast-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fast-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2 < hpa["spec"]["maxReplicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = _by_kind(base, "PodDisruptionBudget")["fast-api"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_api_pods_are_scraped_one_by_one(rendered: list[dict]) -> None:
    """Prometheus resolves the headless Service to every API pod (dns_sd_configs): through
    the Service fast-api each scrape would hit one replica at random."""
    service = _by_kind(rendered, "Service")["fast-api-pods"]
    assert service["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in service["spec"]["ports"]] == [8989]
    config = yaml.safe_load((KOMPOSE / "base" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "fast-api")
    assert job["dns_sd_configs"] == [
        {"names": ["fast-api-pods"], "type": "A", "port": 8989, "refresh_interval": "15s"}
    ]
    assert "static_configs" not in job


def test_service_selectors_match_one_deployment(rendered: list[dict]) -> None:
    deployments = _by_kind(rendered, "Deployment")
    for service_name, service in _by_kind(rendered, "Service").items():
        name = HEADLESS.get(service_name, service_name)
        selector = service["spec"]["selector"]
        matching = [
            d
            for d, obj in deployments.items()
            if selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching == [name], (name, matching)
        deployment = deployments[name]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )


def test_services_find_each_other_by_name_never_by_address(rendered: list[dict]) -> None:
    services = set(_by_kind(rendered, "Service"))
    for obj in rendered:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj, width=10_000)
        assert "minikube" not in text.lower(), obj["metadata"]["name"]
        for match in IP_LITERAL.finditer(text):
            assert match.group(0) in {"0.0.0.0", "127.0.0.1"}, (obj["metadata"], match.group(0))
        settings = obj["metadata"]["name"].startswith(("readmission-settings", "airflow-config"))
        if obj["kind"] in {"Deployment", "Job"} or settings:
            for host in URL_HOST.findall(text):
                # MLFLOW_UI_URL is the browser's link (port-forward): localhost on purpose.
                assert host in services or host == "localhost", (obj["metadata"]["name"], host)


# --- copies and settings in sync with their sources -------------------------------------


def test_prometheus_and_grafana_copies_are_in_sync() -> None:
    """Resync: the commands in kompose/README.md."""
    assert (BASE / "prometheus" / "prometheus.yml").read_text() == (
        monitoring.render_prometheus("kubernetes")
    )
    assert (BASE / "prometheus" / "alerts.yml").read_bytes() == (
        (ROOT / "prometheus" / "alerts.yml").read_bytes()
    )
    sources = {
        p.relative_to(ROOT / "grafana")
        for p in (ROOT / "grafana").rglob("*.*")
        if p.parent != ROOT / "grafana"
    }
    copies = {p.relative_to(BASE / "grafana") for p in (BASE / "grafana").rglob("*.*")}
    assert sources
    assert sources == copies
    for relative in sources:
        assert (BASE / "grafana" / relative).read_bytes() == (
            (ROOT / "grafana" / relative).read_bytes()
        ), relative


def test_configmaps_carry_the_files(base: list[dict]) -> None:
    maps = {
        o["metadata"]["name"].rsplit("-", 1)[0]: o["data"] for o in base if o["kind"] == "ConfigMap"
    }
    assert maps["prometheus-config"] == {
        "prometheus.yml": (BASE / "prometheus" / "prometheus.yml").read_text(),
        "alerts.yml": (BASE / "prometheus" / "alerts.yml").read_text(),
    }
    assert maps["grafana-dashboards"]["proyecto3.json"] == (
        (BASE / "grafana" / "dashboards" / "proyecto3.json").read_text()
    )
    prometheus = _by_kind(base, "Deployment")["prometheus"]["spec"]["template"]["spec"]
    config = next(v for v in prometheus["volumes"] if v["name"] == "config")["configMap"]
    # The config reads its rules at prometheus/alerts.yml, relative to its own folder.
    assert {"key": "alerts.yml", "path": "prometheus/alerts.yml"} in config["items"]
    assert 'rule_files:\n  - "prometheus/alerts.yml"' in maps["prometheus-config"]["prometheus.yml"]


def test_settings_agree_with_env(base: list[dict], env_values: dict[str, str]) -> None:
    settings = _load_script().read_env_file(BASE / "settings.env")
    assert len(settings) >= 20
    for key, value in settings.items():
        assert env_values.get(key) == value, key
    rendered = next(o for o in base if o["metadata"]["name"].startswith("readmission-settings"))
    assert rendered["data"] == settings


def test_every_manifest_says_where_it_came_from() -> None:
    for path in sorted(KOMPOSE.rglob("*.yaml")):
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        text = " ".join(header)
        assert header, path
        assert "kompose convert" in text or "ritten by hand" in text, path
