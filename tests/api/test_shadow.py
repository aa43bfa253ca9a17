"""Shadow scoring over HTTP: with API_SHADOW=true the API scores every request with the
registry's `challenger` too, after answering, logs both answers, and GET /model/shadow
compares them; a failing challenger never fails a request."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import db, pipeline
from readmission.api import create_app
from readmission.api.schemas import EXAMPLE
from readmission.registry import Registry
from tests.support.served import World
from tests.support.servers import ServerThread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def challenger(trained) -> str:
    """A second version, not promoted, holding the `challenger` alias."""
    logged = pipeline.train_candidate("logistic_regression", "quick", settings=trained)
    registry = Registry.from_settings(trained)
    version = registry.register(logged["model_uri"]).version
    registry.set_challenger(version, reason="test: tried in the shadow")
    return version


@pytest.fixture(scope="module")
def shadowing(trained, challenger) -> Iterator[World]:
    settings = trained.updated(API_SHADOW=True)
    server = ServerThread(create_app(settings)).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    world = World(settings, server.url, client, server)
    world.wait_for(lambda: client.get("/ready").status_code == 200)
    world.wait_for(lambda: server.app.state.services.store.challenger is not None)
    yield world
    client.close()
    server.stop()


def _logged(settings) -> pd.DataFrame:
    with pipeline.engine(settings).connect() as conn:
        return pd.read_sql(sa.select(db.predictions), conn)


def test_every_request_is_also_scored_by_the_challenger_and_both_are_logged(shadowing, challenger):
    served = shadowing.client.get("/ready").json()["model"]["version"]
    assert served != challenger
    before = len(_logged(shadowing.settings))
    bodies = [
        {**EXAMPLE, "encounter_id": 900_000 + i, "time_in_hospital": 1 + i % 9} for i in range(30)
    ]
    for body in bodies[:10]:
        answer = shadowing.client.post("/predict", json=body)
        assert answer.status_code == 200
        assert answer.json()["model"]["version"] == served  # the challenger never answers
    batch = shadowing.client.post("/predict/batch", json={"encounters": bodies[10:]})
    assert batch.status_code == 200

    shadowing.wait_for(lambda: len(_logged(shadowing.settings)) >= before + 60, timeout=10)
    logged = _logged(shadowing.settings).iloc[before:]
    roles = logged.groupby("role")["model_version"].agg(set).to_dict()
    assert roles == {"served": {served}, "shadow": {challenger}}
    assert sorted(logged.loc[logged["role"] == "shadow", "encounter_id"]) == [
        b["encounter_id"] for b in bodies
    ]

    report = shadowing.client.get("/model/shadow").json()
    assert report["challenger"]["version"] == challenger
    assert report["challenger"]["alias"] == "challenger"
    assert report["served"]["version"] == served
    comparison = report["comparison"]
    assert (comparison["served_version"], comparison["challenger_version"]) == (served, challenger)
    assert comparison["encounters"] == 30
    assert 0 <= comparison["class_agreement"] <= 1
    assert comparison["mean_abs_risk_difference"] > 0  # two different models
    shadow_rows = logged[logged["role"] == "shadow"].set_index("encounter_id")
    served_rows = logged[logged["role"] == "served"].set_index("encounter_id")
    gap = (shadow_rows["probability_lt30"] - served_rows["probability_lt30"]).abs().mean()
    assert comparison["mean_abs_risk_difference"] == pytest.approx(gap, abs=1e-5)
    assert comparison["challenger_failures"] == 0
    assert comparison["challenger_latency_ms"]["p50"] > 0


def test_a_challenger_that_fails_never_fails_a_request(shadowing, monkeypatch):
    store = shadowing.server.app.state.services.store
    failures = shadowing.client.get("/model/shadow").json()["comparison"]["challenger_failures"]

    def broken(*args, **kwargs):
        raise RuntimeError("the challenger's files are corrupt")

    monkeypatch.setattr(store.challenger.model, "predict_proba", broken)
    monkeypatch.setattr(store.challenger.model, "compiled_", None, raising=False)
    for _ in range(3):
        assert shadowing.client.post("/predict", json=EXAMPLE).status_code == 200

    def counted() -> int:  # the shadow runs after the answer is sent: it may lag a little
        return shadowing.client.get("/model/shadow").json()["comparison"]["challenger_failures"]

    shadowing.wait_for(lambda: counted() >= failures + 3, timeout=10)


def test_the_shadow_report_says_when_shadowing_is_off(world):
    answer = world.client.get("/model/shadow")
    assert answer.status_code == 409
    assert "API_SHADOW=true" in answer.json()["detail"]


def test_the_realized_performance_of_both_is_reported_once_outcomes_are_known(
    shadowing, challenger
):
    with pipeline.engine(shadowing.settings).connect() as conn:
        stored = pd.read_sql(
            sa.select(db.clean_encounters.c.encounter_id, db.clean_encounters.c.patient_nbr)
            .order_by(db.clean_encounters.c.encounter_id.desc())
            .limit(50),
            conn,
        )
    bodies = [
        {**EXAMPLE, "encounter_id": int(r.encounter_id), "patient_nbr": int(r.patient_nbr)}
        for r in stored.itertuples()
    ]
    assert shadowing.client.post("/predict/batch", json={"encounters": bodies}).status_code == 200
    ids = set(stored["encounter_id"])

    def logged_both() -> bool:
        logged = _logged(shadowing.settings)
        mine = logged[logged["encounter_id"].isin(ids)]
        return set(mine["role"]) == {"served", "shadow"} and len(mine) >= 100

    shadowing.wait_for(logged_both, timeout=10)
    pipeline.measure_performance(shadowing.settings)
    report = shadowing.client.get("/model/shadow").json()
    measured = {line["version"]: line for line in report["performance"]}
    served = report["served"]["version"]
    assert set(measured) == {served, challenger}
    for line in measured.values():
        assert line["outcomes"] >= 50
        assert line["macro_f1"]["realized"] is not None
