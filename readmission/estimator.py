"""The estimator the platform serves: a fitted pipeline plus its decision rule."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import GroupShuffleSplit

from readmission.cleaning import EXPIRED

NO_READMISSION = "NO"
#: Multipliers tried for each minority class when tuning the decision rule (NO stays 1).
WEIGHT_GRID = tuple(float(w) for w in np.round(np.geomspace(0.5, 8.0, 17), 3))


def expired_mask(
    frame: pd.DataFrame | Mapping[str, np.ndarray], rows: int | None = None
) -> np.ndarray:
    """Which encounters ended in death (`expired`; without the column: none), of a frame or
    of clean columns as arrays (`rows` of them)."""
    rows = len(frame) if rows is None else rows
    if EXPIRED not in frame:
        return np.zeros(rows, dtype=bool)
    values = frame[EXPIRED]
    if isinstance(values, np.ndarray) and values.dtype == bool:
        return values
    if not isinstance(values, pd.Series):
        values = pd.Series(np.asarray(values, dtype=object))
    return values.fillna(False).astype(bool).to_numpy()


class ReadmissionModel(ClassifierMixin, BaseEstimator):
    """A pipeline wrapped with the two rules of this data set.

    1. An encounter that ended in death (`expired`) cannot be readmitted: it is left out
       of fitting (its `NO` says nothing about the others) and predicted `NO` with
       probability 1. Hospice is not death: it is fitted and scored like any encounter.
    2. Class imbalance is handled at decision time: `predict_proba` returns the pipeline's
       probabilities, and `predict` takes the class with the highest probability times a
       per-class weight, tuned on the validation split for macro-F1 (`tune_decision`), so
       the 11 % `<30` class is predicted without distorting the probabilities.
    """

    def __init__(self, pipeline, decision_weights: dict[str, float] | None = None) -> None:
        self.pipeline = pipeline
        self.decision_weights = decision_weights

    def fit(
        self,
        frame: pd.DataFrame,
        y: pd.Series,
        groups=None,
        features: pd.DataFrame | None = None,
    ) -> ReadmissionModel:
        """Fit on the encounters that can be readmitted. With `groups` (the patient of each
        row), a classifier that stops early does so on a validation set of whole patients,
        as the splits are drawn, rather than on rows a patient shares with its fit.

        `features`: `EncounterFeatures` of `frame` computed already (row for row), which a
        pipeline starting with that stateless step then fits on instead of computing them
        again: training fits and scores the same splits many times
        (`training.TrainingData.features`)."""
        keep = ~expired_mask(frame)
        if features is not None:
            features = _rows(features, frame, keep)
        frame, y = frame.loc[keep], np.asarray(y)[keep]
        pipeline = clone(self.pipeline)
        if features is not None and starts_with_features(pipeline):
            pipeline.steps[0][1].fit(frame)  # stateless: only notes the input's width
            fitted, inputs = pipeline[1:], features
        else:
            fitted, inputs = pipeline, frame
        classifier = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
        if groups is not None and getattr(classifier, "early_stopping", False) is True:
            self.early_stopping_patients_ = _fit_stopping_on_patients(
                fitted, inputs, y, np.asarray(groups)[keep]
            )
        else:
            fitted.fit(inputs, y)
        self.pipeline_ = pipeline
        self.classes_ = self.pipeline_.classes_
        self.decision_weights_ = {str(c): 1.0 for c in self.classes_}
        self.decision_weights_.update(self.decision_weights or {})
        return self

    def predict_proba(
        self, frame: pd.DataFrame, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Probabilities of each class (`classes_`) for the encounters of `frame`; with
        `features` (see `fit`), from those instead of computing them again."""
        if features is not None and starts_with_features(self.pipeline_):
            proba = self.pipeline_[1:].predict_proba(_rows(features, frame, None))
        else:
            proba = self.pipeline_.predict_proba(frame)
        return self.finish(proba, expired_mask(frame))

    def finish(self, proba: np.ndarray, expired: np.ndarray) -> np.ndarray:
        """The pipeline's probabilities `proba` recalibrated (if the model is) and with
        the death rule applied to the `expired` rows: what `predict_proba` returns."""
        recalibration = getattr(self, "recalibration_", None)
        if recalibration is not None:
            proba = recalibrate(proba, recalibration["scale"], recalibration["bias"])
        if expired.any():
            proba[expired] = (self.classes_ == NO_READMISSION).astype(float)
        return proba

    def _weights(self) -> np.ndarray:
        return np.array([self.decision_weights_[str(c)] for c in self.classes_])

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Classes from probabilities, by the decision rule."""
        return self.classes_[np.argmax(proba * self._weights(), axis=1)]

    def predict(self, frame: pd.DataFrame, features: pd.DataFrame | None = None) -> np.ndarray:
        return self.decide(self.predict_proba(frame, features))

    def tune_decision(
        self, frame: pd.DataFrame, y: pd.Series, features: pd.DataFrame | None = None
    ) -> float:
        """Set the per-class weights that maximise macro-F1 on (frame, y); return it."""
        proba = self.predict_proba(frame, features)
        classes = [str(c) for c in self.classes_]
        truth = pd.Categorical(np.asarray(y, dtype=object), categories=classes).codes
        known = truth >= 0  # rows without a known class cannot be scored
        proba, truth = proba[known], truth[known]
        others = [c for c in classes if c != NO_READMISSION]
        best_score, best = -1.0, dict.fromkeys(others, 1.0)
        for combo in itertools.product(WEIGHT_GRID, repeat=len(others)):
            chosen = dict(zip(others, combo, strict=True))
            weights = np.array([chosen.get(c, 1.0) for c in classes])
            score = _macro_f1(truth, np.argmax(proba * weights, axis=1), len(classes))
            if score > best_score + 1e-12:
                best_score, best = score, chosen
        self.decision_weights_ = {NO_READMISSION: 1.0, **best}
        return float(best_score)


def recalibrate(proba: np.ndarray, scale: float, bias) -> np.ndarray:
    """Probabilities recalibrated: softmax(scale * log p + bias) (temperature scaling with a
    bias per class)."""
    logits = scale * np.log(np.clip(proba, 1e-12, 1.0)) + np.asarray(bias, dtype=float)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_recalibration(proba: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    """The scale and per-class biases of `recalibrate` that minimise the log-loss of
    `proba` (rows, classes) against `truth` (class indices)."""
    from scipy.optimize import minimize

    n_classes = proba.shape[1]
    rows = np.arange(len(truth))

    def loss(params: np.ndarray) -> float:
        calibrated = recalibrate(proba, params[0], np.r_[0.0, params[1:]])
        return float(-np.log(np.clip(calibrated[rows, truth], 1e-12, 1.0)).mean())

    start = np.r_[1.0, np.zeros(n_classes - 1)]
    found = minimize(loss, start, method="L-BFGS-B")
    return {"scale": float(found.x[0]), "bias": [0.0, *map(float, found.x[1:])]}


def _fit_stopping_on_patients(pipeline, frame: pd.DataFrame, y: np.ndarray, groups: np.ndarray):
    """Fit `pipeline` (its last step an early-stopping classifier) with the validation set
    drawn by patient; returns the held-out patients."""
    steps = getattr(pipeline, "steps", None)
    classifier = steps[-1][1] if steps else pipeline
    split = GroupShuffleSplit(
        n_splits=1, test_size=classifier.validation_fraction, random_state=classifier.random_state
    )
    fitted, held = next(split.split(frame, y, groups))
    # the steps before (stateless features, category codes) see every row, as before
    inputs = pipeline[:-1].fit(frame, y).transform(frame) if steps else frame
    take = inputs.iloc if isinstance(inputs, pd.DataFrame) else inputs
    classifier.fit(take[fitted], y[fitted], X_val=take[held], y_val=y[held])
    return np.unique(groups[held])


def starts_with_features(pipeline) -> bool:
    """Whether `pipeline` starts with the stateless `EncounterFeatures` step."""
    from readmission.features import EncounterFeatures

    steps = getattr(pipeline, "steps", None)
    return bool(steps) and type(steps[0][1]) is EncounterFeatures


def _rows(features: pd.DataFrame, frame: pd.DataFrame, keep: np.ndarray | None) -> pd.DataFrame:
    """The rows of precomputed `features` that `keep` selects (all without), checked to
    stand for the rows of `frame`, in its order."""
    if len(features) != len(frame):
        raise ValueError(f"features of {len(features):,} rows given for {len(frame):,} encounters")
    if not features.index.equals(frame.index):
        raise ValueError("features given for other rows than the frame's (their index differs)")
    return features if keep is None or keep.all() else features.loc[keep]


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Macro-F1 from integer labels (what sklearn's f1_score gives, ~50x faster)."""
    confusion = np.bincount(truth * n_classes + predicted, minlength=n_classes**2)
    confusion = confusion.reshape(n_classes, n_classes)
    hits = np.diag(confusion).astype(float)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    f1 = np.divide(2 * hits, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return float(f1.mean())
