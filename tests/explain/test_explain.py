"""Explanations are exact for the served model: baseline + contributions == the `<30`
score of each family, TreeSHAP agrees with shap's own explainer of the whole classifier,
and the factors shown are the largest ones with readable values."""

from __future__ import annotations

import numpy as np
import pytest
import shap

from readmission import explain, synthetic
from readmission.cleaning import EXPIRED, clean
from readmission.estimator import ReadmissionModel
from readmission.explain import Explainer, ExplainerUnavailableError, readable
from readmission.features import CATEGORICAL, HISTORY, NUMERIC, build_pipeline

PARAMS = {
    "hist_gradient_boosting": {"max_iter": 60, "max_leaf_nodes": 15},
    "random_forest": {"n_estimators": 20, "min_samples_leaf": 5},
    "logistic_regression": {"max_iter": 300},
    "lightgbm": {"num_leaves": 15, "learning_rate": 0.2, "min_child_samples": 20},
}


@pytest.fixture(scope="module")
def frame():
    frame = clean(synthetic.encounters(2_500, seed=4))
    for name in HISTORY:
        frame[name] = np.random.default_rng(1).integers(0, 3, len(frame)).astype(float)
    return frame


@pytest.fixture(scope="module")
def rows(frame):
    """A sample with missing and unknown values, as requests may carry."""
    rows = frame[~frame[EXPIRED].astype(bool)].sample(40, random_state=0).copy()
    rows.loc[rows.index[:8], ["num_lab_procedures", "race", "age_years", "diag_1"]] = np.nan
    rows.loc[rows.index[8:12], "medical_specialty"] = "Never-seen-in-training"
    return rows


@pytest.fixture(scope="module", params=list(PARAMS))
def fitted(request, frame):
    family = request.param
    pipeline = build_pipeline(family, PARAMS[family])
    if family == "lightgbm":
        pipeline.set_params(classify__keep_booster=True)  # LightGBM's own model, the reference
    model = ReadmissionModel(pipeline).fit(frame, frame["readmitted"])
    model.feature_means_ = explain.feature_means(model, frame)
    return family, model


def test_baseline_plus_contributions_is_the_models_own_lt30_score(fitted, rows):
    family, model = fitted
    explainer = explain.build(model)
    values, baseline, score = explainer.contributions(rows)
    encoded = model.pipeline_[:-1].transform(rows)
    classifier = model.pipeline_[-1]
    k = list(classifier.classes_).index("<30")
    if family == "hist_gradient_boosting":
        expected = classifier._raw_predict(np.asarray(encoded, dtype=float))[:, k]
    elif family == "random_forest":
        expected = classifier.predict_proba(encoded)[:, k]
    elif family == "lightgbm":
        raw = classifier.booster_.predict(encoded, raw_score=True, num_iteration=classifier.n_iter_)
        expected = raw[:, k]
    else:
        expected = classifier.decision_function(encoded)[:, k]
    np.testing.assert_allclose(baseline + values.sum(axis=1), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-6)
    assert values.shape == (len(rows), len(explainer.features))
    assert np.abs(values).sum() > 0
    assert explainer.unit == ("probability" if family == "random_forest" else "log-odds")


@pytest.mark.parametrize("fitted", ["hist_gradient_boosting", "random_forest"], indirect=True)
def test_tree_contributions_equal_shaps_explainer_of_the_whole_classifier(fitted, rows):
    _, model = fitted
    explainer = explain.build(model)
    values, baseline, _ = explainer.contributions(rows)
    classifier = model.pipeline_[-1]
    k = list(classifier.classes_).index("<30")
    reference = shap.TreeExplainer(classifier)
    expected = np.asarray(reference.shap_values(model.pipeline_[:-1].transform(rows)))[:, :, k]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(baseline[0], np.ravel(reference.expected_value)[k], atol=1e-9)
    assert explainer.features == tuple(
        model.pipeline_.named_steps["encode"].get_feature_names_out()
    )


@pytest.mark.parametrize("fitted", ["lightgbm"], indirect=True)
def test_lightgbm_contributions_equal_lightgbms_own_treeshap(fitted, rows):
    _, model = fitted
    explainer = explain.build(model)
    values, baseline, _ = explainer.contributions(rows)
    classifier = model.pipeline_[-1]
    k = list(classifier.classes_).index("<30")
    encoded = model.pipeline_[:-1].transform(rows)
    width = encoded.shape[1] + 1  # each class: a value per feature, then the expected value
    found = classifier.booster_.predict(
        encoded, pred_contrib=True, num_iteration=classifier.n_iter_
    )
    np.testing.assert_allclose(values, found[:, k * width : (k + 1) * width - 1], atol=1e-9)
    np.testing.assert_allclose(baseline, found[:, (k + 1) * width - 1], atol=1e-9)
    assert {"diag_1_number", "diag_3_number"} <= set(explainer.features)


def test_linear_contributions_are_coef_times_the_distance_to_the_training_mean(frame, rows):
    model = ReadmissionModel(build_pipeline("logistic_regression", PARAMS["logistic_regression"]))
    model.fit(frame, frame["readmitted"])
    model.feature_means_ = explain.feature_means(model, frame)
    explainer = explain.build(model)
    values, _, _ = explainer.contributions(rows.iloc[:1])
    classifier, encoder = model.pipeline_[-1], model.pipeline_.named_steps["encode"]
    k = list(classifier.classes_).index("<30")
    x = encoder.transform(model.pipeline_.named_steps["features"].transform(rows.iloc[:1]))
    by_column = (x.toarray()[0] - np.asarray(model.feature_means_)) * classifier.coef_[k]
    names = encoder.get_feature_names_out()
    race = [i for i, n in enumerate(names) if n.startswith("race_")]  # one-hot, summed back
    assert len(race) > 2
    assert values[0, explainer.features.index("race")] == pytest.approx(by_column[race].sum())
    labs = [i for i, n in enumerate(names) if n.endswith("num_lab_procedures")]  # + indicator?
    assert values[0, explainer.features.index("num_lab_procedures")] == pytest.approx(
        by_column[labs].sum()
    )
    assert explainer.features == (*CATEGORICAL, *NUMERIC)


def test_the_factors_are_the_five_largest_each_way_with_readable_values(fitted, rows):
    _, model = fitted
    explainer = explain.build(model)
    values, _, _ = explainer.contributions(rows)
    for row, found in enumerate(explainer.explain(rows)):
        assert found.note is None
        raising = sorted(values[row][values[row] > 0], reverse=True)[:5]
        lowering = sorted(values[row][values[row] < 0])[:5]
        assert [f.contribution for f in found.raising] == pytest.approx(raising)
        assert [f.contribution for f in found.lowering] == pytest.approx(lowering)
        for factor in (*found.raising, *found.lowering):
            if factor.feature.endswith("_code") and factor.value is not None:
                assert not str(factor.value).isdigit(), factor  # a label, not a code
    first = explainer.explain(rows.iloc[:1])[0].to_dict()
    assert first["target_class"] == "<30"
    assert first["score"] == pytest.approx(first["baseline"] + values[0].sum())


def test_an_expired_encounter_is_explained_by_the_rule_not_by_features(fitted, rows):
    _, model = fitted
    dead = rows.iloc[:1].copy()
    dead[EXPIRED] = True
    (found,) = explain.build(model).explain(dead)
    assert (found.raising, found.lowering) == ([], [])
    assert "expired" in found.note


@pytest.mark.parametrize(
    ("feature", "value", "shown"),
    [
        ("admission_type_id_code", "1", "Emergency"),
        ("discharge_disposition_id_code", "11", "Expired"),
        ("race", "Caucasian", "Caucasian"),
        ("race", np.nan, None),
        ("num_lab_procedures", 44.0, 44),
        ("age_years", 75.5, 75.5),
        ("time_in_hospital", None, None),
        ("diag_1_number", 250.83, "250.83"),
        ("diag_2_number", 1057.1, "V57.1"),
        ("diag_3_number", 2878.0, "E878"),
        ("diag_3_number", 8.0, "008"),
    ],
)
def test_values_are_shown_as_people_read_them(feature, value, shown):
    assert readable(feature, value) == shown


def test_global_importance_is_the_mean_absolute_contribution_most_important_first(fitted, frame):
    _, model = fitted
    found = explain.global_importance(model, frame, rows=300)
    assert found["rows"] == 300
    importance = list(found["features"].values())
    assert importance == sorted(importance, reverse=True)
    assert importance[0] > 0
    sample = frame[~frame[EXPIRED].astype(bool)].sample(300, random_state=0)
    values, _, _ = explain.build(model).contributions(sample)
    expected = dict(zip(explain.build(model).features, np.abs(values).mean(axis=0), strict=True))
    assert found["features"] == pytest.approx(expected)
    assert explain.importance_png(found, "a title")[:8] == b"\x89PNG\r\n\x1a\n"


def test_global_importance_stops_at_its_time_budget(fitted, frame):
    _, model = fitted
    assert explain.global_importance(model, frame, rows=1_000, seconds=0)["rows"] == 16


def test_global_importance_sizes_its_chunks_to_what_is_left_of_the_budget(
    fitted, frame, monkeypatch
):
    """A model explained at one (fake) second a row, a 30 s budget: the rows explained fit
    in it, rather than a whole chunk of 250 started after the first 16 (a random forest
    took 377 s of a 30 s budget that way)."""
    _, model = fitted
    clock = {"now": 0.0}
    real = Explainer.contributions

    def one_second_a_row(self, rows):
        clock["now"] += len(rows)
        return real(self, rows)

    monkeypatch.setattr(explain.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(Explainer, "contributions", one_second_a_row)
    found = explain.global_importance(model, frame, rows=1_000, seconds=30)
    assert 16 < found["rows"] <= 31
    assert found["seconds"] <= 31


def test_a_linear_model_without_training_means_cannot_be_explained(frame):
    model = ReadmissionModel(build_pipeline("logistic_regression", PARAMS["logistic_regression"]))
    model.fit(frame, frame["readmitted"])
    with pytest.raises(ExplainerUnavailableError, match="feature_means_"):
        explain.build(model)


def test_a_model_that_is_not_the_platforms_pipeline_cannot_be_explained(frame):
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    model = ReadmissionModel(Pipeline([("classify", DummyClassifier())]))
    model.fit(frame[["time_in_hospital"]], frame["readmitted"])
    with pytest.raises(ExplainerUnavailableError, match="pipeline"):
        Explainer(model)
