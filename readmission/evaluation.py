"""Metrics of a three-class readmission model, the same for every candidate and split."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    recall_score,
    roc_auc_score,
)

from readmission.schema import READMITTED_CLASSES

#: Metric-name-safe names of the classes.
CLASS_SLUGS = {"NO": "no", ">30": "gt30", "<30": "lt30"}


def metrics(
    y_true: pd.Series, proba: np.ndarray, classes: list[str], predicted: np.ndarray
) -> dict[str, float]:
    """accuracy, macro-F1, weighted-F1, recall per class, one-vs-rest ROC-AUC (macro),
    ROC-AUC of `<30` against the rest, and log-loss."""
    y = np.asarray(y_true, dtype=object)
    out = {
        "accuracy": accuracy_score(y, predicted),
        "macro_f1": f1_score(y, predicted, average="macro", labels=classes, zero_division=0),
        "weighted_f1": f1_score(y, predicted, average="weighted", labels=classes, zero_division=0),
        "log_loss": log_loss(y, proba, labels=classes),
    }
    recalls = recall_score(y, predicted, average=None, labels=classes, zero_division=0)
    for label, recall in zip(classes, recalls, strict=True):
        out[f"recall_{CLASS_SLUGS[label]}"] = recall
    present = [c for c in classes if (y == c).any()]
    if len(present) == len(classes):
        out["roc_auc_ovr"] = roc_auc_score(
            y, proba, multi_class="ovr", average="macro", labels=classes
        )
    if "<30" in present and len(present) > 1:
        out["roc_auc_lt30"] = roc_auc_score(y == "<30", proba[:, classes.index("<30")])
    return {name: float(value) for name, value in out.items()}


def majority_baseline(y_train: pd.Series, y_eval: pd.Series) -> dict[str, float]:
    """What always predicting the most frequent training class scores (macro-F1, accuracy)."""
    majority = y_train.mode().iloc[0]
    predicted = np.full(len(y_eval), majority, dtype=object)
    y = np.asarray(y_eval, dtype=object)
    return {
        "macro_f1": float(
            f1_score(
                y, predicted, average="macro", labels=list(READMITTED_CLASSES), zero_division=0
            )
        ),
        "accuracy": float(accuracy_score(y, predicted)),
    }


def confusion_matrix_png(
    y_true: pd.Series, predicted: np.ndarray, classes: list[str], title: str
) -> bytes:
    """The confusion matrix (counts, and shares of each true class) as a PNG image."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    order = [c for c in READMITTED_CLASSES if c in classes]
    matrix = confusion_matrix(np.asarray(y_true, dtype=object), predicted, labels=order)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(4.8, 4.2), dpi=110)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(order)):
        for j in range(len(order)):
            axes.text(
                j,
                i,
                f"{matrix[i, j]:,}\n{shares[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if shares[i, j] > 0.6 else "black",
                fontsize=9,
            )
    axes.set_xticks(range(len(order)), order)
    axes.set_yticks(range(len(order)), order)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
