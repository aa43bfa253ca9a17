"""The served estimator's two rules: death, and the tuned decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from readmission.cleaning import clean
from readmission.estimator import ReadmissionModel, _macro_f1


def _data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    logits = np.stack([np.zeros(n), x[:, 0] - 0.5, 1.5 * x[:, 1] - 2.2], axis=1)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array(["NO", ">30", "<30"])[[rng.choice(3, p=row) for row in p]]
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "expired": False})
    return frame, pd.Series(y)


def test_expired_encounters_are_not_fitted_and_predicted_no():
    frame, y = _data()
    frame.loc[:99, "expired"] = True
    y.loc[:99] = "<30"  # impossible labels: if fitted, they would bias the model
    model = ReadmissionModel(LogisticRegression(max_iter=500)).fit(frame, y)
    proba = model.predict_proba(frame)
    no = list(model.classes_).index("NO")
    assert (proba[:100, no] == 1).all()
    assert (model.predict(frame)[:100] == "NO").all()
    assert model.pipeline_.n_features_in_ == 3
    clean_model = ReadmissionModel(LogisticRegression(max_iter=500)).fit(frame[100:], y[100:])
    np.testing.assert_allclose(proba[100:], clean_model.predict_proba(frame[100:]))


def test_hospice_encounters_are_fitted_and_scored_like_any_other():
    frame, y = _data()
    hospice = {"discharge_disposition_id": 13}  # hospice / home: not death
    cleaned = clean(pd.DataFrame([hospice] * 3))
    assert not cleaned["expired"].any()
    model = ReadmissionModel(LogisticRegression(max_iter=500)).fit(frame, y)
    proba = model.predict_proba(frame.assign(expired=cleaned["expired"].iloc[0]))
    lt30 = list(model.classes_).index("<30")
    assert (proba[:, lt30] > 0).all()
    assert (proba[:, lt30] < 1).all()


def test_tuned_decision_raises_macro_f1_over_argmax_and_keeps_probabilities():
    frame, y = _data()
    model = ReadmissionModel(LogisticRegression(max_iter=500)).fit(frame, y)
    argmax = f1_score(y, model.classes_[model.predict_proba(frame).argmax(1)], average="macro")
    proba_before = model.predict_proba(frame)
    tuned = model.tune_decision(frame, y)
    assert tuned > argmax + 0.02
    assert tuned == pytest.approx(f1_score(y, model.predict(frame), average="macro"))
    np.testing.assert_array_equal(proba_before, model.predict_proba(frame))
    assert model.decision_weights_["NO"] == 1.0
    assert model.decision_weights_["<30"] > 1.0  # the rare class needs a push


def test_fast_macro_f1_equals_sklearns():
    rng = np.random.default_rng(1)
    truth, predicted = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    predicted[:10] = 2
    assert _macro_f1(truth, predicted, 3) == pytest.approx(
        f1_score(truth, predicted, average="macro", labels=[0, 1, 2], zero_division=0)
    )


def test_gradient_boosting_stops_early_on_whole_patients(monkeypatch):
    """Its early-stopping validation set is drawn by patient: a patient's encounters are
    either all fitted or all held out, as the splits are."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from readmission import features, synthetic

    raw = synthetic.encounters(2_000, seed=3, patients=600)
    data = features.add_history(clean(raw))
    seen = {}
    real_fit = HistGradientBoostingClassifier.fit

    def spy(self, inputs, y, sample_weight=None, **kwargs):
        val = kwargs.get("X_val")
        seen.update(rows=len(inputs), val_rows=None if val is None else len(val))
        return real_fit(self, inputs, y, sample_weight, **kwargs)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", spy)
    pipeline = features.build_pipeline("hist_gradient_boosting", {"max_iter": 20})
    model = ReadmissionModel(pipeline).fit(
        data.drop(columns=["readmitted"]), data["readmitted"], groups=data["patient_nbr"]
    )
    patients = data["patient_nbr"].to_numpy()
    held = np.isin(patients, model.early_stopping_patients_)
    fitted = ~data["expired"].to_numpy()  # the expired are never fitted
    assert seen["val_rows"] == int((held & fitted).sum())  # every encounter of those patients
    assert seen["rows"] == int((~held & fitted).sum())  # and none of theirs in the fit
    share = len(model.early_stopping_patients_) / len(set(patients))
    assert 0.05 < share < 0.15  # validation_fraction 0.1, of patients


def test_recalibration_undoes_a_known_distortion():
    from readmission.estimator import fit_recalibration, recalibrate

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (20_000, 3))
    true_proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(3, p=p) for p in true_proba])
    assert np.allclose(recalibrate(true_proba, 1.0, [0, 0, 0]), true_proba)
    overconfident = recalibrate(true_proba, 2.0, [0.0, 0.3, -0.3])
    found = fit_recalibration(overconfident, truth)
    assert found["scale"] == pytest.approx(0.5, abs=0.03)
    assert found["bias"][0] == 0.0
    repaired = recalibrate(overconfident, found["scale"], found["bias"])
    assert np.abs(repaired - true_proba).max() < 0.03


@pytest.mark.parametrize(
    "family", ["logistic_regression", "random_forest", "hist_gradient_boosting", "lightgbm"]
)
def test_precomputed_features_fit_and_score_as_the_pipeline_computing_them(family):
    """Training computes `EncounterFeatures` once per split and hands them to every fit and
    prediction: the model is the same as one computing them itself, row for row, expired
    encounters (not fitted) included, and on a subset of rows as given."""
    from readmission import features, synthetic

    data = features.add_history(clean(synthetic.encounters(1_500, seed=5, patients=500)))
    assert data["expired"].any()
    frame, y, patients = data.drop(columns=["readmitted"]), data["readmitted"], data["patient_nbr"]
    computed = features.EncounterFeatures().fit_transform(frame)
    params = {
        "logistic_regression": {"max_iter": 200},
        "random_forest": {"n_estimators": 10},
        "hist_gradient_boosting": {"max_iter": 20},
        "lightgbm": {"num_leaves": 7, "learning_rate": 0.3},
    }[family]

    def model():
        return ReadmissionModel(features.build_pipeline(family, params, seed=1, threads=1))

    plain = model().fit(frame, y, groups=patients)
    shared = model().fit(frame, y, groups=patients, features=computed)
    assert shared.pipeline_.steps[0][1].n_features_in_ == frame.shape[1]
    np.testing.assert_array_equal(plain.predict_proba(frame), shared.predict_proba(frame))
    rows = np.arange(0, len(frame), 3)
    np.testing.assert_array_equal(
        plain.predict_proba(frame.iloc[rows]),
        shared.predict_proba(frame.iloc[rows], features=computed.iloc[rows]),
    )
    assert plain.tune_decision(frame, y) == shared.tune_decision(frame, y, features=computed)
    with pytest.raises(ValueError, match="features of 500 rows given for 1,500 encounters"):
        shared.predict_proba(frame, features=computed.iloc[:500])
    with pytest.raises(ValueError, match="other rows than the frame's"):
        shared.predict_proba(frame, features=computed.iloc[::-1])
    with pytest.raises(ValueError, match="other rows than the frame's"):
        model().fit(frame.iloc[rows], y.iloc[rows], features=computed.iloc[rows + 1])
