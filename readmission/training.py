"""Candidates: tune each model family on train, decide on valid, report on test; promote.

The target is the original three classes `NO`, `>30`, `<30`. Each family's small, bounded
search is scored by log-loss on a patient-grouped holdout of the train split (a proper
scoring rule, blind to thresholds); the chosen configuration is refitted on the whole
train split; the decision rule (per-class weights, see `ReadmissionModel`) is tuned on
the valid split; families are compared on the valid split by the primary metric; the test
split is only reported.

Primary metric: macro-F1 on the valid split (`PRIMARY_METRIC`, from the registry). Accuracy would
reward predicting `NO` for everyone (54 % of encounters); macro-F1 weighs the rare `<30`
class (11 %), the one a hospital acts on, as much as the others, and it judges the
classes the platform actually serves. ROC-AUC of `<30` and log-loss are reported beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.model_selection import GroupShuffleSplit
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits

from readmission import assessment, card, db, drift, evaluation, explain, schema
from readmission.cleaning import CLEAN_KEYS
from readmission.estimator import ReadmissionModel, expired_mask, fit_recalibration
from readmission.features import HISTORY, EncounterFeatures, add_history, build_pipeline
from readmission.names import FAMILIES, SPLITS, STAND_IN_TAG, TRAIN_DAG, Family, Profile
from readmission.registry import (
    PRIMARY_METRIC,
    Registry,
    covering_rows,
    load_model,
    log_sklearn_model,
    should_promote,
    signature_frame,
)
from readmission.settings import DecisionSettings
from readmission.text import short_error

log = logging.getLogger(__name__)


#: What a model reads: the cleaned encounter (no identifier, no target) and its history.
MODEL_INPUTS: tuple[str, ...] = (
    *(key for key in CLEAN_KEYS if key not in (*schema.IDENTIFIERS, schema.TARGET)),
    *HISTORY,
)

#: The bounded searches: a handful of configurations per family, chosen around what
#: works on tabular data of this size (61k rows, ~120 features).
SEARCH: dict[Profile, dict[Family, list[dict]]] = {
    "full": {
        "logistic_regression": [
            {"C": 0.03},
            {"C": 0.1},
            {"C": 0.3},
            {"C": 1.0},
        ],
        "random_forest": [
            {
                "n_estimators": 300,
                "min_samples_leaf": 3,
                "max_features": "sqrt",
                "max_samples": 0.7,
            },
            {
                "n_estimators": 300,
                "min_samples_leaf": 10,
                "max_features": "sqrt",
                "max_samples": 0.7,
            },
            {"n_estimators": 300, "min_samples_leaf": 30, "max_features": 0.3, "max_samples": 0.7},
        ],
        "hist_gradient_boosting": [
            {
                "learning_rate": 0.03,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 100,
                "l2_regularization": 1.0,
                "max_iter": 1500,
            },
            {
                "learning_rate": 0.05,
                "max_leaf_nodes": 31,
                "min_samples_leaf": 50,
                "l2_regularization": 0.5,
                "max_iter": 1000,
            },
            {
                "learning_rate": 0.05,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 200,
                "l2_regularization": 2.0,
                "max_iter": 1000,
                "max_features": 0.5,
            },
        ],
        # LightGBM, stopped early on whole patients (bench/choices.py weighed these four)
        "lightgbm": [
            {
                "num_leaves": 15,
                "learning_rate": 0.03,
                "min_child_samples": 100,
                "colsample_bytree": 0.5,
                "reg_lambda": 1.0,
            },
            {
                "num_leaves": 31,
                "learning_rate": 0.03,
                "min_child_samples": 50,
                "colsample_bytree": 0.7,
                "subsample": 0.8,
                "subsample_freq": 1,
                "reg_lambda": 1.0,
            },
            {
                "num_leaves": 7,
                "learning_rate": 0.05,
                "min_child_samples": 200,
                "colsample_bytree": 0.5,
                "reg_lambda": 5.0,
            },
            {
                "num_leaves": 63,
                "learning_rate": 0.02,
                "min_child_samples": 200,
                "colsample_bytree": 0.3,
                "subsample": 0.8,
                "subsample_freq": 1,
                "reg_lambda": 10.0,
                "reg_alpha": 1.0,
            },
        ],
    },
    "quick": {  # tests and smoke runs: one small configuration each
        "logistic_regression": [{"C": 0.1, "max_iter": 300}],
        "random_forest": [{"n_estimators": 30, "min_samples_leaf": 5, "max_features": "sqrt"}],
        "hist_gradient_boosting": [{"learning_rate": 0.1, "max_leaf_nodes": 15, "max_iter": 100}],
        "lightgbm": [{"num_leaves": 15, "learning_rate": 0.1, "min_child_samples": 100}],
    },
}


class SnapshotChangedError(RuntimeError):
    """The clean rows a training run pinned are no longer those in the store."""


@dataclass(frozen=True)
class Snapshot:
    """The clean rows a training run works on, pinned when it starts.

    Every candidate is measured, and the champion re-scored, on exactly these rows, whatever
    is cleaned meanwhile: the rows of the batches `batches` (a raw batch is cleaned in one
    transaction, so a batch is wholly in or out), checked by their count and two sums that
    change when a row is added, removed or cleaned again (`chunk_id` names the cleaning
    transaction that made a row)."""

    batches: tuple[int, ...]
    rows: int
    encounter_id_sum: int
    chunk_id_sum: int
    rows_by_split: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        """A short name of the snapshot (tags, logs)."""
        text = json.dumps([list(self.batches), self.rows, self.encounter_id_sum, self.chunk_id_sum])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "batches": list(self.batches),
            "rows": self.rows,
            "encounter_id_sum": self.encounter_id_sum,
            "chunk_id_sum": self.chunk_id_sum,
            "rows_by_split": dict(self.rows_by_split),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        snapshot = cls(
            tuple(int(b) for b in data["batches"]),
            int(data["rows"]),
            int(data["encounter_id_sum"]),
            int(data["chunk_id_sum"]),
            dict(data.get("rows_by_split") or {}),
        )
        if "id" in data and data["id"] != snapshot.id:
            raise ValueError(f"snapshot {data['id']} does not match its own figures")
        return snapshot


def _fingerprint(conn, batches: tuple[int, ...] | None) -> tuple[tuple[int, ...], int, int, int]:
    table = db.clean_encounters
    where = [] if batches is None else [table.c.batch_id.in_(batches)]
    found = tuple(
        sorted(int(b) for b in conn.scalars(sa.select(table.c.batch_id).where(*where).distinct()))
    )
    rows, encounters, chunks = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(table.c.encounter_id), 0),
            sa.func.coalesce(sa.func.sum(table.c.chunk_id), 0),
        ).where(*where)
    ).one()
    return found, int(rows), int(encounters), int(chunks)


def pin_snapshot(engine: Engine) -> Snapshot:
    """The clean rows as they are now: what a training run will work on."""
    table = db.clean_encounters
    with engine.connect() as conn:
        batches, rows, encounters, chunks = _fingerprint(conn, None)
        by_split = dict(
            conn.execute(sa.select(table.c.split, sa.func.count()).group_by(table.c.split)).all()
        )
    return Snapshot(batches, rows, encounters, chunks, {k: int(v) for k, v in by_split.items()})


@dataclass
class TrainingData:
    """The clean encounters of each split, with their history, and where they came from."""

    frames: dict[str, pd.DataFrame]
    lineage: dict
    snapshot: Snapshot
    _features: dict[str, pd.DataFrame] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def inputs(self, split: str) -> pd.DataFrame:
        return self.frames[split][list(MODEL_INPUTS)]

    def features(self, split: str) -> pd.DataFrame:
        """`EncounterFeatures` of the split's inputs, computed once (2 to 4 s for the real
        train split): a training run fits and scores the same splits some twenty times per
        candidate and hands them these (`ReadmissionModel.fit`'s `features`)."""
        with self._lock:
            if split not in self._features:
                self._features[split] = EncounterFeatures().fit_transform(self.inputs(split))
            return self._features[split]

    def proba(self, model: ReadmissionModel, split: str) -> np.ndarray:
        """`model.predict_proba` of the split, from its features computed once."""
        return model.predict_proba(self.inputs(split), features=self.features(split))

    def target(self, split: str) -> pd.Series:
        return self.frames[split][schema.TARGET]

    def patients(self, split: str) -> pd.Series:
        return self.frames[split][schema.PATIENT_ID]


def load_training_data(engine: Engine, snapshot: Snapshot | None = None) -> TrainingData:
    """The clean encounters of `snapshot` (pinned now if not given) with a known target,
    history added, cut by split. Refuses a snapshot whose rows are no longer those stored."""
    snapshot = snapshot or pin_snapshot(engine)
    table = db.clean_encounters
    with engine.connect() as conn:
        clean = pd.read_sql(sa.select(table).where(table.c.batch_id.in_(snapshot.batches)), conn)
    found = (
        tuple(sorted(int(b) for b in clean["batch_id"].unique())),
        len(clean),
        int(clean[schema.ENCOUNTER_ID].sum()),
        int(clean["chunk_id"].sum()),
    )
    pinned = (snapshot.batches, snapshot.rows, snapshot.encounter_id_sum, snapshot.chunk_id_sum)
    if found != pinned:
        raise SnapshotChangedError(
            f"the clean rows of snapshot {snapshot.id} changed since training started "
            f"(batches {list(snapshot.batches)}: {snapshot.rows:,} rows pinned, {len(clean):,} "
            "now, or cleaned again): start the training run again"
        )
    clean = add_history(clean)  # over all splits: a patient's encounters share one split
    clean = clean[clean[schema.TARGET].notna()]
    frames = {split: clean[clean["split"] == split].reset_index(drop=True) for split in SPLITS}
    missing = [split for split, frame in frames.items() if frame.empty]
    if missing:
        raise ValueError(f"no clean rows in split(s) {missing}: load and clean data first")
    lineage = {
        "snapshot": snapshot.to_dict(),
        "batches": list(snapshot.batches),
        "rows": {split: len(frame) for split, frame in frames.items()},
        "patients": {
            split: int(frame[schema.PATIENT_ID].nunique()) for split, frame in frames.items()
        },
        "classes_train": frames["train"][schema.TARGET].value_counts().to_dict(),
    }
    return TrainingData(frames, lineage, snapshot)


@dataclass
class Candidate:
    """One family's tuned model with its figures."""

    family: Family
    params: dict
    model: ReadmissionModel
    metrics: dict[str, float]
    search: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def tune(
    family: Family,
    data: TrainingData,
    profile: Profile = "full",
    seed: int = 0,
    max_nodes: int | None = None,
    threads: int | None = None,
) -> tuple[dict, list[dict]]:
    """The configuration chosen on a patient-grouped 20 % holdout of the train split, and
    every configuration's score: of those within the serving budget (`max_nodes` tree
    nodes, `model_size`; all of them when none fits), the cheapest to serve of those whose
    log-loss there is within one standard error of the lowest (`cheapest_within_one_se`),
    so that a model several times larger to walk and to explain is served only when it is
    measurably better and affordable."""
    space = SEARCH[profile][family]
    if len(space) == 1:
        return dict(space[0]), [{"params": space[0], "holdout_log_loss": None}]
    train = data.frames["train"]
    inner, holdout = next(
        GroupShuffleSplit(n_splits=1, test_size=0.2, random_state=seed).split(
            train, groups=train[schema.PATIENT_ID]
        )
    )
    x, y = data.inputs("train"), data.target("train")
    features, patients = data.features("train"), data.patients("train")
    results, row_losses = [], []
    for params in space:
        started = time.perf_counter()
        model = ReadmissionModel(build_pipeline(family, params, seed, threads)).fit(
            x.iloc[inner], y.iloc[inner], groups=patients.iloc[inner], features=features.iloc[inner]
        )
        proba = model.predict_proba(x.iloc[holdout], features=features.iloc[holdout])
        loss = evaluation.metrics(
            y.iloc[holdout], proba, list(model.classes_), model.decide(proba)
        )["log_loss"]
        truth = np.searchsorted(model.classes_, np.asarray(y.iloc[holdout], dtype=object))
        row_losses.append(-np.log(np.clip(proba[np.arange(len(truth)), truth], 1e-15, 1.0)))
        results.append(
            {
                "params": params,
                "holdout_log_loss": loss,
                "nodes": model_size(model),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        log.info(
            "%s %s: holdout log-loss %.4f, %s tree nodes",
            family,
            params,
            loss,
            results[-1]["nodes"],
        )
    affordable = [
        i
        for i, r in enumerate(results)
        if max_nodes is None or r["nodes"] is None or r["nodes"] <= max_nodes
    ] or list(range(len(results)))
    for i, result in enumerate(results):
        result["within_budget"] = i in affordable
    pick = cheapest_within_one_se(
        [row_losses[i] for i in affordable],
        [results[i]["nodes"] for i in affordable],
        np.asarray(patients.iloc[holdout]),
    )
    chosen = affordable[pick]
    for i, result in enumerate(results):
        result["chosen"] = i == chosen
    return dict(results[chosen]["params"]), results


def model_size(model: ReadmissionModel) -> int | None:
    """Tree nodes of a fitted model (what walking and explaining it cost), None for a
    model without trees."""
    classifier = model.pipeline_.steps[-1][1]
    if hasattr(classifier, "compiled_"):
        return len(classifier.compiled_.leaf)
    if hasattr(classifier, "_predictors"):  # HistGradientBoostingClassifier
        return sum(len(tree.nodes) for trees in classifier._predictors for tree in trees)
    if hasattr(classifier, "estimators_"):  # a forest
        return sum(int(tree.tree_.node_count) for tree in classifier.estimators_)
    return None


def cheapest_within_one_se(
    losses: list[np.ndarray], sizes: list[int | None], groups: np.ndarray | None = None
) -> int:
    """Which of several configurations to keep, given each one's log-loss per holdout row
    and its size: the smallest of those whose mean loss exceeds the lowest mean by at most
    one standard error of the paired per-row difference (ties, and sizes unknown: the lower
    loss). With `groups` (each row's patient), the standard error is the cluster-robust
    one: a patient's rows are not independent of each other."""
    means = [float(np.mean(loss)) for loss in losses]
    best = int(np.argmin(means))
    close = []
    for i, loss in enumerate(losses):
        gap = means[i] - means[best]
        if i == best or gap <= _standard_error(loss - losses[best], groups):
            close.append(i)
    if any(sizes[i] is None for i in close):
        return best
    return min(close, key=lambda i: (sizes[i], means[i]))


def _standard_error(values: np.ndarray, groups: np.ndarray | None = None) -> float:
    """Standard error of the mean of `values`, clustered by `groups` when given (0 for
    fewer than two rows or groups)."""
    n = len(values)
    if groups is None:
        return float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    _, cluster = np.unique(np.asarray(groups), return_inverse=True)
    count = int(cluster.max()) + 1 if n else 0
    if count < 2:
        return 0.0
    residual = np.bincount(cluster, weights=values - values.mean(), minlength=count)
    return float(np.sqrt(count / (count - 1) * np.sum(residual**2)) / n)


def fit_candidate(
    family: Family,
    data: TrainingData,
    profile: Profile = "full",
    seed: int = 0,
    decision: DecisionSettings | None = None,
    max_nodes: int | None = None,
    threads: int | None = None,
) -> Candidate:
    """Tune (within `max_nodes` tree nodes, see `tune`), refit on train, tune the decision
    rule on valid, measure valid and test, and assess the `<30` risk (calibration,
    operating points, subgroups: `assessment`); on at most `threads` threads (None: as
    many as each library takes), so that candidates fitted side by side do not oversubscribe
    the cores."""
    with threadpool_limits(threads):
        return _fit_candidate(family, data, profile, seed, decision, max_nodes, threads)


def _fit_candidate(family, data, profile, seed, decision, max_nodes, threads) -> Candidate:
    started = time.perf_counter()
    decision = decision or DecisionSettings()
    params, search = tune(family, data, profile, seed, max_nodes, threads)
    model = ReadmissionModel(build_pipeline(family, params, seed, threads))
    model.fit(
        data.inputs("train"),
        data.target("train"),
        groups=data.patients("train"),
        features=data.features("train"),
    )
    recalibration = None
    if decision.recalibration == "auto":
        model, recalibration = recalibrate_if_it_helps(model, family, params, data, seed, threads)
    model.tune_decision(data.inputs("valid"), data.target("valid"), data.features("valid"))
    # what the API compares its requests with: travels inside the model artifact
    model.reference_profile_ = drift.reference_profile(data.inputs("train"))
    model.lineage_ = data.lineage  # what the model card says of the data
    # what the API explains predictions with, also inside the artifact: the linear
    # family's reference (mean encoded training row) and every family's global importance
    model.feature_means_ = explain.feature_means(
        model, data.inputs("train"), data.features("train")
    )
    model.importance_ = _importance(model, data)
    figures: dict[str, float] = {}
    probabilities = {}
    for split in ("valid", "test"):
        proba = probabilities[split] = data.proba(model, split)
        scores = evaluation.metrics(
            data.target(split), proba, list(model.classes_), model.decide(proba)
        )
        figures.update({f"{split}_{name}": value for name, value in scores.items()})
        baseline = evaluation.majority_baseline(data.target("train"), data.target(split))
        figures[f"{split}_baseline_macro_f1"] = baseline["macro_f1"]
    model.assessment_ = assess(model, data, probabilities, decision, seed)
    model.assessment_["recalibration"] = recalibration
    figures.update(assessment_metrics(model.assessment_))
    nodes = model_size(model)
    if nodes is not None:  # what serving it costs; the budget was judged on the tuning fit
        figures["tree_nodes"] = float(nodes)
        if max_nodes is not None and nodes > max_nodes:
            log.warning(
                "%s: %d tree nodes refitted on the whole train split, over the budget of %d "
                "(the configuration was within it when tuned)",
                family,
                nodes,
                max_nodes,
            )
    seconds = time.perf_counter() - started
    log.info(
        "%s: %s %.4f (test %.4f), %.0f s",
        family,
        PRIMARY_METRIC,
        figures[PRIMARY_METRIC],
        figures["test_macro_f1"],
        seconds,
    )
    return Candidate(family, params, model, figures, search, seconds)


#: Share of the train split's patients held out to fit a recalibration on.
RECALIBRATION_SHARE = 0.15


def recalibrate_if_it_helps(
    model: ReadmissionModel,
    family: Family,
    params: dict,
    data: TrainingData,
    seed: int = 0,
    threads: int | None = None,
) -> tuple[ReadmissionModel, dict]:
    """`model` (fitted on the whole train split), or a recalibrated one if that is better
    calibrated on valid; and the figures of the comparison.

    The recalibrated model is the same configuration fitted on the train split without
    RECALIBRATION_SHARE of its patients, then recalibrated (`estimator.fit_recalibration`)
    on those held-out patients, used for neither fitting nor selection. It replaces `model`
    only if it beats it on valid in both log-loss and the ECE of `<30`."""
    train = data.frames["train"]
    fitted, held = next(
        GroupShuffleSplit(n_splits=1, test_size=RECALIBRATION_SHARE, random_state=seed).split(
            train, groups=data.patients("train")
        )
    )
    x, y, patients = data.inputs("train"), data.target("train"), data.patients("train")
    features = data.features("train")
    other = ReadmissionModel(build_pipeline(family, params, seed, threads))
    other.fit(
        x.iloc[fitted], y.iloc[fitted], groups=patients.iloc[fitted], features=features.iloc[fitted]
    )
    can_return = ~expired_mask(x.iloc[held])  # the dead: certain NO, nothing to calibrate
    truth = pd.Categorical(y.iloc[held][can_return], categories=other.classes_).codes
    proba = other.predict_proba(x.iloc[held][can_return], features=features.iloc[held][can_return])
    other.recalibration_ = fit_recalibration(proba[truth >= 0], truth[truth >= 0])
    figures = {}
    for name, candidate in (("whole_train", model), ("recalibrated", other)):
        proba = data.proba(candidate, "valid")
        figures[name] = {
            "valid_log_loss": evaluation.metrics(
                data.target("valid"), proba, list(candidate.classes_), candidate.decide(proba)
            )["log_loss"],
            "valid_ece_lt30": assessment.expected_calibration_error(
                _is_lt30(data, "valid").astype(float), _risk(candidate, proba)
            ),
        }
    better = all(
        figures["recalibrated"][k] < figures["whole_train"][k] for k in figures["recalibrated"]
    )
    figures.update(
        {
            "used": better,
            "held_out_patients": int(patients.iloc[held].nunique()),
            "scale": other.recalibration_["scale"],
            "bias": other.recalibration_["bias"],
        }
    )
    log.info(
        "%s: recalibration %s (valid log-loss %.4f -> %.4f, ECE of <30 %.4f -> %.4f)",
        family,
        "used" if better else "not used",
        figures["whole_train"]["valid_log_loss"],
        figures["recalibrated"]["valid_log_loss"],
        figures["whole_train"]["valid_ece_lt30"],
        figures["recalibrated"]["valid_ece_lt30"],
    )
    return (other if better else model), figures


def _risk(model: ReadmissionModel, proba: np.ndarray) -> np.ndarray:
    return proba[:, list(model.classes_).index(assessment.LT30)]


def _is_lt30(data: TrainingData, split: str):
    return (data.target(split) == assessment.LT30).to_numpy()


def assess(
    model: ReadmissionModel,
    data: TrainingData,
    probabilities: dict | None = None,
    decision: DecisionSettings | None = None,
    seed: int = 0,
) -> dict:
    """`assessment.assess` of a model on the valid and test splits of `data`."""
    decision = decision or DecisionSettings()
    probabilities = probabilities or {
        split: data.proba(model, split) for split in ("valid", "test")
    }
    return assessment.assess(
        {split: _risk(model, proba) for split, proba in probabilities.items()},
        {split: _is_lt30(data, split) for split in probabilities},
        data.frames["test"],
        data.patients("test"),
        high_top_percent=decision.high_top_percent,
        resamples=decision.bootstrap_resamples,
        seed=seed,
        min_group_patients=decision.min_group_patients,
    )


def assessment_metrics(assessed: dict) -> dict[str, float]:
    """The assessment's headline figures as run metrics: calibration of `<30` per split,
    and sensitivity and PPV of each top-k operating point on test."""
    out = {}
    for split, figures in assessed["calibration"].items():
        for name in ("brier", "ece", "slope", "intercept"):
            prefix = "" if name in ("brier", "ece") else "calibration_"
            out[f"{split}_{prefix}{name}_lt30"] = figures[name]
    for point in assessed["operating_points"]:
        k = f"{point['top_percent']:g}"
        out[f"test_sensitivity_top{k}"] = point["sensitivity"]["value"]
        out[f"test_ppv_top{k}"] = point["ppv"]["value"]
    return {name: float(value) for name, value in out.items() if value is not None}


def subgroup_rows(
    model: ReadmissionModel, data: TrainingData, decision: DecisionSettings
) -> list[dict]:
    """A model's subgroup figures on test (point estimates), at its own high-tier threshold
    (chosen on valid): what the promotion gate compares."""
    valid = _risk(model, data.proba(model, "valid"))
    test = _risk(model, data.proba(model, "test"))
    quantiles = assessment.risk_quantiles(valid)
    threshold = assessment.threshold_for_top(quantiles, decision.high_top_percent)
    return assessment.subgroups(
        data.frames["test"],
        _is_lt30(data, "test"),
        test,
        data.patients("test"),
        threshold,
        np.ones((1, len(test))),
        decision.min_group_patients,
    )


def _importance(model: ReadmissionModel, data: TrainingData) -> dict | None:
    """Global importance on a sample of the valid split (`explain.IMPORTANCE_ROWS` rows, a
    few seconds); None, logged, when the model cannot be explained."""
    try:
        found = explain.global_importance(model, data.inputs("valid"))
    except explain.ExplainerUnavailableError as exc:
        log.warning("no global importance for this model: %s", exc)
        return None
    log.info("global importance on %d valid rows in %.1f s", found["rows"], found["seconds"])
    return found


def score(model: ReadmissionModel, data: TrainingData, split: str = "valid") -> float:
    """The primary metric of any model on a split of the current data (for the champion)."""
    proba = model.predict_proba(data.inputs(split))
    return evaluation.metrics(data.target(split), proba, list(model.classes_), model.decide(proba))[
        "macro_f1"
    ]


#: The context each split's dataset is logged with (MLflow's `mlflow.data.context` tag).
DATASET_CONTEXTS = {"train": "training", "valid": "validation", "test": "testing"}


def log_candidate(
    candidate: Candidate, data: TrainingData, tags: dict[str, str], registry: Registry
) -> dict:
    """One MLflow run per candidate: params, metrics, confusion matrices, the global
    feature importance (figure and JSON), the search, the data it saw, and the model with
    its signature and an input example.

    The model is MLflow 3's LoggedModel of the run (it takes the run's params when logged,
    so they are logged first), and its page in the MLflow UI shows the metrics too: each
    is linked to the model and to the split's dataset it was measured on (valid_*,
    test_*; the training time to train), each split logged as the run's input with its
    context.

    Returns what promotion needs: family, run id, model URI and the primary metric."""
    import mlflow

    registry.ensure_experiment()
    run_tags = {**tags, "family": candidate.family}
    with registry.activate(), mlflow.start_run(run_name=candidate.family, tags=run_tags) as run:
        params = {
            "family": candidate.family,
            **candidate.params,
            "decision_weights": json.dumps(candidate.model.decision_weights_),
            "recalibrated": getattr(candidate.model, "recalibration_", None) is not None,
            "search_size": len(candidate.search),
        }
        mlflow.log_params(params)
        for split in ("valid", "test"):
            proba = data.proba(candidate.model, split)
            image = evaluation.confusion_matrix_png(
                data.target(split),
                candidate.model.decide(proba),
                list(candidate.model.classes_),
                f"{candidate.family}, {split} split",
            )
            _log_bytes(image, f"confusion_matrix_{split}.png")
            image = assessment.roc_pr_png(
                _is_lt30(data, split),
                _risk(candidate.model, proba),
                f"{candidate.family}, <30 vs rest, {split} split",
            )
            _log_bytes(image, f"roc_pr_lt30_{split}.png")
        assessed = getattr(candidate.model, "assessment_", None)
        if assessed is not None:  # fit_candidate always sets it; a hand-made model may not
            mlflow.log_dict(assessed, "assessment.json")
            image = assessment.reliability_png(
                assessed["reliability"], f"{candidate.family}: calibration of <30"
            )
            _log_bytes(image, "calibration_lt30.png")
        mlflow.log_dict({"search": candidate.search}, "search.json")
        mlflow.log_dict(data.lineage, "data.json")
        profile = getattr(candidate.model, "reference_profile_", None)
        if profile is not None:  # fit_candidate always sets it; a hand-made model may not
            mlflow.log_dict(profile, "drift_reference.json")
        importance = getattr(candidate.model, "importance_", None)
        if importance is not None:  # None when the model cannot be explained
            mlflow.log_dict(importance, "feature_importance.json")
            title = f"{candidate.family}: mean |contribution| on valid"
            _log_bytes(explain.importance_png(importance, title), "feature_importance.png")
        mlflow.set_tags(
            {
                "data.snapshot": data.snapshot.id,
                "data.batches": ",".join(map(str, data.lineage["batches"])),
                **{f"data.rows_{split}": str(n) for split, n in data.lineage["rows"].items()},
            }
        )
        train_inputs = data.inputs("train")
        model = log_sklearn_model(
            candidate.model,
            training_frame=train_inputs,
            input_example=data.inputs("valid").head(3),
        )
        datasets = {split: split_dataset(data, split) for split in DATASET_CONTEXTS}
        log_split_datasets(datasets)
        by_split = _metrics_by_split({**candidate.metrics, "training_seconds": candidate.seconds})
        for split, metrics in by_split.items():
            mlflow.log_metrics(metrics, model_id=model.model_id, dataset=datasets[split])
        return {
            "family": candidate.family,
            "run_id": run.info.run_id,
            "model_uri": model.model_uri,
            "snapshot": data.snapshot.id,
            PRIMARY_METRIC: candidate.metrics[PRIMARY_METRIC],
        }


def split_dataset(data: TrainingData, split: str):
    """One split as an MLflow dataset (`clean_data.<split>`): the model's inputs, with the
    dtypes of its signature, and the target."""
    import mlflow.data
    from mlflow.models import infer_signature

    frame = signature_frame(data.inputs(split)).assign(
        **{schema.TARGET: data.target(split).to_numpy()}
    )
    dataset = mlflow.data.from_pandas(frame, name=f"clean_data.{split}", targets=schema.TARGET)
    # MLflow infers the schema when the dataset is logged, from every value (a cached
    # property): the same schema from the covering rows, at a fraction of the time
    dataset.schema = infer_signature(covering_rows(frame)).inputs
    return dataset


#: How a store refuses a second insert of one dataset (SQLite, PostgreSQL, MySQL).
_DUPLICATE_KEY = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def log_split_datasets(datasets: dict, attempts: int = 3) -> None:
    """Each split's dataset as an input of the active run, with its context.

    MLflow's store looks for a dataset, then inserts it: candidates trained at once log the
    same splits at the same moment, and all but one may lose the insert (a unique-key
    error, HTTP 400 from the server), which failed the training task. Whoever lost finds
    the dataset stored when it asks again."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for split, context in DATASET_CONTEXTS.items():
        for attempt in range(1, attempts + 1):
            try:
                mlflow.log_input(datasets[split], context=context)
                break
            except MlflowException as exc:
                if attempt == attempts or not any(key in str(exc) for key in _DUPLICATE_KEY):
                    raise
                log.info("dataset %s was stored by another run meanwhile; again", split)


def _metrics_by_split(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """valid_* and test_* metrics by the split they were measured on; the rest (the
    training time) goes with train."""
    grouped: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        split = name.split("_", 1)[0]
        grouped.setdefault(split if split in ("valid", "test") else "train", {})[name] = value
    return grouped


def _log_bytes(content: bytes, name: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        mlflow.log_artifact(str(path))


def promote_best(
    candidates: list[dict],
    data: TrainingData,
    tags: dict[str, str],
    registry: Registry,
    lock: contextlib.AbstractContextManager | None = None,
    decision: DecisionSettings | None = None,
    stand_in: bool = False,
) -> dict:
    """Register the best candidate; promote it only if it beats the current champion, and
    its subgroups do not fare worse than the champion's beyond the tolerance
    (`assessment.fairness_gate`, figures and reason tagged on the version).

    A `stand_in` is tagged as the stand-in of its training run (`STAND_IN_TAG`): when that
    run's own promotion meets it as the champion, it is judged on its score alone, as one
    more candidate of the run, not guarded by the subgroup gate, which protects a champion
    the run did not make.

    The champion is re-scored on the current valid split, the one the candidates were
    judged on, so both scores compare like with like. Equal or worse is never promoted;
    a first model always is. Retrying is safe: a run registered before is not again.
    With `lock` (see `db.promotion_lock`), reading the champion, the decision and the
    promotion happen under it, so concurrent trainers decide one after the other, each
    against the champion the previous one left.
    """
    strangers = [c["run_id"] for c in candidates if c.get("snapshot") != data.snapshot.id]
    if strangers:
        raise ValueError(
            f"candidate run(s) {strangers} were trained on another snapshot than "
            f"{data.snapshot.id}: champion and challenger must share their data"
        )
    best = max(candidates, key=lambda c: (c[PRIMARY_METRIC], -FAMILIES.index(c["family"])))
    run = tags.get("orchestrator_run_id") or "cli"
    version = registry.version_of_run(best["run_id"]) or registry.register(
        best["model_uri"],
        tags={
            **tags,
            "family": best["family"],
            "run_id": best["run_id"],
            "data.snapshot": data.snapshot.id,
            **({STAND_IN_TAG: run} if stand_in else {}),
        },
    )
    by = run if run == "cli" else f"{TRAIN_DAG} run {run}"
    with lock or contextlib.nullcontext():
        decided = _decide(best, version, data, registry, decision or DecisionSettings(), by, run)
    publish_card(decided["version"], registry)
    return decided


def publish_card(version: str, registry: Registry) -> dict:
    """Build the version's model card (`card.build`) and log it to its run as
    `model_card.md` and `model_card.json`; returns the card."""
    import mlflow
    from mlflow.exceptions import MlflowException

    described = registry.describe(registry.entry(version))
    run_id = described["run_id"]
    found = {}
    with registry.activate():
        for name in ("assessment.json", "data.json"):
            try:
                found[name] = mlflow.artifacts.load_dict(f"runs:/{run_id}/{name}")
            except (MlflowException, OSError):  # a run logged before models were assessed
                log.warning("run %s has no %s: the model card goes without it", run_id, name)
                found[name] = None
        history = [move.to_dict() for move in registry.history()]
        model_card = card.build(found["assessment.json"], found["data.json"], described, history)
        registry.client.log_text(run_id, card.markdown(model_card), "model_card.md")
        registry.client.log_dict(run_id, model_card, "model_card.json")
    return model_card


def _decide(
    best: dict,
    version,
    data: TrainingData,
    registry: Registry,
    decision: DecisionSettings,
    by: str = "cli",
    run: str = "cli",
) -> dict:
    current = registry.champion()
    version = registry.entry(version.version)  # as it is now, under the lock (a rollback?)
    if current is not None and current.version == version.version:
        return _finish(best, version, data, registry, by)
    rolled_back = (version.tags or {}).get("rolled_back_at")
    if rolled_back:  # a retried task meeting the version someone rolled back from
        reason = (
            f"v{version.version} was rolled back at {rolled_back} "
            f"({version.tags.get('rollback_reason', 'no reason recorded')}): "
            "only a person promotes it again"
        )
        champion_version = current.version if current else None
        log.warning("promotion refused: %s", reason)
        return _decision(best, version, data, False, reason, champion_version, None)
    champion_score, unscorable, champion_model = None, None, None
    if current is not None:
        champion_score, unscorable, champion_model = _rescore(current.version, data, registry)
    if unscorable:
        promoted = math.isfinite(best[PRIMARY_METRIC])
        reason = f"{PRIMARY_METRIC} {best[PRIMARY_METRIC]:.4f} vs {unscorable}"
    else:
        promoted = should_promote(best[PRIMARY_METRIC], champion_score)
        reason = (
            "first model"
            if current is None
            else f"{PRIMARY_METRIC} {best[PRIMARY_METRIC]:.4f} vs champion v{current.version} "
            f"{champion_score:.4f}"
        )
    stood_in = current is not None and run != "cli" and _stand_in_of(current) == run
    if stood_in:
        reason = f"{reason}, the stand-in of this run"
    gate_tags = {}
    if promoted and champion_model is not None and not stood_in:
        gate = _subgroup_gate(version.version, champion_model, data, registry, decision)
        gate_tags = {f"subgroup_{key}": str(value) for key, value in gate.items()}
        if not gate["passed"]:
            promoted = False
            reason = f"{reason}, but subgroups fare worse: {gate['reason']}"
    champion_version = current.version if current else None
    # recorded before the alias moves: a retry after a failure part-way reads it back
    registry.record_decision(
        version.version,
        promoted=promoted,
        candidate_score=best[PRIMARY_METRIC],
        champion_version=champion_version,
        champion_score=champion_score,
        reason=reason,
        extra=gate_tags,
    )
    if promoted:
        registry.promote(version.version, reason=reason, previous=champion_version, by=by)
    else:  # tried on real traffic, beside the champion, when the API shadows
        registry.set_challenger(version.version, reason=f"not promoted: {reason}", by=by)
    return _decision(best, version, data, promoted, reason, champion_version, champion_score)


def _stand_in_of(version) -> str | None:
    """The training run a version stood in for (`STAND_IN_TAG`), if any."""
    return (version.tags or {}).get(STAND_IN_TAG)


def _subgroup_gate(
    version: str, champion, data: TrainingData, registry: Registry, decision: DecisionSettings
) -> dict:
    """`assessment.fairness_gate` of the registered candidate against the champion, both
    on this snapshot's test split, each at its own high-tier threshold."""
    with tempfile.TemporaryDirectory(prefix="challenger-") as folder:
        challenger = load_model(registry.download_version(version, folder))
    return assessment.fairness_gate(
        subgroup_rows(challenger, data, decision),
        subgroup_rows(champion, data, decision),
        decision.subgroup_tolerance,
    )


def _rescore(
    champion_version: str, data: TrainingData, registry: Registry
) -> tuple[float | None, str | None, ReadmissionModel | None]:
    """The champion's primary metric on the snapshot and the champion, or why it cannot be
    scored.

    Fetching its files can fail for a while (registry or artifact store unreachable): that
    error propagates, so the task fails and is retried, and the champion stays. Files that
    no longer make a working model in this code (a class it needs is gone) will never score:
    that is a decision, returned with its reason."""
    with tempfile.TemporaryDirectory(prefix="champion-") as folder:
        path = registry.download_version(champion_version, folder)
        try:
            model = load_model(path)
            return score(model, data), None, model
        except Exception as exc:  # noqa: BLE001 - any failure of the model itself is final
            why = short_error(exc, limit=300)
            log.error(
                "champion v%s cannot be scored, it will be replaced: %s", champion_version, why
            )
            return None, f"champion v{champion_version} which cannot be scored ({why})", None


def _finish(best: dict, version, data: TrainingData, registry: Registry, by: str) -> dict:
    """The version already holds the alias: a retry after a promotion failed part-way, or a
    rerun after it completed. Complete what the recorded decision started; never record a
    decision of the version against itself."""
    tags = version.tags or {}
    recorded = tags.get("champion_version", "none")
    previous = None if recorded == "none" else recorded
    reason = tags.get("decision_reason") or tags.get("promotion_reason") or "already in production"
    registry.promote(version.version, reason=reason, previous=previous, by=by)
    champion_score = tags.get(f"champion_{PRIMARY_METRIC}", "none")
    score_value = None if champion_score == "none" else float(champion_score)
    log.info("v%s already holds the production alias: promotion completed", version.version)
    return _decision(best, version, data, True, reason, previous, score_value)


def _decision(best, version, data, promoted, reason, champion_version, champion_score) -> dict:
    decision = {
        "family": best["family"],
        "run_id": best["run_id"],
        "version": version.version,
        "promoted": promoted,
        "reason": reason,
        "candidate_score": best[PRIMARY_METRIC],
        "champion_version": champion_version,
        "champion_score": champion_score,
        "snapshot": data.snapshot.id,
    }
    log.info("promotion decision: %s", decision)
    return decision
