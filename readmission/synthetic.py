"""Synthetic encounters drawn from the schema, for tests, demos and load generation.

Values are drawn from each column's categories, codes and ranges (skewed towards the
typical value, as the real data is), with the raw file's conventions: text as written in
the UCI file, `?` for missing. A fixed seed gives the same records everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from readmission import schema
from readmission.schema import words

_ICD9_EXAMPLES: tuple[str, ...] = words(
    """
    428 414 786 410 486 427 491 715 682 434 250.83 250.02 276 401 599 403 585 272 V57 V45
    E885 996 8 38
    """
)
_MISSING_RATE = {"race": 0.02, "weight": 0.96, "payer_code": 0.4, "medical_specialty": 0.49}


def _pick(rng: np.random.Generator, values: list, typical: object, n: int) -> np.ndarray:
    """Draw `n` values, half of them the typical one (real columns are that skewed)."""
    drawn = rng.choice(np.asarray(values, dtype=object), size=n)
    if typical is not None:
        drawn[rng.random(n) < 0.5] = typical
    return drawn


def encounters(n: int, seed: int = 0, patients: int | None = None) -> pd.DataFrame:
    """`n` raw encounters with the UCI header and text values, as read with dtype=str.

    `patients` bounds the number of distinct `patient_nbr` (default about n * 0.7, like the
    real file) so some patients have several encounters.
    """
    rng = np.random.default_rng(seed)
    patients = patients or max(1, int(n * 0.7))
    data: dict[str, np.ndarray] = {}
    for column in schema.COLUMNS:
        if column.key == schema.ENCOUNTER_ID:
            values = rng.choice(np.arange(10_000, 10_000 + 50 * n), size=n, replace=False)
        elif column.key == schema.PATIENT_ID:
            values = rng.integers(100_000, 100_000 + 1_000 * patients, size=patients)[
                rng.integers(0, patients, size=n)
            ]
        elif column.kind is schema.Kind.COUNT:
            values = np.clip(
                np.rint(rng.gamma(2.0, (column.typical or 1) / 2.0 + 0.5, size=n)),
                column.minimum,
                min(column.maximum, (column.typical or 1) * 6 + 3),
            ).astype(int)
        elif column.kind is schema.Kind.CODE:
            values = _pick(rng, list(column.codes), column.typical, n)
        elif column.kind is schema.Kind.DIAGNOSIS:
            values = _pick(rng, list(_ICD9_EXAMPLES), column.typical, n)
        else:  # categories and target
            values = _pick(rng, list(column.categories), column.typical, n)
        data[column.name] = np.asarray(values).astype(str)
    frame = pd.DataFrame(data, dtype=object)
    for name, rate in _MISSING_RATE.items():
        frame.loc[rng.random(n) < rate, name] = schema.MISSING_MARKER
    return frame


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a raw frame like the UCI file (CRLF line ends; gzip when the name ends .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(
        path,
        index=False,
        lineterminator="\r\n",
        compression="gzip" if path.suffix == ".gz" else None,
    )
    return path
