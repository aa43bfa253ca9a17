"""Behaviour of a model trained on the real data (when the file is present).

The model is the `hist_gradient_boosting` family (the champion of the full search on this
data) fitted with the quick profile's configuration, through the same code path as the
training DAG: load, clean, history, fit, tuned decision rule.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import shap

from readmission import evaluation, explain, pipeline, training
from readmission.acceleration import (
    SMALL_BATCH,
    accelerate,
    fast_path,
    sample_inputs,
    score_columns,
)
from readmission.cleaning import clean_records
from readmission.estimator import expired_mask
from readmission.features import HISTORY
from readmission.settings import Settings
from tests.support.tools import require_real_csv

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    csv = require_real_csv()
    store = tmp_path_factory.mktemp("real-store")
    settings = Settings(DIABETES_CSV=csv, DATA_DATABASE_URL=f"sqlite:///{store / 'main.db'}")
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    data = training.load_training_data(pipeline.engine(settings))
    candidate = training.fit_candidate("hist_gradient_boosting", data, "quick")
    return candidate, data


def test_champion_beats_the_majority_class_by_a_clear_margin(trained):
    candidate, data = trained
    baseline = evaluation.majority_baseline(data.target("train"), data.target("test"))
    assert candidate.metrics["test_macro_f1"] >= baseline["macro_f1"] + 0.15
    assert candidate.metrics["test_roc_auc_lt30"] >= 0.65
    assert candidate.metrics["test_recall_lt30"] >= 0.25  # the rare class is predicted


def test_predictions_are_invariant_to_identifiers(trained):
    candidate, data = trained
    inputs = data.frames["test"].head(2_000)
    shuffled = inputs.copy()
    rng = np.random.default_rng(0)
    shuffled["encounter_id"] = rng.permutation(shuffled["encounter_id"].to_numpy())
    shuffled["patient_nbr"] = rng.integers(1, 10**8, len(shuffled))
    np.testing.assert_array_equal(
        candidate.model.predict_proba(inputs), candidate.model.predict_proba(shuffled)
    )
    without = inputs.drop(columns=["encounter_id", "patient_nbr", "readmitted"])
    np.testing.assert_array_equal(
        candidate.model.predict_proba(inputs), candidate.model.predict_proba(without)
    )


def test_more_prior_inpatient_visits_never_lower_the_30_day_risk_on_average(trained):
    candidate, data = trained
    inputs = data.inputs("test")
    alive = inputs[~inputs["expired"].astype(bool)]
    lt30 = list(candidate.model.classes_).index("<30")
    risks = [
        candidate.model.predict_proba(alive.assign(number_inpatient=float(visits)))[:, lt30].mean()
        for visits in range(0, 8)
    ]
    assert all(later >= earlier for earlier, later in itertools.pairwise(risks)), risks
    assert risks[-1] > risks[0] + 0.05


def test_probabilities_are_probabilities(trained):
    candidate, data = trained
    proba = candidate.model.predict_proba(data.inputs("valid"))
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()


def test_the_test_split_does_not_drift_from_the_training_reference(trained):
    from readmission.drift import DriftMonitor

    candidate, data = trained
    monitor = DriftMonitor(candidate.model.reference_profile_, window=5_000)
    monitor.observe(data.inputs("test").sample(5_000, random_state=0))
    scores = monitor.scores()
    assert max(scores.values()) < 0.05, sorted(scores.items(), key=lambda kv: -kv[1])[:3]


def test_the_path_without_pandas_gives_the_pipelines_answers_on_the_real_test_split(trained):
    """The API's small batches: raw records -> clean columns as arrays -> compiled trees,
    and the explanations from the same encoded rows, equal the pandas pipeline's (1e-9);
    the explanations' contributions equal shap's TreeExplainer's on a sample."""
    candidate, data = trained
    model = candidate.model
    faster = accelerate(model, sample_inputs())
    assert fast_path(faster) is not None
    test = data.frames["test"]
    raw = pd.read_csv(require_real_csv(), dtype=str, keep_default_na=False)
    raw = raw.set_index(raw["encounter_id"].astype(int)).loc[test["encounter_id"].astype(int)]
    records = raw.to_dict("records")
    expected = model.predict_proba(test)
    explainer = explain.Explainer(model)
    classifier = model.pipeline_.steps[-1][1]
    shaps, k = shap.TreeExplainer(classifier), list(classifier.classes_).index("<30")
    explained = 0
    for start in range(0, len(records), SMALL_BATCH):
        part = records[start : start + SMALL_BATCH]
        columns = clean_records(part)
        for name in HISTORY:
            columns[name] = test[name].to_numpy(dtype=float)[start : start + len(part)]
        proba, inputs, encoded = score_columns(faster, columns, len(part))
        np.testing.assert_allclose(proba, expected[start : start + len(part)], rtol=0, atol=1e-9)
        if start % (50 * SMALL_BATCH) == 0:  # explanations of a sample of batches
            ours = explainer.explain_encoded(inputs, encoded, expired_mask(columns, len(part)))
            reference = explainer.explain(test.iloc[start : start + len(part)])
            assert [e.to_dict() for e in ours] == [e.to_dict() for e in reference]
            # and the contributions are shap's own, on the real model
            values, baseline, _ = explainer.contributions(test.iloc[start : start + len(part)])
            by_shap = np.asarray(shaps.shap_values(encoded, check_additivity=False))[:, :, k]
            np.testing.assert_allclose(values, by_shap, rtol=0, atol=1e-9)
            np.testing.assert_allclose(baseline, np.ravel(shaps.expected_value)[k], atol=1e-9)
            explained += len(part)
    assert explained >= 300
