"""The API's request and response models, derived from `readmission.schema`.

A request carries one encounter keyed by the UCI column names (`A1Cresult`,
`glyburide-metformin`, ...) or the spellings the original project's clients sent
(`a1cresult`, `glyburide_metformin`). Missing values may be `null`, `"?"` or absent.
Values are checked here, so a bad one is a 422 naming the field and the reason; the
accepted encounter is then cleaned by `readmission.cleaning.clean`, like the DAG's rows.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
)

from readmission import schema
from readmission.cleaning import icd9_chapter

MISSING_TEXT = frozenset({"", schema.MISSING_MARKER})
MAX_TEXT = 64  # longer than any category or code; a longer string is refused


def _missing_to_none(value: Any) -> Any:
    """`"?"` (the raw file's marker) and blank strings mean missing."""
    if isinstance(value, str) and value.strip() in MISSING_TEXT:
        return None
    return value


def _integer(value: Any) -> Any:
    value = _missing_to_none(value)
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


def _text(value: Any) -> Any:
    value = _missing_to_none(value)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return value


def _match(text: str) -> str:
    return "".join(text.split()).lower()


def _category_check(column: schema.Column):
    canonical = {_match(c): c for c in column.categories}

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        found = canonical.get(_match(value))
        if found is None:
            raise ValueError(f"must be one of {', '.join(column.categories)}")
        return found

    return check


def _code_check(column: schema.Column):
    def check(value: int | None) -> int | None:
        if value is not None and value not in column.codes:
            raise ValueError(f"unknown code; known codes: {', '.join(map(str, column.codes))}")
        return value

    return check


def _diagnosis_check(value: str | None) -> str | None:
    if value is not None and icd9_chapter(value) is None:
        raise ValueError("must be an ICD-9-CM code such as 428, 250.83, V57 or E885")
    return value


def _field_type(column: schema.Column) -> Any:
    """The annotated type of one column in a request.

    Constraints sit on the inner type (`Annotated[int, ...] | None`), so that a value the
    before-validator turned into None (`"?"`) is not checked against them.
    """
    described = Field(default=None, description=column.description)
    if column.kind is schema.Kind.COUNT:
        bounded = Annotated[int, Field(ge=column.minimum, le=column.maximum)]
        return Annotated[bounded | None, BeforeValidator(_integer), described]
    if column.kind is schema.Kind.CODE:
        checked = AfterValidator(_code_check(column))
        return Annotated[int | None, BeforeValidator(_integer), checked, described]
    if column.kind is schema.Kind.IDENTIFIER:
        bounded = Annotated[int, Field(ge=0, le=2**53)]
        return Annotated[bounded | None, BeforeValidator(_integer), described]
    checker = _diagnosis_check if column.kind is schema.Kind.DIAGNOSIS else _category_check(column)
    bounded = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
    return Annotated[bounded | None, BeforeValidator(_text), AfterValidator(checker), described]


def _aliases(column: schema.Column) -> AliasChoices:
    spellings = dict.fromkeys([column.name, column.key, column.name.lower(),
                               column.name.replace("-", "_")])  # fmt: skip
    return AliasChoices(*spellings)


def _example() -> dict[str, Any]:
    """A real encounter of the UCI file (encounter 149190), as the file writes it."""
    record = {c.name: c.typical for c in schema.COLUMNS if c.kind is not schema.Kind.TARGET}
    record.update({
        "encounter_id": 149190, "patient_nbr": 55629189, "race": "Caucasian",
        "gender": "Female", "age": "[10-20)", "weight": "?", "admission_type_id": 1,
        "discharge_disposition_id": 1, "admission_source_id": 7, "time_in_hospital": 3,
        "payer_code": "?", "medical_specialty": "?", "num_lab_procedures": 59,
        "num_procedures": 0, "num_medications": 18, "number_outpatient": 0,
        "number_emergency": 0, "number_inpatient": 0, "diag_1": "276", "diag_2": "250.01",
        "diag_3": "255", "number_diagnoses": 9, "max_glu_serum": "None", "A1Cresult": "None",
        "insulin": "Up", "change": "Ch", "diabetesMed": "Yes",
    })  # fmt: skip
    return record


EXAMPLE = _example()

Encounter = create_model(
    "Encounter",
    __config__=ConfigDict(
        extra="forbid", populate_by_name=False, json_schema_extra={"examples": [EXAMPLE]}
    ),
    **{
        column.key: (
            _field_type(column),
            Field(default=None, validation_alias=_aliases(column), alias=column.name),
        )
        for column in schema.COLUMNS
    },
)
Encounter.__doc__ = "One hospital encounter, keyed by the UCI column names."


class EncounterBatch(BaseModel):
    """Several encounters, scored in one call."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"encounters": [EXAMPLE]}]}
    )

    encounters: list[Encounter] = Field(min_length=1, description="At most API_MAX_BATCH (1,000).")


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str
    alias: str


class Prediction(BaseModel):
    """The model's answer for one encounter."""

    prediction: str = Field(description="NO, >30 or <30")
    probabilities: dict[str, float] = Field(description="Probability of each class")
    readmission_30d_risk: float = Field(description="Probability of readmission within 30 days")


class PredictionResponse(Prediction):
    model: ModelRef


class BatchResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelRef


class Problem(BaseModel):
    """One reason a request was refused."""

    field: str
    reason: str
    input: Any = None


class ValidationProblems(BaseModel):
    detail: list[Problem]


class Message(BaseModel):
    detail: str


def encounter_records(encounters: list[BaseModel]) -> list[dict[str, Any]]:
    """Validated encounters as plain dicts keyed by column key (what `clean` accepts)."""
    return [encounter.model_dump(by_alias=False) for encounter in encounters]
