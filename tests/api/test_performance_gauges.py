"""The API exports what model_performance_pipeline measured: each version's recent window
as gauges, and the alert's margin and minimum, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import db, pipeline
from readmission.api import create_app
from readmission.api.schemas import EXAMPLE
from tests.support.served import World
from tests.support.servers import ServerThread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(trained) -> Iterator[World]:
    settings = trained.updated(
        PERFORMANCE_REFRESH_SECONDS=0.2, PERFORMANCE_DROP_MARGIN=0.04, PERFORMANCE_MIN_OUTCOMES=30
    )
    server = ServerThread(create_app(settings)).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    world = World(settings, server.url, client, server)
    world.wait_for(lambda: client.get("/ready").status_code == 200)
    yield world
    client.close()
    server.stop()


def _gauges(world) -> dict[str, float]:
    found = {}
    for line in world.client.get("/metrics").text.splitlines():
        if line.startswith("api_model_performance") or line.startswith("api_performance_"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def test_served_predictions_measured_against_their_outcomes_become_gauges(served):
    assert _gauges(served)["api_performance_drop_margin"] == 0.04
    assert _gauges(served)["api_performance_min_outcomes"] == 30
    assert not any(name.startswith("api_model_performance{") for name in _gauges(served))

    with pipeline.engine(served.settings).connect() as conn:
        stored = pd.read_sql(
            sa.select(db.clean_encounters.c.encounter_id, db.clean_encounters.c.patient_nbr)
            .order_by(db.clean_encounters.c.encounter_id)
            .limit(80),
            conn,
        )
    encounters = [
        {**EXAMPLE, "encounter_id": int(row.encounter_id), "patient_nbr": int(row.patient_nbr)}
        for row in stored.itertuples()
    ]
    answer = served.client.post("/predict/batch", json={"encounters": encounters})
    assert answer.status_code == 200, answer.text
    version = answer.json()["model"]["version"]

    def logged() -> int:
        with pipeline.engine(served.settings).connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(db.predictions))

    served.wait_for(lambda: logged() >= 80, timeout=10)
    pipeline.measure_performance(served.settings)
    (recent,) = [
        r for r in pipeline.performance_report(served.settings) if r["window_kind"] == "recent"
    ]
    assert (recent["predictions"], recent["outcomes"]) == (80, 80)

    key = f'api_model_performance{{metric="roc_auc_lt30",source="realized",version="{version}"}}'
    served.wait_for(lambda: key in _gauges(served), timeout=10)
    gauges = _gauges(served)
    assert gauges[key] == pytest.approx(recent["realized_roc_auc_lt30"])
    estimated = key.replace('source="realized"', 'source="estimated"')
    assert gauges[estimated] == pytest.approx(recent["estimated_roc_auc_lt30"])
    test = key.replace('source="realized"', 'source="test"')
    assert gauges[test] == pytest.approx(recent["test_roc_auc_lt30"])
    rows = f'api_model_performance_rows{{kind="outcomes",version="{version}"}}'
    assert gauges[rows] == 80
