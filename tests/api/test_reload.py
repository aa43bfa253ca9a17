"""Hot reload: a newly promoted model is served without a restart, and a broken registry
or model never interrupts serving."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from readmission import pipeline
from readmission.api.schemas import EXAMPLE
from readmission.registry import MODEL_NAME, Registry
from tests.support.pgserver import free_port

pytestmark = pytest.mark.slow


def _failures(world) -> float:
    for line in world.client.get("/metrics").text.splitlines():
        if line.startswith('api_model_reloads_total{result="failure"}'):
            return float(line.split()[-1])
    raise AssertionError("no reload failure counter")


def _promote_new_version(settings, family: str) -> str:
    result = pipeline.train_and_promote([family], "quick", settings)
    version = result["decision"]["version"]
    Registry.from_settings(settings).promote(
        version, reason="test: force a new version into service"
    )
    return version


def test_a_promoted_model_is_served_within_the_poll_interval_without_failed_requests(world, caplog):
    caplog.set_level(logging.INFO, logger="readmission.api.model_store")
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            answer = world.client.post("/predict", json=EXAMPLE)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                versions.append(answer.json()["model"]["version"])

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        new = _promote_new_version(world.settings, "logistic_regression")
        world.wait_for(
            lambda: world.client.get("/ready").json()["model"]["version"] == new, timeout=10
        )
        world.wait_for(lambda: len(versions) > 0 and versions[-1] == new, timeout=10)
    finally:
        stop.set()
        sender.join()
    assert set(statuses) == {200}, "a request failed during the swap"
    first_new = versions.index(new)
    assert set(versions[first_new:]) == {new}, "an old model answered after the swap"
    assert world.client.get("/model").json()["version"] == new

    # the swap is logged once it is made, which may be just after /ready shows it; the
    # first load (v1, "was none") is the fixture's, logged as late, maybe in this test
    def swaps() -> list[tuple[str, str]]:
        return [
            (r.levelname, r.getMessage().split(", loaded in")[0])
            for r in caplog.records
            if r.getMessage().startswith(f"now serving {MODEL_NAME}")
            and "(was none)" not in r.getMessage()
        ]

    world.wait_for(swaps, timeout=10)
    assert swaps() == [("INFO", f"now serving {MODEL_NAME} v{new} (was v{versions[0]})")]


def test_an_unreachable_registry_keeps_the_model_serving_and_is_reported(world):
    before = _failures(world)
    serving = world.client.get("/ready").json()["model"]["version"]
    store = world.server.app.state.services.store
    serving_registry = store.registry
    store.registry = Registry(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        result = world.client.post("/model/reload").json()
        assert "registry unreachable" in result["result"]
        assert world.client.get("/ready").status_code == 200
        answer = world.client.post("/predict", json=EXAMPLE)
        assert answer.status_code == 200
        assert answer.json()["model"]["version"] == serving
        assert world.client.get("/model").json()["registry"]["reachable"] is False
        assert _failures(world) > before
    finally:
        store.registry = serving_registry
    world.client.post("/model/reload")
    assert world.client.get("/model").json()["registry"]["reachable"] is True


def test_a_new_model_that_fails_to_load_leaves_the_current_one_serving(world, model_registry):
    serving = world.client.get("/ready").json()["model"]["version"]
    before = _failures(world)
    # a candidate registered without the promotion step (which could promote it, and the API
    # load it, before its files are gone), its files removed, then promoted by hand
    logged = pipeline.train_candidate("hist_gradient_boosting", "quick", settings=world.settings)
    entry = model_registry.register(logged["model_uri"])
    version, source = entry.version, model_registry.describe(entry)["source"]
    import mlflow

    model_id = source.split("/")[-1]
    location = Path(
        urlparse(mlflow.MlflowClient().get_logged_model(model_id).artifact_location).path
    )
    shutil.rmtree(location)
    model_registry.promote(version, reason="test: a model whose files are gone")
    world.wait_for(lambda: _failures(world) > before, timeout=10)
    assert world.client.get("/ready").json()["model"]["version"] == serving
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200
    message = world.client.get("/model").json()["registry"]["message"]
    assert f"v{version} failed to load" in message
    # what /model says of the version still serving is the registry's word now, not at load:
    # it no longer holds the alias
    described = world.client.get("/model").json()
    assert described["version"] == serving
    assert "production" not in described["aliases"]
    assert described["described_at"] >= described["loaded_at"]


def test_model_shows_the_registry_as_it_is_now_not_as_it_was_at_load(world):
    import mlflow

    serving = world.client.get("/model").json()
    assert "reviewed_by" not in serving["tags"]
    mlflow.MlflowClient().set_model_version_tag(
        MODEL_NAME, serving["version"], "reviewed_by", "the care team"
    )
    world.client.post("/model/reload")  # or the next poll
    now = world.client.get("/model").json()
    assert now["version"] == serving["version"]
    assert now["tags"]["reviewed_by"] == "the care team"
    assert now["loaded_at"] == serving["loaded_at"]  # not loaded again
