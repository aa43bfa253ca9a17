"""Input drift: how far recent requests stray from what the model was trained on.

Training stores a reference profile of every input feature with the model: numeric
features cut at their training deciles, categorical ones by category, each with the
share of training rows per bin (missing values and, for categories, unseen values get
bins of their own). The API keeps the binned features of its last requests in a sliding
window and scores each feature with the population stability index,

    PSI = sum over bins of (actual - expected) * ln(actual / expected),

(categories under 1 % of training rows share an "other" bin with unseen ones: sparse bins
make the index noisy), where a PSI under 0.1 is usually read as no change, 0.1-0.2 as a
moderate one, and over 0.2 as a shift worth a look (the default alert threshold).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from readmission import schema
from readmission.cleaning import DIAGNOSIS_GROUPS

FLOOR = 1e-4  # share given to an empty bin, so the logarithm stays finite
RARE = 0.01  # categories under 1 % of training rows share one bin: sparse bins make PSI noisy
DECILES = np.linspace(0.1, 0.9, 9)


def drift_features() -> list[tuple[str, str]]:
    """(name, kind) of every feature watched: the schema's inputs, diagnoses by chapter."""
    features: list[tuple[str, str]] = []
    for column in schema.FEATURES:
        if column.kind is schema.Kind.COUNT:
            features.append((column.key, "numeric"))
        elif column.kind is schema.Kind.DIAGNOSIS:
            features.append((DIAGNOSIS_GROUPS[column.key], "categorical"))
        else:
            features.append((column.key, "categorical"))
    return features


def reference_profile(frame: pd.DataFrame) -> dict[str, Any]:
    """The training distribution of every watched feature (JSON-able, stored with the model)."""
    profile: dict[str, Any] = {"rows": len(frame), "features": {}}
    for name, kind in drift_features():
        values = frame[name] if name in frame else pd.Series(np.nan, index=frame.index)
        if kind == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
            present = numbers[~np.isnan(numbers)]
            edges = np.unique(np.quantile(present, DECILES)) if len(present) else np.array([])
            entry = {"kind": kind, "edges": edges.tolist()}
        else:
            text = values.astype(object)[values.notna()].astype(str)
            shares = text.value_counts() / max(len(values), 1)
            entry = {"kind": kind, "categories": sorted(shares[shares >= RARE].index)}
        bins = _bins(entry, values)
        counts = np.bincount(bins, minlength=_width(entry))
        entry["expected"] = (counts / max(counts.sum(), 1)).tolist()
        profile["features"][name] = entry
    return profile


def _width(entry: dict) -> int:
    """Bins of a feature: numeric ranges + missing, or frequent categories + missing + other
    (rare in training, or never seen)."""
    if entry["kind"] == "numeric":
        return len(entry["edges"]) + 2
    return len(entry["categories"]) + 2


def _bins(entry: dict, values: pd.Series | np.ndarray, lookup: Any = None) -> np.ndarray:
    """The bin of each value; `lookup` is `_lookup(entry)` when the caller keeps it."""
    lookup = _lookup(entry) if lookup is None else lookup
    if entry["kind"] == "numeric":
        if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
            numbers = values.astype(float)
        else:
            numbers = pd.Series(values).pipe(pd.to_numeric, errors="coerce")
            numbers = numbers.to_numpy(dtype=float, na_value=np.nan)
        bins = np.searchsorted(lookup, numbers, side="right")
        return np.where(np.isnan(numbers), len(lookup) + 1, bins).astype(np.intp)
    index = lookup
    missing, unseen = len(index), len(index) + 1
    return np.fromiter(
        (
            missing if v is None or v != v else index.get(str(v), unseen)
            for v in np.asarray(values, dtype=object)
        ),
        dtype=np.intp,
        count=len(values),
    )


def _lookup(entry: dict) -> Any:
    """What binning a feature's values needs: its edges, or its categories' positions."""
    if entry["kind"] == "numeric":
        return np.asarray(entry["edges"], dtype=float)
    return {category: i for i, category in enumerate(entry["categories"])}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (shares)."""
    expected = np.maximum(np.asarray(expected, dtype=float), FLOOR)
    actual = np.maximum(np.asarray(actual, dtype=float), FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


class DriftMonitor:
    """The binned features of the last `window` rows scored, and their PSI per feature."""

    def __init__(self, profile: dict[str, Any], window: int = 1_000, min_rows: int = 200) -> None:
        self.entries = profile["features"]
        self.names = list(self.entries)
        self.window = window
        self.min_rows = min_rows
        self._rows = np.zeros((window, len(self.names)), dtype=np.intp)
        self._lookups = [_lookup(self.entries[n]) for n in self.names]
        widths = [_width(self.entries[n]) for n in self.names]
        # every feature's bin counts in one array (a feature's start at its offset), so a
        # batch is counted in two calls, not two per feature
        self._offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.intp)
        self._all_counts = np.zeros(sum(widths), dtype=np.int64)
        self._counts = np.split(self._all_counts, np.cumsum(widths)[:-1])  # views, by feature
        self._expected = [np.asarray(self.entries[n]["expected"]) for n in self.names]
        self._next = 0
        self._filled = 0
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        return self._filled

    def observe(
        self, frame: pd.DataFrame | Mapping[str, np.ndarray], rows: int | None = None
    ) -> None:
        """Add scored rows (cleaned encounters, as a frame or `rows` of clean columns as
        arrays) to the window, dropping the oldest."""
        rows = len(frame) if rows is None else rows
        if rows == 0:
            return
        missing = np.full(rows, np.nan)
        binned = np.stack(
            [
                _bins(self.entries[n], frame.get(n, missing), lookup)
                for n, lookup in zip(self.names, self._lookups, strict=True)
            ],
            axis=1,
        )[-self.window :]
        with self._lock:
            positions = (self._next + np.arange(len(binned))) % self.window
            # a slot holds a row to forget when the window is full, or when it lies before
            # the fill mark (the window fills from slot 0, so it wrapped within this call)
            occupied = positions < self._filled
            evicted = self._rows[positions[occupied]]
            np.subtract.at(self._all_counts, (evicted + self._offsets).ravel(), 1)
            np.add.at(self._all_counts, (binned + self._offsets).ravel(), 1)
            self._rows[positions] = binned
            self._next = (self._next + len(binned)) % self.window
            self._filled = min(self.window, self._filled + len(binned))

    def scores(self) -> dict[str, float]:
        """PSI of every feature over the window; empty until it holds `min_rows` rows."""
        with self._lock:
            if self._filled < self.min_rows:
                return {}
            return {
                name: psi(expected, counts / self._filled)
                for name, expected, counts in zip(
                    self.names, self._expected, self._counts, strict=True
                )
            }
