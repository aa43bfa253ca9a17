"""`dag.test()` runs of both DAGs on a small synthetic file, SQLite store."""

from __future__ import annotations

import logging

import pytest

from readmission import dataset, pipeline

pytestmark = pytest.mark.slow


@pytest.fixture
def sample_env(monkeypatch, sample_csv):
    monkeypatch.setenv("DIABETES_CSV", str(sample_csv))
    monkeypatch.setenv("DIABETES_CSV_SHA256", dataset.sha256_of(sample_csv))
    monkeypatch.setenv("RAW_BATCH_SIZE", "300")  # 1,000 rows -> 4 batches
    pipeline.get_settings.cache_clear()


def _states(run) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in sorted(run.get_task_instances(), key=lambda ti: (ti.task_id, ti.map_index)):
        states.setdefault(ti.task_id, []).append(str(ti.state))
    return states


def test_raw_load_dag_loads_the_next_batches_then_the_rest_then_nothing(dagbag, sample_env):
    dag = dagbag.get_dag("raw_data_initial_batch_load")

    first = dag.test(run_conf={"batches": 2})
    assert first.state == "success"
    assert _states(first) == {
        "plan": ["success"],
        "load_batch": ["success"] * 2,
        "publish": ["success"],
    }
    assert pipeline.store_summary()["batches_loaded"] == [0, 1]

    rest = dag.test(run_conf={"batches": 0})
    assert rest.state == "success"
    assert len(_states(rest)["load_batch"]) == 2
    facts = pipeline.store_summary()
    assert facts["batches_loaded"] == [0, 1, 2, 3]
    assert facts["raw_total"] == 1_000

    nothing = dag.test()
    assert nothing.state == "success"
    # no batch left: nothing mapped, and no Asset event (publish skipped) for cleaning
    assert _states(nothing)["publish"] == ["skipped"]
    assert pipeline.store_summary()["raw_total"] == 1_000


def test_clean_dag_cleans_what_is_new_and_skips_when_nothing_is(dagbag, sample_env):
    pipeline.load_raw_batch(0)
    pipeline.load_raw_batch(1)
    dag = dagbag.get_dag("clean_data_pipeline")

    run = dag.test()
    assert run.state == "success"
    assert _states(run) == {"clean": ["success"], "report": ["success"]}
    assert pipeline.store_summary()["clean_total"] == 600

    idle = dag.test()
    assert idle.state == "success"
    assert _states(idle) == {"clean": ["skipped"], "report": ["success"]}

    refresh = dag.test(run_conf={"full_refresh": True})
    assert _states(refresh)["clean"] == ["success"]
    assert pipeline.store_summary()["clean_total"] == 600


def test_a_task_sets_the_package_loggers_to_log_level(dagbag, sample_env, monkeypatch):
    package = logging.getLogger("readmission")
    monkeypatch.setattr(package, "level", package.level)  # put back afterwards
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    pipeline.get_settings.cache_clear()
    pipeline.load_raw_batch(0)

    run = dagbag.get_dag("clean_data_pipeline").test()
    assert run.state == "success"
    assert package.level == logging.DEBUG  # on_execute_callback, in the task's process


def test_training_dag_trains_every_family_and_promotes_the_first_model(
    dagbag, sample_env, mlflow_tracking, monkeypatch, model_registry
):
    """Without a profile in its conf (as an Asset-triggered run), the workers'
    TRAINING_PROFILE decides the search, and every task works on the snapshot of clean_data
    pinned when the run started; the reason given by hand is recorded."""
    import mlflow

    from readmission.names import FAMILIES, REASON_TAG

    monkeypatch.setenv("TRAINING_PROFILE", "quick")
    pipeline.get_settings.cache_clear()
    pipeline.load_raw_batches(pipeline.plan_raw_load())
    pipeline.clean_new_rows()
    run = dagbag.get_dag("model_training_pipeline").test(run_conf={"reason": "a new site"})
    assert run.state == "success"
    assert _states(run) == {
        "pin_data": ["success"],
        "first_model": ["success"],  # no stand-in for a quick search
        "train_candidate": ["success"] * len(FAMILIES),
        "promote": ["success"],
    }
    production = model_registry.champion()
    assert production is not None
    assert production.current_stage == "Production"
    versions = model_registry.list_versions()
    assert len({v["tags"].get("family") for v in versions}) == 1  # the best of the families
    runs = mlflow.search_runs(output_format="list")
    assert len(runs) == len(FAMILIES)
    assert {r.data.tags["profile"] for r in runs} == {"quick"}
    snapshots = {r.data.tags["data.snapshot"] for r in runs}
    assert snapshots == {versions[0]["tags"]["data.snapshot"]}
    assert {r.data.tags[REASON_TAG] for r in runs} == {"a new site"}
    assert versions[0]["tags"][REASON_TAG] == "a new site"


def test_retraining_trigger_dag_requests_training_through_the_asset_then_waits(
    dagbag, sample_env, mlflow_tracking, monkeypatch
):
    """Drift in the prediction log, sustained for 0 h: the check requests a training run,
    the request task records it and updates the retraining_request Asset with the reason
    (what schedules model_training_pipeline); with a guard of an hour, the next run asks
    for nothing and the request task is skipped."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from readmission.names import RETRAIN_DAG
    from tests.retraining.test_retraining import log_predictions, long_stays
    from tests.support.served import client_records

    monkeypatch.setenv("DECISION_SUBGROUP_TOLERANCE", "0.99")
    monkeypatch.setenv("RETRAIN_SUSTAINED_HOURS", "0")
    monkeypatch.setenv("RETRAIN_MIN_INTERVAL_HOURS", "0")
    pipeline.get_settings.cache_clear()
    pipeline.load_raw_batches(pipeline.plan_raw_load())
    pipeline.clean_new_rows()
    version = pipeline.train_and_promote(["logistic_regression"], "quick")["decision"]["version"]
    log_predictions(pipeline.engine(), long_stays(client_records(300, seed=41)), version)

    def events() -> list:
        with create_session() as session:
            query = select(AssetEvent).where(AssetEvent.source_dag_id == RETRAIN_DAG)
            return [(e.extra, e.source_run_id) for e in session.scalars(query)]

    dag = dagbag.get_dag(RETRAIN_DAG)
    before = events()
    run = dag.test()
    assert run.state == "success"
    assert _states(run) == {"check": ["success"], "request": ["success"]}
    (made,) = pipeline.retraining_requests()
    assert made["orchestrator_run_id"] == run.run_id
    assert made["reason"].startswith("retraining_trigger_pipeline: input drift: PSI ")
    ((extra, source),) = [e for e in events() if e not in before]
    assert source == run.run_id
    assert extra == {"reason": made["reason"], "model_version": version}

    monkeypatch.setenv("RETRAIN_MIN_INTERVAL_HOURS", "1")
    pipeline.get_settings.cache_clear()
    guarded = dag.test()
    assert guarded.state == "success"
    assert _states(guarded) == {"check": ["success"], "request": ["skipped"]}
    assert len(pipeline.retraining_requests()) == 1
    assert len(events()) == len(before) + 1


def test_performance_dag_estimates_before_outcomes_and_realizes_after(
    dagbag, sample_env, sample_csv, mlflow_tracking, monkeypatch
):
    """Predictions served for encounters of a batch not loaded yet: the first run has only
    estimates; once the batch is loaded and cleaned, the realized figures, beside the
    version's test figures read from the registry."""
    import numpy as np
    import pandas as pd

    from readmission import db
    from readmission.performance import RECENT

    monkeypatch.setenv("DECISION_SUBGROUP_TOLERANCE", "0.99")
    pipeline.get_settings.cache_clear()
    for batch in (0, 1, 2):
        pipeline.load_raw_batch(batch)
    pipeline.clean_new_rows()
    version = pipeline.train_and_promote(["logistic_regression"], "quick")["decision"]["version"]
    later = pd.read_csv(sample_csv).iloc[900:]  # batch 3 of 300 rows
    rng = np.random.default_rng(0)
    risk = rng.uniform(0.02, 0.5, len(later))
    served = pd.DataFrame(
        {
            "predicted_at": pd.Timestamp("2026-11-02T10:00:00Z"),
            "model_name": "diabetes-readmission",
            "model_version": version,
            "encounter_id": later["encounter_id"].to_numpy(),
            "patient_nbr": later["patient_nbr"].to_numpy(),
            "prediction": np.where(risk > 0.2, "<30", "NO"),
            "probability_no": (1 - risk) * 0.6,
            "probability_gt30": (1 - risk) * 0.4,
            "probability_lt30": risk,
            "inputs": "{}",
        }
    )
    with pipeline.engine().begin() as conn:
        conn.execute(db.predictions.insert(), served.to_dict("records"))

    dag = dagbag.get_dag("model_performance_pipeline")
    before = dag.test()
    assert before.state == "success"
    assert _states(before) == {"measure": ["success"], "report": ["success"]}
    (pending,) = [r for r in pipeline.performance_report() if r["window_kind"] == RECENT]
    assert (pending["predictions"], pending["outcomes"]) == (100, 0)
    assert pending["realized_roc_auc_lt30"] is None
    assert pending["estimated_roc_auc_lt30"] is not None
    assert pending["test_roc_auc_lt30"] is not None
    assert pending["high_threshold"] is not None

    pipeline.load_raw_batch(3)
    pipeline.clean_new_rows()
    after = dag.test()
    assert after.state == "success"
    (known,) = [r for r in pipeline.performance_report() if r["window_kind"] == RECENT]
    assert (known["predictions"], known["outcomes"]) == (100, 100)
    assert known["realized_roc_auc_lt30"] is not None
    assert known["estimated_roc_auc_lt30"] == pending["estimated_roc_auc_lt30"]


def test_batch_scoring_dag_scores_new_encounters_once(
    dagbag, sample_env, mlflow_tracking, monkeypatch
):
    from readmission.names import SCORING_DAG

    pipeline.load_raw_batches(pipeline.plan_raw_load(limit=3))
    pipeline.clean_new_rows()
    dag = dagbag.get_dag(SCORING_DAG)
    idle = dag.test()  # no Production model yet: nothing scored, no failure
    assert idle.state == "success"
    assert _states(idle) == {"score": ["success"], "report": ["success"]}

    monkeypatch.setenv("DECISION_SUBGROUP_TOLERANCE", "0.99")
    pipeline.get_settings.cache_clear()
    pipeline.train_and_promote(["logistic_regression"], "quick")
    first = dag.test()
    assert first.state == "success"
    assert len(pipeline.care_list()) == 900
    pipeline.load_raw_batch(3)
    pipeline.clean_new_rows()
    second = dag.test()
    assert second.state == "success"
    scored = pipeline.care_list()
    assert len(scored) == 1_000
    assert scored["encounter_id"].is_unique
