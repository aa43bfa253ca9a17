"""What a model sees: features derived from a cleaned encounter and the patient's history.

Everything a model reads is computed either here, inside the fitted pipeline (so the saved
artifact predicts from a record cleaned by `readmission.cleaning.clean` and nothing else),
or by `add_history` from the patient's earlier encounters, which a caller without them
may omit (they count as none). Identifiers and the target never enter a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from readmission import schema
from readmission.cleaning import AGE_YEARS, DIAGNOSIS_GROUPS, EXPIRED, ICD9_GROUPS
from readmission.names import FAMILIES, Family

#: The patient's earlier encounters in the data (by `encounter_id`, which grows with time).
HISTORY = (
    "prior_encounters",  # earlier encounters of the patient
    "prior_readmitted_lt30",  # ... followed by a readmission within 30 days
    "prior_readmitted_gt30",  # ... followed by a readmission after 30 days
    "prior_inpatient_total",  # sum of their number_inpatient
    "prior_emergency_total",  # sum of their number_emergency
)

_DRUGS = tuple(schema.BY_NAME[name].key for name in schema.MEDICATIONS)
_DIAGNOSES = tuple(DIAGNOSIS_GROUPS)
_COUNTS = tuple(c.key for c in schema.columns_of(schema.Kind.COUNT))
_CODES = tuple(c.key for c in schema.columns_of(schema.Kind.CODE))

#: Categorical model inputs (text), in a fixed order.
CATEGORICAL: tuple[str, ...] = (
    *(c.key for c in schema.columns_of(schema.Kind.CATEGORY)),
    *(f"{code}_code" for code in _CODES),
    *DIAGNOSIS_GROUPS.values(),
    *(f"{diag}_category" for diag in _DIAGNOSES),
)
#: Numeric model inputs, in a fixed order.
NUMERIC: tuple[str, ...] = (
    *_COUNTS,
    AGE_YEARS,
    EXPIRED,
    *HISTORY,
    "medications_prescribed",
    "medication_changes",
    "prior_visits_year",
    *(f"diagnoses_{group}" for group in ICD9_GROUPS),
)
#: The three diagnosis codes as ordered numbers (`code_number`), for LightGBM, whose trees
#: choose ranges of codes finer than the chapters (+0.003 valid macro-F1, bench/choices.py).
CODE_NUMBERS: tuple[str, ...] = tuple(f"{diag}_number" for diag in _DIAGNOSES)
#: High-cardinality inputs (3-digit ICD-9 categories, ~700 values).
HIGH_CARDINALITY: tuple[str, ...] = tuple(f"{diag}_category" for diag in _DIAGNOSES)
#: Categories the tree models split on: without the 3-digit ICD-9 categories, whose ~700
#: values let a tree carve the train split finely (ROC-AUC of `<30` fell from 0.698 to
#: 0.674 on valid with them); the chapters carry the diagnoses instead.
TREE_CATEGORICAL: tuple[str, ...] = tuple(c for c in CATEGORICAL if c not in HIGH_CARDINALITY)

#: Columns by name: a pandas frame, or numpy arrays (the API's small batches, no frame).
Columns = pd.DataFrame | Mapping[str, np.ndarray]


def add_history(encounters: pd.DataFrame) -> pd.DataFrame:
    """Add `HISTORY` to cleaned encounters: what the patient's earlier encounters in the
    frame (lower `encounter_id`) tell. Only the past is used, so a feature is known when
    the encounter is scored; an earlier encounter's `readmitted` is known by then too.
    """
    order = encounters.sort_values(schema.ENCOUNTER_ID, kind="stable")
    patients = order.groupby(schema.PATIENT_ID, sort=False)
    target = order[schema.TARGET]

    def earlier_sum(values: pd.Series) -> pd.Series:
        return values.groupby(order[schema.PATIENT_ID], sort=False).cumsum() - values

    history = pd.DataFrame(
        {
            "prior_encounters": patients.cumcount(),
            "prior_readmitted_lt30": earlier_sum((target == "<30").astype(int)),
            "prior_readmitted_gt30": earlier_sum((target == ">30").astype(int)),
            "prior_inpatient_total": earlier_sum(order["number_inpatient"].fillna(0)),
            "prior_emergency_total": earlier_sum(order["number_emergency"].fillna(0)),
        },
        index=order.index,
    ).astype(float)
    return encounters.assign(**{name: history.loc[encounters.index, name] for name in HISTORY})


class EncounterFeatures(TransformerMixin, BaseEstimator):
    """Cleaned encounters -> model inputs (`CATEGORICAL`, `NUMERIC`, `CODE_NUMBERS` columns).

    Stateless, so the fitted pipeline carries it and needs nothing else at inference:
    counts of drugs prescribed and changed, visits in the year before, the number of the
    three diagnoses in each ICD-9 chapter, the 3-digit ICD-9 categories, the admission
    codes as categories. History columns a caller did not send count as none.
    """

    def fit(self, frame: pd.DataFrame, y=None) -> EncounterFeatures:  # noqa: ARG002
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.columns(frame, len(frame)), index=frame.index)

    def columns(self, frame: Columns, n: int) -> dict[str, np.ndarray]:
        """The model inputs of `n` cleaned encounters, given as a frame or as the arrays
        of `readmission.cleaning.clean_records` (the API's small batches), by name."""
        # numpy arrays, not pandas operations: one request is one row, and per-operation
        # overhead would dominate (20 ms a row with Series arithmetic, <2 ms this way)
        out: dict[str, np.ndarray] = {}
        for column in schema.columns_of(schema.Kind.CATEGORY):
            out[column.key] = _text(frame, column.key, n)
        for code in _CODES:
            out[f"{code}_code"] = _code_text(_number(frame, code, n))
        for group in DIAGNOSIS_GROUPS.values():
            out[group] = _text(frame, group, n)
        for diag in _DIAGNOSES:
            codes = _text(frame, diag, n)
            out[f"{diag}_category"] = _icd9_category(codes)
            out[f"{diag}_number"] = np.array([code_number(c) for c in codes], dtype=float)
        for name in (*_COUNTS, AGE_YEARS):
            out[name] = _number(frame, name, n)
        out[EXPIRED] = np.nan_to_num(_number(frame, EXPIRED, n))
        for name in HISTORY:
            out[name] = np.nan_to_num(_number(frame, name, n))
        drugs = np.stack([out.get(drug, _text(frame, drug, n)) for drug in _DRUGS], axis=1)
        prescribed = (drugs != "No") & ~pd.isna(drugs)
        out["medications_prescribed"] = prescribed.sum(axis=1).astype(float)
        out["medication_changes"] = ((drugs == "Up") | (drugs == "Down")).sum(axis=1).astype(float)
        out["prior_visits_year"] = sum(
            np.nan_to_num(_number(frame, name, n))
            for name in ("number_outpatient", "number_emergency", "number_inpatient")
        )
        groups = np.stack([out[g] for g in DIAGNOSIS_GROUPS.values()], axis=1)
        for chapter in ICD9_GROUPS:
            out[f"diagnoses_{chapter}"] = (groups == chapter).sum(axis=1).astype(float)
        return {name: out[name] for name in (*CATEGORICAL, *NUMERIC, *CODE_NUMBERS)}

    def get_feature_names_out(self, input_features=None) -> np.ndarray:  # noqa: ARG002
        return np.asarray([*CATEGORICAL, *NUMERIC, *CODE_NUMBERS], dtype=object)


def code_number(code: object) -> float:
    """An ICD-9 code as an ordered number: '250.83' -> 250.83, V codes from 1000 ('V57.1'
    -> 1057.1), E codes from 2000 ('E878' -> 2878); NaN when missing or not a code."""
    if not isinstance(code, str) or not code:
        return np.nan
    offset = {"V": 1000.0, "E": 2000.0}.get(code[0].upper(), 0.0)
    try:
        number = float(code[1:] if offset else code)
    except ValueError:
        return np.nan
    return offset + number if math.isfinite(number) else np.nan


def _text(frame: Columns, name: str, n: int) -> np.ndarray:
    """A text column as an object array, NaN (never None) for missing."""
    if name not in frame:
        return np.full(n, np.nan, dtype=object)
    values = np.asarray(frame[name], dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = np.nan
    return values


def _number(frame: Columns, name: str, n: int) -> np.ndarray:
    if name not in frame:
        return np.full(n, np.nan)
    values = frame[name]
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(float)
    if not isinstance(values, pd.Series):
        values = pd.Series(values)
    if values.dtype.kind in "fiub":
        return values.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _code_text(values: np.ndarray) -> np.ndarray:
    """Codes as category text ('1', '7'), NaN for missing."""
    return np.array([str(int(v)) if v == v else np.nan for v in values], dtype=object)


def _icd9_category(codes: np.ndarray) -> np.ndarray:
    """The 3-character ICD-9 category of a code ('250.83' -> '250', 'V57.1' -> 'V57')."""
    return np.array(
        [c.split(".", 1)[0] if isinstance(c, str) else np.nan for c in codes], dtype=object
    )


class CategoryCodes(TransformerMixin, BaseEstimator):
    """Categories as integer codes for the tree models (NaN for missing or unseen ones),
    numbers passed through, as one float array.

    What OrdinalEncoder in a ColumnTransformer does, without its per-call overhead (~8 ms
    for one row, which is what a request is): a dict look-up per value for small inputs,
    pandas' vectorised index look-up for large ones.
    """

    def __init__(self, categorical: tuple[str, ...], numeric: tuple[str, ...]) -> None:
        self.categorical = categorical
        self.numeric = numeric

    def fit(self, frame: pd.DataFrame, y=None) -> CategoryCodes:  # noqa: ARG002
        self.categories_ = {
            name: sorted({str(v) for v in frame[name].to_numpy(dtype=object) if v == v})
            for name in self.categorical
        }
        self.codes_ = {
            name: {c: float(i) for i, c in enumerate(cats)}
            for name, cats in self.categories_.items()
        }
        self.n_features_in_ = frame.shape[1]
        return self

    def transform(self, frame: Columns) -> np.ndarray:
        """The codes of a frame, or of `EncounterFeatures.columns` arrays."""
        n = len(frame) if isinstance(frame, pd.DataFrame) else len(frame[self.numeric[0]])
        out = np.empty((n, len(self.categorical) + len(self.numeric)), dtype=float)
        for i, name in enumerate(self.categorical):
            values = np.asarray(frame[name], dtype=object)
            if n <= 64:
                codes = self.codes_[name]
                out[:, i] = [codes.get(v, np.nan) if isinstance(v, str) else np.nan for v in values]
            else:
                found = pd.Index(self.categories_[name]).get_indexer(values)
                out[:, i] = np.where(found < 0, np.nan, found)
        if self.numeric and isinstance(frame, pd.DataFrame):
            out[:, len(self.categorical) :] = frame[list(self.numeric)].to_numpy(dtype=float)
        elif self.numeric:
            out[:, len(self.categorical) :] = np.column_stack([frame[n] for n in self.numeric])
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:  # noqa: ARG002
        return np.asarray([*self.categorical, *self.numeric], dtype=object)


class OneHotCodes(TransformerMixin, BaseEstimator):
    """Text columns one-hot encoded, categories seen fewer than `min_frequency` times (and
    unknown ones) pooled in one column per input: what scikit-learn's
    `OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=..., sparse_output=True)`
    gives, with its `categories_`, `infrequent_categories_`, column order, names and values
    (compared on the real data in the tests), without its Python loops: fitting on the real
    train split 1.8 -> 0.15 s; a dict look-up per value for small inputs (a request).

    For text columns (a DataFrame's, as the ColumnTransformer gives them): a missing
    value, None or NaN alike, is a category like any other (NaN, last; scikit-learn would
    keep None and NaN apart, which the cleaned inputs never hold); a value that is neither
    text nor missing is refused when fitting and unknown when transforming."""

    def __init__(self, min_frequency: int = 30) -> None:
        self.min_frequency = min_frequency

    def fit(self, frame: pd.DataFrame, y=None) -> OneHotCodes:  # noqa: ARG002
        if isinstance(self.min_frequency, bool) or not isinstance(self.min_frequency, int):
            raise TypeError(f"min_frequency must be a count, not {self.min_frequency!r}")
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.categories_, self.infrequent_categories_, self.columns_ = [], [], []
        self.widths_, self.lookups_ = [], []
        for name in frame.columns:
            values = pd.Series(frame[name])
            other = [v for v in values.dropna().unique() if not isinstance(v, str)][:3]
            if other:
                raise ValueError(f"{name}: values that are not text, such as {other}")
            counts = values.dropna().value_counts()
            missing = int(values.isna().sum())
            present = sorted(counts.index)
            categories = np.array([*present, *([np.nan] if missing else [])], dtype=object)
            seen = np.array([*counts.loc[present], *([missing] if missing else [])])
            rare = seen < self.min_frequency
            kept = np.flatnonzero(~rare)
            # each category's output column: its own, or the pooled one after those kept
            column = np.full(len(categories), len(kept) if rare.any() else -1)
            column[kept] = np.arange(len(kept))
            self.categories_.append(categories)
            self.infrequent_categories_.append(categories[rare] if rare.any() else None)
            self.columns_.append(column)
            self.widths_.append(len(kept) + int(rare.any()))
            self.lookups_.append(dict(zip(present, column[: len(present)].tolist(), strict=True)))
        return self

    def transform(self, frame: pd.DataFrame):
        from scipy import sparse

        rows, columns, offset = [], [], 0
        for i, name in enumerate(frame.columns):
            out = self._columns_of(i, frame[name])
            hit = np.flatnonzero(out >= 0)
            rows.append(hit)
            columns.append(out[hit] + offset)
            offset += self.widths_[i]
        rows, columns = np.concatenate(rows), np.concatenate(columns)
        return sparse.csr_matrix(
            (np.ones(len(rows)), (rows, columns)), shape=(len(frame), offset), dtype=float
        )

    def _columns_of(self, i: int, values) -> np.ndarray:
        """The output column of each value of input `i` (-1: none, an unknown value when
        nothing is pooled)."""
        categories, column = self.categories_[i], self.columns_[i]
        pooled = -1 if self.infrequent_categories_[i] is None else self.widths_[i] - 1
        has_nan = len(categories) > 0 and not isinstance(categories[-1], str)
        if_missing = column[-1] if has_nan else pooled  # unseen missing: unknown
        if len(values) <= 64:
            lookup = self.lookups_[i]
            return np.array(
                [
                    lookup.get(v, pooled)
                    if isinstance(v, str)
                    else _missing_or(v, if_missing, pooled)
                    for v in np.asarray(values, dtype=object)
                ],
                dtype=np.intp,
            )
        values = pd.Series(values)
        text = pd.Index(categories[:-1] if has_nan else categories, dtype=object)
        found = text.get_indexer(values)
        out = np.where(found >= 0, column[found], pooled)
        out[values.isna().to_numpy()] = if_missing
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        out = []
        for i, name in enumerate(names):
            pooled = self.infrequent_categories_[i] is not None
            last = self.widths_[i] - 1
            for category, to in zip(self.categories_[i], self.columns_[i], strict=True):
                if not (pooled and to == last):
                    out.append(f"{name}_{category}")
            if pooled:
                out.append(f"{name}_infrequent_sklearn")
        return np.asarray(out, dtype=object)


def _missing_or(value: object, if_missing: int, pooled: int) -> int:
    return if_missing if pd.isna(value) else pooled


def _ordinal_encoding() -> CategoryCodes:
    """Categories as integer codes for tree models; unknown and missing -> NaN."""
    return CategoryCodes(TREE_CATEGORICAL, NUMERIC)


def _one_hot_encoding() -> ColumnTransformer:
    """One-hot categories (rare ones pooled, unknown ones ignored) and scaled numbers,
    missing numbers imputed with the median and flagged, for linear models."""
    numbers = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]
    )
    return ColumnTransformer(
        [
            (
                "categories",
                OneHotCodes(min_frequency=30),
                list(CATEGORICAL),
            ),
            ("numbers", numbers, list(NUMERIC)),
        ],
        verbose_feature_names_out=False,
    )


def build_pipeline(
    family: Family, params: dict | None = None, seed: int = 0, threads: int | None = None
) -> Pipeline:
    """The untrained pipeline of one model family: features, encoding, classifier; the
    forests fitted on `threads` threads (None: every core for the random forest, two for
    LightGBM)."""
    params = dict(params or {})
    if family == "logistic_regression":
        classifier = LogisticRegression(**{"max_iter": 3000, "random_state": seed, **params})
        encoding = _one_hot_encoding()
    elif family == "random_forest":
        classifier = RandomForestClassifier(n_jobs=threads or -1, random_state=seed, **params)
        encoding = _ordinal_encoding()
    elif family == "lightgbm":
        from readmission.boosting import LightGBMTrees

        classifier = LightGBMTrees(params, random_state=seed, n_jobs=threads or 2)
        encoding = CategoryCodes(TREE_CATEGORICAL, (*NUMERIC, *CODE_NUMBERS))
    elif family == "hist_gradient_boosting":
        # Category codes are split on as ordered numbers, not as native categories, for the
        # cost of a call: native support re-encodes every input through an OrdinalEncoder,
        # 5 ms a call, for +0.003 valid macro-F1 (0.484 vs 0.481) and +0.002 valid ROC-AUC
        # of <30 (bench/choices.py; the choice is weighed on valid, test is only reported).
        classifier = HistGradientBoostingClassifier(
            categorical_features=None,
            early_stopping=True,
            n_iter_no_change=30,
            random_state=seed,
            **params,
        )
        encoding = _ordinal_encoding()
    else:
        raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES}")
    return Pipeline(
        [("features", EncounterFeatures()), ("encode", encoding), ("classify", classifier)]
    )
