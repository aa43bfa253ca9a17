"""The patient's history as the API looks it up, and the prediction log when PostgreSQL stops."""

from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import db, pipeline, training
from readmission.api import create_app
from readmission.api.history import lookup
from readmission.api.schemas import EXAMPLE
from readmission.features import HISTORY, add_history
from tests.support.pgserver import PostgresServer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.slow


def test_history_looked_up_for_a_request_equals_what_training_saw(trained):
    engine = pipeline.engine(trained)
    with engine.connect() as conn:
        clean = pd.read_sql(sa.select(db.clean_encounters), conn)
    with_history = add_history(clean)
    busiest = with_history.sort_values("prior_encounters").iloc[-20:]
    records = busiest[["encounter_id", "patient_nbr"]].to_dict("records")
    found = lookup(engine, records)
    for (_, row), figures in zip(busiest.iterrows(), found, strict=True):
        assert figures == {name: float(row[name]) for name in HISTORY}
    assert lookup(engine, [{"patient_nbr": None}]) == [dict.fromkeys(HISTORY, 0.0)]


def test_a_known_patient_gets_a_different_answer_than_an_unknown_one(world):
    data = training.load_training_data(pipeline.engine(world.settings))
    frame = pd.concat(data.frames.values())
    patient = frame.sort_values("prior_encounters").iloc[-1]
    request = {**EXAMPLE, "encounter_id": None}
    known = world.client.post("/predict", json={**request, "patient_nbr": int(patient.patient_nbr)})
    unknown = world.client.post("/predict", json={**request, "patient_nbr": 1})
    assert known.status_code == unknown.status_code == 200
    assert known.json()["probabilities"] != unknown.json()["probabilities"]


@pytest.fixture
def own_postgres():
    server = PostgresServer().start()
    yield server
    server.cleanup()


def test_predictions_succeed_while_postgres_is_down_and_the_log_catches_up(trained, own_postgres):
    settings = trained.model_copy(update={"data_database_url": own_postgres.url(),
                                          "prediction_log_flush_seconds": 0.2})  # fmt: skip
    server = ServerThread(create_app(settings)).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    engine = db.make_engine(own_postgres.url())

    def logged() -> int:
        with engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.count()).select_from(db.predictions))

    try:
        deadline = time.monotonic() + 20
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(10):
            assert client.post("/predict", json=EXAMPLE).status_code == 200
        while logged() < 10:
            assert time.monotonic() < deadline + 20
            time.sleep(0.1)
        engine.dispose()
        own_postgres.stop()
        answers = [client.post("/predict", json=EXAMPLE).status_code for _ in range(30)]
        assert set(answers) == {200}  # the database being down never fails a prediction
        time.sleep(1.0)
        metrics = client.get("/metrics").text
        failures = next(float(line.split()[-1]) for line in metrics.splitlines()
                        if line.startswith("api_prediction_log_write_failures_total "))  # fmt: skip
        assert failures >= 1
        own_postgres.restart()
        deadline = time.monotonic() + 60  # the writer backs off, then retries
        while True:
            try:
                if logged() == 40:
                    break
            except sa.exc.OperationalError:
                pass
            assert time.monotonic() < deadline, "queued predictions were not written"
            time.sleep(0.5)
        dropped = next(float(line.split()[-1]) for line in client.get("/metrics").text.splitlines()
                       if line.startswith("api_prediction_log_dropped_rows_total "))  # fmt: skip
        assert dropped == 0
    finally:
        client.close()
        server.stop()
        engine.dispose()
