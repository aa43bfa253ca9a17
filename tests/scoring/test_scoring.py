"""Batch scoring on SQLite and PostgreSQL: every clean encounter scored once per Production
version, as /predict would score it, and the care team's list exported."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import db, pipeline, synthetic
from readmission.__main__ import main
from readmission.assessment import RiskTiers
from readmission.registry import Registry

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path, settings_for, mlflow_tracking, store_url):
    csv = synthetic.write_csv(synthetic.encounters(1_500, seed=21), tmp_path / "d.csv.gz")
    settings = settings_for(
        csv, store_url, MLFLOW_TRACKING_URI=mlflow_tracking, DECISION_SUBGROUP_TOLERANCE=0.99
    )
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    return settings


def _scores(settings) -> pd.DataFrame:
    with pipeline.engine(settings).connect() as conn:
        return pd.read_sql(sa.select(db.batch_scores), conn)


def test_nothing_is_scored_without_a_production_model(settings):
    assert pipeline.score_batch(settings) == {
        "model_version": None,
        "scored": 0,
        "already_scored": 0,
        "explained": False,
    }
    assert _scores(settings).empty


def test_every_clean_encounter_is_scored_once_per_version_as_the_model_scores_it(settings):
    first = pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)
    version = first["decision"]["version"]
    done = pipeline.score_batch(settings)
    clean = pipeline.store_summary(settings)["clean_total"]
    assert done == {
        "model_version": version,
        "scored": clean,
        "already_scored": 0,
        "explained": True,
    }
    again = pipeline.score_batch(settings)  # idempotent
    assert (again["scored"], again["already_scored"]) == (0, clean)

    scores = _scores(settings)
    assert len(scores) == clean
    assert scores["encounter_id"].is_unique
    assert set(scores["model_version"]) == {version}
    # the same probabilities as the model gives the same encounters with their history
    model, _ = Registry.from_settings(settings).load_champion()
    from readmission import training

    data = training.load_training_data(pipeline.engine(settings))
    test = data.frames["test"].set_index("encounter_id")
    mine = scores.set_index("encounter_id").loc[test.index]
    expected = model.predict_proba(test[list(training.MODEL_INPUTS)])
    classes = [str(c) for c in model.classes_]
    pd.testing.assert_series_equal(
        mine["probability_lt30"],
        pd.Series(expected[:, classes.index("<30")], index=test.index, name="probability_lt30"),
        rtol=1e-9,
    )
    tiers = RiskTiers.of(model.assessment_, 10, 30)
    assert list(mine["risk_tier"]) == [tiers.tier(r) for r in mine["probability_lt30"]]
    assert set(scores["risk_tier"]) <= {"high", "medium", "low"}
    factors = [json.loads(f) for f in scores["top_factors"]]
    assert any(factors), "no encounter has a factor raising its risk"
    assert all(len(f) <= 3 for f in factors)
    assert all(x["contribution"] > 0 for f in factors for x in f)


def test_the_care_list_is_the_current_versions_highest_risks_first(
    settings, tmp_path, capsys, monkeypatch
):
    pipeline.train_and_promote(["logistic_regression"], "quick", settings)
    pipeline.score_batch(settings, explain_factors=False)
    listed = pipeline.care_list(settings=settings)
    assert list(listed["readmission_30d_risk"]) == sorted(
        listed["readmission_30d_risk"], reverse=True
    )
    high = pipeline.care_list(tier="high", settings=settings)
    assert 0 < len(high) < len(listed)
    assert set(high["risk_tier"]) == {"high"}
    assert listed["top_factors"].isna().all()  # --no-factors

    out = tmp_path / "lists" / "high.csv"
    monkeypatch.setenv("DATA_DATABASE_URL", settings.database_url)
    pipeline.get_settings.cache_clear()
    main(["care-list", "--tier", "high", "--out", str(out)])
    written = pd.read_csv(out)
    assert list(written.columns) == [
        "encounter_id",
        "patient_nbr",
        "risk_tier",
        "readmission_30d_risk",
        "prediction",
        "top_factors",
        "model_version",
        "scored_at",
    ]
    assert list(written["encounter_id"]) == list(high["encounter_id"])
    assert f"{len(high):,} encounters written to" in capsys.readouterr().err
