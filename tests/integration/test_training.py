"""Training and promotion end to end: a real store, a throwaway MLflow (SQLite), quick search."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from readmission import pipeline, registry, synthetic, training
from readmission.estimator import ReadmissionModel
from readmission.features import EncounterFeatures

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path, settings_for, mlflow_tracking, sqlite_url):
    csv = synthetic.write_csv(synthetic.encounters(3_000, seed=11), tmp_path / "d.csv.gz")
    settings = settings_for(csv, sqlite_url, MLFLOW_TRACKING_URI=mlflow_tracking)
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    return settings


def test_first_model_is_promoted_and_an_equal_one_is_not(settings):
    first = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)
    decision = first["decision"]
    assert decision["promoted"] is True
    assert decision["reason"] == "first model"
    production = pipeline.production_model(settings)
    assert production["version"] == decision["version"]
    assert production["stage"] == "Production"
    assert "production" in production["aliases"]
    for name in (
        "valid_macro_f1",
        "test_macro_f1",
        "test_roc_auc_lt30",
        "test_log_loss",
        "test_recall_lt30",
        "valid_accuracy",
        "test_weighted_f1",
        "test_roc_auc_ovr",
    ):
        assert name in production["metrics"], name  # fmt: skip

    again = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)["decision"]
    assert again["promoted"] is False  # same data, same seed: an equal score
    assert again["candidate_score"] == pytest.approx(again["champion_score"])
    assert pipeline.production_model(settings)["version"] == decision["version"]
    versions = {v["version"]: v for v in registry.list_versions()}
    assert versions[again["version"]]["tags"]["promotion_decision"] == "rejected"


def test_a_better_model_replaces_the_champion_which_is_archived(settings):
    data = training.load_training_data(pipeline.engine(settings))
    majority = DummyClassifier(strategy="most_frequent")
    weak = ReadmissionModel(Pipeline([("features", EncounterFeatures()), ("classify", majority)]))
    weak.fit(data.inputs("train"), data.target("train"))
    weak.decision_weights_ = dict.fromkeys(weak.classes_, 1.0)
    weak_score = training.score(weak, data)
    candidate = training.Candidate("logistic_regression", {"dummy": True}, weak,
                                   {"valid_macro_f1": weak_score})  # fmt: skip
    logged = training.log_candidate(candidate, data, {"test": "weak"})
    first = training.promote_best([logged], data, {})
    assert first["promoted"] is True

    better = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)["decision"]
    assert better["candidate_score"] > weak_score
    assert better["promoted"] is True
    assert better["champion_version"] == first["version"]
    assert better["champion_score"] == pytest.approx(weak_score)
    versions = {v["version"]: v for v in registry.list_versions()}
    assert versions[first["version"]]["stage"] == "Archived"
    assert "production" not in versions[first["version"]]["aliases"]
    assert versions[better["version"]]["stage"] == "Production"


def test_a_retried_promotion_registers_the_run_once(settings):
    result = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)
    again = pipeline.promote_best(result["candidates"], settings=settings)
    assert again["version"] == result["decision"]["version"]
    assert again["promoted"] is False
    assert len(registry.list_versions()) == 1


def test_the_production_model_predicts_from_a_cleaned_record(settings):
    pipeline.train_and_promote(["logistic_regression"], "quick", settings)
    model, version = registry.load_champion()
    record = synthetic.encounters(3, seed=99)
    from readmission.cleaning import clean

    proba = model.predict_proba(clean(record))
    assert proba.shape == (3, 3)
    assert set(model.predict(clean(record))) <= {"NO", ">30", "<30"}
    run = registry.describe(version)
    assert run["tags"]["family"] == "logistic_regression"


def test_every_candidate_run_carries_its_lineage_and_artifacts(settings):
    import mlflow

    result = pipeline.train_and_promote(["random_forest"], "quick", settings)
    run_id = result["candidates"][0]["run_id"]
    run = mlflow.get_run(run_id)
    assert run.data.tags["data.batches"] == "0"
    assert int(run.data.tags["data.rows_train"]) > 1_000
    assert run.data.params["family"] == "random_forest"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"confusion_matrix_valid.png", "confusion_matrix_test.png", "search.json",
            "data.json"} <= artifacts  # fmt: skip
    assert len(run.inputs.dataset_inputs) == 1
    frame = pd.DataFrame(mlflow.artifacts.load_dict(f"runs:/{run_id}/data.json")["rows"], index=[0])
    assert set(frame.columns) == {"train", "valid", "test"}


@pytest.fixture
def growing(tmp_path, settings_for, mlflow_tracking, sqlite_url):
    """A store holding two of the file's three batches, cleaned; the third comes later."""
    csv = synthetic.write_csv(synthetic.encounters(3_000, seed=11), tmp_path / "g.csv.gz")
    settings = settings_for(csv, sqlite_url, MLFLOW_TRACKING_URI=mlflow_tracking,
                            RAW_BATCH_SIZE=1_000)  # fmt: skip
    pipeline.load_raw_batches(pipeline.plan_raw_load(2, settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    return settings


def test_champion_and_challenger_are_judged_on_the_snapshot_pinned_at_the_start(growing):
    """A second raw load cleaned while candidates train changes neither the rows the
    candidates were measured on nor those the champion is re-scored on."""
    first = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", growing)["decision"]
    assert first["promoted"] is True
    snapshot = pipeline.pin_data(growing)
    assert snapshot["batches"] == [0, 1]
    candidate = pipeline.train_candidate("hist_gradient_boosting", "quick",
                                         snapshot=snapshot, settings=growing)  # fmt: skip
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=growing), settings=growing)
    assert pipeline.clean_new_rows(settings=growing)["rows_cleaned"] == 1_000
    decision = pipeline.promote_best([candidate], snapshot=snapshot, settings=growing)
    assert decision["snapshot"] == snapshot["id"]
    # the same configuration and seed on the same rows: exactly the champion's score
    assert decision["candidate_score"] == pytest.approx(decision["champion_score"], abs=1e-12)
    assert decision["promoted"] is False
    import mlflow

    tags = mlflow.get_run(candidate["run_id"]).data.tags
    assert tags["data.snapshot"] == snapshot["id"]
    assert tags["data.batches"] == "0,1"
    assert int(tags["data.rows_valid"]) == snapshot["rows_by_split"]["valid"]
    version = {v["version"]: v for v in registry.list_versions()}[decision["version"]]
    assert version["tags"]["data.snapshot"] == snapshot["id"]


def test_a_snapshot_whose_rows_were_cleaned_again_is_refused(growing):
    snapshot = pipeline.pin_data(growing)
    pipeline.clean_new_rows(full_refresh=True, settings=growing)
    with pytest.raises(training.SnapshotChangedError, match="changed since training started"):
        pipeline.train_candidate("logistic_regression", "quick", snapshot=snapshot,
                                 settings=growing)  # fmt: skip


def test_candidates_of_another_snapshot_are_not_compared(growing):
    snapshot = pipeline.pin_data(growing)
    candidate = pipeline.train_candidate("logistic_regression", "quick", snapshot=snapshot,
                                         settings=growing)  # fmt: skip
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=growing), settings=growing)
    pipeline.clean_new_rows(settings=growing)
    later = pipeline.pin_data(growing)
    with pytest.raises(ValueError, match="trained on another snapshot"):
        pipeline.promote_best([candidate], snapshot=later, settings=growing)


def test_the_profile_defaults_to_the_training_profile_setting(growing, monkeypatch):
    import mlflow

    quick = growing.model_copy(update={"training_profile": "quick"})
    candidate = pipeline.train_candidate("logistic_regression", "default", settings=quick)
    assert mlflow.get_run(candidate["run_id"]).data.tags["profile"] == "quick"
