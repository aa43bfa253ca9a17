"""The cleaning rules (listed in `readmission.cleaning`), applied column by column."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype, pandas_dtype

from readmission import schema
from readmission.cleaning.columns import (
    AGE_MIDPOINTS,
    AGE_YEARS,
    CLEAN_KEYS,
    DERIVED_KEYS,
    DIAGNOSIS_GROUPS,
    EXPIRED,
)
from readmission.cleaning.icd9 import diagnosis_parsed
from readmission.cleaning.values import (
    INVALID,
    UNKNOWN,
    VALID,
    Raw,
    as_number,
    as_text,
    match_key,
    per_value,
)
from readmission.schema import Column, Kind

#: The version of these rules. Change it with any rule or derived column: clean_data is then
#: rebuilt from raw_data (in one transaction), so one table never mixes two versions.
#: 1: the first rules; 2: `expired` (death only, hospice is not death) replaces
#: `expired_or_hospice`, and ICD-9 codes get their three digits ("38" -> "038").
RULES_VERSION = "2"


# Up to this many rows, rules run on each value: cheaper than factorising first.
_FEW_ROWS = 8


_MAX_IDENTIFIER = 2.0**53  # above this a float64 no longer holds every integer


_STR = pandas_dtype("str")


_INT64 = pandas_dtype("Int64")


_ALIASES: Mapping[str, str] = schema.key_aliases()


_KEYED: tuple[tuple[str, Column], ...] = tuple((c.key, c) for c in schema.COLUMNS)


@dataclass(frozen=True)
class _CategoryRule:
    """Rules 2-5 and 9 for one text column: canonical spelling, default, documented unknown."""

    canonical: Mapping[str, str]  # match_key(category) -> category
    default: str | float  # for missing and invalid values (NaN unless rule 3 or 4)
    unknown: frozenset[str] = frozenset()  # categories that mean "unknown" (rule 5)

    def __call__(self, value: object) -> tuple[object, int]:
        text = as_text(value)
        if text is None:
            return self.default, VALID
        match = self.canonical.get(match_key(text))
        if match is None:
            return self.default, INVALID
        if match in self.unknown:
            return np.nan, UNKNOWN
        return match, VALID


_DEFAULTS: Mapping[str, str] = {
    "max_glu_serum": "None",
    "a1cresult": "None",
    **{schema.to_key(drug): "No" for drug in schema.MEDICATIONS},
}


_CATEGORY_RULES: Mapping[str, _CategoryRule] = {
    key: _CategoryRule(
        canonical={match_key(category): category for category in column.categories},
        default=_DEFAULTS.get(key, np.nan),
        unknown=frozenset({"Unknown/Invalid"}) if key == "gender" else frozenset(),
    )
    for key, column in _KEYED
    if column.categories
}


#: Per code column: every known code, and those whose label means unknown (rule 6).
_CODE_SETS: Mapping[str, tuple[np.ndarray, np.ndarray]] = {
    key: (
        np.array(sorted(column.codes), dtype=float),
        np.array(
            sorted(c for c, label in column.codes.items() if label in schema.UNKNOWN_CODE_LABELS),
            dtype=float,
        ),
    )
    for key, column in _KEYED
    if column.kind is Kind.CODE
}


_EXPIRED = np.array(sorted(schema.EXPIRED_DISPOSITIONS), dtype=float)


#: The clean columns that hold text (categories, ICD-9 codes and their groups).
_TEXT_KEYS: tuple[str, ...] = (
    *(key for key, _ in _KEYED if key in _CATEGORY_RULES),
    *DIAGNOSIS_GROUPS,
    *DIAGNOSIS_GROUPS.values(),
)


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning set to missing, per column key (only columns with a non-zero count).

    `invalid`: values that broke a rule (unknown category, out-of-range count, unparseable
    number, unknown code, non-ICD-9 code); they became missing, or the column's default
    under rules 3 and 4. `unknown`: values the data documents as unknown (rules 5, 6).
    """

    rows: int
    invalid: Mapping[str, int]
    unknown: Mapping[str, int]

    @property
    def invalid_total(self) -> int:
        """Invalid values over all columns."""
        return sum(self.invalid.values())

    def summary(self) -> str:
        """One line for the logs."""

        def counted(total: int, noun: str) -> str:
            return f"{total:,} {noun}{'' if total == 1 else 's'}"

        def listed(counts: Mapping[str, int]) -> str:
            return ", ".join(f"{key} {count:,}" for key, count in counts.items())

        invalid = (
            f"{counted(self.invalid_total, 'invalid value')} set to missing or to the "
            f"column default ({listed(self.invalid)})"
            if self.invalid
            else "no invalid values"
        )
        unknown = (
            f"; {counted(sum(self.unknown.values()), 'documented unknown')} set to "
            f"missing ({listed(self.unknown)})"
            if self.unknown
            else ""
        )
        return f"cleaned {counted(self.rows, 'row')}: {invalid}{unknown}"

    def to_dict(self) -> dict[str, object]:
        """Plain types, for JSON, XCom or MLflow."""
        return {"rows": self.rows, "invalid": dict(self.invalid), "unknown": dict(self.unknown)}


def clean(frame: pd.DataFrame) -> pd.DataFrame:
    """The cleaned copy of a raw frame (rules in the module docstring)."""
    return clean_with_report(frame)[0]


def clean_with_report(frame: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """The cleaned copy of a raw frame and the count of what the rules set to missing."""
    positions = _schema_positions(frame.columns)
    rows = len(frame)
    few = rows <= _FEW_ROWS
    matrix = frame.to_numpy(dtype=object) if few else None

    def raw_of(key: str) -> Raw:
        if key not in positions:
            return np.full(rows, np.nan, dtype=object) if few else pd.Series(np.full(rows, np.nan))
        if matrix is not None:
            return matrix[:, positions[key]]
        return frame.iloc[:, positions[key]]

    cleaned, report = _clean(raw_of, rows)
    for key in _TEXT_KEYS:
        cleaned[key] = pd.array(cleaned[key], dtype=_STR)
    result = pd.DataFrame({key: cleaned[key] for key in CLEAN_KEYS}, index=frame.index, copy=False)
    schema_positions = set(positions.values())
    kept = [
        i
        for i, name in enumerate(frame.columns)
        if i not in schema_positions and name not in DERIVED_KEYS
    ]
    if kept:
        result = pd.concat([result, frame.iloc[:, kept]], axis=1)
    return result, report


def clean_records(records: Sequence[Mapping[str, object]]) -> dict[str, np.ndarray]:
    """The clean columns of a few raw records (dicts keyed by any accepted spelling), as
    numpy arrays by clean key, without a pandas frame: what `clean` gives for
    `pd.DataFrame.from_records(records)` (text as str or NaN in object arrays, numbers as
    float64, identifiers as Int64 arrays), for the API's small batches, where building and
    reading frames costs more than the rules. Other columns pass through, as object arrays."""
    rows = len(records)
    names = list(dict.fromkeys(name for record in records for name in record))
    positions = _schema_positions(names)
    missing = np.nan

    def raw_of(key: str) -> Raw:
        if key not in positions:
            return np.full(rows, np.nan, dtype=object)
        name = names[positions[key]]
        return np.array([record.get(name, missing) for record in records], dtype=object)

    cleaned = _clean(raw_of, rows)[0]
    schema_positions = set(positions.values())
    return {key: cleaned[key] for key in CLEAN_KEYS} | {
        name: np.array([record.get(name, missing) for record in records], dtype=object)
        for i, name in enumerate(names)
        if i not in schema_positions and name not in DERIVED_KEYS
    }


def _clean(raw_of: Callable[[str], Raw], rows: int) -> tuple[dict[str, Any], CleaningReport]:
    """Every rule on every schema column, read by `raw_of(key)`: the clean columns by key
    (text as object arrays) and the report."""
    invalid: dict[str, int] = {}
    unknown: dict[str, int] = {}
    cleaned: dict[str, Any] = {}
    for key, column in _KEYED:
        raw = raw_of(key)
        if column.kind is Kind.IDENTIFIER:
            cleaned[key], flags = _identifiers(raw)
        elif column.kind is Kind.COUNT:
            cleaned[key], flags = _counts(raw, column)
        elif column.kind is Kind.CODE:
            cleaned[key], flags, codes = _codes(raw, key)
            if key == "discharge_disposition_id":
                cleaned[EXPIRED] = np.isin(codes, _EXPIRED)
        elif column.kind is Kind.DIAGNOSIS:
            cleaned[key], cleaned[DIAGNOSIS_GROUPS[key]], flags = _diagnoses(raw)
        else:
            cleaned[key], flags = per_value(raw, _CATEGORY_RULES[key], _CATEGORY_RULES[key](None))
            if key == "age":
                cleaned[AGE_YEARS] = _age_years(cleaned[key])

        for counts, flag in ((invalid, INVALID), (unknown, UNKNOWN)):
            if found := int(np.count_nonzero(flags == flag)):
                counts[key] = found
    return cleaned, CleaningReport(rows=rows, invalid=invalid, unknown=unknown)


def map_icd9_chapters(codes: pd.Series) -> pd.Series:
    """The group of each ICD-9-CM code of a column (NaN where missing or not ICD-9)."""
    _, groups, _ = _diagnoses(codes)
    return pd.Series(pd.array(groups, dtype=_STR), index=codes.index, name=codes.name)


def _schema_positions(names: Sequence[object]) -> dict[str, int]:
    """Position of each schema column among column names, by key; refuses two spellings
    of one."""
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        key = _ALIASES.get(name) if isinstance(name, str) else None
        if key is None:
            continue
        if key in positions:
            first = names[positions[key]]
            raise schema.SchemaError(f"columns {first!r} and {name!r} are both {key!r}")
        positions[key] = i
    return positions


def _identifiers(raw: Raw) -> tuple[pd.api.extensions.ExtensionArray, np.ndarray]:
    """Rule 8: nullable Int64, NA when missing or not an integer."""
    numbers, flags = _numbers(raw)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(numbers) & (
            (np.abs(numbers) >= _MAX_IDENTIFIER) | (np.floor(numbers) != numbers)
        )
    numbers[bad] = np.nan
    flags[bad] = INVALID
    return pd.array(numbers, dtype=_INT64), flags


def _counts(raw: Raw, column: Column) -> tuple[np.ndarray, np.ndarray]:
    """Rule 7: float64 integers within the column's range, NaN otherwise."""
    numbers, flags = _numbers(raw)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(numbers) & ~(
            (np.floor(numbers) == numbers)
            & (numbers >= column.minimum)
            & (numbers <= column.maximum)
        )
    numbers[bad] = np.nan
    flags[bad] = INVALID
    return numbers, flags


def _codes(raw: Raw, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule 6: known codes as float64, NaN otherwise; also the codes before rule 6."""
    numbers, flags = _numbers(raw)
    known, unknown = _CODE_SETS[key]
    is_unknown = np.isin(numbers, unknown)
    is_invalid = ~np.isnan(numbers) & ~np.isin(numbers, known)
    flags[is_unknown] = UNKNOWN
    flags[is_invalid] = INVALID
    return np.where(is_unknown | is_invalid, np.nan, numbers), flags, numbers


def _numbers(raw: Raw) -> tuple[np.ndarray, np.ndarray]:
    """A column as a new float64 array (NaN when missing or not a number) and its flags."""
    if isinstance(raw, pd.Series) and is_bool_dtype(raw.dtype):
        flags = np.where(raw.notna().to_numpy(dtype=bool), INVALID, VALID).astype(np.int8)
        return np.full(len(raw), np.nan), flags
    if isinstance(raw, pd.Series) and is_numeric_dtype(raw.dtype):
        numbers = raw.to_numpy(dtype=float, na_value=np.nan)
        infinite = np.isinf(numbers)
        return np.where(infinite, np.nan, numbers), infinite.astype(np.int8)  # 1 = INVALID
    values, flags = per_value(raw, as_number, (np.nan, VALID))
    return values.astype(float), flags


def _diagnoses(raw: Raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule 10: normalised codes, their groups, and the per-row flags."""
    pairs, flags = per_value(raw, diagnosis_parsed, ((np.nan, np.nan), VALID))
    codes = np.fromiter((pair[0] for pair in pairs), dtype=object, count=len(pairs))
    groups = np.fromiter((pair[1] for pair in pairs), dtype=object, count=len(pairs))
    return codes, groups, flags


def _age_years(ages: np.ndarray) -> np.ndarray:
    """Rule 11: the midpoint of each (clean) age bracket, NaN when missing."""
    if len(ages) <= _FEW_ROWS:
        return np.array([AGE_MIDPOINTS.get(age, np.nan) for age in ages], dtype=float)
    return pd.Series(ages, dtype=object).map(AGE_MIDPOINTS).to_numpy(dtype=float)
