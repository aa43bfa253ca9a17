"""Compiled gradient-boosting trees give scikit-learn's answers, or are not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmission import acceleration, synthetic
from readmission.acceleration import (
    CompiledTrees,
    FastPipeline,
    accelerate,
    sample_inputs,
    sample_records,
    score_columns,
)
from readmission.cleaning import clean, clean_records
from readmission.estimator import ReadmissionModel
from readmission.features import HISTORY, build_pipeline


@pytest.fixture(scope="module")
def fitted():
    raw = synthetic.encounters(3_000, seed=4)
    frame = clean(raw)
    for name in HISTORY:
        frame[name] = np.random.default_rng(1).integers(0, 3, len(frame)).astype(float)
    params = {"max_iter": 60, "max_leaf_nodes": 15}
    model = ReadmissionModel(build_pipeline("hist_gradient_boosting", params))
    model.fit(frame, frame["readmitted"])
    return model, frame


def test_compiled_trees_give_scikit_learns_probabilities_with_missing_values(fitted):
    model, frame = fitted
    faster = accelerate(model, sample_inputs())
    assert isinstance(faster.pipeline_, FastPipeline)
    rows = frame.sample(32, random_state=0).copy()
    rows.loc[rows.index[:10], ["num_lab_procedures", "race", "age_years"]] = np.nan
    np.testing.assert_allclose(faster.predict_proba(rows), model.predict_proba(rows), atol=1e-12)
    assert (faster.predict(rows) == model.predict(rows)).all()


def test_large_batches_use_scikit_learn_itself(fitted):
    model, frame = fitted
    faster = accelerate(model, sample_inputs())
    np.testing.assert_array_equal(faster.predict_proba(frame), model.predict_proba(frame))


def test_a_model_that_is_not_gradient_boosting_is_served_as_it_is():
    frame = clean(synthetic.encounters(300, seed=2))
    model = ReadmissionModel(build_pipeline("logistic_regression", {"max_iter": 200}))
    model.fit(frame, frame["readmitted"])
    assert accelerate(model, sample_inputs()) is model


def test_a_disagreeing_compilation_is_refused(fitted, monkeypatch):
    model, _ = fitted
    monkeypatch.setattr(CompiledTrees, "raw", lambda _self, x: np.zeros((len(x), 3)))
    assert accelerate(model, sample_inputs()) is model


def test_a_path_without_pandas_that_disagrees_is_refused(fitted, monkeypatch):
    model, _ = fitted
    real = acceleration.clean_records

    def one_column_lost(records):
        return {**real(records), "num_lab_procedures": np.full(len(records), np.nan)}

    monkeypatch.setattr(acceleration, "clean_records", one_column_lost)
    assert accelerate(model, sample_inputs()) is model


def test_the_path_without_pandas_scores_records_as_the_pipeline_does(fitted):
    model, _ = fitted
    faster = accelerate(model, sample_inputs())
    records = sample_records(20, seed=3)
    records[0]["discharge_disposition_id"] = 11  # expired: the death rule applies
    proba, inputs, encoded = score_columns(faster, clean_records(records), len(records))
    expected = model.predict_proba(clean(pd.DataFrame.from_records(records)))
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-12)
    assert proba[0].tolist() == [1.0 if c == "NO" else 0.0 for c in model.classes_]
    assert encoded.shape[0] == len(records) == len(inputs["race"])


def test_sample_inputs_vary_the_history():
    sample = sample_inputs()
    assert len(sample) == 32
    assert isinstance(sample, pd.DataFrame)
    assert sample["prior_encounters"].nunique() > 1
