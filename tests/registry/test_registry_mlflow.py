"""The registry against a real, throwaway MLflow: a SQLite store and artifacts in tmp_path.

The model is a tiny pipeline wrapped in `ReadmissionModel` (a class of the package, which
`log_sklearn_model` must trust by itself) with a transformer defined here (which the test
must trust explicitly: skops imports it back as `tests.registry.test_registry_mlflow.*`).
Each test gets a copy of one freshly migrated, empty MLflow database (migrating costs ~2 s).
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.types import DataType
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from readmission import registry
from readmission.estimator import ReadmissionModel
from readmission.registry import Registry
from tests.support.served import point_mlflow_at

ROOT = Path(__file__).resolve().parents[2]

CLASSES = np.array(["NO", ">30", "<30"])


class Numbers(TransformerMixin, BaseEstimator):
    """Nullable columns as scikit-learn wants them: NaN for every kind of missing."""

    def fit(self, frame: pd.DataFrame, y=None) -> Numbers:
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index)
        out["race"] = frame["race"].astype(object).where(frame["race"].notna(), np.nan)
        out["visits"] = pd.to_numeric(frame["visits"], errors="coerce").astype(float)
        out["emergency"] = frame["emergency"].map({True: 1.0, False: 0.0}).astype(float)
        out["age_years"] = pd.to_numeric(frame["age_years"], errors="coerce").astype(float)
        return out


TEST_TYPES = [f"{__name__}.{Numbers.__name__}"]


def encounters(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """A str column with NaN, an Int64 column with <NA>, a bool column, a float column."""
    rng = np.random.default_rng(seed)
    race = pd.Series(rng.choice(["Caucasian", "AfricanAmerican", "Other"], n), dtype="str")
    race[rng.random(n) < 0.2] = np.nan
    visits = pd.array(rng.integers(0, 6, n), dtype="Int64")
    visits[rng.random(n) < 0.2] = pd.NA
    frame = pd.DataFrame(
        {
            "race": race,
            "visits": visits,
            "emergency": rng.random(n) < 0.3,
            "age_years": rng.choice([45.0, 55.0, 65.0, 75.0, 85.0], n),
        }
    )
    score = frame["visits"].fillna(0).to_numpy(dtype=float) + 2 * frame["emergency"]
    label = np.where(score + rng.normal(0, 1, n) > 4, "<30", np.where(score > 2, ">30", "NO"))
    return frame, pd.Series(label, name="readmitted")


def fit_model(c: float, seed: int = 0) -> ReadmissionModel:
    frame, target = encounters(240, seed)
    encode = ColumnTransformer(
        [
            (
                "categories",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                ["race"],
            ),
            ("numbers", SimpleImputer(strategy="median"), ["visits", "emergency", "age_years"]),
        ]
    )
    pipeline = Pipeline(
        [
            ("numbers", Numbers()),
            ("encode", encode),
            ("classify", LogisticRegression(C=c, max_iter=500)),
        ]
    )
    return ReadmissionModel(pipeline).fit(frame, target)


def nullable_rows() -> pd.DataFrame:
    """Rows whose nullable columns are missing in each way a request may send them."""
    return pd.DataFrame(
        {
            "race": ["Caucasian", None, np.nan, "Unseen"],
            "visits": [2.0, np.nan, None, 5.0],
            "emergency": [True, None, False, np.nan],
            "age_years": [55.0, np.nan, 65.0, None],
        }
    )


def log_candidate(model: ReadmissionModel, valid_score: float) -> str:
    """One run with metrics and the logged model; returns the model URI."""
    frame, _ = encounters(240, 0)
    example = frame.head(3).copy()
    example.loc[0, "visits"] = pd.NA
    example.loc[1, "race"] = np.nan
    with mlflow.start_run():
        metrics = {registry.PRIMARY_METRIC: valid_score, "test_macro_f1": 0.5, "seconds": 1.0}
        mlflow.log_metrics(metrics)
        return registry.log_sklearn_model(
            model, training_frame=frame, input_example=example, trusted_types=TEST_TYPES
        ).model_uri


def test_champion_is_none_on_an_empty_registry(mlflow_tracking: str, model_registry) -> None:
    assert model_registry.champion() is None
    assert model_registry.load_champion() is None
    assert model_registry.list_versions() == []


def test_ensure_experiment_is_idempotent(
    mlflow_tracking: str, tmp_path: Path, model_registry
) -> None:
    first = model_registry.ensure_experiment()
    assert model_registry.ensure_experiment() == first
    experiment = mlflow.MlflowClient().get_experiment(first)
    assert experiment.name == registry.EXPERIMENT_NAME
    assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()
    other = model_registry.ensure_experiment("another-experiment")
    assert other != first
    with mlflow.start_run() as run:  # the experiment ensured last is the active one
        assert run.info.experiment_id == other
    mlflow.MlflowClient().delete_experiment(first)
    assert model_registry.ensure_experiment() == first  # restored, not created anew
    assert mlflow.MlflowClient().get_experiment(first).lifecycle_stage == "active"


def test_ensure_experiment_survives_losing_the_creation_race(
    mlflow_tracking: str, monkeypatch: pytest.MonkeyPatch, model_registry
) -> None:
    client_class = mlflow.MlflowClient
    created_elsewhere = client_class().create_experiment("raced")
    real_lookup = client_class.get_experiment_by_name
    calls = []

    def stale_lookup(self, name):  # the first lookup happens before the other process wins
        calls.append(name)
        return None if len(calls) == 1 else real_lookup(self, name)

    monkeypatch.setattr(client_class, "get_experiment_by_name", stale_lookup)
    assert model_registry.ensure_experiment("raced") == created_elsewhere


def test_logged_model_signature_accepts_missing_values(
    mlflow_tracking: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = fit_model(1.0)
    mlflow_log = logging.getLogger("mlflow")  # it does not propagate to the root logger
    mlflow_log.addHandler(caplog.handler)
    try:
        uri = log_candidate(model, 0.4)  # its input example has <NA> in the Int64 column
    finally:
        mlflow_log.removeHandler(caplog.handler)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert uri.startswith("models:/m-")  # MLflow 3: the logged model, not the run
    info = mlflow.models.get_model_info(uri)
    inputs = {spec.name: spec for spec in info.signature.inputs.inputs}
    assert inputs["visits"].type == DataType.double  # Int64 with <NA> is not "long"
    assert not inputs["visits"].required
    assert not inputs["race"].required
    assert inputs["emergency"].type == DataType.boolean
    assert inputs["emergency"].required
    assert inputs["age_years"].required
    flavor = info.flavors["sklearn"]
    assert flavor["serialization_format"] == "skops"
    assert set(flavor["skops_trusted_types"]) >= {
        "readmission.estimator.ReadmissionModel",
        *TEST_TYPES,
    }

    pyfunc = mlflow.pyfunc.load_model(uri)  # the pyfunc flavour enforces the signature
    rows = nullable_rows()
    rows["emergency"] = [True, None, False, None]
    assert rows["visits"].dtype == np.float64
    predicted = pyfunc.predict(rows)
    assert list(predicted) == list(model.predict(rows))


def test_register_and_promote_a_first_model(mlflow_tracking: str, model_registry) -> None:
    model = fit_model(1.0)
    version = model_registry.register(log_candidate(model, 0.4), tags={"family": "logistic"})
    assert version.status == "READY"
    assert version.version == "1"  # a str, as with an MLflow server
    assert version.tags["family"] == "logistic"
    assert registry.should_promote(0.4, None)
    model_registry.record_decision(
        version.version,
        promoted=True,
        candidate_score=0.4,
        champion_version=None,
        champion_score=None,
        reason="first model",
    )
    model_registry.promote(version.version, reason="first model")

    current = model_registry.champion()
    assert current is not None
    assert current.version == version.version
    assert current.current_stage == registry.PRODUCTION_STAGE
    assert registry.PRODUCTION_ALIAS in current.aliases
    assert current.tags["promotion_reason"] == "first model"
    assert current.tags["promoted_at"].endswith("+00:00")
    assert current.tags["promotion_decision"] == "promoted"
    assert current.tags[f"champion_{registry.PRIMARY_METRIC}"] == "none"
    assert model_registry.version_of_run(current.run_id).version == version.version

    model_registry.promote(version.version, reason="again")  # idempotent
    again = model_registry.champion()
    assert again.version == version.version
    assert again.tags["promotion_reason"] == "first model"


def test_a_better_version_replaces_the_champion_which_is_archived(
    mlflow_tracking: str, model_registry
) -> None:
    first = model_registry.register(log_candidate(fit_model(1.0), 0.40))
    model_registry.promote(first.version, reason="first model")
    second = model_registry.register(log_candidate(fit_model(0.1, seed=1), 0.45))
    worse = model_registry.register(log_candidate(fit_model(0.01, seed=2), 0.30))

    champion = model_registry.champion()
    assert not registry.should_promote(0.30, 0.45)
    assert registry.should_promote(0.45, 0.40)
    model_registry.record_decision(
        worse.version,
        promoted=False,
        candidate_score=0.30,
        champion_version=champion.version,
        champion_score=0.40,
        reason="test",
    )
    model_registry.record_decision(
        second.version,
        promoted=True,
        candidate_score=0.45,
        champion_version=champion.version,
        champion_score=0.40,
        reason="test",
    )
    model_registry.promote(second.version, reason="valid_macro_f1 0.45 vs 0.40")

    client = mlflow.MlflowClient()
    old = client.get_model_version(registry.MODEL_NAME, first.version)
    new = client.get_model_version(registry.MODEL_NAME, second.version)
    rejected = client.get_model_version(registry.MODEL_NAME, worse.version)
    assert model_registry.champion().version == second.version
    assert (new.current_stage, new.aliases) == ("Production", ["production"])
    assert (old.current_stage, old.aliases) == ("Archived", [])
    assert old.tags["superseded_by"] == second.version
    assert rejected.current_stage == "None"
    assert rejected.tags["promotion_decision"] == "rejected"
    assert rejected.tags[f"candidate_{registry.PRIMARY_METRIC}"] == "0.3"
    assert rejected.tags[f"champion_{registry.PRIMARY_METRIC}"] == "0.4"
    assert rejected.tags["champion_version"] == first.version


def test_promote_emits_no_deprecation_warning(
    mlflow_tracking: str, recwarn: pytest.WarningsRecorder, model_registry
):
    version = model_registry.register(log_candidate(fit_model(1.0), 0.4))
    recwarn.clear()
    model_registry.promote(version.version, reason="first model")
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning | FutureWarning)]


def test_load_champion_predicts_like_the_model_in_memory(
    mlflow_tracking: str, model_registry
) -> None:
    model = fit_model(1.0)
    version = model_registry.register(log_candidate(model, 0.4))
    model_registry.promote(version.version, reason="first model")

    loaded, entry = model_registry.load_champion()
    assert entry.version == version.version
    assert isinstance(loaded, ReadmissionModel)
    frame, _ = encounters(50, seed=9)
    for rows in (frame, nullable_rows()):
        np.testing.assert_allclose(loaded.predict_proba(rows), model.predict_proba(rows))
        assert list(loaded.predict(rows)) == list(model.predict(rows))


def test_describe_and_list_versions_are_json_ready(mlflow_tracking: str, model_registry) -> None:
    import json

    first = model_registry.register(log_candidate(fit_model(1.0), 0.40), tags={"family": "a"})
    model_registry.promote(first.version, reason="first model")
    second = model_registry.register(log_candidate(fit_model(0.1), 0.45), tags={"family": "b"})

    summary = model_registry.describe(model_registry.champion())
    assert summary["name"] == registry.MODEL_NAME
    assert summary["version"] == first.version
    assert summary["stage"] == "Production"
    assert summary["aliases"] == ["production"]
    assert summary["tags"]["family"] == "a"
    assert summary["metrics"] == {registry.PRIMARY_METRIC: 0.40, "test_macro_f1": 0.5}
    assert summary["run_id"] == first.run_id
    assert summary["created_at"].endswith("+00:00")
    json.dumps(summary)

    listed = model_registry.list_versions()
    assert [v["version"] for v in listed] == [second.version, first.version]
    assert listed[0]["aliases"] == []
    assert listed[0]["stage"] == "None"
    assert listed[1]["aliases"] == ["production"]
    assert listed[0]["metrics"][registry.PRIMARY_METRIC] == 0.45
    json.dumps(listed)


def test_promote_without_stages_still_moves_the_alias_and_tags(
    mlflow_tracking: str, monkeypatch: pytest.MonkeyPatch, model_registry
) -> None:
    """What promote does once MLflow drops stages (deprecated since 2.9)."""
    first = model_registry.register(log_candidate(fit_model(1.0), 0.40))
    second = model_registry.register(log_candidate(fit_model(0.1), 0.45))
    monkeypatch.delattr(mlflow.MlflowClient, "transition_model_version_stage")
    model_registry.promote(first.version, reason="first model")
    model_registry.promote(second.version, reason="better")

    client = mlflow.MlflowClient()
    old = client.get_model_version(registry.MODEL_NAME, first.version)
    new = client.get_model_version(registry.MODEL_NAME, second.version)
    assert model_registry.champion().version == second.version
    assert new.tags["stage"] == "Production"
    assert old.tags["stage"] == "Archived"
    assert old.aliases == []
    assert model_registry.describe(old)["stage"] == "Archived"
    promoted_at = new.tags["promoted_at"]
    model_registry.promote(second.version, reason="again")  # idempotent without stages too
    again = client.get_model_version(registry.MODEL_NAME, second.version)
    assert (again.tags["promoted_at"], again.tags["promotion_reason"]) == (promoted_at, "better")


def deployment_store_driver() -> str:
    """The SQLAlchemy driver of the Compose MLflow server's PostgreSQL store."""
    compose = yaml.safe_load((ROOT / "docker-compose-resto-back.yaml").read_text())
    uri = compose["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    return uri.split("://", 1)[0]


@pytest.mark.slow
@pytest.mark.postgres
def test_promotion_on_a_postgresql_store_with_the_deployments_driver(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's store on PostgreSQL through the driver the Compose and Kubernetes MLflow use
    (psycopg 3). There, MLflow's own `archive_existing_versions` query fails (`operator does
    not exist: integer <> character varying`): in the first real Compose run the promotion
    failed part-way, and its retry left version 1 Production by alias but stage None."""
    assert postgres_url.split("://", 1)[0] == deployment_store_driver()
    point_mlflow_at(monkeypatch, postgres_url)
    model_registry = Registry(postgres_url)
    assert model_registry.client.tracking_uri == postgres_url
    model_registry.ensure_experiment(artifact_location=(tmp_path / "artifacts").as_uri())
    first = model_registry.register(log_candidate(fit_model(1.0), 0.40))
    model_registry.promote(first.version, reason="first model")
    second = model_registry.register(log_candidate(fit_model(0.1, seed=1), 0.45))
    model_registry.promote(second.version, reason="better")

    client = mlflow.MlflowClient()
    old = client.get_model_version(registry.MODEL_NAME, first.version)
    new = client.get_model_version(registry.MODEL_NAME, second.version)
    assert (new.current_stage, new.aliases) == ("Production", ["production"])
    assert (old.current_stage, old.aliases) == ("Archived", [])
    assert old.tags["superseded_by"] == second.version


@pytest.mark.parametrize(
    "family", ["logistic_regression", "random_forest", "hist_gradient_boosting", "lightgbm"]
)
def test_the_project_model_families_need_no_extra_trusted_types(family: str) -> None:
    """skops loads every family with only what `log_sklearn_model` trusts by itself."""
    import skops.io

    from readmission import cleaning, features, synthetic, training

    encounters = features.add_history(cleaning.clean(synthetic.encounters(400, seed=3)))
    encounters = encounters[encounters["readmitted"].notna()]
    model = ReadmissionModel(features.build_pipeline(family)).fit(
        encounters[list(training.MODEL_INPUTS)], encounters["readmitted"]
    )
    trusted = [*registry.SCIKIT_LEARN_TYPES, *registry.package_types(model)]
    dump = skops.io.dumps(model)
    assert set(skops.io.get_untrusted_types(data=dump)) <= set(trusted)
    skops.io.loads(dump, trusted=trusted)


def test_a_training_run_counts_only_the_candidates_that_finished(
    mlflow_tracking: str, model_registry
) -> None:
    """A candidate task retried by Airflow leaves its failed attempt's MLflow run behind
    (FAILED when the task raised, RUNNING when its process was killed): the training run's
    candidates are the runs that finished, one per family."""
    model_registry.ensure_experiment()
    tags = {"orchestrator_run_id": "manual__1"}
    with pytest.raises(RuntimeError), mlflow.start_run(run_name="lightgbm", tags=tags):
        raise RuntimeError("the first attempt fails")
    killed = mlflow.start_run(run_name="lightgbm", tags=tags)  # its process was killed
    mlflow.end_run("RUNNING")
    finished = []
    for family in ("lightgbm", "random_forest"):
        with mlflow.start_run(run_name=family, tags=tags) as run:
            finished.append(run.info.run_id)
    with mlflow.start_run(run_name="lightgbm", tags={"orchestrator_run_id": "manual__2"}):
        pass

    runs = model_registry.training_runs("manual__1")

    assert sorted(run.info.run_id for run in runs) == sorted(finished)
    assert killed.info.run_id not in {run.info.run_id for run in runs}
    assert model_registry.training_runs("manual__3") == []
