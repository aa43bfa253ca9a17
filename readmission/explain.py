"""Why this patient: each feature's exact contribution to the model's `<30` score.

What is explained is the model's raw score of the `<30` class (readmission within 30 days),
before the decision rule:

- gradient boosting: the `<30` raw score (the softmax logit, a log-odds margin), split by
  TreeSHAP (path-dependent) over the `<30` trees only, by `readmission.treeshap` (compiled,
  without the GIL; equal to `shap.TreeExplainer`, checked in the tests);
- random forest: the forest's `<30` probability, split by TreeSHAP the same way;
- logistic regression: the `<30` logit, split exactly: `coef * (x - mean of x over the
  training rows)` in the encoded space, the one-hot (and missing-indicator) columns summed
  back to the feature they come from.

For every family `baseline + sum(all contributions) == score` for the row (checked in the
tests to 1e-6), the baseline being the score of an average training encounter. Features
are the model's inputs (`features.CATEGORICAL` and `features.NUMERIC`, after the
pipeline's `features` step), shown with the patient's value as text (a category, a code's
label) or a number.

`global_importance` (mean absolute contribution per feature on a sample of rows) is what
training stores on the model (`importance_`) and logs as a figure and a JSON artifact.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from readmission import schema
from readmission.estimator import expired_mask, starts_with_features
from readmission.features import CATEGORICAL, CODE_NUMBERS, NUMERIC

log = logging.getLogger(__name__)

#: The class whose score is explained.
TARGET_CLASS = "<30"
#: Features listed each way (raising and lowering the score).
TOP = 5
#: Rows of the valid split the global importance is measured on (a seeded sample).
IMPORTANCE_ROWS = 2_000
#: Time allowed for the global importance at training (a deep forest costs ~1 s a row).
IMPORTANCE_SECONDS = 30.0
#: Rows explained first (so a slow model stops early), then at most per chunk.
FIRST_CHUNK, CHUNK = 16, 250
#: Units of the explained score, by what the classifier outputs.
LOG_ODDS = "log-odds"
PROBABILITY = "probability"
EXPIRED_NOTE = (
    "the encounter ended in death (expired): the model is not consulted, the 30-day risk is "
    "0 by rule, so no feature moves it"
)
_CODE_SUFFIX = "_code"
_CODE_COLUMNS = {
    f"{c.key}{_CODE_SUFFIX}": c for c in schema.columns_of(schema.Kind.CODE) if c.codes
}


class ExplainerUnavailableError(RuntimeError):
    """The model cannot be explained (its classifier or its encoding is not supported)."""


@dataclass(frozen=True)
class Factor:
    """One feature's part in the score: its value for the patient and its contribution."""

    feature: str
    value: str | float | None
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True)
class Explanation:
    """One encounter's explanation of its `<30` score."""

    unit: str
    baseline: float
    score: float
    raising: list[Factor] = field(default_factory=list)
    lowering: list[Factor] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_class": TARGET_CLASS,
            "unit": self.unit,
            "baseline": self.baseline,
            "score": self.score,
            "raising": [f.to_dict() for f in self.raising],
            "lowering": [f.to_dict() for f in self.lowering],
            "note": self.note,
        }


class Explainer:
    """Built once per loaded model: contributions of every model input to the `<30` score.

    `contributions(frame)` gives an array (rows, features) in `self.features` order and
    the baselines; `explain(frame)` the top factors each way per row, with their values.
    """

    def __init__(self, model: Any) -> None:
        pipeline = getattr(model, "pipeline_", None)
        steps = dict(getattr(pipeline, "steps", []) or [])
        if not {"features", "encode", "classify"} <= set(steps):
            raise ExplainerUnavailableError(
                "the model is not a fitted features -> encode -> classify pipeline"
            )
        self.steps = steps
        classifier = steps["classify"]
        classes = [str(c) for c in getattr(classifier, "classes_", [])]
        if TARGET_CLASS not in classes:
            raise ExplainerUnavailableError(f"the classifier has no class {TARGET_CLASS!r}")
        self.class_index = classes.index(TARGET_CLASS)
        self.family = type(classifier).__name__
        self._method = _method_for(classifier, steps["encode"], self.class_index, model)
        self.unit = self._method.unit
        self.method = self._method.method
        #: The features contributions are given for, in their order.
        self.features: tuple[str, ...] = self._method.features

    def encode(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
        """The model's inputs (text categories, numbers) and the encoded matrix."""
        inputs = self.steps["features"].transform(frame)
        return inputs, self.steps["encode"].transform(inputs)

    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(contributions (rows, features), baseline per row, score per row) of cleaned
        encounters, before the death rule."""
        _, encoded = self.encode(frame)
        return self._method.contributions(encoded)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """The explained score computed by the classifier itself (for checks)."""
        _, encoded = self.encode(frame)
        return self._method.score(encoded)

    def explain(self, frame: pd.DataFrame, top: int = TOP) -> list[Explanation]:
        """The `top` features raising and lowering each encounter's `<30` score."""
        inputs, encoded = self.encode(frame)
        columns = {name: inputs[name].to_numpy(dtype=object) for name in self.features}
        return self.explain_encoded(columns, encoded, expired_mask(frame), top)

    def explain_encoded(
        self,
        inputs: Mapping[str, np.ndarray],
        encoded: Any,
        expired: np.ndarray,
        top: int = TOP,
    ) -> list[Explanation]:
        """`explain` from what scoring already computed: the model inputs (arrays by
        name), the encoded matrix and which rows ended in death."""
        values, baseline, score = self._method.contributions(encoded)
        out = []
        for row in range(len(expired)):
            if expired[row]:
                out.append(Explanation(self.unit, 0.0, 0.0, note=EXPIRED_NOTE))
                continue
            order = np.argsort(-values[row], kind="stable")
            raising = [i for i in order[:top] if values[row, i] > 0]
            lowering = [i for i in order[::-1][:top] if values[row, i] < 0]

            def factor(i: int, row: int = row) -> Factor:
                name = self.features[i]
                return Factor(name, readable(name, inputs[name][row]), float(values[row, i]))

            out.append(
                Explanation(
                    self.unit,
                    float(baseline[row]),
                    float(score[row]),
                    [factor(i) for i in raising],
                    [factor(i) for i in lowering],
                )
            )
        return out


def readable(feature: str, value: Any) -> str | float | None:
    """A model input's value for people: a category's text, a code's label (`Emergency`),
    a number (whole ones as such); None when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if feature in _CODE_COLUMNS:
        column = _CODE_COLUMNS[feature]
        try:
            return column.codes.get(int(value), str(value))
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, str):
        return value
    if feature in CODE_NUMBERS:
        return code_text(float(value))
    number = float(value)
    return int(number) if number.is_integer() else round(number, 4)


def code_text(number: float) -> str:
    """An ICD-9 code from its ordered number (`features.code_number`): 250.83 -> '250.83',
    1057.1 -> 'V57.1', 2878 -> 'E878'."""
    prefix, digits = ("E", 3) if number >= 2000 else ("V", 2) if number >= 1000 else ("", 3)
    rest = number - {"E": 2000, "V": 1000, "": 0}[prefix]
    whole, _, decimals = f"{rest:.2f}".rstrip("0").rstrip(".").partition(".")
    return f"{prefix}{whole.zfill(digits)}{'.' + decimals if decimals else ''}"


class _Trees:
    """TreeSHAP of the `<30` trees (path-dependent), compiled without the GIL
    (`readmission.treeshap`; equal to shap's TreeExplainer, checked in the tests)."""

    method = "TreeSHAP (path-dependent)"

    def __init__(self, trees: list[dict], base: float, unit: str, dtype, encoder) -> None:
        from readmission import treeshap  # numba: imported once a model is explained

        self.unit = unit
        self.dtype = dtype
        self.features = tuple(str(n) for n in encoder.get_feature_names_out())
        self.n_features = len(self.features)
        unknown = set(self.features) - {*CATEGORICAL, *NUMERIC, *CODE_NUMBERS}
        if unknown:
            raise ExplainerUnavailableError(f"unknown encoded features {sorted(unknown)}")
        self.forest = treeshap.Forest.of(trees)
        self.baseline = base + self.forest.expected_value()
        self.forest.contributions(np.zeros((1, self.n_features)))  # compiled now, not later

    def contributions(self, encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # the trees compare inputs of `dtype` (float32 for scikit-learn's forests)
        x = np.asarray(encoded, dtype=self.dtype).astype(float)
        values = self.forest.contributions(x)
        baseline = np.full(len(x), self.baseline)
        return values, baseline, baseline + values.sum(axis=1)


class _GradientBoosting(_Trees):
    def __init__(self, classifier, encoder, class_index: int) -> None:
        self.classifier = classifier
        self.class_index = class_index
        if classifier.n_trees_per_iteration_ != len(classifier.classes_):
            raise ExplainerUnavailableError("a binary gradient-boosting model is not supported")
        trees = []
        for iteration in classifier._predictors:
            nodes = iteration[class_index].nodes
            if (nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool)).any():
                raise ExplainerUnavailableError("native categorical splits are not supported")
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, -1, nodes["left"]).astype(np.int32)
            right = np.where(leaf, -1, nodes["right"]).astype(np.int32)
            trees.append(
                {
                    "children_left": left,
                    "children_right": right,
                    "children_default": np.where(nodes["missing_go_to_left"], left, right),
                    "features": np.where(leaf, -2, nodes["feature_idx"]).astype(np.int32),
                    "thresholds": nodes["num_threshold"].astype(np.float64),
                    "values": nodes["value"].astype(np.float64).reshape(-1, 1),
                    "node_sample_weight": nodes["count"].astype(np.float64),
                }
            )
        base = float(np.ravel(classifier._baseline_prediction)[class_index])
        super().__init__(trees, base, LOG_ODDS, np.float64, encoder)

    def score(self, encoded) -> np.ndarray:
        raw = self.classifier._raw_predict(np.asarray(encoded, dtype=float))
        return raw[:, self.class_index]


class _CompiledBoosting(_Trees):
    """Boosted trees kept as `CompiledTrees` (the LightGBM family): its leaf values
    already hold the starting score."""

    def __init__(self, classifier, encoder, class_index: int) -> None:
        self.classifier = classifier
        self.class_index = class_index
        trees = classifier.compiled_.class_trees(class_index)
        super().__init__(trees, 0.0, LOG_ODDS, np.float64, encoder)

    def score(self, encoded) -> np.ndarray:
        raw = self.classifier.compiled_.raw(np.asarray(encoded, dtype=float))
        return raw[:, self.class_index]


class _RandomForest(_Trees):
    def __init__(self, classifier, encoder, class_index: int) -> None:
        self.classifier = classifier
        self.class_index = class_index
        trees = []
        scale = 1.0 / len(classifier.estimators_)
        for estimator in classifier.estimators_:
            tree = estimator.tree_
            fractions = tree.value[:, 0, :]
            fractions = fractions / fractions.sum(axis=1, keepdims=True)
            left = tree.children_left.astype(np.int32)
            right = tree.children_right.astype(np.int32)
            missing_left = getattr(tree, "missing_go_to_left", None)
            default = left if missing_left is None else np.where(missing_left, left, right)
            trees.append(
                {
                    "children_left": left,
                    "children_right": right,
                    "children_default": default.astype(np.int32),
                    "features": tree.feature.astype(np.int32),
                    "thresholds": tree.threshold.astype(np.float64),
                    "values": (fractions[:, class_index] * scale).reshape(-1, 1),
                    "node_sample_weight": tree.weighted_n_node_samples.astype(np.float64),
                }
            )
        # scikit-learn's trees compare float32 inputs
        super().__init__(trees, 0.0, PROBABILITY, np.float32, encoder)

    def score(self, encoded) -> np.ndarray:
        return self.classifier.predict_proba(np.asarray(encoded, dtype=float))[:, self.class_index]


class _Linear:
    """Exact contributions of a multinomial logistic regression to the `<30` logit."""

    unit = LOG_ODDS
    method = "linear: coef * (x - training mean)"

    def __init__(self, classifier, encoder, class_index: int, means: Any) -> None:
        if classifier.coef_.shape[0] != len(classifier.classes_):
            raise ExplainerUnavailableError("a binary logistic regression is not supported")
        if means is None:
            raise ExplainerUnavailableError(
                "the model carries no feature means of its training rows (feature_means_): "
                "it was trained before explanations existed"
            )
        self.classifier = classifier
        self.coef = np.asarray(classifier.coef_[class_index], dtype=float)
        self.intercept = float(classifier.intercept_[class_index])
        self.means = np.asarray(means, dtype=float)
        if self.means.shape != self.coef.shape:
            raise ExplainerUnavailableError("the feature means do not match the coefficients")
        self.class_index = class_index
        self.owner = encoded_sources(encoder)  # encoded column -> model input index
        self.features = (*CATEGORICAL, *NUMERIC)
        self.n_features = len(self.features)
        self.baseline = self.intercept + float(self.coef @ self.means)

    def contributions(self, encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = encoded.toarray() if hasattr(encoded, "toarray") else np.asarray(encoded, dtype=float)
        by_column = (x - self.means) * self.coef
        values = np.zeros((len(x), self.n_features))
        np.add.at(values.T, self.owner, by_column.T)
        baseline = np.full(len(x), self.baseline)
        return values, baseline, baseline + values.sum(axis=1)

    def score(self, encoded) -> np.ndarray:
        return self.classifier.decision_function(encoded)[:, self.class_index]


def encoded_sources(encoder) -> np.ndarray:
    """For each column the one-hot encoding (`features._one_hot_encoding`) outputs, the
    index of the model input it comes from (in CATEGORICAL + NUMERIC order): a category's
    columns (its infrequent ones pooled) and a number's value and missing indicator."""
    inputs = (*CATEGORICAL, *NUMERIC)
    owner = np.full(sum(s.stop - s.start for s in encoder.output_indices_.values()), -1)
    for name, transformer, columns in encoder.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        where = encoder.output_indices_[name]
        index = [inputs.index(c) for c in columns]
        if name == "categories":
            sizes = []
            infrequent = getattr(transformer, "infrequent_categories_", None) or [None] * len(index)
            for categories, rare in zip(transformer.categories_, infrequent, strict=True):
                sizes.append(len(categories) if rare is None else len(categories) - len(rare) + 1)
            sources = np.repeat(index, sizes)
        elif name == "numbers":
            imputer = transformer.named_steps["impute"]
            kept = [i for i, s in zip(index, imputer.statistics_, strict=True) if s == s]
            flagged = [index[i] for i in imputer.indicator_.features_] if imputer.indicator_ else []
            sources = np.asarray([*kept, *flagged])
        else:
            raise ExplainerUnavailableError(f"unknown encoding step {name!r}")
        if len(sources) != where.stop - where.start:
            raise ExplainerUnavailableError(f"the columns of encoding step {name!r} do not add up")
        owner[where] = sources
    if (owner < 0).any():
        raise ExplainerUnavailableError("some encoded columns come from no known feature")
    return owner


def _method_for(classifier, encoder, class_index: int, model: Any):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if isinstance(classifier, HistGradientBoostingClassifier):
        return _GradientBoosting(classifier, encoder, class_index)
    from readmission.acceleration import CompiledTrees

    if isinstance(getattr(classifier, "compiled_", None), CompiledTrees):
        return _CompiledBoosting(classifier, encoder, class_index)
    if isinstance(classifier, RandomForestClassifier):
        return _RandomForest(classifier, encoder, class_index)
    if isinstance(classifier, LogisticRegression):
        return _Linear(classifier, encoder, class_index, getattr(model, "feature_means_", None))
    raise ExplainerUnavailableError(f"no explanation method for {type(classifier).__name__}")


def _not_expired(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[~expired_mask(frame)]


def feature_means(
    model: Any, frame: pd.DataFrame, features: pd.DataFrame | None = None
) -> list[float] | None:
    """The mean of each encoded column over the training rows the model was fitted on
    (expired ones are not): the reference of a linear model's contributions. None for a
    model whose classifier is not linear (trees need no reference). `features`: the
    `features` step's output for `frame`, computed already (`ReadmissionModel.fit`)."""
    pipeline = model.pipeline_
    if not hasattr(pipeline[-1], "coef_"):
        return None
    if features is None or not starts_with_features(pipeline):
        encoded = pipeline[:-1].transform(_not_expired(frame))
    else:
        encoded = pipeline[1:-1].transform(features.loc[~expired_mask(frame)])
    return [float(v) for v in np.asarray(encoded.mean(axis=0)).ravel()]


def global_importance(
    model: Any,
    frame: pd.DataFrame,
    rows: int = IMPORTANCE_ROWS,
    seconds: float = IMPORTANCE_SECONDS,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean absolute contribution of each feature to the `<30` score on a seeded sample of
    `rows` encounters of `frame` (expired ones left out: the model does not score them),
    as a plain dict: unit, method, rows used, and the features from the most to the least
    important. Rows are explained in chunks until `rows` or `seconds` is reached (a deep
    forest costs ~1 s a row), so `rows` in the answer may be fewer than asked."""
    explainer = Explainer(model)
    frame = _not_expired(frame)
    sample = frame.sample(min(rows, len(frame)), random_state=seed)
    started = time.perf_counter()
    totals, used = np.zeros(len(explainer.features)), 0
    size = min(FIRST_CHUNK, len(sample))
    while size > 0:
        values, _, _ = explainer.contributions(sample.iloc[used : used + size])
        totals += np.abs(values).sum(axis=0)
        used += size
        elapsed = time.perf_counter() - started
        # the next chunk: as many rows as the time left allows at the rate measured so far
        affordable = (seconds - elapsed) / max(elapsed / used, 1e-9)
        size = int(min(CHUNK, len(sample) - used, max(affordable, 0)))
    mean_abs = totals / max(used, 1)
    order = np.argsort(-mean_abs, kind="stable")
    return {
        "target_class": TARGET_CLASS,
        "unit": explainer.unit,
        "method": explainer.method,
        "rows": used,
        "seconds": round(time.perf_counter() - started, 2),
        "features": {explainer.features[i]: float(mean_abs[i]) for i in order},
    }


def importance_png(importance: dict[str, Any], title: str, top: int = 20) -> bytes:
    """A horizontal bar chart of the `top` most important features."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importance["features"])[:top][::-1]
    values = [importance["features"][n] for n in names]
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(names) + 1.2))
    axes.barh(names, values, color="#c0392b")
    axes.set_xlabel(f"mean |contribution| to the {TARGET_CLASS} score ({importance['unit']})")
    axes.set_title(f"{title} ({importance['rows']:,} rows)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def build(model: Any) -> Explainer:
    """The explainer of a loaded model; ExplainerUnavailableError says why there is none."""
    try:
        return Explainer(model)
    except ExplainerUnavailableError:
        raise
    except Exception as exc:  # any failure means: no explanations
        raise ExplainerUnavailableError(f"{type(exc).__name__}: {exc}") from exc
