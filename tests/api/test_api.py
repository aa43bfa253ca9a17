"""The API's contract over HTTP: every endpoint, every refusal, and agreement with the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from readmission import schema
from readmission.api.schemas import EXAMPLE
from readmission.cleaning import clean
from tests.support.served import client_records
from tests.support.tools import require_real_csv

pytestmark = pytest.mark.slow
CLASSES = {"NO", ">30", "<30"}


def _records(n: int, seed: int = 3) -> list[dict]:
    """Synthetic encounters as a client would send them."""
    return client_records(n, seed)


def test_health_ready_and_model(world):
    assert world.client.get("/health").json() == {"status": "ok"}
    ready = world.client.get("/ready").json()
    assert ready["status"] == "ready"
    assert ready["model"] == {"name": "diabetes-readmission", "version": "1", "alias": "production"}
    described = world.client.get("/model").json()
    assert described["version"] == "1"
    assert described["run_id"]
    assert described["loaded_at"]
    assert described["stage"] == "Production"
    for name in ("valid_macro_f1", "test_macro_f1", "test_roc_auc_lt30"):
        assert 0 <= described["metrics"][name] <= 1
    assert described["registry"]["reachable"] is True, described


def test_predict_answers_with_class_probabilities_risk_and_model(world):
    answer = world.client.post("/predict", json=EXAMPLE)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["prediction"] in CLASSES
    assert set(body["probabilities"]) == CLASSES
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert body["readmission_30d_risk"] == body["probabilities"]["<30"]
    assert body["model"] == {"name": "diabetes-readmission", "version": "1", "alias": "production"}


def _without(*names: str) -> dict:
    return {k: v for k, v in EXAMPLE.items() if k not in names}


def test_the_original_clients_spellings_give_the_same_answer(world):
    uci = {
        "A1Cresult": ">8",
        "diabetesMed": "Yes",
        "glyburide-metformin": "Steady",
        "max_glu_serum": ">200",
        "age": "[60-70)",
    }
    original = {
        "a1cresult": ">8",
        "diabetesmed": "Yes",
        "glyburide_metformin": "Steady",
        "max_glu_serum": ">200",
        "age": "[60-70)",
    }
    base = _without(*uci)
    answers = [world.client.post("/predict", json={**base, **body}) for body in (uci, original)]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert answers[0].json() == answers[1].json()


def test_null_question_mark_and_absent_are_the_same_missing_value(world):
    base = _without("weight", "payer_code", "race")
    bodies = [
        {**base, "weight": None, "payer_code": None, "race": None},
        {**base, "weight": "?", "payer_code": "?", "race": "?"},
        {**base, "weight": "", "payer_code": "", "race": ""},
        base,
    ]
    answers = [world.client.post("/predict", json=body) for body in bodies]
    assert {a.status_code for a in answers} == {200}
    assert answers[0].json() == answers[1].json() == answers[2].json() == answers[3].json()


def test_identifiers_and_the_target_are_accepted_and_ignored_by_the_model(world):
    plain = world.client.post("/predict", json=_without("encounter_id", "patient_nbr"))
    with_ids = world.client.post(
        "/predict",
        json={
            **EXAMPLE,
            "encounter_id": 999_999_999,
            "patient_nbr": 999_999_999,
            "readmitted": "<30",
        },
    )
    assert plain.status_code == with_ids.status_code == 200
    # an unknown patient has no history: the same answer but for the history report
    assert {**plain.json(), "history": None} == {**with_ids.json(), "history": None}


def test_served_predictions_equal_in_process_ones_nulls_included(world, model_registry):
    # without patients: their history (stored, or sent together) is tested on its own
    records = [{**r, "patient_nbr": None} for r in _records(60)]
    for record in records[::3]:  # JSON nulls, which pandas receives as None
        record.update({"race": None, "diag_2": None, "A1Cresult": None})
    response = world.client.post("/predict/batch", json={"encounters": records})
    assert response.status_code == 200, response.text[:2000]
    served = response.json()
    model, _ = model_registry.load_champion()
    local = clean(pd.DataFrame(records))
    proba = model.predict_proba(local)
    classes = list(model.classes_)
    for answer, row, label in zip(served["predictions"], proba, model.predict(local), strict=True):
        assert answer["prediction"] == label
        for name, value in answer["probabilities"].items():
            assert value == pytest.approx(row[classes.index(name)], abs=1e-6)


def test_batch_keeps_request_order_and_equals_single_predictions(world):
    # one encounter per patient: encounters of one patient sent together are history
    records = [{**r, "patient_nbr": 10**9 + i} for i, r in enumerate(_records(25, seed=8))]
    batch = world.client.post("/predict/batch", json={"encounters": records}).json()
    singles = [world.client.post("/predict", json=r).json() for r in records]
    assert [b["probabilities"] for b in batch["predictions"]] == [
        s["probabilities"] for s in singles
    ]
    assert batch["model"]["version"] == "1"


def test_batch_limits(world):
    records = _records(1)
    too_many = world.client.post("/predict/batch", json={"encounters": records * 1_001})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["field"] == "encounters"
    assert "1000" in too_many.json()["detail"][0]["reason"]
    empty = world.client.post("/predict/batch", json={"encounters": []})
    assert empty.status_code == 422
    full = world.client.post("/predict/batch", json={"encounters": records * 1_000})
    assert full.status_code == 200
    assert len(full.json()["predictions"]) == 1_000


@pytest.mark.parametrize(
    "body",
    [{}, {"encounter_id": 12, "patient_nbr": 34}, {"readmitted": "NO", "encounter_id": 1}],
    ids=["empty", "identifiers", "identifiers-and-target"],
)
def test_a_request_with_none_of_the_encounters_fields_is_refused(world, body):
    for route, payload in (("/predict", body), ("/predict/batch", {"encounters": [body]})):
        answer = world.client.post(route, json=payload)
        assert answer.status_code == 422, answer.text
        problems = answer.json()["detail"]
        assert any("none of the encounter's fields" in p["reason"] for p in problems), problems


@pytest.mark.parametrize(
    "name", [schema.BY_KEY[k].name for k in sorted(schema.REQUIRED_IN_REQUEST)]
)
def test_every_field_a_real_encounter_always_has_is_required(world, name):
    for missing in ("absent", None, "?"):
        body = {k: v for k, v in EXAMPLE.items() if k != name}
        if missing != "absent":
            body[name] = missing
        answer = world.client.post("/predict", json=body)
        assert answer.status_code == 422, (name, missing, answer.text)
        problems = answer.json()["detail"]
        assert [p["field"] for p in problems] == [name], problems
        assert "required" in problems[0]["reason"], problems


def test_the_openapi_schema_marks_the_required_fields(world):
    schemas = world.client.get("/openapi.json").json()["components"]["schemas"]
    required = set(schemas["Encounter"]["required"])
    assert required == {schema.BY_KEY[key].name for key in schema.REQUIRED_IN_REQUEST}


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"num_lab_procedures": 999}, "num_lab_procedures", "less than or equal to 300"),
        ({"num_lab_procedures": -1}, "num_lab_procedures", "greater than or equal to 0"),
        ({"time_in_hospital": "three"}, "time_in_hospital", "valid integer"),
        ({"time_in_hospital": 2.5}, "time_in_hospital", "fractional"),
        ({"number_inpatient": True}, "number_inpatient", "not a boolean"),
        ({"race": "Martian"}, "race", "must be one of"),
        ({"race": 7}, "race", "must be a string"),
        ({"race": "x" * 2_000_000}, "race", "at most 64"),
        ({"diag_1": "XYZ"}, "diag_1", "ICD-9-CM"),
        ({"admission_type_id": 99}, "admission_type_id", "unknown code"),
        ({"shoe_size": 43}, "shoe_size", "unknown field"),
        ({"metformin": ["No"]}, "metformin", "must be a string"),
    ],
)
def test_bad_fields_are_422_naming_the_field_and_the_reason(world, body, field, reason):
    answer = world.client.post("/predict", json=body)
    assert answer.status_code == 422
    problems = answer.json()["detail"]
    assert any(p["field"] == field and reason in p["reason"] for p in problems), problems
    assert len(answer.text) < 5_000  # the offending input is echoed shortened


@pytest.mark.parametrize(
    ("content", "headers", "reason"),
    [
        (b"", {"content-type": "application/json"}, "a JSON object is required"),
        (b"{not json", {"content-type": "application/json"}, "invalid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, "must be a JSON object"),
        (b'{"race": "Asian"}', {"content-type": "text/plain"}, "Content-Type: application/json"),
        (
            json.dumps({**EXAMPLE, "num_medications": float("nan")}).encode(),
            {"content-type": "application/json"},
            "finite number",
        ),
    ],
    ids=["empty", "not-json", "array", "text-plain", "nan"],
)
def test_unreadable_bodies_are_422_and_the_service_answers_right_after(
    world, content, headers, reason
):
    answer = world.client.post("/predict", content=content, headers=headers)
    assert answer.status_code == 422, answer.text
    assert reason in answer.json()["detail"][0]["reason"]
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200


def test_a_body_over_the_limit_is_413(world):
    huge = b'{"race": "' + b"x" * (world.settings.api.max_body_bytes + 10) + b'"}'
    answer = world.client.post(
        "/predict", content=huge, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert "larger than" in answer.json()["detail"]


def test_metrics_are_exported_with_service_prefixed_names(world):
    world.client.post("/predict", json=EXAMPLE)
    world.client.post("/predict", json={**EXAMPLE, "race": "Martian"})
    text = world.client.get("/metrics").text
    for name in (
        "api_http_requests_total",
        "api_http_request_duration_seconds_bucket",
        "api_predictions_total",
        "api_model_info",
        "api_model_version",
        "api_model_reloads_total",
        "api_prediction_log_write_failures_total",
        "api_prediction_log_dropped_rows_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert f"\n{name}" in text, name
    assert 'handler="/predict",method="POST",status="422"' in text
    assert 'api_model_info{name="diabetes-readmission",version="1"} 1.0' in text


def test_openapi_documents_the_routes_with_a_real_patient_record(world):
    assert world.client.get("/docs").status_code == 200
    spec = world.client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/health", "/ready", "/model", "/model/reload"} <= set(
        spec["paths"]
    )
    example = spec["components"]["schemas"]["Encounter"]["examples"][0]
    assert example["encounter_id"] == 149190
    assert "A1Cresult" in spec["components"]["schemas"]["Encounter"]["properties"]


@pytest.mark.realdata
def test_the_documented_example_is_the_real_record(world):
    frame = pd.read_csv(require_real_csv(), dtype=str, keep_default_na=False, nrows=5)
    row = frame[frame["encounter_id"] == "149190"].iloc[0]
    for name, value in EXAMPLE.items():
        assert str(value) == row[name], name


def test_predictions_are_logged_with_their_model_version(world):
    import sqlalchemy as sa

    from readmission import db

    world.client.post("/predict", json={**EXAMPLE, "encounter_id": 424242})
    engine = db.make_engine(world.settings.database_url)

    def logged() -> bool:
        with engine.connect() as conn:
            return (
                conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(db.predictions)
                    .where(db.predictions.c.encounter_id == 424242)
                )
                == 1
            )

    world.wait_for(logged)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(db.predictions).where(db.predictions.c.encounter_id == 424242)
        ).one()
    assert row.model_version == "1"
    assert row.prediction in CLASSES
    assert np.isclose(row.probability_no + row.probability_gt30 + row.probability_lt30, 1)
    assert '"race":"Caucasian"' in row.inputs


def test_the_readmes_curl_examples_are_answered(world):
    """Every `curl ... /predict -d '{...}'` of the README and docs/ is a request the API
    answers."""
    import re

    root = Path(__file__).resolve().parents[2]
    readme = "".join(p.read_text() for p in (root / "README.md", *sorted(root.glob("docs/*.md"))))
    pattern = r"/predict -H 'Content-Type: application/json' \\\n\s+-d '(\{.*?\})'"
    bodies = re.findall(pattern, readme, flags=re.S)
    assert len(bodies) >= 2
    for body in bodies:
        answer = world.client.post("/predict", json=json.loads(body))
        assert answer.status_code == 200, (body, answer.text)


def test_every_metric_name_the_dashboard_and_alerts_use_is_exported(world):
    """`readmission.names` is the one home of the metric names: the API registers them, the
    dashboard and the alert rules are rendered from them."""
    from readmission import names

    world.client.post("/predict", json=EXAMPLE)
    text = world.client.get("/metrics").text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    metric_names = [
        value
        for key, value in vars(names).items()
        if key.isupper() and isinstance(value, str) and value.startswith(("api_", "process_"))
    ]
    assert len(metric_names) >= 20
    drift_scores_need_a_full_window = {names.DRIFT_PSI}
    # one series per measured version: tests/api/test_performance_gauges.py exports them
    performance_needs_a_measured_window = {names.MODEL_PERFORMANCE, names.MODEL_PERFORMANCE_ROWS}
    unseen = drift_scores_need_a_full_window | performance_needs_a_measured_window
    for name in set(metric_names) - unseen:
        assert any(e == name or e.startswith(f"{name}_") for e in exported), name
