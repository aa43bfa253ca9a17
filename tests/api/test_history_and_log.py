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
from readmission.api.schemas import EXAMPLE, Encounter, encounter_records
from readmission.cleaning import clean
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
    for (_, row), history in zip(busiest.iterrows(), found, strict=True):
        assert history.figures == {name: float(row[name]) for name in HISTORY}
        assert history.earlier_encounters == row["prior_encounters"]
    (none,) = lookup(engine, [{"patient_nbr": None}])
    assert none.figures == dict.fromkeys(HISTORY, 0.0)
    assert none.status == "no_patient"


def _stored(settings) -> pd.DataFrame:
    with pipeline.engine(settings).connect() as conn:
        return pd.read_sql(sa.select(db.clean_encounters), conn)


def test_a_stored_encounter_rescored_counts_only_the_encounters_before_it(world):
    """History is what was known before this encounter: never the encounter itself (with
    its own outcome) nor a later one."""
    clean = _stored(world.settings)
    patient = clean.groupby("patient_nbr")["encounter_id"].count().idxmax()
    encounters = sorted(clean.loc[clean["patient_nbr"] == patient, "encounter_id"])
    assert len(encounters) >= 3
    for position, encounter in enumerate(encounters):
        body = {**EXAMPLE, "patient_nbr": int(patient), "encounter_id": int(encounter)}
        answer = world.client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["history"] == {"status": "looked_up", "earlier_encounters": position}
    first = {**EXAMPLE, "patient_nbr": int(patient), "encounter_id": int(encounters[0])}
    unknown = {**EXAMPLE, "patient_nbr": 1, "encounter_id": int(encounters[0])}
    assert (
        world.client.post("/predict", json=first).json()["probabilities"]
        == world.client.post("/predict", json=unknown).json()["probabilities"]
    )


def test_a_request_without_an_encounter_id_is_a_new_encounter_after_every_stored_one(world):
    clean = _stored(world.settings)
    patient = clean.groupby("patient_nbr")["encounter_id"].count().idxmax()
    stored = int((clean["patient_nbr"] == patient).sum())
    body = {**EXAMPLE, "patient_nbr": int(patient), "encounter_id": None}
    history = world.client.post("/predict", json=body).json()["history"]
    assert history == {"status": "looked_up", "earlier_encounters": stored}
    no_patient = world.client.post("/predict", json={**EXAMPLE, "patient_nbr": None}).json()
    assert no_patient["history"] == {"status": "no_patient", "earlier_encounters": 0}


def test_earlier_encounters_sent_in_the_same_batch_count_as_training_counts_them(trained):
    """Two encounters of a patient the store does not know, sent together: the later one's
    history holds the earlier one (its outcome included), exactly as `add_history` says."""
    engine = pipeline.engine(trained)
    first = {
        **EXAMPLE,
        "patient_nbr": 1,
        "encounter_id": 10,
        "readmitted": "<30",
        "number_inpatient": 3,
        "number_emergency": 1,
    }
    second = {**EXAMPLE, "patient_nbr": 1, "encounter_id": 20, "readmitted": None}
    other = {**EXAMPLE, "patient_nbr": 2, "encounter_id": 15, "readmitted": ">30"}
    records = encounter_records([Encounter.model_validate(r) for r in (second, other, first)])
    found = lookup(engine, records)
    frame = clean(pd.DataFrame(records))
    expected = add_history(frame)
    for figures, (_, row) in zip(found, expected.iterrows(), strict=True):
        assert figures.figures == {name: float(row[name]) for name in HISTORY}
    assert [f.earlier_encounters for f in found] == [1, 0, 0]
    assert found[0].figures["prior_readmitted_lt30"] == 1.0
    assert found[0].figures["prior_inpatient_total"] == 3.0


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
    settings = trained.updated(
        DATA_DATABASE_URL=own_postgres.url(), API_PREDICTION_LOG_FLUSH_SECONDS=0.2
    )
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
        answers = [client.post("/predict", json=EXAMPLE) for _ in range(30)]
        assert {a.status_code for a in answers} == {200}  # the store being down fails none
        # ... and each answer says it was scored without the patient's history
        assert {a.json()["history"]["status"] for a in answers} == {"unavailable"}
        time.sleep(1.0)
        metrics = client.get("/metrics").text
        failures = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("api_prediction_log_write_failures_total ")
        )
        assert failures >= 1
        without = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("api_predictions_without_history_total ")
        )
        assert without == 30
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
        dropped = next(
            float(line.split()[-1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("api_prediction_log_dropped_rows_total ")
        )
        assert dropped == 0
    finally:
        client.close()
        server.stop()
        engine.dispose()
