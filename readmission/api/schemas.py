"""The API's request and response models, derived from `readmission.schema`.

A request carries one encounter keyed by the UCI column names (`A1Cresult`,
`glyburide-metformin`, ...) or the spellings the original project's clients sent
(`a1cresult`, `glyburide_metformin`). Missing values may be `null`, `"?"`, `""` or absent.
Values are checked here, so a bad one is a 422 naming the field and the reason; the
accepted encounter is then cleaned by `readmission.cleaning.clean`, like the DAG's rows.

The OpenAPI schema documents exactly what is accepted (categories and codes as enums, the
ICD-9-CM shape as a pattern, the missing markers), and nothing else is: the schema is the
contract that clients and the property-based fuzzing (tests/api) rely on. Unlike
the raw file's cleaning, a request is not forgiven a wrong case or stray blanks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
)

from readmission import schema
from readmission.cleaning import icd9_chapter

MISSING_TEXT = ("", schema.MISSING_MARKER)
MAX_TEXT = 64  # longer than any category or code; a longer string is refused
#: The ICD-9-CM codes `cleaning.icd9_chapter` places in a chapter, as the file writes them:
#: 001-999 (leading zeros dropped) with up to 2 decimals, V01-V91 with up to 2, E800-E999
#: with 1. No lookarounds, so that every JSON Schema tool (and Hypothesis) can use it.
DIAGNOSIS_PATTERN = (
    r"^(?:(?:[1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9])(?:\.[0-9]{1,2})?"
    r"|V(?:0[1-9]|[1-8][0-9]|9[01])(?:\.[0-9]{1,2})?|E[89][0-9]{2}(?:\.[0-9])?)$"
)
_DIAGNOSIS = re.compile(DIAGNOSIS_PATTERN)
_MISSING_SCHEMA = {"type": "string", "enum": list(MISSING_TEXT)}


def _missing_to_none(value: Any) -> Any:
    """`"?"` (the raw file's marker) and the empty string mean missing."""
    if isinstance(value, str) and value in MISSING_TEXT:
        return None
    return value


def _integer(value: Any) -> Any:
    """JSON numbers only: a boolean or a string (`"3"`) is refused, not coerced."""
    value = _missing_to_none(value)
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    if isinstance(value, str):
        raise ValueError("must be a valid integer, not a string")
    return value


def _text(value: Any) -> Any:
    value = _missing_to_none(value)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"must be a string, not {type(value).__name__}")
    return value


def _category_check(column: schema.Column):
    known = frozenset(column.categories)

    def check(value: str | None) -> str | None:
        if value is not None and value not in known:
            raise ValueError(f"must be one of {', '.join(column.categories)}")
        return value

    return check


def _code_check(column: schema.Column):
    def check(value: int | None) -> int | None:
        if value is not None and value not in column.codes:
            raise ValueError(f"unknown code; known codes: {', '.join(map(str, column.codes))}")
        return value

    return check


def _diagnosis_check(value: str | None) -> str | None:
    # Python's `re.search`, as JSON Schema tools written in Python read the pattern
    if value is not None and (_DIAGNOSIS.search(value) is None or icd9_chapter(value) is None):
        raise ValueError("must be an ICD-9-CM code such as 428, 250.83, V57 or E885")
    return value


def _documented(accepted: dict[str, Any], required: bool = False) -> WithJsonSchema:
    """The field's JSON schema: what it accepts, and the missing markers and null unless the
    field is required."""
    if required:
        return WithJsonSchema(accepted)
    return WithJsonSchema({"anyOf": [accepted, _MISSING_SCHEMA, {"type": "null"}]})


REQUIRED_REASON = "required: every encounter records it"


def _present(value: Any) -> Any:
    if value is None:
        raise ValueError(
            f'{REQUIRED_REASON} (the UCI file never lacks it), so null, "?" and "" are not '
            "accepted here"
        )
    return value


def _field_type(column: schema.Column) -> Any:
    """The annotated type of one column in a request.

    Constraints sit on the inner type (`Annotated[int, ...] | None`), so that a value the
    before-validator turned into None (`"?"`) is not checked against them; a required
    column (`schema.REQUIRED_IN_REQUEST`) then refuses that None, and its absence.
    """
    annotated = _annotated(column, required=column.key in schema.REQUIRED_IN_REQUEST)
    if column.key in schema.REQUIRED_IN_REQUEST:
        return Annotated[annotated, AfterValidator(_present)]
    return annotated


def _annotated(column: schema.Column, required: bool) -> Any:
    described = Field(default=None, description=column.description)
    if column.kind is schema.Kind.COUNT:
        bounded = Annotated[int, Field(ge=column.minimum, le=column.maximum)]
        bounds = {"type": "integer", "minimum": column.minimum, "maximum": column.maximum}
        documented = _documented(bounds, required)
        return Annotated[bounded | None, BeforeValidator(_integer), documented, described]
    if column.kind is schema.Kind.CODE:
        checked = AfterValidator(_code_check(column))
        documented = _documented({"type": "integer", "enum": sorted(column.codes)}, required)
        return Annotated[int | None, BeforeValidator(_integer), checked, documented, described]
    if column.kind is schema.Kind.IDENTIFIER:
        bounded = Annotated[int, Field(ge=0, le=2**53)]
        documented = _documented({"type": "integer", "minimum": 0, "maximum": 2**53})
        return Annotated[bounded | None, BeforeValidator(_integer), documented, described]
    if column.kind is schema.Kind.DIAGNOSIS:
        checker = _diagnosis_check
        documented = _documented(
            {"type": "string", "pattern": DIAGNOSIS_PATTERN, "maxLength": MAX_TEXT}
        )
    else:
        checker = _category_check(column)
        documented = _documented({"type": "string", "enum": list(column.categories)}, required)
    bounded = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
    return Annotated[
        bounded | None, BeforeValidator(_text), AfterValidator(checker), documented, described
    ]


def _aliases(column: schema.Column) -> AliasChoices:
    spellings = dict.fromkeys(
        [column.name, column.key, column.name.lower(), column.name.replace("-", "_")]
    )
    return AliasChoices(*spellings)


def _example() -> dict[str, Any]:
    """A real encounter of the UCI file (encounter 149190), as the file writes it."""
    record = {c.name: c.typical for c in schema.COLUMNS if c.kind is not schema.Kind.TARGET}
    record.update(
        {
            "encounter_id": 149190,
            "patient_nbr": 55629189,
            "race": "Caucasian",
            "gender": "Female",
            "age": "[10-20)",
            "weight": "?",
            "admission_type_id": 1,
            "discharge_disposition_id": 1,
            "admission_source_id": 7,
            "time_in_hospital": 3,
            "payer_code": "?",
            "medical_specialty": "?",
            "num_lab_procedures": 59,
            "num_procedures": 0,
            "num_medications": 18,
            "number_outpatient": 0,
            "number_emergency": 0,
            "number_inpatient": 0,
            "diag_1": "276",
            "diag_2": "250.01",
            "diag_3": "255",
            "number_diagnoses": 9,
            "max_glu_serum": "None",
            "A1Cresult": "None",
            "insulin": "Up",
            "change": "Ch",
            "diabetesMed": "Yes",
        }
    )
    return record


EXAMPLE = _example()

#: The UCI names of the required columns, in file order (the JSON schema's `required`).
REQUIRED_NAMES = tuple(c.name for c in schema.COLUMNS if c.key in schema.REQUIRED_IN_REQUEST)
_SPELLINGS = schema.key_aliases()
_FEATURE_SPELLINGS = frozenset(a for a, key in _SPELLINGS.items() if schema.BY_KEY[key].is_feature)


def _schema_extra(json_schema: dict[str, Any]) -> None:
    json_schema["examples"] = [EXAMPLE]
    json_schema["required"] = list(REQUIRED_NAMES)


def _some_encounter_field(data: Any) -> Any:
    """Refuse at once an object that carries none of the encounter's fields (nothing, or
    only identifiers and the target): it describes no patient."""
    if (
        isinstance(data, dict)
        and not _FEATURE_SPELLINGS.intersection(data)
        and all(key in _SPELLINGS for key in data)  # unknown keys are named as such
    ):
        raise ValueError(
            "the object carries none of the encounter's fields (only identifiers, the target "
            f"or nothing): an encounter needs at least {', '.join(REQUIRED_NAMES)}"
        )
    return data


Encounter = create_model(
    "Encounter",
    __config__=ConfigDict(extra="forbid", populate_by_name=False, json_schema_extra=_schema_extra),
    __validators__={"some_encounter_field": model_validator(mode="before")(_some_encounter_field)},
    **{
        column.key: (
            _field_type(column),
            Field(
                default=None,
                validation_alias=_aliases(column),
                alias=column.name,
                validate_default=column.key in schema.REQUIRED_IN_REQUEST,
            ),
        )
        for column in schema.COLUMNS
    },
)
Encounter.__doc__ = "One hospital encounter, keyed by the UCI column names."


def encounter_batch(max_batch: int) -> type[BaseModel]:
    """The body of /predict/batch, its length limit the API's setting."""
    return create_model(
        "EncounterBatch",
        __config__=ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"encounters": [EXAMPLE]}]}
        ),
        __doc__="Several encounters, scored in one call.",
        encounters=(
            list[Encounter],
            Field(min_length=1, max_length=max_batch, description=f"At most {max_batch:,}."),
        ),
    )


class ModelRef(BaseModel):
    """Which model answered."""

    name: str
    version: str
    alias: str


class HistoryUsed(BaseModel):
    """The patient's history the answer was scored with."""

    status: Literal["looked_up", "no_patient", "unavailable", "disabled"] = Field(
        description="looked_up: the patient's earlier encounters were read (stored ones and "
        "those sent in the same request); no_patient: no patient_nbr was sent; unavailable: "
        "the store could not be read, the answer counts no history; disabled: the API does "
        "not look history up (API_PATIENT_HISTORY=false)"
    )
    earlier_encounters: int = Field(
        description="Encounters of the patient before this one (lower encounter_id; all "
        "known ones when the request has no encounter_id) that the figures count"
    )


class Factor(BaseModel):
    """One feature's part in the encounter's `<30` score."""

    feature: str = Field(description="The model input (after the pipeline's features step)")
    value: str | int | float | None = Field(
        description="The patient's value: a category's text, a code's label or a number; "
        "null when missing or unknown to the model"
    )
    contribution: float = Field(description="Its contribution to the score, in `unit`")


class Explanation(BaseModel):
    """Why this patient: the features that raise and lower the `<30` score most.

    Exact for the served model: TreeSHAP (path-dependent) for the tree models, the linear
    contributions `coef * (x - training mean)` for logistic regression, so that `baseline`
    plus the contributions of every feature (not only those listed) equals `score`.
    """

    target_class: Literal["<30"] = Field(description="The class whose score is explained")
    unit: Literal["log-odds", "probability"] = Field(
        description="log-odds: the model's raw <30 score (softmax logit; gradient boosting, "
        "logistic regression); probability: the <30 probability (random forest)"
    )
    baseline: float = Field(description="The score of an average training encounter")
    score: float = Field(description="This encounter's score: baseline + every contribution")
    raising: list[Factor] = Field(description="Up to 5 features raising the score, largest first")
    lowering: list[Factor] = Field(
        description="Up to 5 features lowering the score, most negative first"
    )
    note: str | None = Field(description="Why there are no factors (an expired encounter)")


class Prediction(BaseModel):
    """The model's answer for one encounter."""

    prediction: str = Field(description="NO, >30 or <30")
    probabilities: dict[str, float] = Field(description="Probability of each class")
    readmission_30d_risk: float = Field(description="Probability of readmission within 30 days")
    risk_tier: Literal["high", "medium", "low"] | None = Field(
        description="Where the <30 risk falls among the model's discharges: high from the "
        "top DECISION_HIGH_TOP_PERCENT % (default 10), medium down to the top "
        "DECISION_MEDIUM_TOP_PERCENT % (default 30), else low; thresholds chosen on the valid "
        "split (GET /model/operating-points). null for a model trained before tiers existed"
    )
    risk_tier_starts: dict[str, float] | None = Field(
        description="The <30 risk at which each tier starts (high, medium, low)"
    )
    history: HistoryUsed
    explanation: Explanation | None = Field(
        default=None, description="Only with explain=true: why this risk (see Explanation)"
    )


class PredictionResponse(Prediction):
    model: ModelRef


class BatchResponse(BaseModel):
    predictions: list[Prediction]
    model: ModelRef


class Figure(BaseModel):
    """A figure on the test split and its 95 % interval (patient bootstrap)."""

    value: float | None
    ci95: list[float | None] = Field(min_length=2, max_length=2, description="[low, high]")


class OperatingPoint(BaseModel):
    """Flag the top k % of discharges: the threshold (from valid) and what it does on test."""

    top_percent: float
    threshold: float = Field(description="<30 risk at or above which a discharge is flagged")
    flagged: Figure = Field(description="Test encounters flagged")
    flagged_share: float
    sensitivity: Figure = Field(description="Share of the <30 readmissions flagged")
    ppv: Figure = Field(description="Share of the flagged readmitted within 30 days")
    number_needed_to_evaluate: Figure = Field(
        description="Flagged discharges per <30 readmission found (1 / PPV)"
    )


class TierStart(BaseModel):
    top_percent: float
    threshold: float


class OperatingPoints(BaseModel):
    """The served version's operating points, its risk tiers and the calibration of its risk."""

    model: ModelRef
    target: str = Field(description="The class the risk is of (<30)")
    tiers: dict[str, TierStart] = Field(description="Where the high and medium tiers start")
    operating_points: list[OperatingPoint]
    calibration: dict[str, dict[str, float]] = Field(
        description="Per split: brier, ece (equal-mass bins), slope, intercept, observed_rate, "
        "mean_risk"
    )
    intervals: dict[str, Any] = Field(description="How the 95 % intervals were drawn")


class AliasMove(BaseModel):
    """One move of the `production` alias (readmission.registry.AliasMove)."""

    number: int = Field(description="The move's place in the history, from 1")
    at: str = Field(description="When (ISO 8601, UTC)")
    alias: str
    action: Literal["promote", "rollback"]
    from_version: str | None = Field(description="The version that held the alias before")
    to_version: str
    reason: str
    by: str = Field(description="What moved it: `cli`, or the training DAG's run")


class History(BaseModel):
    """Every recorded move of the `production` alias, newest first."""

    alias: str
    moves: list[AliasMove]


class ShadowComparison(BaseModel):
    """Served against challenger answers, since either version last changed."""

    served_version: str | None
    challenger_version: str | None
    since: str
    encounters: int = Field(description="Encounters both scored")
    class_agreement: float | None = Field(description="Share with the same predicted class")
    tier_agreement: float | None = Field(description="Share with the same risk tier")
    mean_abs_risk_difference: float | None = Field(
        description="Mean |served - challenger| <30 risk"
    )
    challenger_calls: int
    challenger_failures: int = Field(description="Batches the challenger failed to score")
    challenger_latency_ms: dict[str, float] | None = Field(
        description="p50 and p99 of the challenger's time per batch"
    )


class Shadow(BaseModel):
    """The challenger in the shadow: how it compares with the served model, and what each
    has realized once outcomes arrived (`model_performance_pipeline`'s recent windows)."""

    challenger: ModelRef | None
    served: ModelRef | None
    comparison: ShadowComparison
    performance: list[dict[str, Any]]


class ModelCard(BaseModel):
    """The served version's model card (readmission/card.py); `?format=markdown` for people."""

    model_config = ConfigDict(extra="allow")

    model: dict[str, Any]
    intended_use: str
    data: dict[str, Any]
    metrics: dict[str, float | None]
    decision: dict[str, Any]
    production_history: list[AliasMove] = Field(
        description="The moves of the production alias into and out of this version"
    )
    limitations: list[str]


class FeatureImportance(BaseModel):
    """One feature's mean absolute contribution to the `<30` score."""

    feature: str
    mean_abs_contribution: float


class Importance(BaseModel):
    """Global importance of the served model's features, measured at training time on a
    sample of the valid split: each feature's mean absolute contribution to the `<30` score."""

    model: ModelRef
    target_class: Literal["<30"]
    unit: Literal["log-odds", "probability"]
    method: str = Field(description="How contributions were computed")
    rows: int = Field(description="Rows of the valid split the mean is taken over")
    features: list[FeatureImportance] = Field(description="Most important first")


class RegistryCheck(BaseModel):
    """The outcome of the API's last check of the registry."""

    reachable: bool | None = Field(description="null until the first check")
    checked_at: str | None = Field(description="When (ISO 8601, UTC)")
    message: str = Field(description="What the check found, in words")


class Ready(BaseModel):
    """A model is loaded: which one."""

    status: Literal["ready"]
    model: ModelRef


class NoModel(BaseModel):
    """The one 503 of a service without a model: why, and what the registry last said."""

    detail: str
    registry: RegistryCheck


class VersionDescription(BaseModel):
    """What the registry says of one version: its fields, tags and the run's metrics."""

    name: str
    version: str
    run_id: str | None
    model_id: str | None = Field(description="MLflow 3's LoggedModel id, when there is one")
    source: str | None
    status: str | None = Field(description="READY once registered")
    stage: str | None
    aliases: list[str]
    tags: dict[str, str]
    created_at: str | None
    updated_at: str | None
    metrics: dict[str, float | None] = Field(
        description="The run's valid_* and test_* metrics; a non-finite one as null"
    )


class ModelDescription(VersionDescription):
    """The model in service, as the registry described it at the last check."""

    alias: str
    loaded_at: str = Field(description="When this API loaded it (ISO 8601, UTC)")
    described_at: str = Field(description="When the registry last described it")
    registry: RegistryCheck


class Versions(BaseModel):
    """Every registered version, newest first."""

    versions: list[VersionDescription]


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


def check_encounters(
    rows: Sequence[Any], locate: Callable[[int, str | None], tuple[str | int, ...]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validate rows that came in another shape (a protocol's frame or tensors) as encounters.

    Returns the records (keyed by column key) and pydantic-style errors, each located by
    `locate(row, field)` in the request's own terms (`field` None for the whole row), so
    that a refusal names where the client put the value.
    """
    records: list[dict[str, Any]] = []
    found: list[dict[str, Any]] = []
    for row_number, row in enumerate(rows):
        try:
            records.append(Encounter.model_validate(row).model_dump(by_alias=False))
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else None
                # an absent field is located by its key: named as the file names it
                if field in schema.BY_KEY and REQUIRED_REASON in error["msg"]:
                    field = schema.BY_KEY[field].name
                found.append({**error, "loc": locate(row_number, field)})
    return records, found
