"""The columns of the clean table (`clean_data.diabetes`) and of a cleaned frame: the
schema's columns with their SQL types, then the derived ones."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from readmission import schema
from readmission.schema import Kind

SqlType = Literal["bigint", "integer", "double", "text", "boolean"]


@dataclass(frozen=True)
class CleanColumn:
    """One column of the clean table (`clean_data.diabetes`) and of a cleaned frame."""

    key: str
    sql_type: SqlType
    description: str


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


DERIVED_KEYS = frozenset(CLEAN_KEYS) - set(schema.COLUMN_KEYS)
