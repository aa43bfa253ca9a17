"""Features: the patient's history uses only the past; derived inputs need nothing else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmission import features, synthetic
from readmission.cleaning import clean, clean_records


def _encounters() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "encounter_id": [30, 10, 20, 40, 50],
            "patient_nbr": [1, 1, 1, 2, 1],
            "readmitted": ["NO", "<30", ">30", "<30", "NO"],
            "number_inpatient": [1.0, 2.0, np.nan, 5.0, 0.0],
            "number_emergency": [0.0, 1.0, 1.0, 3.0, 0.0],
        }
    )


def test_history_counts_only_the_patients_earlier_encounters():
    out = features.add_history(_encounters()).set_index("encounter_id")
    assert out.loc[[10, 20, 30, 50], "prior_encounters"].tolist() == [0, 1, 2, 3]
    assert out.loc[40, "prior_encounters"] == 0  # another patient
    assert out.loc[[10, 20, 30, 50], "prior_readmitted_lt30"].tolist() == [0, 1, 1, 1]
    assert out.loc[[10, 20, 30, 50], "prior_readmitted_gt30"].tolist() == [0, 0, 1, 1]
    assert out.loc[[10, 20, 30, 50], "prior_inpatient_total"].tolist() == [0, 2, 2, 3]
    assert out.loc[40, "prior_inpatient_total"] == 0


def test_history_does_not_depend_on_row_order():
    frame = _encounters()
    shuffled = frame.sample(frac=1, random_state=3)
    a = features.add_history(frame).set_index("encounter_id").sort_index()
    b = features.add_history(shuffled).set_index("encounter_id").sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_a_later_encounter_never_changes_an_earlier_ones_history():
    frame = _encounters()
    before = features.add_history(frame[frame.encounter_id < 50]).set_index("encounter_id")
    after = features.add_history(frame).set_index("encounter_id")
    pd.testing.assert_frame_equal(
        before[list(features.HISTORY)], after.loc[before.index, list(features.HISTORY)]
    )


def test_encounter_features_give_the_model_inputs_in_order():
    cleaned = clean(synthetic.encounters(50, seed=2))
    out = features.EncounterFeatures().fit(cleaned).transform(cleaned)
    assert list(out.columns) == [*features.CATEGORICAL, *features.NUMERIC, *features.CODE_NUMBERS]
    numbers = [*features.NUMERIC, *features.CODE_NUMBERS]
    assert out[numbers].dtypes.map(lambda d: d.kind == "f").all()
    assert (out[list(features.HISTORY)] == 0).all().all()  # absent history counts as none
    assert set(out["diag_1_category"].dropna()) <= {
        "428",
        "414",
        "786",
        "410",
        "486",
        "427",
        "491",
        "715",
        "682",
        "434",
        "250",
        "276",
        "401",
        "599",
        "403",
        "585",
        "272",
        "V57",
        "V45",
        "E885",
        "996",
        "008",
        "038",
    }


def test_derived_counts():
    record = clean(
        pd.DataFrame(
            [
                {
                    "metformin": "Up",
                    "insulin": "Steady",
                    "glipizide": "Down",
                    "number_outpatient": 1,
                    "number_emergency": 2,
                    "number_inpatient": 3,
                    "diag_1": "428",
                    "diag_2": "427.3",
                    "diag_3": "250.01",
                }
            ]
        )
    )
    out = features.EncounterFeatures().fit(record).transform(record).iloc[0]
    assert out["medications_prescribed"] == 3
    assert out["medication_changes"] == 2
    assert out["prior_visits_year"] == 6
    assert out["diagnoses_circulatory"] == 2
    assert out["diagnoses_diabetes"] == 1
    assert out["admission_type_id_code"] is np.nan or pd.isna(out["admission_type_id_code"])


def test_identifiers_never_reach_the_model_inputs():
    cleaned = clean(synthetic.encounters(20, seed=4))
    out = features.EncounterFeatures().fit(cleaned).transform(cleaned)
    assert not {"encounter_id", "patient_nbr", "readmitted"} & set(out.columns)


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown model family 'svm'"):
        features.build_pipeline("svm")


def test_a_code_written_with_or_without_its_leading_zero_scores_the_same():
    """The file writes 038 as "38"; a client writes "038". The linear model one-hot encodes
    the 3-digit category, so both spellings must reach it as one category."""
    from readmission.estimator import ReadmissionModel

    raw = synthetic.encounters(3_000, seed=4)
    assert (raw["diag_1"] == "38").sum() >= 30  # a category the encoder keeps
    train = features.add_history(clean(raw))
    model = ReadmissionModel(features.build_pipeline("logistic_regression", {"C": 1.0}))
    model.fit(train.drop(columns=["readmitted"]), train["readmitted"])
    request = raw.head(20).drop(columns=["readmitted"]).assign(diag_1="38", diag_2="8")
    padded = request.assign(diag_1="038", diag_2="008")
    np.testing.assert_array_equal(
        model.predict_proba(clean(request)), model.predict_proba(clean(padded))
    )


@pytest.mark.parametrize(
    ("code", "number"),
    [
        ("250.83", 250.83),
        ("8", 8.0),
        ("V57.1", 1057.1),
        ("v57.1", 1057.1),
        ("E878", 2878.0),
        (None, None),
        (np.nan, None),
        ("", None),
        ("nan", None),
        ("V", None),
        ("bad", None),
    ],
)
def test_a_diagnosis_code_as_an_ordered_number(code, number):
    found = features.code_number(code)
    assert (np.isnan(found) and number is None) or found == pytest.approx(number)


def test_the_codes_as_numbers_are_the_same_from_a_frame_and_from_records():
    raw = synthetic.encounters(40, seed=5)
    frame = features.EncounterFeatures().fit(clean(raw)).transform(clean(raw))
    records = clean_records(raw.to_dict("records"))
    columns = features.EncounterFeatures().columns(records, len(raw))
    for name in features.CODE_NUMBERS:
        np.testing.assert_array_equal(frame[name].to_numpy(), columns[name])
        assert frame[name].notna().any()


def _same_encoding(ours, reference, frames) -> None:
    """`ours` (OneHotCodes) and scikit-learn's encoder fitted alike: same categories,
    pooled categories, column names and matrices for every frame."""
    from pandas.testing import assert_index_equal

    for mine, theirs in zip(ours.categories_, reference.categories_, strict=True):
        assert_index_equal(pd.Index(mine, dtype=object), pd.Index(theirs, dtype=object))
    for mine, theirs in zip(
        ours.infrequent_categories_, reference.infrequent_categories_, strict=True
    ):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert_index_equal(pd.Index(mine, dtype=object), pd.Index(theirs, dtype=object))
    assert list(ours.get_feature_names_out()) == list(reference.get_feature_names_out())
    for frame in frames:
        mine, theirs = ours.transform(frame), reference.transform(frame)
        assert mine.shape == theirs.shape
        assert (mine != theirs).nnz == 0


def _reference_one_hot(min_frequency: int):
    from sklearn.preprocessing import OneHotEncoder

    return OneHotEncoder(
        handle_unknown="infrequent_if_exist", min_frequency=min_frequency, sparse_output=True
    )


def test_one_hot_codes_encode_as_scikit_learns_one_hot_encoder():
    """Rare categories pooled, unknown ones into the pool (or nowhere when nothing is
    pooled), missing values a category of their own or, unseen, unknown; small inputs
    (dict look-ups) and large ones (pandas) alike."""
    rng = np.random.default_rng(0)
    n = 500
    fit = pd.DataFrame(
        {
            "common": rng.choice(["a", "b", "c"], n),  # nothing rare, nothing missing
            "rare": rng.choice(["x", "y", "z", "w"], n, p=[0.6, 0.36, 0.03, 0.01]),
            "missing": np.where(rng.random(n) < 0.2, None, rng.choice(["p", "q"], n)),
            "rare_missing": np.where(rng.random(n) < 0.02, None, rng.choice(["m", "n"], n)),
        }
    ).astype("str")
    fit.loc[:4, "common"] = np.nan  # missing but rare: pooled
    later = pd.DataFrame(
        {
            "common": ["a", "new", None, "c"],
            "rare": ["z", "new", "x", None],
            "missing": [None, "new", "q", "p"],
            "rare_missing": [None, "m", "new", "n"],
        }
    )
    unseen_missing = fit.assign(missing=fit["missing"].fillna("p"))
    ours = features.OneHotCodes(min_frequency=30).fit(fit)
    reference = _reference_one_hot(30).fit(fit)
    assert ours.infrequent_categories_[1] is not None  # the cases are there
    _same_encoding(ours, reference, [fit, later, later.iloc[:1], pd.concat([later] * 20)])
    ours, reference = (e.fit(unseen_missing) for e in (ours, _reference_one_hot(30)))
    _same_encoding(ours, reference, [fit, later, pd.concat([later] * 20)])


def test_one_hot_codes_encode_the_real_data_as_scikit_learns_one_hot_encoder():
    from tests.support.tools import require_real_csv

    raw = pd.read_csv(require_real_csv(), dtype=str, keep_default_na=False)
    inputs = features.EncounterFeatures().fit_transform(features.add_history(clean(raw)))
    inputs = inputs[list(features.CATEGORICAL)]
    fit, other = inputs.iloc[:60_000], inputs.iloc[60_000:]
    ours = features.OneHotCodes(min_frequency=30).fit(fit)
    reference = _reference_one_hot(30).fit(fit)
    _same_encoding(ours, reference, [fit, other, other.iloc[:5]])


def test_one_hot_codes_take_text_and_missing_values_only():
    """None and NaN are one missing category; a value that is not text is refused when
    fitting and unknown (pooled) when transforming, in small and large inputs alike."""
    fit = pd.DataFrame({"c": np.array(["a"] * 40 + ["b"] * 40 + [None] * 20 + [np.nan] * 20)})
    codes = features.OneHotCodes(min_frequency=30).fit(fit)
    assert list(codes.get_feature_names_out()) == ["c_a", "c_b", "c_nan"]
    repeated = features.OneHotCodes(min_frequency=30).fit(pd.concat([fit, fit.iloc[:5]]))
    assert repeated.infrequent_categories_ == [None]
    pooled = features.OneHotCodes(min_frequency=30).fit(pd.DataFrame({"c": ["a"] * 40 + ["z"] * 3}))
    later = pd.DataFrame({"c": np.array(["a", 7, None, "z"], dtype=object)})
    for frame in (later, pd.concat([later] * 20, ignore_index=True)):
        matrix = pooled.transform(frame).toarray()[:4]
        # a, then 7 (not text: unknown, pooled), None (never seen missing: pooled), z (rare)
        np.testing.assert_array_equal(matrix, [[1, 0], [0, 1], [0, 1], [0, 1]])
    with pytest.raises(ValueError, match=r"c: values that are not text, such as \[7\]"):
        features.OneHotCodes().fit(later)
    with pytest.raises(TypeError, match="min_frequency must be a count"):
        features.OneHotCodes(min_frequency=0.1).fit(fit)
