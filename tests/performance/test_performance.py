"""readmission/performance.py: realized figures on joined outcomes, the estimation checked
against NannyML's CBPE and against outcomes drawn from the probabilities, and the table
written on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import f1_score, roc_auc_score

from readmission import db, performance
from readmission.performance import Reference
from readmission.schema import READMITTED_CLASSES

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the three classes (READMITTED_CLASSES order) and a served class:
    the most probable one, or `<30` above 0.25 (a decision rule like the served one's)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * np.array([0.8, 0.6, 1.0]) + np.array([0.6, 0.2, -1.0])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    classes = np.array(READMITTED_CLASSES, dtype=object)
    predicted = np.where(
        probabilities[:, 2] > 0.25, "<30", classes[probabilities.argmax(axis=1)]
    ).astype(object)
    return probabilities, predicted


def frame_of(probabilities, predicted, truth=None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prediction": predicted,
            "probability_no": probabilities[:, 0],
            "probability_gt30": probabilities[:, 1],
            "probability_lt30": probabilities[:, 2],
            "readmitted": truth if truth is not None else [None] * len(predicted),
        }
    )


# --- the estimation against NannyML -----------------------------------------------------


@pytest.fixture(scope="module")
def nannyml():
    """NannyML's CBPE estimators, imported without its side effects on this process:
    importing it loads any `.env` file into the environment (the project's holds the
    Compose values, which other tests must not see) and imports FLAML's AutoML, which needs
    xgboost (and its GPU libraries) for model fitting these functions never do."""
    import flaml

    saved = dict(os.environ)
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # no analytics calls
    if not hasattr(flaml, "AutoML"):
        flaml.AutoML = type("AutoML", (), {})  # imported by name, never used here
    try:
        from nannyml.performance_estimation.confidence_based import metrics
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return metrics


def test_the_estimation_is_nannymls_cbpe_on_calibrated_probabilities(nannyml):

    probabilities, predicted = calibrated(5_000, seed=1)
    risk = probabilities[:, 2]
    threshold = float(np.quantile(risk, 0.9))
    ours = performance.estimated(frame_of(probabilities, predicted), threshold)

    per_class = [
        nannyml.estimate_f1((predicted == label).astype(int), probabilities[:, column])
        for column, label in enumerate(READMITTED_CLASSES)
    ]
    assert ours["macro_f1"] == pytest.approx(np.mean(per_class), abs=1e-12)
    # NannyML rounds its cumulative counts to 5 decimals
    assert ours["roc_auc_lt30"] == pytest.approx(nannyml.estimate_roc_auc(risk, risk), abs=1e-6)
    flagged = (risk >= threshold).astype(int)
    assert ours["sensitivity_high"] == pytest.approx(nannyml.estimate_recall(flagged, risk))
    assert ours["ppv_high"] == pytest.approx(nannyml.estimate_precision(flagged, risk))


def test_the_estimate_is_what_outcomes_drawn_from_the_probabilities_realize_on_average():
    """If the probabilities are calibrated, the estimate is the realized figure's mean."""
    probabilities, predicted = calibrated(4_000, seed=2)
    threshold = float(np.quantile(probabilities[:, 2], 0.9))
    expected = performance.estimated(frame_of(probabilities, predicted), threshold)
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(60):
        u = rng.random(len(predicted))[:, None]
        drawn = (u > probabilities.cumsum(axis=1)).sum(axis=1)
        truth = np.array(READMITTED_CLASSES, dtype=object)[drawn]
        draws.append(performance.realized(frame_of(probabilities, predicted, truth), threshold))
    for name in performance.FIGURES:
        values = np.array([d[name] for d in draws])
        standard_error = values.std(ddof=1) / np.sqrt(len(values))
        assert abs(values.mean() - expected[name]) < 4 * standard_error + 2e-3, name


def test_an_empty_window_and_one_without_outcomes_have_no_figures():
    probabilities, predicted = calibrated(10, seed=4)
    empty = frame_of(probabilities[:0], predicted[:0])
    assert performance.estimated(empty, 0.3) == dict.fromkeys(performance.FIGURES)
    assert performance.realized(frame_of(probabilities, predicted), 0.3) == dict.fromkeys(
        performance.FIGURES
    )
    assert performance.expected_roc_auc(np.zeros(5)) is None


# --- realized figures -------------------------------------------------------------------


def test_realized_figures_on_known_outcomes_only():
    probabilities = np.array(
        [[0.2, 0.2, 0.6], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    )
    predicted = np.array(["<30", "NO", "<30", "NO", "<30"], dtype=object)
    truth = np.array(["<30", ">30", "NO", "NO", None], dtype=object)
    figures = performance.realized(frame_of(probabilities, predicted, truth), high_threshold=0.5)
    known = slice(0, 4)
    assert figures["macro_f1"] == pytest.approx(
        f1_score(truth[known], predicted[known], average="macro", zero_division=0)
    )
    risk, positive = probabilities[known, 2], truth[known] == "<30"
    assert figures["roc_auc_lt30"] == pytest.approx(roc_auc_score(positive, risk))
    assert figures["brier_lt30"] == pytest.approx(np.mean((risk - positive) ** 2))
    assert figures["sensitivity_high"] == 1.0  # the one <30 has risk 0.6 >= 0.5
    assert figures["ppv_high"] == 1.0  # flagged: only that one (0.8 has no outcome yet)
    no_tier = performance.realized(frame_of(probabilities, predicted, truth), None)
    assert no_tier["sensitivity_high"] is None
    assert no_tier["ppv_high"] is None


# --- the table, on both stores ----------------------------------------------------------


def _store(url: str) -> sa.Engine:
    engine = db.make_engine(url)
    db.create_tables(engine)
    return engine


def _log(engine, rows: list[tuple]) -> None:
    """Predictions (encounter, version, minutes after T0, served class, <30 risk)."""
    records = []
    for encounter, version, minutes, served, risk in rows:
        rest = (1 - risk) / 2
        records.append(
            {
                "predicted_at": T0 + timedelta(minutes=minutes),
                "model_name": "diabetes-readmission",
                "model_version": version,
                "encounter_id": encounter,
                "patient_nbr": encounter * 10,
                "prediction": served,
                "probability_no": rest,
                "probability_gt30": rest,
                "probability_lt30": risk,
                "inputs": "{}",
            }
        )
    with engine.begin() as conn:
        conn.execute(db.predictions.insert(), records)


def _outcomes(engine, outcomes: dict[int, str]) -> None:
    frame = pd.DataFrame(
        {
            "encounter_id": list(outcomes),
            "patient_nbr": [e * 10 for e in outcomes],
            "readmitted": list(outcomes.values()),
            "split": "test",
            "batch_id": 9,
            "source_row": range(len(outcomes)),
            "chunk_id": 1,
        }
    )
    with engine.begin() as conn:
        db.insert_new(conn, db.clean_encounters, frame)


REFERENCES = {"1": Reference(0.3, 0.47, 0.68), "2": Reference(0.4, 0.48, 0.69)}


def _reference(version: str) -> Reference:
    return REFERENCES.get(version, Reference())


def test_measure_joins_outcomes_once_per_encounter_and_writes_each_window(store_url):
    engine = _store(store_url)
    day = 24 * 60
    _log(
        engine,
        [
            (1, "1", 0, "<30", 0.6),
            (1, "1", 1, "NO", 0.1),  # the same encounter logged again: the first counts
            (2, "1", 2, "NO", 0.2),
            (3, "1", day + 5, "<30", 0.7),  # the next day
            (4, "1", day + 6, "NO", 0.1),  # no outcome yet
            (1, "2", 3, "NO", 0.35),  # the same encounter served by another version counts there
            (5, "2", 4, ">30", 0.2),
        ],
    )
    with engine.begin() as conn:  # an anonymous prediction cannot be joined: left out
        conn.execute(
            db.predictions.insert(),
            [
                {
                    "predicted_at": T0,
                    "model_name": "diabetes-readmission",
                    "model_version": "1",
                    "encounter_id": None,
                    "prediction": "NO",
                    "probability_no": 0.5,
                    "probability_gt30": 0.3,
                    "probability_lt30": 0.2,
                    "inputs": "{}",
                }
            ],
        )
    _outcomes(engine, {1: "<30", 2: "NO", 3: "NO", 5: ">30", 99: "<30"})

    summary = performance.measure(engine, _reference, window_days=28)
    assert summary == {"predictions": 6, "outcomes": 5, "versions": ["1", "2"], "windows": 5}
    rows = performance.report(engine)
    found = {
        (r["model_version"], r["window_kind"], r["period_start"].date().isoformat()): r
        for r in rows
    }
    assert set(found) == {
        ("1", "day", "2026-11-02"),
        ("1", "day", "2026-11-03"),
        ("1", "recent", "2026-10-07"),
        ("2", "day", "2026-11-02"),
        ("2", "recent", "2026-10-06"),  # its last prediction was a day earlier
    }
    first_day = found[("1", "day", "2026-11-02")]
    assert (first_day["predictions"], first_day["outcomes"]) == (2, 2)
    assert first_day["realized_roc_auc_lt30"] == 1.0  # 0.6 for the <30, 0.2 for the NO
    assert first_day["realized_sensitivity_high"] == 1.0  # 0.6 >= 0.3 flags it
    assert first_day["realized_ppv_high"] == 1.0
    assert first_day["estimated_ppv_high"] == pytest.approx(0.6)
    assert first_day["realized_brier_lt30"] == pytest.approx(((0.6 - 1) ** 2 + 0.2**2) / 2)
    recent = found[("1", "recent", "2026-10-07")]
    assert (recent["predictions"], recent["outcomes"]) == (4, 3)
    assert recent["period_end"].date().isoformat() == "2026-11-04"
    assert (recent["test_roc_auc_lt30"], recent["high_threshold"]) == (0.68, 0.3)
    second = found[("2", "recent", "2026-10-06")]
    assert (second["predictions"], second["outcomes"], second["high_threshold"]) == (2, 2, 0.4)
    assert second["realized_sensitivity_high"] == 0.0  # its <30 had risk 0.35 < 0.4

    again = performance.measure(engine, _reference, window_days=28)  # idempotent
    assert again == summary
    rerun = performance.report(engine)
    drop = ("computed_at",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in rerun] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows
    ]
    assert [r["model_version"] for r in performance.recent(engine)] == ["1", "2"]


def test_outcomes_arriving_later_fill_the_realized_figures(store_url):
    engine = _store(store_url)
    _log(engine, [(1, "1", 0, "<30", 0.6), (2, "1", 1, "NO", 0.2)])
    performance.measure(engine, _reference, window_days=28)
    (before,) = performance.recent(engine)
    assert (before["predictions"], before["outcomes"]) == (2, 0)
    assert before["realized_macro_f1"] is None
    assert before["estimated_macro_f1"] is not None  # what to expect meanwhile

    _outcomes(engine, {1: "<30", 2: "NO"})
    performance.measure(engine, _reference, window_days=28)
    (after,) = performance.recent(engine)
    assert after["outcomes"] == 2
    assert after["realized_macro_f1"] is not None
    assert after["estimated_macro_f1"] == pytest.approx(before["estimated_macro_f1"])


def test_measure_on_an_empty_log_writes_nothing(store_url):
    engine = _store(store_url)
    summary = performance.measure(engine, _reference, window_days=28)
    assert summary == {"predictions": 0, "outcomes": 0, "versions": [], "windows": 0}
    assert performance.report(engine) == []


def test_the_recent_window_ends_with_the_last_prediction_whose_outcome_is_known(store_url):
    """A <30 outcome comes a month after discharge at best: the newest predictions have
    none, and a window ending with them would never show a realized figure."""
    engine = _store(store_url)
    day = 24 * 60
    _log(
        engine,
        [
            (1, "1", 0, "<30", 0.6),
            (2, "1", 1, "NO", 0.2),
            (3, "1", 40 * day, "NO", 0.1),  # forty days on: no outcome yet
            (4, "1", 41 * day, "<30", 0.5),
        ],
    )
    _outcomes(engine, {1: "<30", 2: "NO"})
    performance.measure(engine, _reference, window_days=28)
    (recent,) = performance.recent(engine)
    assert recent["period_end"].date().isoformat() == "2026-11-03"
    assert (recent["predictions"], recent["outcomes"]) == (2, 2)
    assert recent["realized_roc_auc_lt30"] == 1.0


def test_a_registry_that_cannot_be_reached_fails_the_measure_instead_of_dropping_figures(
    monkeypatch,
):
    """Only a version the registry does not know is measured without its figures; an
    outage fails the task, which Airflow retries."""
    from mlflow.exceptions import MlflowException

    from readmission.registry import Registry
    from tests.support.pgserver import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = Registry(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MlflowException, match="failed with exception"):
        performance.registry_reference(down, 10, 30)("1")


def test_a_version_the_registry_does_not_know_is_measured_without_figures(
    mlflow_tracking, model_registry
):
    assert performance.registry_reference(model_registry, 10, 30)("41") == Reference()
