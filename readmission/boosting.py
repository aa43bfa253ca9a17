"""LightGBM as a candidate family, served without LightGBM.

`LightGBMTrees` is a scikit-learn classifier that fits a LightGBM multiclass model (early
stopping on a held-out set, whole patients when `ReadmissionModel.fit` has the groups) and
then keeps only its trees, converted into the flat layout the API walks
(`acceleration.CompiledTrees`): the fitted object holds numpy arrays, so the API, its image
and a pickled model need neither LightGBM nor its OpenMP runtime, and scoring and TreeSHAP
use the same compiled code as scikit-learn's gradient boosting. The conversion is checked
when fitting: the converted trees must give LightGBM's own probabilities on the held-out
rows to 1e-9, or fitting fails.

LightGBM's split rule, reproduced: `x <= threshold` goes left; a missing value goes the
node's default way when the split learnt one (`missing_type` NaN), and is read as 0
otherwise (`missing_type` None), which is the way 0 goes.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split

from readmission.acceleration import CompiledTrees

#: Rounds without a better held-out log-loss before fitting stops.
STOPPING_ROUNDS = 50
#: Most rounds fitted (early stopping ends far sooner at these learning rates).
MAX_ROUNDS = 5000
#: Largest difference allowed between LightGBM's probabilities and the converted trees'.
TOLERANCE = 1e-9


class LightGBMTrees(ClassifierMixin, BaseEstimator):
    """A LightGBM multiclass model fitted with early stopping, kept as compiled trees.

    `params` are LightGBM's (num_leaves, learning_rate, min_child_samples, ...). With
    `X_val`/`y_val` given to `fit`, rounds stop on them; otherwise on a stratified
    `validation_fraction` of the rows (as HistGradientBoostingClassifier does).
    `keep_booster` keeps LightGBM's own model as `booster_` too (the tests' reference).
    """

    #: `ReadmissionModel.fit` holds out whole patients for the stopping rule.
    early_stopping = True

    def __init__(
        self,
        params: dict | None = None,
        validation_fraction: float = 0.1,
        random_state: int = 0,
        n_jobs: int = 2,
        keep_booster: bool = False,
    ) -> None:
        self.params = params
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.keep_booster = keep_booster

    def fit(self, X, y, X_val=None, y_val=None) -> LightGBMTrees:  # noqa: N803 - sklearn's names
        import lightgbm  # training only: the fitted object needs no LightGBM

        x = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=object)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 3:
            raise ValueError("LightGBMTrees fits three classes or more")
        labels = np.searchsorted(self.classes_, y)
        if X_val is None:
            x, x_held, labels, held = train_test_split(
                x,
                labels,
                test_size=self.validation_fraction,
                stratify=labels,
                random_state=self.random_state,
            )
        else:
            x_held = np.asarray(X_val, dtype=float)
            y_held = np.asarray(y_val, dtype=object)
            unknown = set(y_held) - set(self.classes_)
            if unknown:
                raise ValueError(f"y_val holds classes not in y: {sorted(map(str, unknown))}")
            held = np.searchsorted(self.classes_, y_held)
        model = lightgbm.LGBMClassifier(
            objective="multiclass",
            n_estimators=MAX_ROUNDS,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            deterministic=True,
            force_row_wise=True,
            zero_as_missing=False,
            verbose=-1,
            **(self.params or {}),
        )
        model.fit(
            x,
            labels,
            eval_X=(x_held,),
            eval_y=(held,),
            categorical_feature=[],
            callbacks=[lightgbm.early_stopping(STOPPING_ROUNDS, verbose=False)],
        )
        booster = model.booster_
        self.n_iter_ = int(booster.best_iteration or booster.current_iteration())
        self.n_features_in_ = x.shape[1]
        self.compiled_ = convert(booster.dump_model(num_iteration=self.n_iter_), self.classes_)
        expected = model.predict_proba(x_held, num_iteration=self.n_iter_)
        gap = float(np.abs(self.compiled_.predict_proba(x_held) - expected).max())
        if not gap <= TOLERANCE:
            raise RuntimeError(f"the converted trees differ from LightGBM's by {gap:.2e}")
        if self.keep_booster:
            self.booster_ = booster
        return self

    def predict_proba(self, X) -> np.ndarray:  # noqa: N803
        x = np.asarray(X, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:  # the walk checks no bounds
            raise ValueError(f"expected {self.n_features_in_} features, got shape {x.shape}")
        return self.compiled_.predict_proba(x)

    def predict(self, X) -> np.ndarray:  # noqa: N803
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def convert(dump: dict, classes: np.ndarray) -> CompiledTrees:
    """LightGBM's `Booster.dump_model()` of a multiclass model as `CompiledTrees`."""
    per_iteration = int(dump["num_tree_per_iteration"])
    if per_iteration != len(classes):
        raise ValueError(f"{per_iteration} trees per iteration for {len(classes)} classes")
    columns: dict[str, list] = {
        key: []
        for key in ("left", "right", "feature", "threshold", "missing_left", "leaf", "value")
    }
    columns["cover"] = []
    roots, tree_class, depth = [], [], 1
    for info in dump["tree_info"]:
        roots.append(len(columns["leaf"]))
        tree_class.append(int(info["tree_index"]) % per_iteration)
        depth = max(depth, _flatten(info["tree_structure"], columns, 1))
    return CompiledTrees.of_nodes(
        {key: np.asarray(values) for key, values in columns.items()},
        np.asarray(roots),
        np.asarray(tree_class),
        np.asarray(classes),
        depth,
    )


def _flatten(node: dict, columns: dict[str, list], depth: int) -> int:
    """Append `node` and its subtree (pre-order) to `columns`; return the subtree's depth."""
    index = len(columns["leaf"])
    for key in columns:
        columns[key].append(0)
    if "leaf_value" in node:
        columns["leaf"][index] = True
        columns["value"][index] = float(node["leaf_value"])
        columns["cover"][index] = float(node.get("leaf_count", 1))
        columns["threshold"][index] = np.nan
        return depth
    if node["decision_type"] != "<=":
        raise ValueError(f"split {node['decision_type']!r} is not compiled (categorical?)")
    threshold = float(node["threshold"])
    missing = node["missing_type"]
    if missing == "NaN":
        missing_left = bool(node["default_left"])
    elif missing == "None":
        missing_left = threshold >= 0.0  # LightGBM reads a missing value as 0
    else:  # "Zero": 0 and missing go the default way; compiled only when 0 goes there anyway
        missing_left = bool(node["default_left"])
        if missing_left != (threshold >= 0.0):
            raise ValueError("zero-as-missing splits are not compiled")
    columns["leaf"][index] = False
    columns["feature"][index] = int(node["split_feature"])
    columns["threshold"][index] = threshold
    columns["missing_left"][index] = missing_left
    columns["value"][index] = float(node.get("internal_value", 0.0))
    columns["cover"][index] = float(node.get("internal_count", 1))
    left = _flatten(node["left_child"], columns, depth + 1)
    columns["left"][index] = index + 1
    columns["right"][index] = len(columns["leaf"])
    right = _flatten(node["right_child"], columns, depth + 1)
    return max(left, right)
