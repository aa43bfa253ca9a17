"""Value parsers the cleaning rules share: missing markers, text, numbers, and applying a
parser once per distinct value of a column."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from readmission import schema

#: Per-value outcome of a rule, counted by the cleaning report.
VALID, INVALID, UNKNOWN = 0, 1, 2
#: A raw column: a Series, or for a few rows the column of `frame.to_numpy(dtype=object)`.
Raw = pd.Series | np.ndarray

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


# Kinds of object columns that `pd.factorize` may deduplicate: without booleans it
# cannot merge True with 1 (they compare and hash equal).
_FACTORIZABLE = frozenset(
    {"string", "empty", "integer", "floating", "mixed-integer-float", "decimal", "boolean"}
)


def match_key(text: str) -> str:
    """How categories are compared (rule 2): case and whitespace ignored."""
    return "".join(text.split()).casefold()


def per_value(
    raw: Raw,
    parse: Callable[[object], tuple[object, int]],
    missing: tuple[object, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `parse` to each distinct value of a column (`missing` is its result for NA)
    and spread the results and their flags back to the rows."""
    if isinstance(raw, np.ndarray):
        return _as_arrays([parse(value) for value in raw])
    values = raw.to_numpy(dtype=object)
    if raw.dtype == object and infer_dtype(values, skipna=True) not in _FACTORIZABLE:
        return _as_arrays([parse(value) for value in values])
    positions, distinct = pd.factorize(values)
    distinct_values, distinct_flags = _as_arrays([*(parse(v) for v in distinct), missing])
    return distinct_values[positions], distinct_flags[positions]  # -1 takes `missing`


def _as_arrays(results: Sequence[tuple[object, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(value, flag) pairs as an object array of values and an int8 array of flags."""
    count = len(results)
    values = np.fromiter((r[0] for r in results), dtype=object, count=count)
    return values, np.fromiter((r[1] for r in results), dtype=np.int8, count=count)


def is_missing(value: object) -> bool:
    """Rule 1 for non-text values: None, pd.NA, NaT and NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def as_text(value: object) -> str | None:
    """The stripped text of a value, None for the missing markers (rule 1).

    Integral floats lose their ".0" (428.0 -> "428"): pandas turns an integer column
    holding a null into floats, and the code must not change with it.
    """
    if is_missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    return None if text in ("", schema.MISSING_MARKER) else text


def as_number(value: object) -> tuple[float, int]:
    """A value as a float (NaN when missing) and whether it was not a number (rule 7)."""
    if isinstance(value, bool | np.bool_):
        return np.nan, INVALID
    if isinstance(value, int | np.integer | float | np.floating):
        number = float(value)
        if math.isnan(number):
            return np.nan, VALID
    elif isinstance(value, str):
        text = value.strip()
        if text in ("", schema.MISSING_MARKER):
            return np.nan, VALID
        if not _NUMBER.fullmatch(text):
            return np.nan, INVALID
        number = float(text)
    elif is_missing(value):
        return np.nan, VALID
    else:
        return np.nan, INVALID
    return (number, VALID) if math.isfinite(number) else (np.nan, INVALID)
