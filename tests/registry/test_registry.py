"""The promotion rule, without MLflow: a candidate must be strictly better to be served."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from readmission import registry

NAN = math.nan


@pytest.mark.parametrize(
    ("candidate", "champion", "promoted"),
    [
        pytest.param(0.42, 0.40, True, id="better-is-promoted"),
        pytest.param(0.40, 0.40, False, id="equal-is-not-promoted"),
        pytest.param(0.38, 0.40, False, id="worse-is-not-promoted"),
        pytest.param(0.40000001, 0.40, True, id="any-margin-counts"),
        pytest.param(0.10, None, True, id="first-model-is-always-promoted"),
        pytest.param(0.0, None, True, id="first-model-even-with-a-zero-score"),
        pytest.param(NAN, None, False, id="nan-candidate-is-never-promoted-first"),
        pytest.param(NAN, 0.40, False, id="nan-candidate-is-never-promoted"),
        pytest.param(NAN, NAN, False, id="nan-against-nan-is-not-promoted"),
        pytest.param(0.40, NAN, True, id="unscorable-champion-yields-to-a-finite-score"),
        pytest.param(math.inf, NAN, False, id="unscorable-champion-keeps-against-infinity"),
        pytest.param(-0.1, NAN, True, id="unscorable-champion-yields-to-any-finite-score"),
    ],
)
def test_should_promote(candidate: float, champion: float | None, promoted: bool) -> None:
    assert registry.should_promote(candidate, champion) is promoted


def test_names_are_the_documented_constants() -> None:
    assert registry.EXPERIMENT_NAME == "diabetes-readmission"
    assert registry.MODEL_NAME == "diabetes-readmission"
    assert registry.PRODUCTION_ALIAS == "production"
    assert registry.PRODUCTION_STAGE == "Production"
    assert registry.PRIMARY_METRIC == "valid_macro_f1"


def test_importing_the_registry_does_not_import_mlflow() -> None:
    code = "import sys, readmission.registry; print('mlflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_signature_frame_widens_integers_and_nullable_booleans() -> None:
    frame = pd.DataFrame(
        {
            "visits": pd.array([1, None, 3], dtype="Int64"),
            "count": np.array([1, 2, 3]),
            "race": pd.Series(["a", None, "b"], dtype="str"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "emergency": [True, False, True],
            "age": [1.5, np.nan, 2.0],
        }
    )
    out = registry.signature_frame(frame)
    assert out["visits"].dtype == np.float64
    assert out["visits"].isna().tolist() == [False, True, False]
    assert out["count"].dtype == np.float64
    assert out["flag"].tolist() == [True, None, False]
    assert out["race"].dtype == frame["race"].dtype
    assert out["emergency"].dtype == bool
    assert out["age"].dtype == np.float64
    assert frame["visits"].dtype == "Int64"  # the input is not modified


def test_package_types_lists_the_project_classes_in_a_fitted_tree() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from readmission.estimator import ReadmissionModel

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0] * 3})
    target = pd.Series(["NO", ">30", "<30", "NO"] * 3)
    model = ReadmissionModel(Pipeline([("classify", LogisticRegression())])).fit(frame, target)
    assert registry.package_types(model) == ["readmission.estimator.ReadmissionModel"]
    assert registry.package_types(LogisticRegression()) == []


def _mlflow_schema(frame: pd.DataFrame):
    from mlflow.types.utils import _infer_schema

    return _infer_schema(frame)


def test_covering_rows_infer_the_schema_of_the_whole_frame() -> None:
    """MLflow reads every value of an object column to infer a schema (tens of seconds for
    the training split); the covering rows are the few rows that show each column's value
    types and missing values, and give the same schema."""
    n = 5_000
    frame = pd.DataFrame(
        {
            "late_nan": np.r_[np.ones(n - 1), np.nan],  # missing only in the last row
            "never_missing": np.arange(n, dtype=float),
            "text": pd.Series(["a"] * (n - 2) + [None, "b"], dtype=object),
            "text_dtype": pd.Series(["x", None] * (n // 2), dtype="str"),
            "late_bool": pd.Series([True] * (n - 1) + [None], dtype=object),
            "flag": np.r_[np.zeros(n - 1, dtype=bool), True],
            "all_missing": pd.Series([None] * n, dtype=object),
            "integers": np.arange(n),
        }
    )
    rows = registry.covering_rows(frame)
    assert len(rows) <= 2 * frame.shape[1]
    assert list(rows.columns) == list(frame.columns)
    assert _mlflow_schema(rows) == _mlflow_schema(frame)
    assert not _mlflow_schema(rows).input_dict()["late_nan"].required


def test_covering_rows_of_the_model_inputs_give_their_signature_schema() -> None:
    from readmission import synthetic
    from readmission.cleaning import clean
    from readmission.features import add_history
    from readmission.training import MODEL_INPUTS

    inputs = registry.signature_frame(
        add_history(clean(synthetic.encounters(3_000, seed=3)))[list(MODEL_INPUTS)]
    )
    rows = registry.covering_rows(inputs)
    assert len(rows) < 200
    assert _mlflow_schema(rows) == _mlflow_schema(inputs)


def test_a_mixed_column_fails_the_same_way_on_its_covering_rows() -> None:
    from mlflow.exceptions import MlflowException

    frame = pd.DataFrame({"mixed": pd.Series(["a"] * 100 + [1], dtype=object)})
    with pytest.raises(MlflowException):
        _mlflow_schema(frame)
    with pytest.raises(MlflowException):
        _mlflow_schema(registry.covering_rows(frame))
