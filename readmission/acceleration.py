"""Faster scoring of small batches by a gradient-boosting model, checked against the original.

scikit-learn's HistGradientBoostingClassifier predicts tree by tree from Python: a model of
287 iterations and 3 classes makes 861 calls per prediction, ~5 ms for a few rows, most of
what a request costs. `CompiledTrees` puts every tree's nodes in flat arrays and walks
them in code compiled by numba, without the GIL (0.1 ms for 8 rows of 1,107 trees, measured;
the whole small-batch scoring with features and codes went from 2.1 to 0.85 ms). The
served model is only replaced when its answers equal scikit-learn's on sample encounters;
large batches still go through scikit-learn, which is faster there.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from readmission.cleaning import clean, clean_records
from readmission.estimator import expired_mask
from readmission.features import Columns
from readmission.halves import in_halves
from readmission.jit import compiled

log = logging.getLogger(__name__)
SMALL_BATCH = 32  # rows; above this, scikit-learn's own loop is as fast (measured)
#: Rows from which the compiled walk splits a batch between two threads: larger batches
#: only (a thread hand-off costs about as much as walking a few rows, and under load the
#: other core is busy answering requests).
SPLIT_ROWS = 64


class CompiledTrees:
    """Every tree of a fitted multiclass tree ensemble, flattened: scikit-learn's
    HistGradientBoostingClassifier (`CompiledTrees(model)`) or trees given as node arrays
    (`CompiledTrees.of_nodes`, LightGBM's in `readmission.boosting`)."""

    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        trees = [predictor for iteration in model._predictors for predictor in iteration]
        if any((t.nodes["is_categorical"] & ~t.nodes["is_leaf"].astype(bool)).any() for t in trees):
            raise ValueError("categorical splits are not compiled")
        sizes = np.array([len(t.nodes) for t in trees])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nodes = np.concatenate([t.nodes for t in trees])
        shift = np.repeat(offsets, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        self.roots = offsets.astype(np.intp)
        self.left = np.where(leaf, 0, nodes["left"].astype(np.intp) + shift)
        self.right = np.where(leaf, 0, nodes["right"].astype(np.intp) + shift)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(float)
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.leaf = leaf
        self.value = nodes["value"].astype(float)
        self.cover = nodes["count"].astype(float)
        self.depth = int(nodes["depth"].max()) + 1
        per_iteration = model.n_trees_per_iteration_
        self.tree_class = np.tile(np.arange(per_iteration), len(model._predictors))
        self.baseline = np.asarray(model._baseline_prediction, dtype=float).reshape(1, -1)
        self.loss = model._loss
        self.classes_ = model.classes_

    @classmethod
    def of_nodes(
        cls,
        nodes: dict[str, np.ndarray],
        roots: np.ndarray,
        tree_class: np.ndarray,
        classes: np.ndarray,
        depth: int,
    ) -> CompiledTrees:
        """Trees end to end in `nodes` (`left`, `right`: absolute indices, 0 at leaves;
        `feature`, `threshold` (`x <= threshold` goes left), `missing_left`, `leaf`,
        `value`, `cover`), tree `t` starting at `roots[t]` and adding to class
        `tree_class[t]`'s raw score; probabilities are the softmax of the raw scores."""
        self = cls.__new__(cls)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.left = np.asarray(nodes["left"], dtype=np.intp)
        self.right = np.asarray(nodes["right"], dtype=np.intp)
        self.feature = np.asarray(nodes["feature"], dtype=np.intp)
        self.threshold = np.asarray(nodes["threshold"], dtype=float)
        self.missing_left = np.asarray(nodes["missing_left"], dtype=bool)
        self.leaf = np.asarray(nodes["leaf"], dtype=bool)
        self.value = np.asarray(nodes["value"], dtype=float)
        self.cover = np.asarray(nodes["cover"], dtype=float)
        self.depth = int(depth)
        self.tree_class = np.asarray(tree_class, dtype=np.intp)
        self.baseline = np.zeros((1, len(classes)))
        self.loss = None
        self.classes_ = np.asarray(classes)
        return self

    def class_trees(self, index: int) -> list[dict]:
        """The trees of class `index` in shap's dict form (children -1 at leaves, the
        default child for missing values, the feature -2 at leaves, threshold, value,
        cover), for `readmission.treeshap`."""
        out = []
        ends = np.r_[self.roots[1:], len(self.leaf)]
        for tree, (start, end) in enumerate(zip(self.roots, ends, strict=True)):
            if self.tree_class[tree] != index:
                continue
            part = slice(start, end)
            leaf = self.leaf[part]
            left = np.where(leaf, -1, self.left[part] - start).astype(np.int32)
            right = np.where(leaf, -1, self.right[part] - start).astype(np.int32)
            out.append(
                {
                    "children_left": left,
                    "children_right": right,
                    "children_default": np.where(self.missing_left[part], left, right),
                    "features": np.where(leaf, -2, self.feature[part]).astype(np.int32),
                    "thresholds": self.threshold[part].astype(np.float64),
                    "values": self.value[part].astype(np.float64).reshape(-1, 1),
                    "node_sample_weight": self.cover[part].astype(np.float64),
                }
            )
        return out

    def raw(self, features: np.ndarray) -> np.ndarray:
        """Raw scores (n_rows, n_classes): the baseline plus each class's trees; from
        `SPLIT_ROWS` rows on, half of them walked by a helper thread."""
        features = np.ascontiguousarray(features, dtype=np.float64)
        raw = np.repeat(self.baseline, len(features), axis=0)
        in_halves(self._walk, features, raw, "trees", minimum=SPLIT_ROWS)
        return raw

    def _walk(self, features: np.ndarray, raw: np.ndarray) -> None:
        _walk(
            features,
            self.roots,
            self.left,
            self.right,
            self.feature,
            self.threshold,
            self.missing_left,
            self.leaf,
            self.value,
            self.tree_class,
            raw,
        )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        raw = self.raw(np.asarray(features, dtype=float))
        if self.loss is not None:
            return self.loss.predict_proba(raw)
        raw -= raw.max(axis=1, keepdims=True)
        np.exp(raw, out=raw)
        return raw / raw.sum(axis=1, keepdims=True)


@compiled()
def _walk(
    features, roots, left, right, feature, threshold, missing_left, leaf, value, tree_class, raw
):
    """Add each tree's leaf value for each row to its class's raw score. Tree by tree, all
    rows through one tree before the next, so a tree's nodes are read from memory once per
    batch rather than once per row (a LightGBM model's nodes take ~10 MB, beyond the cache)."""
    for tree in range(roots.shape[0]):
        k = tree_class[tree]
        for row in range(features.shape[0]):
            node = roots[tree]
            while not leaf[node]:
                x = features[row, feature[node]]
                go_left = missing_left[node] if np.isnan(x) else x <= threshold[node]
                node = left[node] if go_left else right[node]
            raw[row, k] += value[node]


class FastPipeline:
    """The fitted pipeline's transformers, then the compiled trees for small batches.

    `encode` is the path without pandas: clean columns as arrays (`clean_records`) to the
    model inputs and their codes, which scoring and explaining then share.
    """

    def __init__(self, pipeline: Pipeline, compiled: CompiledTrees) -> None:
        self.pipeline = pipeline
        self.compiled = compiled
        self.classes_ = pipeline.classes_
        steps = dict(pipeline.steps)
        self._features, self._codes = steps["features"], steps["encode"]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) > SMALL_BATCH:
            return self.pipeline.predict_proba(frame)
        features = frame
        for _, step in self.pipeline.steps[:-1]:
            features = step.transform(features)
        return self.compiled.predict_proba(features)

    def encode(self, columns: Columns, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The model inputs (arrays by name) and the encoded matrix of `rows` clean
        encounters given as columns."""
        inputs = self._features.columns(columns, rows)
        return inputs, self._codes.transform(inputs)


def fast_path(model: Any) -> FastPipeline | None:
    """The compiled pipeline of a model `accelerate` sped up, else None."""
    pipeline = getattr(model, "pipeline_", None)
    return pipeline if isinstance(pipeline, FastPipeline) else None


def score_columns(model: Any, columns: Columns, rows: int) -> tuple[np.ndarray, dict, np.ndarray]:
    """What `model.predict_proba` gives for clean columns, by the path without pandas, with
    the model inputs and encoded matrix it computed (to explain the same rows)."""
    fast = fast_path(model)
    if fast is None:
        raise ValueError("the model is not accelerated")
    inputs, encoded = fast.encode(columns, rows)
    proba = model.finish(fast.compiled.predict_proba(encoded), expired_mask(columns, rows))
    return proba, inputs, encoded


def sample_inputs(rows: int = SMALL_BATCH, seed: int = 0) -> pd.DataFrame:
    """Cleaned synthetic encounters with a varied history, to check a compiled model on."""
    from readmission import synthetic
    from readmission.features import HISTORY

    frame = clean(synthetic.encounters(rows, seed=seed))
    rng = np.random.default_rng(seed)
    for name in HISTORY:
        frame[name] = rng.integers(0, 4, rows).astype(float)
    return frame


def sample_records(rows: int = SMALL_BATCH, seed: int = 0) -> list[dict]:
    """Raw synthetic encounters as records (as a client sends them), with a history."""
    from readmission import synthetic
    from readmission.features import HISTORY

    records = synthetic.encounters(rows, seed=seed).to_dict("records")
    rng = np.random.default_rng(seed)
    for record in records:
        record.update({name: float(rng.integers(0, 4)) for name in HISTORY})
    return records


def accelerate(model: Any, sample: pd.DataFrame, records: list[dict] | None = None) -> Any:
    """`model` with its gradient-boosting step compiled (a LightGBM family's trees are
    compiled already: only the path without pandas is added), if that gives the pipeline's
    answers on `sample` (to 1e-9), and the path without pandas (`score_columns`) gives them
    on raw `records` (synthetic ones by default); otherwise `model` itself, unchanged."""
    pipeline = getattr(model, "pipeline_", None)
    if not isinstance(pipeline, Pipeline):
        return model
    final = pipeline.steps[-1][1]
    compiled = getattr(final, "compiled_", None)  # LightGBM's trees: compiled when fitted
    if not isinstance(final, HistGradientBoostingClassifier) and compiled is None:
        return model
    try:
        compiled = CompiledTrees(final) if compiled is None else compiled
        faster = copy.copy(model)
        faster.pipeline_ = FastPipeline(pipeline, compiled)
        for rows in (sample.iloc[:1], sample.iloc[: min(len(sample), SMALL_BATCH)]):
            if not np.allclose(
                faster.predict_proba(rows), model.predict_proba(rows), rtol=0, atol=1e-9
            ):
                log.warning("compiled trees disagree with scikit-learn; serving the original")
                return model
        records = sample_records() if records is None else records
        for part in (records[:1], records[:SMALL_BATCH]):
            if not np.allclose(
                score_columns(faster, clean_records(part), len(part))[0],
                model.predict_proba(clean(pd.DataFrame.from_records(part))),
                rtol=0,
                atol=1e-9,
            ):
                log.warning("the path without pandas disagrees with the pipeline; serving it")
                return model
    except Exception as exc:  # noqa: BLE001 - the original model always works
        log.warning("could not compile the model's trees (%s); serving the original", exc)
        return model
    log.info(
        "%s trees compiled: %d trees, depth %d",
        type(final).__name__,
        len(compiled.roots),
        compiled.depth,
    )
    return faster
