"""The monitoring files as code: the committed renderings equal what the package renders,
promtool accepts the configuration of every mode and the rules, the alert unit tests pass,
and the Grafana provisioning agrees with the dashboard."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from readmission.ops import monitoring
from readmission.ops.alerts import render_alerts
from tests.support.tools import require

ROOT = monitoring.PROJECT_ROOT


def _promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run promtool; the assertion message carries its output."""
    return subprocess.run(
        [require("promtool", "prometheus"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_committed_prometheus_config_is_the_compose_rendering():
    committed = (ROOT / "prometheus.yml").read_text(encoding="utf-8")
    assert committed == monitoring.render_prometheus("compose"), (
        "prometheus.yml differs from its template: run `python -m readmission.ops.monitoring "
        "render-prometheus --mode compose --out prometheus.yml`"
    )


def test_committed_dashboard_is_the_builders_output():
    committed = (ROOT / "grafana" / "dashboards" / "proyecto3.json").read_text(encoding="utf-8")
    assert committed == monitoring.render_dashboard(), (
        "grafana/dashboards/proyecto3.json differs from the builder: run `python -m "
        "readmission.ops.monitoring render-dashboard --out grafana/dashboards/proyecto3.json`"
    )


def test_committed_alert_rules_are_the_rendering_with_the_shared_metric_names():
    committed = (ROOT / "prometheus" / "alerts.yml").read_text(encoding="utf-8")
    assert committed == render_alerts(), (
        "prometheus/alerts.yml differs from readmission/ops/alerts.py: run `python -m "
        "readmission.ops.monitoring render-alerts --out prometheus/alerts.yml`"
    )
    assert "@" not in committed.replace("{{", "")  # every placeholder was a known name


def _targets(job: dict) -> list[str]:
    """A job's static targets, or its DNS discovery spelled `dns TYPE NAME:PORT`."""
    if "dns_sd_configs" in job:
        (dns,) = job["dns_sd_configs"]
        return [f"dns {dns['type']} {name}:{dns['port']}" for name in dns["names"]]
    return job["static_configs"][0]["targets"]


@pytest.mark.parametrize(
    ("mode", "api_target", "prometheus_target"),
    [
        ("compose", "fast-api:8989", "localhost:9090"),
        ("kubernetes", "dns A fast-api-pods:8989", "localhost:9090"),
        ("local", "127.0.0.1:8989", "127.0.0.1:9090"),
    ],
)
def test_each_mode_scrapes_its_api_every_5_seconds_and_loads_the_rules(
    mode: str, api_target: str, prometheus_target: str
):
    config = yaml.safe_load(monitoring.render_prometheus(mode))
    assert config["global"]["scrape_interval"] == "5s"
    assert config["global"]["external_labels"] == {"deployment": mode}
    jobs = {job["job_name"]: _targets(job) for job in config["scrape_configs"]}
    assert jobs == {"fast-api": [api_target], "prometheus": [prometheus_target]}
    (rules,) = config["rule_files"]
    assert rules.endswith("prometheus/alerts.yml")


def test_local_mode_takes_another_api_port_and_the_cli_writes_the_file(tmp_path: Path):
    out = tmp_path / "prometheus" / "prometheus.yml"
    monitoring.main(
        [
            "render-prometheus",
            "--mode",
            "local",
            "--api-target",
            "127.0.0.1:18989",
            "--prometheus-target",
            "127.0.0.1:19090",
            "--out",
            str(out),
        ]
    )
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:18989"]
    assert config["rule_files"] == [str(monitoring.RULES_FILE)]


@pytest.mark.parametrize("target", ["fast-api", "http://fast-api:8989", "a b:1", "x:99999x"])
def test_a_target_that_is_not_host_port_is_refused(target: str):
    with pytest.raises(ValueError, match="HOST:PORT"):
        monitoring.render_prometheus("local", api_target=target)


def test_promtool_accepts_the_committed_config_and_its_rules():
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("mode", sorted(monitoring.MODES))
def test_promtool_accepts_every_modes_rendering(mode: str, tmp_path: Path):
    # compose and kubernetes resolve the rules next to the file, as when mounted
    (tmp_path / "prometheus").mkdir()
    shutil.copy(monitoring.RULES_FILE, tmp_path / "prometheus" / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(monitoring.render_prometheus(mode))
    checked = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_accepts_the_rules():
    checked = _promtool("check", "rules", "prometheus/alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "7 rules found" in checked.stdout


def test_alert_unit_tests_pass():
    tested = _promtool("test", "rules", "prometheus/alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_severity_a_summary_and_a_description():
    groups = yaml.safe_load(monitoring.RULES_FILE.read_text(encoding="utf-8"))["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    assert set(alerts) == {
        "ApiDown",
        "ApiHighErrorRatio",
        "ApiSlowP95",
        "NoPredictionsWhileRequestsArrive",
        "ModelReloadFailures",
        "InputDrift",
        "RealizedPerformanceDrop",
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name


def test_grafana_provisions_the_datasource_the_dashboard_uses():
    provisioning = ROOT / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["uid"] == monitoring.DATASOURCE_UID
    assert source["type"] == "prometheus"
    assert source["url"] == "${PROMETHEUS_URL}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(monitoring.render_dashboard())
    assert dashboard["title"] == "Proyecto 3"
    panels = dashboard["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    assert len({p["title"] for p in panels}) == len(panels)
    for panel in panels:
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}


def test_the_dashboard_keeps_the_original_three_panels():
    panels = {p["title"]: p for p in json.loads(monitoring.render_dashboard())["panels"]}
    exprs = {title: [t["expr"] for t in panel["targets"]] for title, panel in panels.items()}
    assert exprs["Total Requests"] == [
        'sum(api_http_requests_total{job="fast-api", handler=~"/predict|/predict/batch"})'
    ]
    assert exprs["Memory usage (MB)"] == [
        'process_resident_memory_bytes{job="fast-api"} / 1024 / 1024'
    ]
    assert exprs["CPU usage (CPU seconds per second)"] == [
        'rate(process_cpu_seconds_total{job="fast-api"}[1m])'
    ]


def test_the_package_rooms_import_ops_only_from_the_cli():
    """docs/architecture.md's rule: the life-cycle rooms and the API never reach into ops/."""
    package = ROOT / "readmission"
    offenders = [
        str(path.relative_to(ROOT))
        for path in package.rglob("*.py")
        if path.parent.name != "ops"
        and path.name != "__main__.py"
        and "readmission.ops" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
