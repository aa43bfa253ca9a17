"""Compiled gradient-boosting trees give scikit-learn's answers, or are not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmission import synthetic
from readmission.acceleration import CompiledTrees, _FastPipeline, accelerate, sample_inputs
from readmission.cleaning import clean
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
    assert isinstance(faster.pipeline_, _FastPipeline)
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


def test_sample_inputs_vary_the_history():
    sample = sample_inputs()
    assert len(sample) == 32
    assert isinstance(sample, pd.DataFrame)
    assert sample["prior_encounters"].nunique() > 1
