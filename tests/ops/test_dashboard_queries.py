"""Every query of the committed "Proyecto 3" dashboard returns data from a real Prometheus
scraping the real API while requests flow, with the alert rules loaded and evaluated.

The requests are encounters of the world's store, whose outcomes `clean_data` holds, and
model_performance_pipeline's work runs once they are logged: the performance panels then
have realized, estimated and test figures to show."""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import pytest

from readmission import pipeline, schema
from readmission.ops import monitoring
from tests.support.pgserver import free_port
from tests.support.tools import require

pytestmark = pytest.mark.slow
DASHBOARD = monitoring.PROJECT_ROOT / "grafana" / "dashboards" / "proyecto3.json"
PANELS = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
MIN_SCRAPES = 5  # rate() and increase() need two samples in their window; 1 s scrapes
DATA_TIMEOUT = 30  # seconds after Prometheus is ready for every panel to have data
WARM_UP_ENCOUNTERS = 600  # fills the API's drift window before Prometheus starts
MEASURE_TIMEOUT = 60  # seconds for the warm-up's predictions to reach the prediction log


def _encounters(csv: Path, n: int) -> list[dict]:
    """The first `n` encounters of the store's file as a client sends them (integers as
    numbers, '?' for missing), without their outcome."""
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False, nrows=n)
    return schema.request_records(frame.to_dict("records"))


@dataclass
class Traffic:
    """Requests sent to the API from a thread: valid ones, batches and a few 422s."""

    url: str
    encounters: list[dict]
    stop: threading.Event = field(default_factory=threading.Event)
    #: Set once the warm-up's batches are answered.
    warmed: threading.Event = field(default_factory=threading.Event)
    sent: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def _post(self, client: httpx.Client, path: str, body: dict) -> None:
        try:
            status = client.post(path, json=body).status_code
        except httpx.HTTPError as exc:
            self.errors.append(f"{path}: {exc!r}")
            return
        self.sent[status] = self.sent.get(status, 0) + 1

    def warm_up(self, client: httpx.Client, encounters: list[dict]) -> None:
        """Enough encounters, in batches, for the API's drift window."""
        for start in range(0, WARM_UP_ENCOUNTERS, 100):
            self._post(client, "/predict/batch", {"encounters": encounters[start : start + 100]})

    def run(self) -> None:
        """Until stopped: a valid /predict, every 5th turn a batch, every 10th a 422."""
        encounters = self.encounters
        with httpx.Client(base_url=self.url, timeout=30) as client:
            self.warm_up(client, encounters)
            self.warmed.set()
            turn = 0
            while not self.stop.is_set():
                self._post(client, "/predict", encounters[turn % len(encounters)])
                if turn % 5 == 0:
                    start = (turn * 7) % (len(encounters) - 20)
                    self._post(
                        client, "/predict/batch", {"encounters": encounters[start : start + 20]}
                    )
                if turn % 10 == 0:
                    self._post(client, "/predict", {"num_lab_procedures": 999})
                turn += 1
                self.stop.wait(0.02)  # pacing: ~30 requests a second


@dataclass
class Prometheus:
    """A Prometheus process on 127.0.0.1 and a client of its HTTP API."""

    process: subprocess.Popen
    url: str
    log: Path
    client: httpx.Client

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector (Prometheus's errors raise)."""
        answer = self.client.get("/api/v1/query", params={"query": expr})
        body = answer.json()
        assert answer.status_code == 200, (expr, body)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def log_tail(self) -> str:
        """The end of Prometheus's log, for failure messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def _has_data(result: list[dict]) -> bool:
    """At least one series with a finite value (NaN: 0/0 or no observation)."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


def _all_panels_have_data(prometheus: Prometheus) -> bool:
    """Every target of every panel has data now."""
    return all(
        _has_data(prometheus.query(target["expr"]))
        for panel in PANELS
        for target in panel["targets"]
    )


@pytest.fixture(scope="module")
def traffic(world) -> Iterator[Traffic]:
    """Requests flowing to the world's API for the whole module."""
    flowing = Traffic(world.url, _encounters(world.settings.dataset.csv, WARM_UP_ENCOUNTERS))
    thread = threading.Thread(target=flowing.run, daemon=True, name="traffic")
    thread.start()
    yield flowing
    flowing.stop.set()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def measured(world, traffic) -> dict:
    """model_performance_pipeline's measure once the warm-up's predictions are logged: every
    version's realized, estimated and test figures, which the API then exports."""
    assert traffic.warmed.wait(MEASURE_TIMEOUT), f"no warm-up: {traffic.errors[:3]}"
    deadline = time.monotonic() + MEASURE_TIMEOUT
    while True:
        summary = pipeline.measure_performance(world.settings)
        if summary["predictions"] >= WARM_UP_ENCOUNTERS:
            break
        assert time.monotonic() < deadline, f"the warm-up is not logged: {summary}"
        time.sleep(0.5)
    assert summary["outcomes"] > 0, summary
    return summary


@pytest.fixture(scope="module")
def prometheus(world, traffic, measured, tmp_path_factory) -> Iterator[Prometheus]:
    """Prometheus scraping the world's API every second, with the project's alert rules."""
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = root / "prometheus.yml"
    config.write_text(
        monitoring.render_prometheus(
            "local",
            api_target=world.url.removeprefix("http://"),
            prometheus_target=f"127.0.0.1:{port}",
            scrape_interval="1s",
        )
    )
    log = root / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                require("prometheus", "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = Prometheus(process, url, log, httpx.Client(base_url=url, timeout=10))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"Prometheus exited:\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"Prometheus not ready:\n{server.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if server.client.get("/-/ready").status_code == 200:
                    break
            time.sleep(0.1)
        yield server
    finally:
        server.client.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def scraped(prometheus, traffic) -> Prometheus:
    """Prometheus once it holds MIN_SCRAPES of the API and has evaluated the rules, and
    every panel has data, or DATA_TIMEOUT has passed (the panel tests then say which)."""
    started = time.monotonic()
    scrapes = f'count_over_time(up{{job="{monitoring.API_JOB}"}}[1m])'
    while True:
        counted = prometheus.query(scrapes)
        rules = prometheus.client.get("/api/v1/rules").json()["data"]["groups"]
        ready = (
            bool(counted)
            and float(counted[0]["value"][1]) >= MIN_SCRAPES
            and bool(rules)
            and all(r["health"] != "unknown" for g in rules for r in g["rules"])
        )
        if ready and _all_panels_have_data(prometheus):
            break
        if time.monotonic() - started >= DATA_TIMEOUT:
            assert ready, (
                f"Prometheus did not scrape the API {MIN_SCRAPES} times or evaluate the "
                f"rules in {DATA_TIMEOUT} s; traffic {traffic.sent} {traffic.errors[:3]}\n"
                f"{prometheus.log_tail()}"
            )
            break
        time.sleep(0.5)
    assert not traffic.errors, traffic.errors[:5]
    return prometheus


def test_prometheus_scrapes_the_api_and_evaluates_every_alert_rule(scraped, traffic):
    targets = scraped.client.get("/api/v1/targets").json()["data"]["activeTargets"]
    health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
    assert health[monitoring.API_JOB] == ("up", "")
    rules = {
        rule["name"]: (rule["health"], rule.get("lastError", ""))
        for group in scraped.client.get("/api/v1/rules").json()["data"]["groups"]
        for rule in group["rules"]
    }
    assert set(rules) == {
        "ApiDown",
        "ApiHighErrorRatio",
        "ApiSlowP95",
        "NoPredictionsWhileRequestsArrive",
        "ModelReloadFailures",
        "InputDrift",
        "RealizedPerformanceDrop",
    }
    assert all(health == "ok" for health, _ in rules.values()), rules
    assert traffic.sent.get(200, 0) > 50, traffic.sent
    assert traffic.sent.get(422, 0) > 0, traffic.sent


@pytest.mark.parametrize("panel", PANELS, ids=[panel["title"] for panel in PANELS])
def test_panel_query_returns_data(scraped, world, panel: dict):
    empty = [
        target["expr"]
        for target in panel["targets"]
        if not _has_data(scraped.query(target["expr"]))
    ]
    if empty:
        exported = _exported_names(world.client.get("/metrics").text)
        missing = sorted({name for expr in empty for name in _metric_names(expr)} - exported)
        reason = (
            f"the API does not export {', '.join(missing)}"
            if missing
            else "the API exports its metrics but Prometheus returns no finite value"
        )
        pytest.fail(f"panel {panel['title']!r}: {reason}; queries without data: {empty}")


def test_the_performance_panels_set_realized_estimated_and_test_figures_side_by_side(
    scraped, measured
):
    panels = {panel["title"]: panel for panel in PANELS}
    figures = panels["Realized vs estimated <30 ROC-AUC"]["targets"][0]["expr"]
    sources = {series["metric"]["source"] for series in scraped.query(figures)}
    assert sources == {"realized", "estimated", "test"}
    counts = panels["Outcomes known vs predictions (recent window)"]["targets"][0]["expr"]
    rows = scraped.query(counts)
    outcomes = {series["metric"]["kind"]: float(series["value"][1]) for series in rows}
    assert outcomes["outcomes"] == measured["outcomes"], outcomes
    assert outcomes["predictions"] >= outcomes["outcomes"], outcomes


def _base_name(name: str) -> str:
    """A histogram's name without its series suffix."""
    return re.sub(r"_(bucket|sum|count|created)$", "", name)


def _metric_names(expr: str) -> set[str]:
    """The project's metric names an expression mentions (api_* and process_*)."""
    return {_base_name(name) for name in re.findall(r"\b(?:api|process)_[a-z_]+", expr)}


def _exported_names(exposition: str) -> set[str]:
    """The metric names of a /metrics page."""
    return {
        _base_name(re.split(r"[{ ]", line, maxsplit=1)[0])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
