"""The LightGBM family: fitted with LightGBM, served as compiled trees that give LightGBM's
own answers, without LightGBM."""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from readmission import boosting, synthetic
from readmission.acceleration import FastPipeline, accelerate, sample_inputs, score_columns
from readmission.boosting import LightGBMTrees, convert
from readmission.cleaning import clean, clean_records
from readmission.estimator import ReadmissionModel
from readmission.features import CODE_NUMBERS, HISTORY, build_pipeline, code_number

PARAMS = {"num_leaves": 15, "learning_rate": 0.2, "min_child_samples": 20}


def _data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Numbers with NaN in some columns only (LightGBM learns a default way for those;
    a NaN elsewhere is read as 0), three classes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    x[:, 4] = rng.integers(0, 6, rows)
    x[rng.random(rows) < 0.25, 0] = np.nan
    x[rng.random(rows) < 0.25, 1] = np.nan
    score = np.nan_to_num(x[:, 0]) + 0.5 * x[:, 2] + rng.normal(size=rows)
    y = np.where(score > 1.2, "<30", np.where(np.nan_to_num(x[:, 1]) + x[:, 3] > 0, ">30", "NO"))
    return x, y


@pytest.fixture(scope="module")
def fitted() -> LightGBMTrees:
    x, y = _data(6_000, seed=0)
    return LightGBMTrees(PARAMS, keep_booster=True).fit(x, y)


def test_compiled_trees_give_lightgbms_probabilities_on_unseen_rows_with_missing_values(fitted):
    x, _ = _data(2_000, seed=1)
    x[:300, 2:6] = np.nan  # never missing in training: LightGBM reads them as 0
    expected = fitted.booster_.predict(x, num_iteration=fitted.n_iter_)
    np.testing.assert_allclose(fitted.predict_proba(x), expected, rtol=0, atol=1e-12)
    assert list(fitted.classes_) == ["<30", ">30", "NO"]
    assert 0 < fitted.n_iter_ < boosting.MAX_ROUNDS  # stopped early
    assert len(fitted.compiled_.roots) == 3 * fitted.n_iter_


def test_a_fitted_model_is_served_where_lightgbm_cannot_be_imported(fitted, tmp_path):
    x, _ = _data(50, seed=2)
    model = pickle.loads(pickle.dumps(fitted))
    del model.booster_
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps((model, x)))
    script = (
        "import pickle, sys\n"
        "sys.modules['lightgbm'] = None  # any import of it fails\n"
        f"model, x = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "print(model.predict_proba(x).sum(axis=1).round(9).tolist())\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == str([1.0] * 50)


def test_a_conversion_that_disagrees_with_lightgbm_fails_the_fit(monkeypatch):
    real = boosting.convert

    def shifted(dump, classes):
        compiled = real(dump, classes)
        compiled.tree_class = (compiled.tree_class + 1) % 3  # trees of the wrong class
        return compiled

    monkeypatch.setattr(boosting, "convert", shifted)
    x, y = _data(1_000, seed=3)
    with pytest.raises(RuntimeError, match="differ from LightGBM"):
        LightGBMTrees(PARAMS).fit(x, y)


def test_splits_it_cannot_reproduce_are_refused(fitted):
    dump = fitted.booster_.dump_model(num_iteration=1)
    node = dump["tree_info"][0]["tree_structure"]
    node["decision_type"] = "=="  # a categorical split
    with pytest.raises(ValueError, match="not compiled"):
        convert(dump, fitted.classes_)
    node.update(decision_type="<=", missing_type="Zero", default_left=not (node["threshold"] >= 0))
    with pytest.raises(ValueError, match="zero-as-missing"):
        convert(dump, fitted.classes_)


@pytest.fixture(scope="module")
def family():
    """The lightgbm family on synthetic encounters with a history, stopped on patients."""
    frame = clean(synthetic.encounters(3_000, seed=4))
    rng = np.random.default_rng(1)
    for name in HISTORY:
        frame[name] = rng.integers(0, 3, len(frame)).astype(float)
    model = ReadmissionModel(build_pipeline("lightgbm", PARAMS))
    model.fit(frame, frame["readmitted"], groups=frame["patient_nbr"])
    return model, frame


def test_the_family_stops_on_whole_patients_and_reads_the_codes_as_numbers(family):
    model, frame = family
    assert len(model.early_stopping_patients_) > 0
    encode = model.pipeline_.named_steps["encode"]
    assert set(CODE_NUMBERS) <= set(encode.get_feature_names_out())
    encoded = model.pipeline_[:-1].transform(frame.iloc[:5])
    column = list(encode.get_feature_names_out()).index("diag_1_number")
    expected = [code_number(c) for c in frame["diag_1"].iloc[:5]]
    np.testing.assert_array_equal(encoded[:, column], expected)


def test_the_api_path_without_pandas_gives_the_pipelines_answers(family):
    model, _ = family
    faster = accelerate(model, sample_inputs())
    assert isinstance(faster.pipeline_, FastPipeline)
    records = synthetic.encounters(20, seed=9).to_dict("records")
    records[0]["diag_1"] = "V57.1"
    records[1]["diag_2"] = None
    proba, _, _ = score_columns(faster, clean_records(records), len(records))
    expected = model.predict_proba(clean(pd.DataFrame.from_records(records)))
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-12)


def test_inputs_of_the_wrong_width_and_unknown_labels_are_refused(fitted):
    x, y = _data(300, seed=5)
    with pytest.raises(ValueError, match="8 features"):
        fitted.predict_proba(x[:, :5])
    y_val = y.astype(object)
    y_val[0] = "unknown"
    with pytest.raises(ValueError, match="unknown"):
        LightGBMTrees(PARAMS).fit(x, y, X_val=x, y_val=y_val)


def test_a_tree_of_one_leaf_is_converted():
    dump = {
        "num_tree_per_iteration": 3,
        "tree_info": [
            {"tree_index": k, "num_leaves": 1, "tree_structure": {"leaf_value": 0.1 * k}}
            for k in range(3)
        ],
    }
    compiled = convert(dump, np.array(["<30", ">30", "NO"]))
    np.testing.assert_allclose(compiled.raw(np.zeros((2, 4))), [[0.0, 0.1, 0.2]] * 2)
    assert [len(t["children_left"]) for t in compiled.class_trees(2)] == [1]


def test_a_large_batch_is_walked_on_two_threads_and_a_small_one_on_one(fitted, monkeypatch):
    """The compiled walk runs without the GIL: a large batch's rows are split between the
    caller and a helper thread, each half written in its place (LightGBM's answers above)."""
    from readmission import acceleration

    walked: list[tuple[str, int]] = []
    compiled_walk = acceleration._walk

    def recorded(features, *rest):
        walked.append((threading.current_thread().name, len(features)))
        compiled_walk(features, *rest)

    monkeypatch.setattr(acceleration, "_walk", recorded)
    x, _ = _data(1_001, seed=2)
    expected = fitted.booster_.predict(x, num_iteration=fitted.n_iter_)
    np.testing.assert_allclose(fitted.predict_proba(x), expected, rtol=0, atol=1e-12)
    assert sorted(rows for _, rows in walked) == [500, 501]
    assert len({thread for thread, _ in walked}) == 2
    walked.clear()
    small = x[: acceleration.SPLIT_ROWS - 1]
    np.testing.assert_allclose(fitted.predict_proba(small), expected[: len(small)], atol=1e-12)
    assert walked == [(threading.current_thread().name, len(small))]
