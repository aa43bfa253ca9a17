"""Raw -> clean: the one function that cleans the raw table (Airflow) and a request (API).

`clean` is vectorised: numeric columns go through numpy, the others are factorised so that
the rules run once per distinct value (a 100,000-row batch has a few thousand), and up to
`_FEW_ROWS` rows (an API request) the rules run on each value, skipping the factorising
overhead: ~0.3 s for the whole file, ~1 ms for one row. Rules, each with its reason:

 1. Missing markers `"?"`, empty or blank strings, None, pd.NA and NaN become NaN in every
    column (NA in the Int64 identifiers), strings are stripped: a JSON null must reach
    scikit-learn as NaN, since OneHotEncoder encodes None as all zeros.
 2. Categories match `Column.categories` ignoring case and whitespace and come out in the
    canonical spelling (`" steady "` -> `"Steady"`); anything else is invalid, becomes NaN
    and is counted: one spelling per category is what the encoders saw in training.
 3. `max_glu_serum` and `A1Cresult`: `"None"` is the category "test not taken", never
    missing, and a missing (or invalid) value becomes `"None"`: a client that omits the
    lab result did not take the test.
 4. The 23 medication columns: a missing (or invalid) value becomes `"No"`: a drug a
    client does not mention was not prescribed.
 5. `gender` `"Unknown/Invalid"` becomes NaN (counted as unknown, not invalid): it is the
    file's way of writing a missing gender (3 rows).
 6. Codes (`admission_type_id`, `discharge_disposition_id`, `admission_source_id`) are
    numbers; a code labelled "NULL", "Not Available", "Not Mapped" or "Unknown/Invalid"
    (`schema.UNKNOWN_CODE_LABELS`) becomes NaN and is counted as unknown (a documented
    way of saying unknown), a code absent from `Column.codes` becomes NaN and is counted
    as invalid: several codes meaning "unknown" would otherwise be learnt as categories.
 7. Counts are numbers (`3`, `"3"`, `"3.0"`); fractions, text, booleans, infinities and
    values outside `[Column.minimum, Column.maximum]` become NaN and are counted: a
    count out of its plausible range is an error, not a signal.
 8. Identifiers (`encounter_id`, `patient_nbr`) become nullable Int64 (integers below
    2**53 in magnitude); anything else becomes NA and is counted: they are join keys.
 9. The target `readmitted` is one of `NO`, `>30`, `<30` (case-insensitive, as rule 2);
    anything else becomes NaN, counted only when a value was given: a request carries no
    target, which is not an error.
10. ICD-9-CM codes (`diag_1..3`) are stripped, upper-cased and lose a trailing `"."`; a
    numeric code keeps its decimals as written (`"250.83"`, `"250.0"`) and gets the three
    digits ICD-9-CM writes (`"38"`, the file's form, becomes `"038"`, as a client writes it);
    each gets a `diag_N_group` with its chapter of the ICD-9-CM tabular list, diabetes
    (250.x) split out of endocrine as Strack et al. (2014) did (`ICD9_CHAPTERS`); a code
    that is not ICD-9 becomes NaN (code and group) and is counted: the raw codes have
    ~700 values, too many for most encoders, the chapters 19 (plus diabetes).
11. Derived `age_years` is the midpoint of the age bracket (`"[70-80)"` -> 75.0), NaN if
    missing: lets a model use age as a number.
12. Derived `expired` is True when the raw `discharge_disposition_id` (before rule 6) is
    in `schema.EXPIRED_DISPOSITIONS` (the patient died): such encounters cannot be
    readmitted, and training decides what to do with them. Hospice (13, 14) is not death.
13. Idempotent: `clean(clean(x))` equals `clean(x)`: the output keys are accepted
    aliases, derived columns are recomputed, and rules 3 and 4 give invalid values the
    default so that a second pass does not change them again.

Input columns may use any spelling of `schema.key_aliases()`; schema columns absent from
the input are added as missing (then rules 3 and 4 apply); other columns pass through
unchanged after the clean ones. The input frame is never modified; its index is kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype, is_bool_dtype, is_numeric_dtype, pandas_dtype

from readmission import schema
from readmission.schema import Column, Kind

SqlType = Literal["bigint", "integer", "double", "text", "boolean"]

#: The version of these rules. Change it with any rule or derived column: clean_data is then
#: rebuilt from raw_data (in one transaction), so one table never mixes two versions.
#: 1: the first rules; 2: `expired` (death only, hospice is not death) replaces
#: `expired_or_hospice`, and ICD-9 codes get their three digits ("38" -> "038").
RULES_VERSION = "2"


@dataclass(frozen=True)
class CleanColumn:
    """One column of the clean table (`clean_data.diabetes`) and of a cleaned frame."""

    key: str
    sql_type: SqlType
    description: str


@dataclass(frozen=True)
class Icd9Chapter:
    """A range of ICD-9-CM codes and the group name `diag_N_group` gives it."""

    group: str
    prefix: Literal["", "V", "E"]  # numeric codes have none
    first: int  # inclusive, the number after the prefix, without decimals
    last: int
    title: str


#: Chapters of the ICD-9-CM tabular list (CDC/NCHS, ICD-9-CM volume 1, with its V and E
#: supplementary classifications), with diabetes (250.x) split out of the endocrine
#: chapter because it is this data set's subject; Strack et al. (2014, BioMed Res. Int.
#: 781670) grouped the diagnoses similarly. The first chapter that contains a code wins,
#: hence diabetes comes before the endocrine chapter it is carved from.
ICD9_CHAPTERS: tuple[Icd9Chapter, ...] = (
    Icd9Chapter("infectious", "", 1, 139, "Infectious and parasitic diseases"),
    Icd9Chapter("neoplasms", "", 140, 239, "Neoplasms"),
    Icd9Chapter("diabetes", "", 250, 250, "Diabetes mellitus (250.x)"),
    Icd9Chapter(
        "endocrine_metabolic",
        "",
        240,
        279,
        "Endocrine, nutritional and metabolic diseases, and immunity disorders (except 250.x)",
    ),
    Icd9Chapter("blood", "", 280, 289, "Diseases of the blood and blood-forming organs"),
    Icd9Chapter("mental", "", 290, 319, "Mental disorders"),
    Icd9Chapter("nervous_sense", "", 320, 389, "Diseases of the nervous system and sense organs"),
    Icd9Chapter("circulatory", "", 390, 459, "Diseases of the circulatory system"),
    Icd9Chapter("respiratory", "", 460, 519, "Diseases of the respiratory system"),
    Icd9Chapter("digestive", "", 520, 579, "Diseases of the digestive system"),
    Icd9Chapter("genitourinary", "", 580, 629, "Diseases of the genitourinary system"),
    Icd9Chapter(
        "pregnancy", "", 630, 679, "Complications of pregnancy, childbirth, and the puerperium"
    ),
    Icd9Chapter("skin", "", 680, 709, "Diseases of the skin and subcutaneous tissue"),
    Icd9Chapter(
        "musculoskeletal",
        "",
        710,
        739,
        "Diseases of the musculoskeletal system and connective tissue",
    ),
    Icd9Chapter("congenital", "", 740, 759, "Congenital anomalies"),
    Icd9Chapter(
        "perinatal", "", 760, 779, "Certain conditions originating in the perinatal period"
    ),
    Icd9Chapter(
        "symptoms_ill_defined", "", 780, 799, "Symptoms, signs, and ill-defined conditions"
    ),
    Icd9Chapter("injury_poisoning", "", 800, 999, "Injury and poisoning"),
    Icd9Chapter(
        "supplementary",
        "V",
        1,
        91,
        "Factors influencing health status and contact with health services (V codes)",
    ),
    Icd9Chapter(
        "external_causes", "E", 800, 999, "External causes of injury and poisoning (E codes)"
    ),
)
#: The values of `diag_N_group` (for forms and encoders).
ICD9_GROUPS: tuple[str, ...] = tuple(chapter.group for chapter in ICD9_CHAPTERS)

#: The shapes of ICD-9-CM codes: 1-3 digits (the file drops leading zeros: "38" is 038)
#: with up to 2 decimals, V and 2 digits with up to 2 decimals, E and 3 digits with 1.
_ICD9_CODE = re.compile(
    r"(?P<number>\d{1,3})(?:\.\d{1,2})?|V(?P<v>\d{2})(?:\.\d{1,2})?|E(?P<e>\d{3})(?:\.\d)?"
)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")

DIAGNOSIS_GROUPS: Mapping[str, str] = {
    c.key: f"{c.key}_group" for c in schema.COLUMNS if c.kind is Kind.DIAGNOSIS
}
AGE_YEARS = "age_years"
EXPIRED = "expired"
#: Midpoint of each age bracket, in years ("[70-80)" -> 75.0).
AGE_MIDPOINTS: Mapping[str, float] = {
    bracket: sum(int(bound) for bound in re.findall(r"\d+", bracket)) / 2
    for bracket in schema.AGE_BRACKETS
}

_SQL_TYPES: Mapping[Kind, SqlType] = {
    Kind.IDENTIFIER: "bigint",
    Kind.COUNT: "integer",
    Kind.CODE: "integer",
    Kind.CATEGORY: "text",
    Kind.DIAGNOSIS: "text",
    Kind.TARGET: "text",
}

#: The columns of a cleaned frame, in order: identifiers, the 48 other schema columns in
#: file order, then the derived columns.
CLEAN_COLUMNS: tuple[CleanColumn, ...] = (
    *(
        CleanColumn(c.key, _SQL_TYPES[c.kind], c.description)
        for c in sorted(schema.COLUMNS, key=lambda c: c.kind is not Kind.IDENTIFIER)
    ),
    *(
        CleanColumn(group, "text", f"ICD-9-CM chapter of {key} (diabetes split out)")
        for key, group in DIAGNOSIS_GROUPS.items()
    ),
    CleanColumn(AGE_YEARS, "double", "Midpoint of the age bracket, in years"),
    CleanColumn(EXPIRED, "boolean", "Discharged expired: the patient died (cannot be readmitted)"),
)
CLEAN_KEYS: tuple[str, ...] = tuple(c.key for c in CLEAN_COLUMNS)
_DERIVED_KEYS = frozenset(CLEAN_KEYS) - set(schema.COLUMN_KEYS)

# Per-value outcome of a rule, counted by the report.
_VALID, _INVALID, _UNKNOWN = 0, 1, 2
# Up to this many rows, rules run on each value: cheaper than factorising first.
_FEW_ROWS = 8
# Kinds of object columns that `pd.factorize` may deduplicate: without booleans it
# cannot merge True with 1 (they compare and hash equal).
_FACTORIZABLE = frozenset(
    {"string", "empty", "integer", "floating", "mixed-integer-float", "decimal", "boolean"}
)
_MAX_IDENTIFIER = 2.0**53  # above this a float64 no longer holds every integer
_STR = pandas_dtype("str")
_INT64 = pandas_dtype("Int64")
_ALIASES: Mapping[str, str] = schema.key_aliases()
_KEYED: tuple[tuple[str, Column], ...] = tuple((c.key, c) for c in schema.COLUMNS)

# A raw column: a Series, or for a few rows the column of `frame.to_numpy(dtype=object)`.
_Raw = pd.Series | np.ndarray


def _match_key(text: str) -> str:
    """How categories are compared (rule 2): case and whitespace ignored."""
    return "".join(text.split()).casefold()


@dataclass(frozen=True)
class _CategoryRule:
    """Rules 2-5 and 9 for one text column: canonical spelling, default, documented unknown."""

    canonical: Mapping[str, str]  # _match_key(category) -> category
    default: str | float  # for missing and invalid values (NaN unless rule 3 or 4)
    unknown: frozenset[str] = frozenset()  # categories that mean "unknown" (rule 5)

    def __call__(self, value: object) -> tuple[object, int]:
        text = _text(value)
        if text is None:
            return self.default, _VALID
        match = self.canonical.get(_match_key(text))
        if match is None:
            return self.default, _INVALID
        if match in self.unknown:
            return np.nan, _UNKNOWN
        return match, _VALID


_DEFAULTS: Mapping[str, str] = {
    "max_glu_serum": "None",
    "a1cresult": "None",
    **{schema.to_key(drug): "No" for drug in schema.MEDICATIONS},
}
_CATEGORY_RULES: Mapping[str, _CategoryRule] = {
    key: _CategoryRule(
        canonical={_match_key(category): category for category in column.categories},
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
    positions = _schema_positions(frame)
    rows = len(frame)
    few = rows <= _FEW_ROWS
    matrix = frame.to_numpy(dtype=object) if few else None
    invalid: dict[str, int] = {}
    unknown: dict[str, int] = {}
    cleaned: dict[str, object] = {}

    for key, column in _KEYED:
        raw: _Raw
        if key not in positions:
            raw = np.full(rows, np.nan, dtype=object) if few else pd.Series(np.full(rows, np.nan))
        elif matrix is not None:
            raw = matrix[:, positions[key]]
        else:
            raw = frame.iloc[:, positions[key]]

        if column.kind is Kind.IDENTIFIER:
            cleaned[key], flags = _identifiers(raw)
        elif column.kind is Kind.COUNT:
            cleaned[key], flags = _counts(raw, column)
        elif column.kind is Kind.CODE:
            cleaned[key], flags, codes = _codes(raw, key)
            if key == "discharge_disposition_id":
                cleaned[EXPIRED] = np.isin(codes, _EXPIRED)
        elif column.kind is Kind.DIAGNOSIS:
            codes, groups, flags = _diagnoses(raw)
            cleaned[key] = pd.array(codes, dtype=_STR)
            cleaned[DIAGNOSIS_GROUPS[key]] = pd.array(groups, dtype=_STR)
        else:
            values, flags = _per_value(raw, _CATEGORY_RULES[key], _CATEGORY_RULES[key](None))
            cleaned[key] = pd.array(values, dtype=_STR)
            if key == "age":
                cleaned[AGE_YEARS] = _age_years(values)

        for counts, flag in ((invalid, _INVALID), (unknown, _UNKNOWN)):
            if found := int(np.count_nonzero(flags == flag)):
                counts[key] = found

    result = pd.DataFrame({key: cleaned[key] for key in CLEAN_KEYS}, index=frame.index, copy=False)
    schema_positions = set(positions.values())
    kept = [
        i
        for i, name in enumerate(frame.columns)
        if i not in schema_positions and name not in _DERIVED_KEYS
    ]
    if kept:
        result = pd.concat([result, frame.iloc[:, kept]], axis=1)
    return result, CleaningReport(rows=rows, invalid=invalid, unknown=unknown)


def icd9_chapter(code: str) -> str | None:
    """The group (`ICD9_CHAPTERS`) of one ICD-9-CM code, None if missing or not ICD-9."""
    return _diagnosis(code)[1]


def map_icd9_chapters(codes: pd.Series) -> pd.Series:
    """The group of each ICD-9-CM code of a column (NaN where missing or not ICD-9)."""
    _, groups, _ = _diagnoses(codes)
    return pd.Series(pd.array(groups, dtype=_STR), index=codes.index, name=codes.name)


# --- columns -------------------------------------------------------------------------


def _schema_positions(frame: pd.DataFrame) -> dict[str, int]:
    """Position of each schema column in the frame, by key; refuses two spellings of one."""
    positions: dict[str, int] = {}
    for i, name in enumerate(frame.columns):
        key = _ALIASES.get(name) if isinstance(name, str) else None
        if key is None:
            continue
        if key in positions:
            first = frame.columns[positions[key]]
            raise schema.SchemaError(f"columns {first!r} and {name!r} are both {key!r}")
        positions[key] = i
    return positions


def _identifiers(raw: _Raw) -> tuple[pd.api.extensions.ExtensionArray, np.ndarray]:
    """Rule 8: nullable Int64, NA when missing or not an integer."""
    numbers, flags = _numbers(raw)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(numbers) & (
            (np.abs(numbers) >= _MAX_IDENTIFIER) | (np.floor(numbers) != numbers)
        )
    numbers[bad] = np.nan
    flags[bad] = _INVALID
    return pd.array(numbers, dtype=_INT64), flags


def _counts(raw: _Raw, column: Column) -> tuple[np.ndarray, np.ndarray]:
    """Rule 7: float64 integers within the column's range, NaN otherwise."""
    numbers, flags = _numbers(raw)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(numbers) & ~(
            (np.floor(numbers) == numbers)
            & (numbers >= column.minimum)
            & (numbers <= column.maximum)
        )
    numbers[bad] = np.nan
    flags[bad] = _INVALID
    return numbers, flags


def _codes(raw: _Raw, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule 6: known codes as float64, NaN otherwise; also the codes before rule 6."""
    numbers, flags = _numbers(raw)
    known, unknown = _CODE_SETS[key]
    is_unknown = np.isin(numbers, unknown)
    is_invalid = ~np.isnan(numbers) & ~np.isin(numbers, known)
    flags[is_unknown] = _UNKNOWN
    flags[is_invalid] = _INVALID
    return np.where(is_unknown | is_invalid, np.nan, numbers), flags, numbers


def _numbers(raw: _Raw) -> tuple[np.ndarray, np.ndarray]:
    """A column as a new float64 array (NaN when missing or not a number) and its flags."""
    if isinstance(raw, pd.Series) and is_bool_dtype(raw.dtype):
        flags = np.where(raw.notna().to_numpy(dtype=bool), _INVALID, _VALID).astype(np.int8)
        return np.full(len(raw), np.nan), flags
    if isinstance(raw, pd.Series) and is_numeric_dtype(raw.dtype):
        numbers = raw.to_numpy(dtype=float, na_value=np.nan)
        infinite = np.isinf(numbers)
        return np.where(infinite, np.nan, numbers), infinite.astype(np.int8)  # 1 = _INVALID
    values, flags = _per_value(raw, _number, (np.nan, _VALID))
    return values.astype(float), flags


def _diagnoses(raw: _Raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule 10: normalised codes, their groups, and the per-row flags."""
    pairs, flags = _per_value(raw, _diagnosis_parsed, ((np.nan, np.nan), _VALID))
    codes = np.fromiter((pair[0] for pair in pairs), dtype=object, count=len(pairs))
    groups = np.fromiter((pair[1] for pair in pairs), dtype=object, count=len(pairs))
    return codes, groups, flags


def _age_years(ages: np.ndarray) -> np.ndarray:
    """Rule 11: the midpoint of each (clean) age bracket, NaN when missing."""
    if len(ages) <= _FEW_ROWS:
        return np.array([AGE_MIDPOINTS.get(age, np.nan) for age in ages], dtype=float)
    return pd.Series(ages, dtype=object).map(AGE_MIDPOINTS).to_numpy(dtype=float)


# --- values --------------------------------------------------------------------------


def _per_value(
    raw: _Raw,
    parse: Callable[[object], tuple[object, int]],
    missing: tuple[object, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `parse` to each distinct value of a column (`missing` is its result for NA)
    and spread the results and their flags back to the rows."""
    if isinstance(raw, np.ndarray):
        return _results([parse(value) for value in raw])
    values = raw.to_numpy(dtype=object)
    if raw.dtype == object and infer_dtype(values, skipna=True) not in _FACTORIZABLE:
        return _results([parse(value) for value in values])
    positions, distinct = pd.factorize(values)
    distinct_values, distinct_flags = _results([*(parse(v) for v in distinct), missing])
    return distinct_values[positions], distinct_flags[positions]  # -1 takes `missing`


def _results(results: Sequence[tuple[object, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(value, flag) pairs as an object array of values and an int8 array of flags."""
    count = len(results)
    values = np.fromiter((r[0] for r in results), dtype=object, count=count)
    return values, np.fromiter((r[1] for r in results), dtype=np.int8, count=count)


def _is_missing(value: object) -> bool:
    """Rule 1 for non-text values: None, pd.NA, NaT and NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _text(value: object) -> str | None:
    """The stripped text of a value, None for the missing markers (rule 1).

    Integral floats lose their ".0" (428.0 -> "428"): pandas turns an integer column
    holding a null into floats, and the code must not change with it.
    """
    if _is_missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    return None if text in ("", schema.MISSING_MARKER) else text


def _number(value: object) -> tuple[float, int]:
    """A value as a float (NaN when missing) and whether it was not a number (rule 7)."""
    if isinstance(value, bool | np.bool_):
        return np.nan, _INVALID
    if isinstance(value, int | np.integer | float | np.floating):
        number = float(value)
        if math.isnan(number):
            return np.nan, _VALID
    elif isinstance(value, str):
        text = value.strip()
        if text in ("", schema.MISSING_MARKER):
            return np.nan, _VALID
        if not _NUMBER.fullmatch(text):
            return np.nan, _INVALID
        number = float(text)
    elif _is_missing(value):
        return np.nan, _VALID
    else:
        return np.nan, _INVALID
    return (number, _VALID) if math.isfinite(number) else (np.nan, _INVALID)


def _diagnosis_parsed(value: object) -> tuple[tuple[object, object], int]:
    """Rule 10 for one value: ((code, group), flag), NaN for missing and non-ICD-9 codes."""
    code, group = _diagnosis(value)
    if code is None:
        return (np.nan, np.nan), _VALID
    if group is None:
        return (np.nan, np.nan), _INVALID
    return (code, group), _VALID


def _diagnosis(value: object) -> tuple[str | None, str | None]:
    """A normalised ICD-9-CM code and its group: (None, None) when missing, (text, None)
    when it is not an ICD-9-CM code."""
    text = _text(value)
    if text is None:
        return None, None
    code = text.upper().removesuffix(".")
    match = _ICD9_CODE.fullmatch(code)
    if match is None:
        return code, None
    if match["number"] is not None:
        prefix, number = "", int(match["number"])
        # one spelling per code: the file drops leading zeros ("38"), ICD-9-CM and clients
        # write three digits ("038"); the 3-digit category must not depend on it
        code = code.zfill(3 + len(code) - len(match["number"]))
    elif match["v"] is not None:
        prefix, number = "V", int(match["v"])
    else:
        prefix, number = "E", int(match["e"])
    for chapter in ICD9_CHAPTERS:
        if chapter.prefix == prefix and chapter.first <= number <= chapter.last:
            return code, chapter.group
    return code, None
