"""Faults injected into the real processes around the API while it serves.

One MLflow tracking server (`mlflow server`, SQLite backend, proxied artifacts) holds a
Production model trained on synthetic encounters; each test starts the API as deployed
(`uvicorn app.main:app` in its own process, configured by environment) and then stops or
kills what it depends on: the MLflow server (SIGKILL, then a start on the same store and
port) or PostgreSQL (a fast shutdown, then a start). Traffic is real HTTP on loopback.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from readmission import db, pipeline
from readmission.api.schemas import EXAMPLE
from readmission.settings import Settings, get_settings
from tests.support.pgserver import PostgresServer
from tests.support.processes import ApiProcess, MlflowServer
from tests.support.served import build_store

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POLL_SECONDS = 0.5


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.1)


def metric(url: str, name: str) -> float:
    """A sample of the API's /metrics, by its full name with labels."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not exported")


@dataclass
class Traffic:
    """A client posting /predict back to back until stopped; every answer kept in order.
    A request that gets no answer at all (connection refused, timeout) is a failure too."""

    url: str
    first_id: int = 1
    answers: list[tuple[int, str | None]] = field(default_factory=list)  # (status, version)
    sent_ids: list[int] = field(default_factory=list)  # encounter ids answered 200
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_id = self.first_id
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    answer = client.post("/predict", json={**EXAMPLE, "encounter_id": next_id})
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                ok = answer.status_code == 200
                version = answer.json()["model"]["version"] if ok else None
                self.answers.append((answer.status_code, version))
                if ok:
                    self.sent_ids.append(next_id)
                next_id += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_for_more(self, count: int, timeout: float = 30) -> None:
        target = len(self.answers) + count
        wait_for(lambda: len(self.answers) >= target, timeout, f"{count} more answers")

    @property
    def statuses(self) -> set[int]:
        return {status for status, _ in self.answers}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tracking_server: MlflowServer) -> Settings:
    """A synthetic store and a first Production model in the server's registry."""
    settings = build_store(tmp_path_factory.mktemp("store"), tracking_server.url, rows=1_500)
    get_settings.cache_clear()
    pipeline.train_and_promote(["logistic_regression"], "quick", settings)
    return settings


def api_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "DATA_DATABASE_URL": settings.database_url,
        "MLFLOW_TRACKING_URI": settings.mlflow.tracking_uri,
        "READMISSION_STATE_DIR": str(settings.store.state_dir),
        "API_MODEL_POLL_SECONDS": str(POLL_SECONDS),
        "API_REGISTRY_TIMEOUT_SECONDS": "2",
        "API_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
        **extra,
    }


@pytest.fixture
def api_factory(tmp_path: Path) -> Iterator[Callable[..., ApiProcess]]:
    started: list[ApiProcess] = []

    def start(env: dict[str, str], wait_for: str = "/ready") -> ApiProcess:
        api = ApiProcess(tmp_path / f"api{len(started)}", env)
        started.append(api)
        return api.start(wait_for=wait_for)

    yield start
    for api in started:
        api.stop()


def test_mlflow_stopping_never_fails_a_prediction_and_its_return_brings_the_new_model(
    served, tracking_server, api_factory, model_registry
):
    api = api_factory(api_env(served))
    serving = httpx.get(f"{api.url}/ready").json()["model"]["version"]
    # the next model is registered now, promoted only once the registry is back
    candidate = pipeline.train_candidate("logistic_regression", "quick", settings=served)
    new = model_registry.register(candidate["model_uri"]).version
    assert new != serving
    with Traffic(api.url) as traffic:
        traffic.wait_for_more(20)
        tracking_server.stop(signal.SIGKILL)
        wait_for(
            lambda: httpx.get(f"{api.url}/model").json()["registry"]["reachable"] is False,
            timeout=15,
            what="/model to report the registry unreachable",
        )
        described = httpx.get(f"{api.url}/model").json()
        assert described["version"] == serving
        assert described["registry"]["message"].startswith("registry unreachable")
        outage_started = len(traffic.answers)
        time.sleep(6 * POLL_SECONDS)  # several failed registry checks
        assert httpx.get(f"{api.url}/ready").status_code == 200
        assert len(traffic.answers) > outage_started + 10, "serving stalled during the outage"
        assert metric(api.url, 'api_model_reloads_total{result="failure"}') >= 2

        tracking_server.start()  # same backend store, same port
        model_registry.promote(new, reason="test: promoted after the registry came back")
        wait_for(
            lambda: httpx.get(f"{api.url}/ready").json()["model"]["version"] == new,
            timeout=60,
            what=f"v{new} to be served",
        )
        traffic.wait_for_more(10)
    assert traffic.errors == []
    assert traffic.statuses == {200}, "a prediction failed"
    versions = [version for _, version in traffic.answers]
    first_new = versions.index(new)
    assert set(versions[:first_new]) == {serving}
    assert set(versions[first_new:]) == {new}, "the old model answered after the swap"
    registry_status = httpx.get(f"{api.url}/model").json()["registry"]
    assert registry_status["reachable"] is True


def test_an_api_started_while_mlflow_is_down_becomes_ready_when_it_returns(
    served, tracking_server, api_factory, model_registry
):
    production = model_registry.champion().version
    tracking_server.stop(signal.SIGKILL)
    try:
        api = api_factory(api_env(served), wait_for="/health")

        def refused_because_unreachable() -> bool:
            answer = httpx.get(f"{api.url}/ready")
            assert answer.status_code == 503
            return answer.json()["registry"]["reachable"] is False

        wait_for(refused_because_unreachable, timeout=15, what="a registry check")
        answer = httpx.get(f"{api.url}/ready").json()
        assert "no model loaded" in answer["detail"]
        assert answer["registry"]["message"].startswith("registry unreachable")
        refused = httpx.post(f"{api.url}/predict", json=EXAMPLE)
        assert refused.status_code == 503
        assert "registry cannot be reached" in refused.json()["detail"]
    finally:
        tracking_server.start()
    wait_for(
        lambda: httpx.get(f"{api.url}/ready").status_code == 200,
        timeout=60,
        what="the API to load the Production model by itself",
    )
    assert httpx.get(f"{api.url}/ready").json()["model"]["version"] == production
    answer = httpx.post(f"{api.url}/predict", json=EXAMPLE)
    assert answer.status_code == 200
    assert answer.json()["model"]["version"] == production
    assert api.starts == 1  # the same process throughout: no restart


@pytest.fixture(scope="module")
def log_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of its own, so that stopping it disturbs no other test."""
    server = PostgresServer().start()
    yield server
    server.cleanup()


def logged_ids(url: str, first: int, last: int) -> list[int]:
    """Encounter ids logged in [first, last], duplicates kept (None when PostgreSQL is down)."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            ids = conn.scalars(
                sa.select(db.predictions.c.encounter_id).where(
                    db.predictions.c.encounter_id.between(first, last)
                )
            )
            return sorted(ids)
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


def test_postgres_restart_under_traffic_loses_no_logged_prediction(
    served, tracking_server, api_factory, log_postgres
):
    url = log_postgres.url()
    first = 1_000_000
    api = api_factory(api_env(served, DATA_DATABASE_URL=url))
    with Traffic(api.url, first_id=first) as traffic:
        traffic.wait_for_more(30)
        wait_for(
            lambda: len(logged_ids(url, first, first + 10**6) or []) >= 30,
            timeout=20,
            what="the first predictions to be logged",
        )
        log_postgres.stop()
        traffic.wait_for_more(30)  # answered while PostgreSQL is down
        time.sleep(1.0)
        assert metric(api.url, "api_prediction_log_write_failures_total") >= 1
        log_postgres.restart()
        traffic.wait_for_more(30)
    assert traffic.errors == []
    assert traffic.statuses == {200}, "a prediction failed while PostgreSQL restarted"
    sent = sorted(traffic.sent_ids)
    wait_for(
        lambda: logged_ids(url, first, first + 10**6) == sent,
        timeout=60,
        what="every prediction to be logged exactly once",
    )
    assert metric(api.url, "api_prediction_log_dropped_rows_total") == 0
    assert metric(api.url, "api_prediction_log_written_rows_total") == len(sent)
    assert metric(api.url, "api_prediction_log_queue_rows") == 0


def test_an_outage_longer_than_the_queue_drops_the_oldest_rows_and_counts_them_exactly(
    served, tracking_server, api_factory, log_postgres
):
    url = log_postgres.url()
    capacity, before, during = 20, 10, 50
    first = 2_000_000
    api = api_factory(
        api_env(served, DATA_DATABASE_URL=url, API_PREDICTION_LOG_QUEUE=str(capacity))
    )

    def predict(encounter_id: int) -> None:
        answer = httpx.post(f"{api.url}/predict", json={**EXAMPLE, "encounter_id": encounter_id})
        assert answer.status_code == 200

    for offset in range(before):
        predict(first + offset)
    wait_for(
        lambda: len(logged_ids(url, first, first + 999) or []) == before,
        timeout=20,
        what="the first predictions to be logged",
    )
    log_postgres.stop()
    try:
        outage = [first + before + offset for offset in range(during)]
        for encounter_id in outage:
            predict(encounter_id)  # answered although the log cannot keep them all
        wait_for(
            lambda: metric(api.url, "api_prediction_log_dropped_rows_total") == during - capacity,
            timeout=10,
            what="the overflow to be counted",
        )
    finally:
        log_postgres.restart()
    expected = list(range(first, first + before)) + outage[-capacity:]  # the newest rows kept
    wait_for(
        lambda: logged_ids(url, first, first + 999) == expected,
        timeout=60,
        what="the queued rows to be written",
    )
    assert metric(api.url, "api_prediction_log_dropped_rows_total") == during - capacity
    assert metric(api.url, "api_prediction_log_written_rows_total") == before + capacity
    assert metric(api.url, "api_prediction_log_queue_rows") == 0
