"""Drift: the reference profile, the sliding window, the population stability index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmission import drift, synthetic
from readmission.cleaning import clean


@pytest.fixture(scope="module")
def reference():
    return drift.reference_profile(clean(synthetic.encounters(5_000, seed=1)))


def test_profile_covers_every_input_feature_and_sums_to_one(reference):
    names = {name for name, _ in drift.drift_features()}
    assert set(reference["features"]) == names
    assert "age" in names
    assert "number_inpatient" in names
    assert "diag_1_group" in names
    assert "encounter_id" not in names
    assert "readmitted" not in names
    for entry in reference["features"].values():
        assert sum(entry["expected"]) == pytest.approx(1)


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift():
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0
    small = drift.psi([0.5, 0.5], [0.55, 0.45])
    large = drift.psi([0.5, 0.5], [0.9, 0.1])
    assert 0 < small < 0.05 < large
    assert np.isfinite(drift.psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))  # empty bins are floored


def test_a_sample_of_the_same_population_scores_low(reference):
    monitor = drift.DriftMonitor(reference, window=1_000)
    monitor.observe(clean(synthetic.encounters(1_000, seed=2)))
    scores = monitor.scores()
    assert max(scores.values()) < 0.1, sorted(scores.items(), key=lambda kv: -kv[1])[:3]


def test_a_shifted_population_scores_high_on_the_shifted_features_only(reference):
    shifted = synthetic.encounters(1_000, seed=3)
    shifted["age"] = np.random.default_rng(0).choice(["[80-90)", "[90-100)"], len(shifted))
    shifted["number_inpatient"] = np.random.default_rng(1).integers(6, 13, len(shifted)).astype(str)
    monitor = drift.DriftMonitor(reference, window=1_000)
    monitor.observe(clean(shifted))
    scores = monitor.scores()
    assert scores["age"] > 0.2
    assert scores["number_inpatient"] > 0.2
    others = {k: v for k, v in scores.items() if k not in ("age", "number_inpatient")}
    assert max(others.values()) < 0.1


def test_the_window_forgets_the_oldest_rows(reference):
    shifted = synthetic.encounters(500, seed=4).assign(age="[90-100)")
    monitor = drift.DriftMonitor(reference, window=500, min_rows=100)
    monitor.observe(clean(shifted))
    assert monitor.scores()["age"] > 1
    for seed in range(5, 10):  # 5 x 120 rows of the reference population push it all out
        monitor.observe(clean(synthetic.encounters(120, seed=seed)))
    assert monitor.rows == 500
    assert monitor.scores()["age"] < 0.1


def test_no_score_before_the_window_holds_enough_rows(reference):
    monitor = drift.DriftMonitor(reference, window=1_000, min_rows=200)
    monitor.observe(clean(synthetic.encounters(150, seed=5)))
    assert monitor.scores() == {}
    monitor.observe(clean(synthetic.encounters(60, seed=6)))
    assert len(monitor.scores()) == len(reference["features"])


def test_unseen_categories_and_missing_values_have_bins_of_their_own(reference):
    monitor = drift.DriftMonitor(reference, window=300, min_rows=1)
    frame = clean(synthetic.encounters(300, seed=7))
    frame["payer_code"] = "ZZ"  # unseen
    frame["num_medications"] = np.nan
    monitor.observe(frame)
    scores = monitor.scores()
    assert scores["payer_code"] > 1
    assert scores["num_medications"] > 1
    assert isinstance(pd.Series(scores).sum(), float)
