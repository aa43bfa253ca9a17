"""`pipeline.check_retraining` on a trained Production version (its drift reference read
from MLflow, its last training run's start as the guard), and the reason a training run
records; the CLI's look. SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import mlflow
import pytest
import sqlalchemy as sa

from readmission import db, drift, pipeline, retraining, synthetic
from readmission.__main__ import main
from readmission.names import REASON_TAG
from tests.retraining.test_retraining import log_predictions, long_stays
from tests.support.served import client_records

pytestmark = pytest.mark.slow
HOUR = timedelta(hours=1)


@pytest.fixture
def settings(tmp_path, settings_for, mlflow_tracking, store_url):
    csv = synthetic.write_csv(synthetic.encounters(1_200, seed=31), tmp_path / "d.csv.gz")
    settings = settings_for(
        csv,
        store_url,
        MLFLOW_TRACKING_URI=mlflow_tracking,
        DECISION_SUBGROUP_TOLERANCE=0.99,
        RETRAIN_SUSTAINED_HOURS=2,
        RETRAIN_CHECK_MINUTES=240,  # checks up to 8 h apart make one run
        RETRAIN_MIN_INTERVAL_HOURS=6,
    )
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    return settings


def stored_checks(settings) -> int:
    with pipeline.engine(settings).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(db.retraining_checks)).scalar()


def test_sustained_drift_requests_one_training_run_then_the_guard_waits(settings):
    assert pipeline.check_retraining(settings)["reason"] == "no Production model: nothing to watch"
    trained = pipeline.train_and_promote(
        ["logistic_regression"], "quick", settings, reason="first model"
    )
    version = trained["decision"]["version"]
    runs = mlflow.search_runs(output_format="list")
    assert {r.data.tags[REASON_TAG] for r in runs} == {"first model"}
    registry = pipeline.model_registry(settings)
    entry = registry.entry(version)
    assert entry.tags[REASON_TAG] == "first model"
    assert set(registry.run_document(entry, "drift_reference.json")["features"]) == {
        name for name, _ in drift.drift_features()
    }
    assert registry.run_document(entry, "absent.json") is None

    engine = pipeline.engine(settings)
    started = datetime.now(UTC)

    def serve_drifted(at: datetime, seed: int) -> None:
        log_predictions(engine, long_stays(client_records(300, seed=seed)), version, at=at)

    serve_drifted(started, 32)
    first = pipeline.check_retraining(settings, now=started)
    assert first["model_version"] == version
    assert first["request"] is False
    drifted, performing = first["conditions"]
    assert (drifted["condition"], drifted["past"]) == ("drift", True)
    assert drifted["past_since"] == started.isoformat()
    assert drifted["evidence_at"] == started.isoformat()
    assert "PSI time_in_hospital" in drifted["detail"]
    assert (performing["condition"], performing["past"]) == ("performance", False)
    assert first["reason"] == "drift past for 0.0 h of the 2.0 h needed"
    assert stored_checks(settings) == 2

    # the CLI's look records nothing, and counts the run of checks on to now, but only as
    # long as the evidence was renewed: no new predictions, no time past
    later = started + 2.5 * HOUR
    stale = pipeline.check_retraining(settings, record=False, now=later)
    assert stale["conditions"][0]["past_since"] == started.isoformat()
    assert stale["conditions"][0]["past_for_hours"] == 0
    assert stale["reason"] == "drift past for 0.0 h of the 2.0 h needed"
    serve_drifted(later, 33)
    look = pipeline.check_retraining(settings, record=False, now=later)
    assert look["conditions"][0]["past_for_hours"] == pytest.approx(2.5)
    # ... and sustained, yet the model was trained a moment before the first check: the
    # guard holds
    assert look["request"] is False
    assert look["reason"].startswith("guard: the last training run was at ")
    assert stored_checks(settings) == 2

    serve_drifted(started + 6.5 * HOUR, 34)
    due = pipeline.check_retraining(settings, now=started + 6.5 * HOUR)
    assert due["request"] is True
    assert due["reason"].startswith(
        "retraining_trigger_pipeline: input drift: PSI time_in_hospital "
    )
    assert f"of v{version}, for 6.5 h (since " in due["reason"]
    assert pipeline.request_retraining(due, "scheduled__check", settings) == due["reason"]
    (made,) = pipeline.retraining_requests(settings)
    assert (made["orchestrator_run_id"], made["model_version"]) == ("scheduled__check", version)

    guarded = pipeline.check_retraining(settings, now=started + 8 * HOUR)
    assert guarded["request"] is False
    assert guarded["reason"].startswith("guard: the last request was at ")


def test_the_cli_shows_the_conditions_without_recording(settings, capsys, monkeypatch):
    for name, value in {
        "DIABETES_CSV": str(settings.dataset.csv),
        "DIABETES_CSV_SHA256": settings.dataset.csv_sha256,
        "DATA_DATABASE_URL": settings.database_url,
        "DECISION_SUBGROUP_TOLERANCE": "0.99",
    }.items():
        monkeypatch.setenv(name, value)
    pipeline.get_settings.cache_clear()
    main(["train", "--family", "logistic_regression", "--profile", "quick", "--reason", "audit"])
    capsys.readouterr()
    assert mlflow.search_runs(output_format="list")[0].data.tags[REASON_TAG] == "audit"

    main(["retraining"])
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "Production: v1"
    assert "  drift        ok: 0 predictions served by v1, 200 needed" in text
    assert "  performance  ok: no realized performance of v1 yet" in text
    assert "a check now would not request retraining: no condition past its threshold" in text
    main(["retraining", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["requests"] == []
    assert [c["condition"] for c in shown["decision"]["conditions"]] == list(retraining.CONDITIONS)
    assert stored_checks(settings) == 0  # nothing recorded
