"""Two design choices of the model, decided on the valid split (the test split only reported).

1. The gradient-boosting candidate reads category codes as ordered numbers rather than as
   native categories (the native support re-encodes every input, ~5 ms a call).
2. The served model is the best single family, not the average of the three families'
   probabilities (three times the cost of each prediction).

Each alternative is measured on valid, where the choice is made, by the primary metric
(macro-F1 after the decision rule is tuned) and ROC-AUC of `<30`; test is printed beside,
for the record only. Loads and cleans the real file into a throwaway store and runs the
full search of each family, as the training DAG does (about 4 minutes on 2 cores).

    python bench/choices.py [--csv PATH] [--profile full|quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from readmission.estimator import ReadmissionModel  # noqa: E402
from readmission.features import NUMERIC, TREE_CATEGORICAL  # noqa: E402
from readmission.names import PROFILES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--profile", choices=PROFILES, default="full")
    args = parser.parse_args()

    from tests.support.tools import real_csv

    csv = args.csv or real_csv()
    if csv is None:
        print("the real UCI file is needed: set DIABETES_CSV or pass --csv", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="readmission-choices-"))
    os.environ.update({"READMISSION_STATE_DIR": str(work / "state"), "DIABETES_CSV": str(csv)})

    from readmission import evaluation, pipeline, training
    from readmission.features import FAMILIES, build_pipeline

    pipeline.load_raw_batches(pipeline.plan_raw_load())
    pipeline.clean_new_rows()
    data = training.load_training_data(pipeline.engine())

    def figures(model: ReadmissionModel) -> dict[str, float]:
        """Tune the decision rule on valid; macro-F1 and AUC of <30 on valid and test."""
        out = {}
        model.tune_decision(data.inputs("valid"), data.target("valid"))
        for split in ("valid", "test"):
            proba = model.predict_proba(data.inputs(split))
            scores = evaluation.metrics(
                data.target(split), proba, list(model.classes_), model.decide(proba)
            )
            out[f"{split}_macro_f1"] = scores["macro_f1"]
            out[f"{split}_roc_auc_lt30"] = scores["roc_auc_lt30"]
        return out

    rows: list[tuple[str, dict[str, float]]] = []
    candidates = {}
    for family in FAMILIES:
        candidate = training.fit_candidate(family, data, args.profile)
        candidates[family] = candidate
        rows.append((family, figures(candidate.model)))

    boosting = candidates["hist_gradient_boosting"]
    native = build_pipeline("hist_gradient_boosting", boosting.params)
    native.set_params(classify__categorical_features="from_dtype")
    native.steps[1] = ("encode", _CategoricalFrame())
    model = ReadmissionModel(native)
    model.fit(data.inputs("train"), data.target("train"), groups=data.patients("train"))
    rows.append(("hist_gradient_boosting, native categories", figures(model)))

    average = _Averaged([c.model for c in candidates.values()])
    rows.append(("average of the three families", figures(average)))

    print(
        f"{'model':<44}{'valid macro-F1':>16}{'valid AUC <30':>15}"
        f"{'test macro-F1':>15}{'test AUC <30':>14}"
    )
    for name, found in rows:
        print(
            f"{name:<44}{found['valid_macro_f1']:>16.4f}{found['valid_roc_auc_lt30']:>15.4f}"
            f"{found['test_macro_f1']:>15.4f}{found['test_roc_auc_lt30']:>14.4f}"
        )
    print(
        "\nchosen on valid: codes as numbers vs native categories, best single family vs "
        "the average (test: report only)"
    )
    return 0


class _Averaged(ReadmissionModel):
    """The mean of fitted models' probabilities, with a decision rule of its own."""

    def __init__(self, models) -> None:
        self.models = models
        self.classes_ = models[0].classes_
        self.decision_weights_ = {str(c): 1.0 for c in self.classes_}

    def predict_proba(self, frame):
        return np.mean([m.predict_proba(frame) for m in self.models], axis=0)


class _CategoricalFrame(TransformerMixin, BaseEstimator):
    """The tree inputs as a frame whose text columns are pandas categoricals, so that
    HistGradientBoosting's `categorical_features="from_dtype"` treats them natively."""

    def fit(self, frame, y=None):  # noqa: ARG002
        self.categories_ = {
            name: sorted({str(v) for v in frame[name].dropna()}) for name in TREE_CATEGORICAL
        }
        return self

    def transform(self, frame):
        columns = {}
        for name, categories in self.categories_.items():
            values = frame[name].astype(object)
            known = values.where(values.isin(categories))  # unseen ones: missing
            columns[name] = pd.Categorical(known, categories=categories)
        columns.update({name: frame[name].astype(float) for name in NUMERIC})
        return pd.DataFrame(columns, index=frame.index)


if __name__ == "__main__":
    sys.exit(main())
