"""The Streamlit app's logic without Streamlit or the network, so unit tests cover it.

Settings from the environment; the prediction form derived from `readmission.schema`
(choices, defaults, the request body keyed by UCI names); the API's answers parsed and
its failures turned into readable messages; uploaded CSVs parsed, cut into API-sized
chunks and returned with the predictions added; the model registry as a table.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx
import pandas as pd
from pydantic import ValidationError

from readmission import schema
from readmission.names import MODEL_NAME, PRODUCTION_ALIAS, PRODUCTION_STAGE
from readmission.schema import Column, Kind
from readmission.settings import ApiSettings, MlflowSettings, Settings

# --- settings ---------------------------------------------------------------------------------

_DEFAULTS = ApiSettings()
DEFAULT_API_URL = _DEFAULTS.url
DEFAULT_MLFLOW_UI_URL = MlflowSettings().ui_url
DEFAULT_TIMEOUT_SECONDS = _DEFAULTS.timeout_seconds


@dataclass(frozen=True)
class UiSettings:
    """Where the inference API and the MLflow UI are, and how long to wait for the API."""

    api_url: str = DEFAULT_API_URL
    mlflow_ui_url: str = DEFAULT_MLFLOW_UI_URL
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


def load_settings(environ: Mapping[str, str] | None = None) -> UiSettings:
    """`API_URL`, `MLFLOW_UI_URL` and `API_TIMEOUT_SECONDS`, read by the package's Settings
    (blank means default) from the environment, or from `environ` when given."""
    names = ("API_URL", "MLFLOW_UI_URL", "API_TIMEOUT_SECONDS")
    try:
        if environ is None:
            settings = Settings()
        else:
            given = {name: environ[name] for name in names if str(environ.get(name, "")).strip()}
            settings = Settings.model_validate(given)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = str(error["loc"][-1]) if error.get("loc") else "a setting"
        reason = error.get("msg", "invalid").lower()
        raise ValueError(f"{variable} is invalid ({reason}): {error.get('input')!r}") from None
    return UiSettings(settings.api.url, settings.mlflow.ui_url, settings.api.timeout_seconds)


def mlflow_model_url(mlflow_ui_url: str, model_name: str = MODEL_NAME) -> str:
    """The MLflow UI page of the registered model."""
    return f"{mlflow_ui_url.rstrip('/')}/#/models/{quote(model_name, safe='')}"


# --- the prediction form ----------------------------------------------------------------------

#: The choice that sends a missing value (JSON null).
MISSING_CHOICE = "(missing / unknown)"
#: Category columns the UCI file leaves missing (`?`) often enough that a form must allow it.
#: The others have a category that says "not done" (`None`, `No`) or "unknown" themselves.
OPTIONAL_CATEGORIES = frozenset({"race", "weight", "payer_code", "medical_specialty"})
#: The form's sections and their columns (UCI names); the 23 medications come apart.
FORM_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Patient", ("race", "gender", "age", "weight", "payer_code")),
    (
        "Admission",
        (
            "admission_type_id",
            "admission_source_id",
            "discharge_disposition_id",
            "medical_specialty",
            "time_in_hospital",
        ),
    ),
    (
        "Care during the stay and visits in the year before",
        (
            "num_lab_procedures",
            "num_procedures",
            "num_medications",
            "number_diagnoses",
            "number_outpatient",
            "number_emergency",
            "number_inpatient",
        ),
    ),
    ("Diagnoses (ICD-9-CM codes)", ("diag_1", "diag_2", "diag_3")),
    (
        "Lab results and diabetic medication",
        ("max_glu_serum", "A1Cresult", "change", "diabetesMed"),
    ),
)
#: The 23 medication columns, shown together in a grid.
MEDICATION_COLUMNS: tuple[str, ...] = schema.MEDICATIONS
#: People-facing labels; a medication is labelled by its name.
LABELS: Mapping[str, str] = {
    "race": "Race",
    "gender": "Gender",
    "age": "Age (years)",
    "weight": "Weight (pounds)",
    "payer_code": "Payer",
    "admission_type_id": "Admission type",
    "discharge_disposition_id": "Discharge disposition",
    "admission_source_id": "Admission source",
    "time_in_hospital": "Time in hospital (days)",
    "medical_specialty": "Admitting physician's specialty",
    "num_lab_procedures": "Lab procedures",
    "num_procedures": "Other procedures",
    "num_medications": "Medications administered",
    "number_outpatient": "Outpatient visits (year before)",
    "number_emergency": "Emergency visits (year before)",
    "number_inpatient": "Inpatient visits (year before)",
    "diag_1": "Primary diagnosis",
    "diag_2": "Secondary diagnosis",
    "diag_3": "Additional diagnosis",
    "number_diagnoses": "Number of diagnoses",
    "max_glu_serum": "Glucose serum test",
    "A1Cresult": "HbA1c test",
    "change": "Change of diabetic medication",
    "diabetesMed": "Diabetic medication prescribed",
}
PATIENT_LABEL = "Patient number (optional)"
ENCOUNTER_LABEL = "Encounter id (optional)"


class FormError(ValueError):
    """A form value the request cannot carry; the message names the field."""


def label_of(column: Column) -> str:
    """The label a form shows for a column."""
    return LABELS.get(column.name, column.name)


def format_code(code: int, label: str) -> str:
    """How a code is shown in a dropdown: `1 - Emergency`."""
    return f"{code} - {label}"


def choices(column: Column) -> list[str]:
    """The options of a column's dropdown: its categories, or its codes as `code - label`,
    then the missing choice where the column allows it."""
    if column.kind is Kind.CODE:
        options = [format_code(code, label) for code, label in column.codes.items()]
    elif column.kind is Kind.CATEGORY:
        options = list(column.categories)
    else:
        raise ValueError(f"{column.name} is a {column.kind}, not a dropdown")
    if column.name in OPTIONAL_CATEGORIES:
        options.append(MISSING_CHOICE)
    return options


def default_choice(column: Column) -> str:
    """The dropdown option of the column's typical value (a typical patient)."""
    if column.kind is Kind.CODE:
        return format_code(int(column.typical), column.codes[int(column.typical)])
    return str(column.typical) if column.typical is not None else MISSING_CHOICE


def parse_code_choice(choice: object) -> int | None:
    """The integer code of a dropdown option (`"3 - Elective"` -> 3); None when missing."""
    if choice is None or choice == MISSING_CHOICE:
        return None
    if isinstance(choice, bool):
        raise ValueError(f"not a code: {choice!r}")
    if isinstance(choice, int):
        return choice
    match = re.fullmatch(r"\s*(\d+)\s*(?:-.*)?", str(choice), flags=re.DOTALL)
    if match is None:
        raise ValueError(f"not a code: {choice!r}")
    return int(match.group(1))


def _is_blank(value: object) -> bool:
    return (
        value is None or value == MISSING_CHOICE or (isinstance(value, str) and not value.strip())
    )


def _whole_number(name: str, value: object) -> int:
    """A count or identifier typed in a form, as an int; FormError otherwise."""
    if isinstance(value, bool):
        raise FormError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, int):
        return value
    try:
        number = float(str(value).strip())
    except ValueError:
        raise FormError(f"{name} must be a whole number, not {value!r}") from None
    if not number.is_integer():
        raise FormError(f"{name} must be a whole number, not {value!r}")
    return int(number)


def build_request(
    values: Mapping[str, object], patient_nbr: object = None, encounter_id: object = None
) -> dict[str, Any]:
    """The JSON body of POST /predict from form values keyed by UCI names.

    Codes are sent as ints, counts as ints, texts stripped; the missing choice, blanks and
    absent columns become null. `patient_nbr` is sent only when given, so that the API
    looks up the patient's earlier encounters; `encounter_id` too, so that re-scoring a
    stored encounter counts only the encounters before it (without it, the API takes the
    request for a new encounter, after every stored one).
    """
    body: dict[str, Any] = {}
    for column in schema.FEATURES:
        value = values.get(column.name)
        if _is_blank(value):
            body[column.name] = None
        elif column.kind is Kind.CODE:
            try:
                body[column.name] = parse_code_choice(value)
            except ValueError as exc:
                raise FormError(f"{column.name}: {exc}") from None
        elif column.kind is Kind.COUNT:
            body[column.name] = _whole_number(column.name, value)
        else:
            body[column.name] = str(value).strip()
    if not _is_blank(patient_nbr):
        number = _whole_number(schema.PATIENT_ID, patient_nbr)
        if number < 0:
            raise FormError(f"{schema.PATIENT_ID} must not be negative")
        body[schema.PATIENT_ID] = number
    if not _is_blank(encounter_id):
        number = _whole_number(schema.ENCOUNTER_ID, encounter_id)
        if number < 0:
            raise FormError(f"{schema.ENCOUNTER_ID} must not be negative")
        body[schema.ENCOUNTER_ID] = number
    return body


# --- the API's answers ------------------------------------------------------------------------

#: The classes in the order the UI shows them.
CLASSES: tuple[str, ...] = schema.READMITTED_CLASSES
CLASS_DESCRIPTIONS: Mapping[str, str] = {
    "NO": "No readmission",
    ">30": "Readmitted after 30 days",
    "<30": "Readmitted within 30 days",
}


@dataclass(frozen=True)
class ModelRef:
    """Which registered model version answered."""

    name: str
    version: str
    alias: str | None = None

    def describe(self) -> str:
        """`diabetes-readmission v3 (production)`."""
        alias = f" ({self.alias})" if self.alias else ""
        return f"{self.name} v{self.version}{alias}"


@dataclass(frozen=True)
class Prediction:
    """One encounter's answer: the class, the three probabilities, the 30-day risk, and the
    patient's history it was scored with (as the API reports it)."""

    predicted_class: str
    probabilities: Mapping[str, float]
    readmission_30d_risk: float
    history: Mapping[str, Any] | None = None
    risk_tier: str | None = None
    risk_tier_starts: Mapping[str, float] | None = None
    explanation: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PredictionResult:
    """The answer of POST /predict."""

    prediction: Prediction
    model: ModelRef


def describe_tier(prediction: Prediction) -> str:
    """The risk tier in words, with where it starts ('' when the model has no tiers)."""
    tier, starts = prediction.risk_tier, prediction.risk_tier_starts or {}
    if tier is None:
        return ""
    if tier == "high":
        where = f"risk at or above {starts.get('high', float('nan')):.1%}"
    elif tier == "medium":
        where = (
            f"risk from {starts.get('medium', float('nan')):.1%} "
            f"to below {starts.get('high', float('nan')):.1%}"
        )
    else:
        where = f"risk below {starts.get('medium', float('nan')):.1%}"
    return f"Risk tier: {tier} ({where}; see Decision support for what each tier achieves)."


def operating_points_frame(points: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The operating-points table for people: one row per "flag the top k %"."""

    def cell(figure: Mapping[str, Any], fmt: str) -> str:
        value, (low, high) = figure.get("value"), figure.get("ci95") or (None, None)
        if value is None:
            return "n/a"
        shown = format(value, fmt)
        return shown if low is None else f"{shown} ({format(low, fmt)}-{format(high, fmt)})"

    return pd.DataFrame(
        [
            {
                "flag top": f"{p['top_percent']:g} %",
                "risk threshold": f"{p['threshold']:.1%}",
                "flagged (test)": f"{p['flagged']['value']:,.0f}",
                "sensitivity": cell(p["sensitivity"], ".1%"),
                "PPV": cell(p["ppv"], ".1%"),
                "number needed to evaluate": cell(p["number_needed_to_evaluate"], ".1f"),
            }
            for p in points
        ]
    )


def describe_history(history: Mapping[str, Any] | None) -> str:
    """What the API says of the patient's history it used, for people ('' if it says none)."""
    if not history:
        return ""
    status, earlier = history.get("status"), history.get("earlier_encounters", 0)
    if status == "looked_up":
        counted = "1 earlier encounter" if earlier == 1 else f"{earlier} earlier encounters"
        verb = "was" if earlier == 1 else "were"
        return f"History: {counted} of this patient {verb} counted."
    if status == "unavailable":
        return (
            "History: the patient's earlier encounters were unavailable (the data store did "
            "not answer); this risk counts none."
        )
    if status == "no_patient":
        return "History: no patient number was given, so no earlier encounter was counted."
    return "History: the API does not look up earlier encounters."


def describe_class(predicted_class: str) -> str:
    """A class for people: `Readmitted within 30 days (<30)`."""
    description = CLASS_DESCRIPTIONS.get(predicted_class)
    return f"{description} ({predicted_class})" if description else predicted_class


def probability_frame(probabilities: Mapping[str, float]) -> pd.DataFrame:
    """The probabilities as a two-column frame (class, probability) in the order NO, >30,
    <30, then any other class the API sent."""
    order = [c for c in CLASSES if c in probabilities]
    order += [c for c in probabilities if c not in order]
    return pd.DataFrame({"class": order, "probability": [float(probabilities[c]) for c in order]})


def _bad_answer(what: str, problem: str) -> ApiError:
    return ApiError(
        "bad_response",
        f"The inference API answered {what} with something unexpected: {problem}.",
    )


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def parse_model_ref(payload: object, what: str) -> ModelRef:
    """The `model` object of a prediction answer."""
    if not isinstance(payload, Mapping) or "version" not in payload:
        raise _bad_answer(what, "no model name and version")
    return ModelRef(
        name=str(payload.get("name") or MODEL_NAME),
        version=str(payload["version"]),
        alias=str(payload["alias"]) if payload.get("alias") else None,
    )


def _parse_prediction(payload: object, what: str) -> Prediction:
    if not isinstance(payload, Mapping):
        raise _bad_answer(what, "a prediction is not an object")
    try:
        probabilities = {str(k): _number(v) for k, v in payload["probabilities"].items()}
        risk = payload.get("readmission_30d_risk", probabilities.get("<30"))
        history = payload.get("history")
        tier, starts = payload.get("risk_tier"), payload.get("risk_tier_starts")
        explanation = payload.get("explanation")
        return Prediction(
            predicted_class=str(payload["prediction"]),
            probabilities=probabilities,
            readmission_30d_risk=_number(risk),
            history=history if isinstance(history, Mapping) else None,
            risk_tier=str(tier) if tier is not None else None,
            risk_tier_starts=(
                {str(k): _number(v) for k, v in starts.items()}
                if isinstance(starts, Mapping)
                else None
            ),
            explanation=explanation if isinstance(explanation, Mapping) else None,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise _bad_answer(what, f"a prediction lacks a field or a number ({exc})") from None


def parse_prediction(payload: object) -> PredictionResult:
    """The answer of POST /predict; ApiError if it does not follow the contract."""
    what = "POST /predict"
    if not isinstance(payload, Mapping):
        raise _bad_answer(what, "not a JSON object")
    return PredictionResult(
        _parse_prediction(payload, what), parse_model_ref(payload.get("model"), what)
    )


#: How the unit of an explanation reads for people.
UNITS: Mapping[str, str] = {
    "log-odds": "log-odds of the 30-day readmission score",
    "probability": "probability of readmission within 30 days",
}


def factor_frame(explanation: Mapping[str, Any] | None) -> pd.DataFrame:
    """The factors of POST /predict?explain=true as one table, raising ones first (largest
    first), then lowering ones (most negative first): feature, the patient's value,
    contribution, direction. Empty when there is no explanation."""
    rows = []
    for key, direction in (("raising", "raises the risk"), ("lowering", "lowers the risk")):
        for factor in (explanation or {}).get(key) or ():
            if not isinstance(factor, Mapping):
                continue
            value = factor.get("value")
            rows.append(
                {
                    "feature": str(factor.get("feature")),
                    "value": "missing" if value is None else str(value),
                    "contribution": float(factor.get("contribution") or 0.0),
                    "direction": direction,
                }
            )
    return pd.DataFrame(rows, columns=["feature", "value", "contribution", "direction"])


def describe_explanation(explanation: Mapping[str, Any] | None) -> str:
    """What the factors' numbers are, in one sentence ('' without an explanation)."""
    if not explanation:
        return ""
    if explanation.get("note"):
        return str(explanation["note"]).capitalize() + "."
    unit = UNITS.get(str(explanation.get("unit")), str(explanation.get("unit")))
    return (
        f"Contributions in {unit}: from the average patient's {explanation['baseline']:.3f} "
        f"to this patient's {explanation['score']:.3f} (exact for the served model; the five "
        "largest each way are shown)."
    )


def importance_frame(payload: object, top: int = 15) -> pd.DataFrame:
    """GET /model/importance as a table of the `top` most important features."""
    features = payload.get("features") if isinstance(payload, Mapping) else None
    if not isinstance(features, list):
        raise _bad_answer("GET /model/importance", "no list of features")
    rows = [
        {"feature": str(f.get("feature")), "importance": float(f.get("mean_abs_contribution"))}
        for f in features[:top]
        if isinstance(f, Mapping)
    ]
    return pd.DataFrame(rows, columns=["feature", "importance"])


def parse_batch(payload: object, expected: int) -> tuple[list[Prediction], ModelRef]:
    """The answer of POST /predict/batch: one prediction per encounter sent, in order."""
    what = "POST /predict/batch"
    if not isinstance(payload, Mapping) or not isinstance(payload.get("predictions"), list):
        raise _bad_answer(what, "no list of predictions")
    predictions = [_parse_prediction(item, what) for item in payload["predictions"]]
    if len(predictions) != expected:
        raise _bad_answer(what, f"{len(predictions)} predictions for {expected} encounters")
    return predictions, parse_model_ref(payload.get("model"), what)


# --- the API's failures -----------------------------------------------------------------------

ErrorKind = Literal[
    "unreachable",
    "timeout",
    "network",
    "invalid",
    "too_large",
    "unavailable",
    "refused",
    "server",
    "bad_response",
]


class ApiError(Exception):
    """A failed call to the inference API, with a message meant for people.

    `kind` says what went wrong, `problems` lists the fields a 422 refused, `status_code`
    is the HTTP status when the API answered. `unavailable` (503: no model yet, registry
    unreachable) is a state to wait out rather than a fault, so the UI shows it as a warning.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        problems: Sequence[str] = (),
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.problems = tuple(problems)
        self.status_code = status_code

    @property
    def severity(self) -> Literal["error", "warning"]:
        """How the UI shows it: a warning for a state to wait out, else an error."""
        return "warning" if self.kind == "unavailable" else "error"

    def __str__(self) -> str:
        return "\n".join((self.message, *(f"- {p}" for p in self.problems)))


def error_from_exception(exc: httpx.HTTPError, api_url: str, timeout: float) -> ApiError:
    """A network failure (nothing listening, timeout, broken connection) as an ApiError."""
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(
            "timeout",
            f"The inference API at {api_url} did not answer within {timeout:g} s. "
            "It may be busy or stuck; try again, or raise API_TIMEOUT_SECONDS.",
        )
    if isinstance(exc, httpx.ConnectError):
        return ApiError(
            "unreachable",
            f"Cannot reach the inference API at {api_url}: is it running, and is API_URL "
            f"right? ({exc or type(exc).__name__})",
        )
    return ApiError(
        "network",
        f"The connection to the inference API at {api_url} failed: {exc or type(exc).__name__}.",
    )


def _detail_of(body: object) -> object:
    """The `detail` of an error answer (FastAPI's convention), else the body itself."""
    if isinstance(body, Mapping) and "detail" in body:
        return body["detail"]
    return body


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_of(problem: Mapping[str, Any]) -> str:
    """The field a problem is about: the contract's `field`, or FastAPI's default `loc`."""
    if problem.get("field") not in (None, ""):
        return str(problem["field"])
    location = [str(part) for part in problem.get("loc") or () if part != "body"]
    return ".".join(location) or "request"


_BATCH_FIELD = re.compile(r"^(?:body\.)?encounters(?:\.|\[)(\d+)\]?\.?(.*)$")


def describe_problem(problem: object, row_offset: int | None = None) -> str:
    """One refused field as a sentence: `num_lab_procedures: must be <= 300 (got 999)`.

    In a batch (`row_offset` given, the chunk's first row), a field such as
    `encounters.3.num_lab_procedures` names the CSV row instead: `row 1004, ...`.
    """
    if not isinstance(problem, Mapping):
        return _short(problem, 200)
    name = _field_of(problem)
    if row_offset is not None and (match := _BATCH_FIELD.match(name)):
        row = row_offset + int(match.group(1)) + 1
        name = f"row {row}, {match.group(2)}" if match.group(2) else f"row {row}"
    reason = problem.get("reason") or problem.get("msg") or "invalid"
    text = f"{name}: {reason}"
    if "input" in problem:
        text += f" (got {_short(problem['input'])})"
    return text


def error_from_response(
    status_code: int, body: object, what: str, row_offset: int | None = None
) -> ApiError:
    """An HTTP error answer of the API as an ApiError naming what was asked (`what`)."""
    detail = _detail_of(body)
    if status_code == 422:
        items = detail if isinstance(detail, list) else [detail]
        problems = tuple(describe_problem(item, row_offset) for item in items)
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        return ApiError("invalid", f"The API refused the values ({count}):", problems, status_code)
    text = _short(detail, 300) if detail not in (None, "") else "no details given"
    if status_code == 413:
        message = f"The request is too large for the API ({text}). Send fewer rows at once."
        return ApiError("too_large", message, status_code=status_code)
    if status_code == 503:
        message = f"The inference API is not ready: {text}"
        return ApiError("unavailable", message, status_code=status_code)
    if status_code == 404:
        message = f"The API has no {what} (404: {text}). Does API_URL point at the inference API?"
        return ApiError("refused", message, status_code=status_code)
    if 400 <= status_code < 500:
        message = f"The API refused {what} (HTTP {status_code}): {text}"
        return ApiError("refused", message, status_code=status_code)
    message = f"The inference API failed on {what} (HTTP {status_code}): {text}"
    return ApiError("server", message, status_code=status_code)


# --- batches of encounters from a CSV ---------------------------------------------------------

#: The most encounters POST /predict/batch takes at once.
MAX_BATCH_ROWS = 1_000
#: The columns added to an uploaded CSV, in order.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "prediction",
    *(f"probability_{c}" for c in CLASSES),
    "model_version",
)
#: How many rows of the uploaded file the page previews.
PREVIEW_ROWS = 20
_ALIASES: Mapping[str, str] = schema.key_aliases()
_MISSING_TEXTS = frozenset({"", schema.MISSING_MARKER})


class CsvError(ValueError):
    """An uploaded file that cannot be sent: not a CSV, no rows, no UCI column."""


def read_encounters(data: bytes) -> pd.DataFrame:
    """Parse an uploaded CSV (gzip allowed) as text, nothing converted, so that the
    download gives back the same values (`?`, `None`) with the predictions added."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise CsvError(f"The file looks gzip-compressed but cannot be read: {exc}") from None
    if not data.strip():
        raise CsvError("The file is empty.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"The file is not UTF-8 text (byte {exc.start}).") from None
    try:
        with warnings.catch_warnings():
            # pandas only warns, and drops the extra fields, when the first row is longer
            # than the header
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
            )
    except pd.errors.ParserWarning:
        raise CsvError(
            "The file cannot be read as CSV: a row has more fields than the header."
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CsvError(f"The file cannot be read as CSV: {reason}") from None
    if frame.empty:
        raise CsvError("The file has a header but no rows.")
    if not any(_request_name(c) for c in frame.columns):
        found = ", ".join(str(c) for c in frame.columns[:8])
        raise CsvError(
            "No column of the file is a UCI column (race, age, admission_type_id, ...); "
            f"found: {found}."
        )
    return frame


def _request_name(name: object) -> str | None:
    """The UCI name a CSV column is sent under, None if it is not sent (unknown columns,
    the target, columns this page adds)."""
    key = _ALIASES.get(str(name).strip())
    if key is None or key == schema.TARGET:
        return None
    return schema.BY_KEY[key].name


def ignored_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of an upload that are not sent to the API (kept in the download)."""
    return [str(c) for c in frame.columns if _request_name(c) is None]


def _value(text: str, column: Column) -> object:
    """A CSV cell as JSON: `?`/blank -> null; whole numbers in integer columns -> int;
    anything else as text, which the API validates and reports."""
    text = text.strip()
    if text in _MISSING_TEXTS:
        return None
    if column.is_integer:
        try:
            number = float(text)
        except ValueError:
            return text
        if number.is_integer():
            return int(number)
    return text


def to_encounters(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a text frame as encounters for POST /predict/batch, keyed by UCI names.

    Columns are matched by any spelling `schema.key_aliases()` knows; unknown columns and
    the target are left out; the first of two spellings of one column wins.
    """
    sent: dict[str, str] = {}
    for name in frame.columns:
        uci = _request_name(name)
        if uci is not None and uci not in sent.values():
            sent[str(name)] = uci
    columns = [
        [_value(str(v), schema.BY_NAME[uci]) for v in frame[name].tolist()]
        for name, uci in sent.items()
    ]
    names = list(sent.values())
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def chunk_bounds(rows: int, size: int = MAX_BATCH_ROWS) -> Iterator[tuple[int, int]]:
    """`(start, stop)` of consecutive chunks of at most `size` rows covering `rows` rows."""
    if not 1 <= size <= MAX_BATCH_ROWS:
        raise ValueError(f"chunk size must be between 1 and {MAX_BATCH_ROWS}, not {size}")
    for start in range(0, rows, size):
        yield start, min(start + size, rows)


def prediction_row(prediction: Prediction, model: ModelRef) -> dict[str, object]:
    """The columns one prediction adds to its CSV row."""
    row: dict[str, object] = {"prediction": prediction.predicted_class}
    for c in CLASSES:
        row[f"probability_{c}"] = prediction.probabilities.get(c)
    row["model_version"] = model.version
    return row


def add_predictions(frame: pd.DataFrame, rows: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """The uploaded frame with the prediction columns appended (replacing earlier ones,
    so that a downloaded file can be uploaded again)."""
    if len(rows) != len(frame):
        raise ValueError(f"{len(rows)} predictions for {len(frame)} rows")
    result = frame.drop(columns=[c for c in PREDICTION_COLUMNS if c in frame.columns])
    added = pd.DataFrame(list(rows), columns=list(PREDICTION_COLUMNS), index=frame.index)
    return pd.concat([result, added], axis=1)


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """A frame as UTF-8 CSV bytes for the download button."""
    return frame.to_csv(index=False).encode("utf-8")


def class_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """How many rows each class was predicted for, in the order NO, >30, <30."""
    counts = frame["prediction"].value_counts()
    order = [c for c in CLASSES if c in counts.index]
    order += [c for c in counts.index if c not in order]
    return pd.DataFrame({"class": order, "encounters": [int(counts[c]) for c in order]})


# --- the model registry -----------------------------------------------------------------------

#: Registry table columns that hold scores (formatted with three decimals).
METRIC_COLUMNS: Mapping[str, str] = {
    "valid macro-F1": "valid_macro_f1",
    "test macro-F1": "test_macro_f1",
    "test ROC-AUC <30": "test_roc_auc_lt30",
}


def is_production(version: Mapping[str, Any]) -> bool:
    """Whether a registry version is the Production one (stage or alias says so)."""
    aliases = version.get("aliases") or ()
    return version.get("stage") == PRODUCTION_STAGE or PRODUCTION_ALIAS in aliases


def _score(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def registry_table(
    versions: Sequence[Mapping[str, Any]], served_version: str | None = None
) -> pd.DataFrame:
    """The versions of GET /model/versions as one row each, in the order given (newest
    first): production and served flags, scores, stage, aliases, promotion tags."""
    records = []
    for version in versions:
        tags = version.get("tags") or {}
        metrics = version.get("metrics") or {}
        number = str(version.get("version", ""))
        records.append(
            {
                "version": number,
                "production": is_production(version),
                "served": served_version is not None and number == str(served_version),
                "family": tags.get("family"),
                **{title: _score(metrics, key) for title, key in METRIC_COLUMNS.items()},
                "stage": version.get("stage") or "None",
                "aliases": ", ".join(version.get("aliases") or ()),
                "promoted at": tags.get("promoted_at"),
                "decision": tags.get("promotion_decision"),
                "created at": version.get("created_at"),
                "run id": version.get("run_id"),
            }
        )
    columns = [
        "version",
        "production",
        "served",
        "family",
        *METRIC_COLUMNS,
        "stage",
        "aliases",
        "promoted at",
        "decision",
        "created at",
        "run id",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def history_table(moves: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The moves of GET /model/history as one row each, newest first: when, promotion or
    rollback, from which version to which, why and by what."""
    columns = ["when", "action", "from", "to", "reason", "by"]
    records = [
        {
            "when": move.get("at"),
            "action": move.get("action"),
            "from": f"v{move['from_version']}" if move.get("from_version") else "none",
            "to": f"v{move.get('to_version', '?')}",
            "reason": move.get("reason"),
            "by": move.get("by"),
        }
        for move in moves
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def describe_served(model: Mapping[str, Any]) -> str:
    """GET /model in one line: `diabetes-readmission v3 (hist_gradient_boosting), stage
    Production, aliases production`."""
    tags = model.get("tags") or {}
    family = f" ({tags['family']})" if tags.get("family") else ""
    aliases = ", ".join(model.get("aliases") or ()) or "none"
    name = model.get("name") or MODEL_NAME
    return (
        f"{name} v{model.get('version', '?')}{family}, stage {model.get('stage') or 'None'}, "
        f"aliases {aliases}"
    )


def registry_warning(model: Mapping[str, Any]) -> str | None:
    """A warning when GET /model says the API cannot reach the registry (it then keeps
    serving the model it has, and misses promotions); None when reachable or not said."""
    status = model.get("registry")
    if not isinstance(status, Mapping) or status.get("reachable") is not False:
        return None
    message = status.get("message") or "no details given"
    checked = f" (checked at {status['checked_at']})" if status.get("checked_at") else ""
    return (
        f"The API cannot reach the model registry{checked}: {message}. It keeps serving "
        f"v{model.get('version', '?')} and will pick up new promotions once it can."
    )
