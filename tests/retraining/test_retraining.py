"""readmission/retraining.py: the drift and performance conditions read from the store, the
run of checks that makes a condition sustained, the guard, and the reason a training run
records; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import db, drift, retraining, synthetic
from readmission.cleaning import clean
from readmission.names import MODEL_NAME
from readmission.performance import RECENT
from readmission.retraining import DRIFT, PERFORMANCE, Check, Streak
from tests.support.served import client_records

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def engine(store_url):
    engine = db.make_engine(store_url)
    db.create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def profile() -> dict:
    """A training reference, as training stores it with a model."""
    return drift.reference_profile(clean(synthetic.encounters(3_000, seed=1)))


def log_predictions(
    engine, records: list[dict], version: str, role: str | None = "served", at: datetime = T0
):
    rows = [
        {
            "predicted_at": at,
            "model_name": MODEL_NAME,
            "model_version": version,
            "encounter_id": record["encounter_id"],
            "patient_nbr": record["patient_nbr"],
            "prediction": "NO",
            "probability_no": 0.6,
            "probability_gt30": 0.3,
            "probability_lt30": 0.1,
            "inputs": json.dumps(record),
            "role": role,
        }
        for record in records
    ]
    with engine.begin() as conn:
        conn.execute(db.predictions.insert(), rows)


def long_stays(records: list[dict]) -> list[dict]:
    """The same encounters, every one staying 14 days: a shift of one feature."""
    return [{**record, "time_in_hospital": 14} for record in records]


# --- drift ---------------------------------------------------------------------------------


def test_drift_is_past_when_a_feature_shifts_and_names_it(engine, profile):
    log_predictions(engine, long_stays(client_records(400, seed=2)), "3")
    with engine.connect() as conn:
        found = retraining.drift_check(conn, "3", profile, 1_000, 200, 0.2)
    assert found.past is True
    assert found.condition == DRIFT
    assert found.evidence_at == T0  # the newest prediction of the window
    assert found.value > 1.0  # the largest PSI: time_in_hospital's
    assert found.detail.startswith("input drift: PSI time_in_hospital ")
    assert "over the last 400 predictions of v3" in found.detail


def test_drift_is_not_past_on_encounters_like_the_training_ones(engine, profile):
    log_predictions(engine, client_records(1_500, seed=3), "3")
    with engine.connect() as conn:
        found = retraining.drift_check(conn, "3", profile, 1_000, 200, 0.2)
    assert found.past is False
    assert found.value < 0.2
    assert "over the last 1,000 predictions of v3" in found.detail  # the window, not all


def test_drift_reads_only_the_versions_served_answers_and_needs_enough(engine, profile):
    log_predictions(engine, long_stays(client_records(300, seed=4)), "3", role="shadow")
    log_predictions(engine, long_stays(client_records(300, seed=5)), "2")
    log_predictions(engine, client_records(150, seed=6), "3", role=None)  # logged before roles
    with engine.connect() as conn:
        found = retraining.drift_check(conn, "3", profile, 1_000, 200, 0.2)
        assert len(retraining.served_inputs(conn, "3", 1_000)) == 150
        unknown = retraining.drift_check(conn, "3", None, 1_000, 100, 0.2)
    assert (found.past, found.value) == (False, None)
    assert found.detail == "150 predictions served by v3, 200 needed"
    assert unknown.past is False
    assert "carries no drift reference" in unknown.detail


def test_drift_from_the_log_bins_as_the_apis_window(profile):
    """The check cleans the logged inputs and scores them as the API's window does."""
    records = long_stays(client_records(500, seed=8))
    monitor = drift.DriftMonitor(profile, window=500, min_rows=1)
    monitor.observe(clean(pd.DataFrame.from_records(records)))
    assert retraining.drift_scores(profile, records) == pytest.approx(monitor.scores())


# --- performance -----------------------------------------------------------------------------


def write_performance(engine, version: str, realized: float | None, test: float, outcomes: int):
    row = {
        "model_name": MODEL_NAME,
        "model_version": version,
        "window_kind": RECENT,
        "period_start": T0 - 28 * 24 * HOUR,
        "period_end": T0,
        "predictions": 2 * outcomes,
        "outcomes": outcomes,
        "realized_roc_auc_lt30": realized,
        "test_roc_auc_lt30": test,
        "computed_at": T0,
    }
    with engine.begin() as conn:
        conn.execute(db.model_performance.insert(), [row])


@pytest.mark.parametrize(
    ("realized", "outcomes", "past"),
    [(0.60, 500, True), (0.63, 500, False), (0.55, 150, False), (None, 500, False)],
)
def test_performance_is_past_when_realized_auc_is_below_test_minus_margin(
    engine, realized, outcomes, past
):
    write_performance(engine, "3", realized, 0.67, outcomes)
    with engine.connect() as conn:
        found = retraining.performance_check(conn, "3", 0.05, 200)
    assert found.condition == PERFORMANCE
    assert found.past is past
    assert found.evidence_at == T0  # the realized window's end
    assert found.threshold == pytest.approx(0.62)
    if past:
        assert found.detail == (
            "realized <30 ROC-AUC 0.600 over 500 outcomes of v3, below its test figure 0.670 "
            "minus 0.05"
        )


def test_performance_is_not_past_before_any_measure(engine):
    with engine.connect() as conn:
        found = retraining.performance_check(conn, "3", 0.05, 200)
    assert (found.past, found.value) == (False, None)
    assert "no realized performance of v3 yet" in found.detail


# --- the run of checks, the guard ---------------------------------------------------------


def check(condition: str, past: bool, version: str = "3", evidence=None) -> Check:
    value = 0.3 if past else 0.1
    return Check(condition, version, past, value, 0.2, f"{condition} {past}", evidence)


def test_a_condition_is_past_since_the_first_check_of_its_unbroken_run(engine):
    gap = 2 * HOUR
    runs = [
        (T0, True, "3"),
        (T0 + HOUR, True, "3"),
        (T0 + 2 * HOUR, False, "3"),  # broken: the count starts again
        (T0 + 3 * HOUR, True, "3"),
        (T0 + 4 * HOUR, True, "3"),
    ]
    with engine.begin() as conn:
        for at, past, version in runs:
            found = [check(DRIFT, past, version, at - HOUR), check(PERFORMANCE, False)]
            retraining.record(conn, found, at)
        assert retraining.streak(conn, DRIFT, "3", gap) == Streak(
            T0 + 3 * HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR
        )
        assert retraining.streak(conn, PERFORMANCE, "3", gap) is None
        # a check not recorded counts as the last one
        pending = (T0 + 5 * HOUR, check(DRIFT, True, "3", T0 + 5 * HOUR))
        assert retraining.streak(conn, DRIFT, "3", gap, pending) == Streak(
            T0 + 3 * HOUR, T0 + 2 * HOUR, T0 + 5 * HOUR
        )
        assert (
            retraining.streak(conn, DRIFT, "3", gap, (T0 + 5 * HOUR, check(DRIFT, False))) is None
        )
        # checks further apart than the gap (the scheduler stopped) start the count again
        assert retraining.streak(conn, DRIFT, "3", 0.5 * HOUR) == Streak(
            T0 + 4 * HOUR, T0 + 3 * HOUR, T0 + 3 * HOUR
        )
        # a new Production version starts its own count
        retraining.record(conn, [check(DRIFT, True, "4", T0)], T0 + 5 * HOUR)
        assert retraining.streak(conn, DRIFT, "4", gap).since == T0 + 5 * HOUR
        assert retraining.streak(conn, DRIFT, "3", gap) is None
        # a rerun at the same moment replaces its findings
        retraining.record(conn, [check(DRIFT, False, "4")], T0 + 5 * HOUR)
        assert retraining.streak(conn, DRIFT, "4", gap) is None
        stored = conn.execute(sa.select(sa.func.count()).select_from(db.retraining_checks))
        assert stored.scalar() == 11


def test_a_condition_lasts_only_as_long_as_its_evidence_was_renewed():
    """Checks every half hour for two days of one burst of drifted requests, then none: the
    evidence (the newest prediction) stays where it was, so it never lasted."""
    stale = Streak(T0, T0, T0)
    assert stale.lasted(T0 + 48 * HOUR) == timedelta(0)
    renewed = Streak(T0, T0 - HOUR, T0 + 30 * HOUR)
    assert renewed.lasted(T0 + 25 * HOUR) == 25 * HOUR  # no longer than checked
    assert renewed.lasted(T0 + 40 * HOUR) == 31 * HOUR  # no longer than renewed


def decide(checks, streaks, now, **policy):
    values = {
        "enabled": True,
        "sustained_hours": 24,
        "min_interval_hours": 168,
        "last_training": None,
        "last_requested": None,
        **policy,
    }
    return retraining.decide(checks, streaks, now, **values)


def test_a_request_once_a_condition_lasted_the_configured_time():
    checks = [check(DRIFT, True), check(PERFORMANCE, False)]
    run = {DRIFT: Streak(T0, T0, T0 + 30 * HOUR)}
    waiting = decide(checks, run, T0 + 23 * HOUR)
    assert waiting.request is False
    assert waiting.reason == "drift past for 23.0 h of the 24.0 h needed"
    due = decide(checks, run, T0 + 25 * HOUR)
    assert due.request is True
    assert due.reason == (
        "retraining_trigger_pipeline: drift True, for 25.0 h (since 2026-11-02 09:30 UTC)"
    )
    assert [c["sustained"] for c in due.conditions] == [True, False]
    assert due.model_version == "3"
    calm = decide([check(DRIFT, False), check(PERFORMANCE, False)], {}, T0)
    assert (calm.request, calm.reason) == (False, "no condition past its threshold")


def test_the_guard_waits_the_interval_after_the_last_training_or_request():
    checks = [check(DRIFT, True), check(PERFORMANCE, True)]
    now = T0 + 30 * HOUR
    since = {DRIFT: Streak(T0, T0, now), PERFORMANCE: Streak(T0 + HOUR, T0, now)}
    trained = decide(checks, since, now, last_training=now - 4 * HOUR)
    assert trained.request is False
    assert trained.reason.startswith(
        "guard: the last training run was at 2026-11-03 11:30 UTC, the next request may come "
        "from 2026-11-10 11:30 UTC (RETRAIN_MIN_INTERVAL_HOURS=168); sustained: "
    )
    assert "drift True, for 30.0 h" in trained.reason
    assert "performance True, for 29.0 h" in trained.reason
    requested = decide(
        checks, since, now, last_requested=now - HOUR, last_training=now - 200 * HOUR
    )
    assert requested.reason.startswith("guard: the last request was at ")
    assert decide(checks, since, now, last_training=now - 169 * HOUR).request is True
    off = decide(checks, since, now, enabled=False)
    assert off.request is False
    assert off.reason.startswith("RETRAIN_ENABLED is off, else: retraining_trigger_pipeline: ")


def test_a_request_is_recorded_once_per_trigger_run(engine):
    run = {DRIFT: Streak(T0, T0, T0 + 25 * HOUR)}
    decision = decide([check(DRIFT, True)], run, T0 + 25 * HOUR).to_dict()
    with engine.begin() as conn:
        assert retraining.last_request(conn) is None
        retraining.record_request(conn, "scheduled__1", decision)
        retraining.record_request(conn, "scheduled__1", decision)  # a retried task
        assert retraining.last_request(conn) == T0 + 25 * HOUR
        (made,) = retraining.requests(conn)
    assert made["orchestrator_run_id"] == "scheduled__1"
    assert made["reason"] == decision["reason"]
    assert made["model_version"] == "3"


def test_the_training_reason_comes_from_the_hand_the_request_or_new_data():
    request = ("retraining_request.diabetes", {"reason": "drift for 25 h"})
    clean_data = ("clean_data.diabetes", {})
    assert retraining.training_reason(" model audit ", [request]) == "model audit"
    assert retraining.training_reason("", [request]) == "drift for 25 h"
    assert retraining.training_reason(None, [clean_data, clean_data]) == "new clean data"
    both = "drift for 25 h; new clean data"
    assert retraining.training_reason("", [clean_data, request]) == both
    assert retraining.training_reason("", [request, clean_data]) == both
    assert retraining.training_reason("", []) == "started by hand"
