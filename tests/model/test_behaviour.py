"""Behaviour of a model trained on the real data (when the file is present).

The model is the `hist_gradient_boosting` family (the champion of the full search on this
data) fitted with the quick profile's configuration, through the same code path as the
training DAG: load, clean, history, fit, tuned decision rule.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from readmission import evaluation, pipeline, training
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
