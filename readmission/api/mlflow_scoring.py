"""MLflow's scoring protocol, as `mlflow models serve` speaks it (MLflow 3.17): the bodies
`POST /invocations` accepts, read into encounters, and its answers.

A JSON body holds exactly one of four keys, each a way pandas or TF Serving lays out a
frame, and optionally `params`:

- `dataframe_split`: `{"columns": [...], "data": [[...], ...], "index": [...]}`, pandas'
  `to_dict(orient="split")` (what MLflow's own `ScoringServerClient` sends);
- `dataframe_records`: `[{column: value, ...}, ...]`;
- `instances` and `inputs`: records too, or an object of columns `{column: [values]}`.

A `text/csv` body is read as pandas writes a frame (a header line; an unnamed first column
is the index, and dropped) and then treated as `dataframe_records`. Every row is then an
encounter like any other (`schemas.Encounter`): the UCI column names, the same checks and
required fields, refused with the field and the reason; a NaN (how pandas writes a missing
number) is a missing value.

The answer is the one `mlflow models serve` gives for this model, `{"predictions": [...]}`:
one class label per row ("NO", ">30", "<30": scikit-learn's `predict`), or, with
`"params": {"predict_fn": "predict_proba"}`, one list of probabilities per row in the
model's class order (`classes_`, "<30", ">30", "NO"), as a model logged with
`pyfunc_predict_fn="predict_proba"` answers. `model` (name, version, alias) is added beside
`predictions`, as MLflow's server may add metadata beside them. Other params are ignored, as
MLflow ignores params a model does not declare.

Refusals take MLflow's shape, `{"error_code", "message"}` (400 BAD_REQUEST, 415 for a
content type it does not read, 503 TEMPORARILY_UNAVAILABLE), with this API's list of
problems in `detail` (`protocol_route`).
"""

import csv
import io
import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    WithJsonSchema,
    model_validator,
)

from readmission import schema
from readmission.api.predictor import Scored
from readmission.api.protocol_route import ProtocolError, ProtocolRoute, problem, with_body
from readmission.api.schemas import (
    EXAMPLE,
    ModelRef,
    Problem,
    RegistryCheck,
    check_encounters,
)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
CONTENT_JSON = "application/json"
CONTENT_CSV = "text/csv"
#: MLflow's error codes (mlflow.protos.databricks_pb2) for the statuses this route answers.
ERROR_CODES = {400: "BAD_REQUEST", 415: "BAD_REQUEST", 503: "TEMPORARILY_UNAVAILABLE"}
EXACTLY_ONE = (
    f"the body must be a JSON object with exactly one of {', '.join(FORMATS)} (not null), "
    "and optionally params, as MLflow's scoring server requires"
)

#: One value of a frame: what JSON and pandas write (NaN included, as a float).
Scalar = StrictStr | StrictInt | StrictFloat | StrictBool | None
_ENCOUNTER = {"$ref": "#/components/schemas/Encounter"}


class Params(BaseModel):
    """The one param this API reads; the others are ignored, as MLflow ignores them."""

    model_config = ConfigDict(extra="allow")

    predict_fn: Literal["predict", "predict_proba"] = Field(
        default="predict",
        description="predict: one class label per row (what `mlflow models serve` answers "
        'for this model); predict_proba: the probabilities of "<30", ">30" and "NO", in '
        "that order (the model's classes)",
    )


class Predictions(BaseModel):
    """What `mlflow models serve` answers, and which model answered."""

    predictions: list[str] | list[list[float]] = Field(
        description="One class label per row, or with predict_fn=predict_proba one list of "
        'probabilities per row ("<30", ">30", "NO")'
    )
    model: ModelRef


class ScoringError(BaseModel):
    """A refusal in MLflow's shape, with this API's problems and registry status."""

    error_code: str = Field(description="BAD_REQUEST or TEMPORARILY_UNAVAILABLE")
    message: str
    detail: list[Problem] | None = Field(
        default=None, description="Each problem: the field (format, row, column) and why"
    )
    registry: RegistryCheck | None = Field(
        default=None, description="With no model: what the registry last said"
    )


def invocation_request(max_batch: int) -> type[BaseModel]:
    """The body of /invocations, at most `max_batch` rows in any format."""
    rows = Annotated[
        list[dict[str, Any]],
        Field(min_length=1, max_length=max_batch),
        WithJsonSchema(
            {"type": "array", "items": _ENCOUNTER, "minItems": 1, "maxItems": max_batch}
        ),
    ]
    columns = Annotated[
        dict[str, Annotated[list[Scalar], Field(max_length=max_batch)]],
        Field(
            min_length=1,
            description="An object of columns: each key a column, the "
            "values of every row in order (as many in each)",
        ),
    ]
    rows_or_columns = Annotated[
        Annotated[rows, Tag("records")] | Annotated[columns, Tag("columns")],
        Discriminator(
            _records_or_columns,
            custom_error_type="records_or_columns",
            custom_error_message="must be a list of records or an object of columns",
        ),
    ]

    class DataframeSplit(BaseModel):
        """pandas' `to_dict(orient="split")`: the columns once, then each row's values."""

        model_config = ConfigDict(extra="forbid")

        columns: list[StrictStr] = Field(min_length=1)
        data: list[list[Scalar]] = Field(
            min_length=1, max_length=max_batch, description="One list per row, in `columns` order"
        )
        index: list[StrictInt | StrictStr] | None = Field(default=None, description="Ignored")

    class InvocationRequest(BaseModel):
        """A scoring request in one of the four formats of MLflow's scoring server."""

        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "oneOf": [{"required": [name]} for name in FORMATS],
                "examples": [{"dataframe_records": [EXAMPLE]}],
            },
        )

        # Exactly one of the four is present, and never null (the schema's oneOf, checked
        # by `exactly_one_format`): None only stands for "absent", hence not in the types.
        dataframe_split: DataframeSplit = None
        dataframe_records: rows = None
        instances: rows_or_columns = None
        inputs: rows_or_columns = None
        params: Params | None = None

        exactly_one_format = model_validator(mode="before")(_exactly_one_format)

    return InvocationRequest


def _records_or_columns(value: Any) -> str | None:
    if isinstance(value, list):
        return "records"
    return "columns" if isinstance(value, dict) else None


def _exactly_one_format(data: Any) -> Any:
    if isinstance(data, dict):
        present = [name for name in FORMATS if name in data]
        if len(present) != 1 or data[present[0]] is None:
            raise ValueError(EXACTLY_ONE)
    return data


def _missing(row: Any) -> Any:
    """pandas writes a missing number as NaN: a missing value here."""
    if not isinstance(row, dict):
        return row
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _rows(body: BaseModel) -> tuple[list[Any], Callable[..., tuple]]:
    """The body's rows as records, and where each row's field sits in the body."""
    name = next(n for n in FORMATS if getattr(body, n) is not None)
    value = getattr(body, name)
    if name == "dataframe_split":
        columns, data = value.columns, value.data
        twice = sorted({c for c in columns if columns.count(c) > 1})
        found = []
        if twice:
            found.append(problem((name, "columns"), f"columns named twice: {', '.join(twice)}"))
        for number, row in enumerate(data):
            if len(row) != len(columns):
                message = f"has {len(row)} values for {len(columns)} columns"
                found.append(problem((name, "data", number), message, row))
        if found:
            raise RequestValidationError(found)
        records = [dict(zip(columns, row, strict=True)) for row in data]
        return records, lambda row, field: ("body", name, "data", row, *_field(field))
    if isinstance(value, dict):  # an object of columns
        lengths = {column: len(values) for column, values in value.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{c} has {n}" for c, n in lengths.items())
            raise RequestValidationError(
                [problem((name,), f"every column needs one value per row: {shown}")]
            )
        count = next(iter(lengths.values()))
        if count == 0:
            raise RequestValidationError([problem((name,), "the columns hold no rows")])
        records = [{c: values[i] for c, values in value.items()} for i in range(count)]
        return records, lambda row, field: ("body", name, *_field(field), row)
    return value, lambda row, field: ("body", name, row, *_field(field))


def _field(field: str | None) -> tuple[str, ...]:
    return () if field is None else (field,)


def encounters(body: BaseModel) -> list[dict[str, Any]]:
    """The encounters of a request, checked like any other; raises RequestValidationError
    with each problem located where the client put it (format, row, column)."""
    rows, locate = _rows(body)
    records, found = check_encounters([_missing(row) for row in rows], locate)
    if found:
        raise RequestValidationError(found)
    return records


def predictions(body: BaseModel, answers: list[Scored], classes: list[str]) -> list:
    """Class labels, or with predict_fn=predict_proba probabilities in `classes` order."""
    if body.params is not None and body.params.predict_fn == "predict_proba":
        return [[a.probabilities[c] for c in classes] for a in answers]
    return [a.prediction for a in answers]


# --- text/csv ---------------------------------------------------------------------------

_KEYS = schema.key_aliases()


def _csv_value(column: str, text: str) -> Any:
    """A CSV cell as pandas would read it: empty is missing, numbers in an integer column
    are numbers (`3.0` too, as pandas writes an integer column with gaps), the rest text."""
    if text == "":
        return None
    key = _KEYS.get(column)
    if key is None or not schema.BY_KEY[key].is_integer:
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text  # refused by the checks that follow, naming the field
    return None if math.isnan(number) else number


def csv_records(body: bytes) -> list[dict[str, Any]]:
    """A CSV body (pandas' `to_csv`) as records; raises RequestValidationError."""
    try:
        lines = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise RequestValidationError([problem((), f"unreadable CSV: {reason}")]) from exc
    lines = [line for line in lines if line]  # blank lines, as pandas skips them
    if len(lines) < 2:
        raise RequestValidationError([problem((), "a CSV needs a header and one row or more")])
    header, rows = lines[0], lines[1:]
    skip = 1 if header[0] == "" else 0  # pandas' unnamed index column
    found = [
        problem(("dataframe_records", number), f"has {len(row)} values for {len(header)} columns")
        for number, row in enumerate(rows)
        if len(row) != len(header)
    ]
    if found:
        raise RequestValidationError(found)
    names = header[skip:]
    return [
        {name: _csv_value(name, text) for name, text in zip(names, row[skip:], strict=True)}
        for row in rows
    ]


class ScoringRoute(ProtocolRoute):
    """/invocations: JSON or CSV in, refusals in MLflow's shape."""

    @staticmethod
    def refusal(status: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"error_code": ERROR_CODES.get(status, "BAD_REQUEST"), "message": message, **extra}

    async def prepare(self, request: Request) -> Request:
        """Refuse a content type MLflow's server refuses (415); read CSV into records."""
        kind, *parameters = [p.strip() for p in request.headers.get("content-type", "").split(";")]
        kind = kind.lower()
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
                raise ProtocolError(415, f"unsupported content type parameter: {parameter[:80]}")
        if kind in ("", CONTENT_JSON):
            return request
        if kind != CONTENT_CSV:
            raise ProtocolError(
                415, f"send {CONTENT_JSON} or {CONTENT_CSV}, not {kind[:80] or 'nothing'}"
            )
        records = csv_records(await request.body())
        return with_body(request, json.dumps({"dataframe_records": records}).encode("utf-8"))
