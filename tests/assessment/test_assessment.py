"""readmission/assessment.py: calibration, operating points, subgroups, the patient
bootstrap and the promotion gate on subgroups, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from readmission import assessment


def _sample(n=20_000, seed=0, distort=1.0):
    """Risks and outcomes drawn from them (calibrated when distort=1: y ~ Bernoulli(risk))."""
    rng = np.random.default_rng(seed)
    risk = 1 / (1 + np.exp(-rng.normal(-2.2, 0.8, n)))
    y = rng.random(n) < risk
    shown = 1 / (1 + np.exp(-distort * np.log(risk / (1 - risk))))
    return y, shown


def test_bootstrap_resamples_whole_patients():
    patients = np.array([7, 7, 3, 9, 9, 9, 4])
    weights = assessment.bootstrap_weights(patients, resamples=500, seed=1)
    assert weights.shape == (500, 7)
    # a patient's encounters share a weight; each resample draws as many patients as exist
    assert (weights[:, 0] == weights[:, 1]).all()
    assert (weights[:, 3] == weights[:, 5]).all()
    per_patient = weights[:, [0, 2, 3, 6]]
    assert (per_patient.sum(axis=1) == 4).all()
    assert abs(per_patient.mean() - 1.0) < 0.05
    assert not (weights == weights[0]).all()


def test_weighted_auc_is_sklearns_with_ties_and_with_repeated_rows():
    rng = np.random.default_rng(3)
    y = rng.random(3_000) < 0.2
    risk = np.round(rng.random(3_000) * 0.5 + 0.3 * y, 2)  # many ties
    assert assessment.weighted_auc(y, risk, np.ones(len(y)))[0] == pytest.approx(
        roc_auc_score(y, risk), abs=1e-12
    )
    counts = rng.integers(0, 4, len(y)).astype(float)
    repeated = np.repeat(np.arange(len(y)), counts.astype(int))
    assert assessment.weighted_auc(y, risk, counts)[0] == pytest.approx(
        roc_auc_score(y[repeated], risk[repeated]), abs=1e-12
    )


def test_calibration_of_a_calibrated_and_of_an_overconfident_risk():
    y, risk = _sample()
    good = assessment.calibration(y, risk)
    assert good["brier"] == pytest.approx(brier_score_loss(y, risk))
    assert good["ece"] < 0.01
    assert good["slope"] == pytest.approx(1.0, abs=0.1)
    assert good["intercept"] == pytest.approx(0.0, abs=0.05)
    y, risk = _sample(distort=2.0)  # twice the log-odds: too sure both ways
    bad = assessment.calibration(y, risk)
    assert bad["slope"] == pytest.approx(0.5, abs=0.05)
    assert bad["ece"] > 0.03
    # the slope is the logistic recalibration sklearn fits without penalty
    logits = np.log(risk / (1 - risk)).reshape(-1, 1)
    reference = LogisticRegression(C=np.inf).fit(logits, y)
    assert bad["slope"] == pytest.approx(reference.coef_[0][0], rel=1e-4)


def test_ece_is_the_mean_gap_over_equal_mass_bins():
    y = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    risk = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    # 3 bins of 2: |0 - 0.15|, |1 - 0.35|, |0.5 - 0.55| -> (0.15 + 0.65 + 0.05) / 3
    assert assessment.expected_calibration_error(y, risk, bins=3) == pytest.approx(0.85 / 3)


def test_top_k_threshold_flags_k_percent_of_a_like_distribution():
    _, valid = _sample(seed=1)
    _, test = _sample(seed=2)
    quantiles = assessment.risk_quantiles(valid)
    for k in (5, 10, 20, 30):
        threshold = assessment.threshold_for_top(quantiles, k)
        assert (valid >= threshold).mean() == pytest.approx(k / 100, abs=0.002)
        assert (test >= threshold).mean() == pytest.approx(k / 100, abs=0.01)
    with pytest.raises(ValueError, match="between 0 and 100"):
        assessment.threshold_for_top(quantiles, 100)


def test_operating_points_match_direct_counts_and_intervals_hold_them():
    _, valid = _sample(seed=1)
    y, test = _sample(seed=2)
    patients = np.arange(len(y)) // 2
    weights = assessment.bootstrap_weights(patients, 200, seed=0)
    rows = assessment.operating_points(assessment.risk_quantiles(valid), y, test, weights)
    assert [r["top_percent"] for r in rows] == [5, 10, 20, 30]
    for row in rows:
        flagged = test >= row["threshold"]
        sensitivity = (flagged & y).sum() / y.sum()
        ppv = (flagged & y).sum() / flagged.sum()
        assert row["flagged"]["value"] == flagged.sum()
        assert row["sensitivity"]["value"] == pytest.approx(sensitivity)
        assert row["ppv"]["value"] == pytest.approx(ppv)
        assert row["number_needed_to_evaluate"]["value"] == pytest.approx(1 / ppv)
        for name in ("sensitivity", "ppv", "number_needed_to_evaluate", "flagged"):
            low, high = row[name]["ci95"]
            assert low < row[name]["value"] < high, name
    sensitivities = [r["sensitivity"]["value"] for r in rows]
    assert sensitivities == sorted(sensitivities)  # more flagged, more found


def test_subgroups_pool_small_groups_and_match_direct_figures():
    y, risk = _sample(n=6_000, seed=4)
    rng = np.random.default_rng(5)
    patients = np.arange(len(y))
    frame = pd.DataFrame(
        {
            "race": rng.choice(
                ["Caucasian", "AfricanAmerican", "Asian", None], len(y), p=[0.6, 0.35, 0.02, 0.03]
            ),
            "gender": rng.choice(["Female", "Male"], len(y)),
            "age": rng.choice(["[50-60)", "[60-70)", "[70-80)"], len(y)),
        }
    )
    weights = assessment.bootstrap_weights(patients, 100)
    rows = assessment.subgroups(frame, y, risk, patients, 0.2, weights)
    race = {r["group"]: r for r in rows if r["attribute"] == "race"}
    # Asian (~120 patients) and missing (~180) fall under 200: pooled together
    assert set(race) == {"Caucasian", "AfricanAmerican", assessment.POOLED}
    small = frame["race"].isna() | (frame["race"] == "Asian")
    assert race[assessment.POOLED]["patients"] == small.sum()
    mask = (frame["race"] == "Caucasian").to_numpy()
    row = race["Caucasian"]
    assert row["roc_auc"]["value"] == pytest.approx(roc_auc_score(y[mask], risk[mask]))
    flagged = risk[mask] >= 0.2
    assert row["sensitivity"]["value"] == pytest.approx((flagged & y[mask]).sum() / y[mask].sum())
    assert row["calibration_in_the_large"]["value"] == pytest.approx(
        y[mask].mean() - risk[mask].mean()
    )
    assert {r["attribute"] for r in rows} == {"race", "gender", "age band"}


def _rows(sensitivities: dict[str, float], aucs: dict[str, float]) -> list[dict]:
    return [
        {
            "attribute": "gender",
            "group": group,
            "sensitivity": {"value": sensitivities[group]},
            "roc_auc": {"value": aucs[group]},
        }
        for group in sensitivities
    ]


def test_gate_refuses_a_wider_sensitivity_gap_or_a_group_auc_fall():
    champion = _rows({"Female": 0.30, "Male": 0.28}, {"Female": 0.68, "Male": 0.67})
    fine = _rows({"Female": 0.33, "Male": 0.29}, {"Female": 0.69, "Male": 0.66})
    assert assessment.fairness_gate(fine, champion, 0.05)["passed"]
    wide = _rows({"Female": 0.40, "Male": 0.30}, {"Female": 0.70, "Male": 0.68})
    verdict = assessment.fairness_gate(wide, champion, 0.05)
    assert not verdict["passed"]
    assert "sensitivity gap between groups 0.100 vs champion 0.020" in verdict["reason"]
    falls = _rows({"Female": 0.30, "Male": 0.28}, {"Female": 0.70, "Male": 0.60})
    verdict = assessment.fairness_gate(falls, champion, 0.05)
    assert not verdict["passed"]
    assert "ROC-AUC of gender=Male falls by 0.070" in verdict["reason"]
    assert verdict["largest_auc_fall_group"] == "gender=Male"
