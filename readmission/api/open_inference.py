"""The Open Inference Protocol (KServe's V2 protocol, spoken by KServe, Seldon's MLServer
and NVIDIA Triton): the model's metadata, and inference requests read into encounters.

Inputs are one tensor per column, as clients build them from a frame (one `InferInput`
per column with tritonclient, MLServer's pandas codec): `name` a column of the request (the
UCI name or another accepted spelling), `shape` `[n]` or `[n, 1]`, `data` the n values,
flat or one list per row. An integer column (counts, codes, identifiers) takes INT64, as
the metadata says, or any other numeric datatype (FP64 is how pandas holds an integer
column with gaps; a fraction is refused, NaN is missing); a text column takes BYTES, sent
as JSON strings. null is a missing value. Every input has the same n, at most
API_MAX_BATCH; the required columns of `/predict` are required inputs. Each row is then an
encounter checked as `/predict` checks it (`schemas.Encounter`).

Outputs: `predict`, BYTES `[n]`, each encounter's class ("NO", ">30", "<30"), and
`predict_proba`, FP64 `[n, 3]`, its probabilities of "<30", ">30" and "NO" (the model's
class order), flattened row-major: the names MLServer's scikit-learn runtime gives them.
A request's `outputs` picks among them; without it, both are returned (the spec's default).
Tensors travel as JSON only (Triton's binary-data extension is not spoken: tritonclient's
`binary_data=False`).

Refusals take the protocol's shape, `{"error": "..."}`: 400 for a bad request (with this
API's problems in `detail`, each located as `inputs.<column>.data.<row>`), 404 for a model
or version not served here, 503 without a model (`protocol_route`).
"""

import math
import uuid
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from readmission import schema
from readmission.api.predictor import Scored
from readmission.api.protocol_route import ProtocolError, ProtocolRoute, problem, with_body
from readmission.api.schemas import EXAMPLE, Problem, RegistryCheck, check_encounters
from readmission.names import MODEL_NAME

PLATFORM = "sklearn"
INTEGER_DATATYPE = "INT64"
TEXT_DATATYPE = "BYTES"
NUMERIC_DATATYPES = (
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
)
#: Every tensor datatype of the protocol (`Literal` takes a tuple as its arguments).
Datatype = Literal[("BOOL", *NUMERIC_DATATYPES, TEXT_DATATYPE)]
PREDICT, PREDICT_PROBA = "predict", "predict_proba"
OUTPUT_NAMES = (PREDICT, PREDICT_PROBA)
#: The request's columns (everything an encounter may carry but the target).
INPUT_COLUMNS = tuple(c for c in schema.COLUMNS if c.kind is not schema.Kind.TARGET)

#: A parameter's value: the protocol allows a string, a number or a boolean.
ParameterValue = StrictStr | StrictInt | StrictFloat | StrictBool
Parameters = dict[str, ParameterValue]
#: A tensor element as JSON carries it; null (and NaN) for a missing value.
Element = StrictStr | StrictInt | StrictFloat | StrictBool | None


class RequestInput(BaseModel):
    """One input tensor: here, one column of the encounters."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(description="A column: its UCI name or another accepted spelling")
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(
        min_length=1, max_length=2, description="[n] or [n, 1]: one value per encounter"
    )
    datatype: Datatype = Field(
        description="INT64 (or another numeric type) for an integer column, BYTES for text"
    )
    parameters: Parameters | None = Field(default=None, description="Accepted and ignored")
    data: list[Element | list[Element]] = Field(
        description="The n values, flat or one list per row; null for a missing value"
    )


class RequestOutput(BaseModel):
    """An output the client wants."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(description="predict or predict_proba")
    parameters: Parameters | None = Field(default=None, description="Accepted and ignored")


def _example_inputs() -> list[dict[str, Any]]:
    inputs = []
    for column in INPUT_COLUMNS:
        value = EXAMPLE.get(column.name)
        datatype = INTEGER_DATATYPE if column.is_integer else TEXT_DATATYPE
        inputs.append({"name": column.name, "shape": [1], "datatype": datatype, "data": [value]})
    return inputs


class InferenceRequest(BaseModel):
    """An inference request: the encounters as one tensor per column."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"id": "42", "inputs": _example_inputs()}]},
    )

    id: StrictStr | None = Field(default=None, description="Returned in the response")
    parameters: Parameters | None = Field(default=None, description="Accepted and ignored")
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        default=None, description="The outputs wanted; all of them when absent"
    )


class ResponseOutput(BaseModel):
    """One output tensor."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[str] | list[float] = Field(description="Flattened, row-major")


class InferenceResponse(BaseModel):
    """The model's answer: which model and version, the request's id, the outputs."""

    model_name: str
    model_version: str
    id: str = Field(description="The request's id, or a new one when it had none")
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    """What an input or output tensor holds; -1 is a dimension of any size."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None


class ModelMetadata(BaseModel):
    """The model: the version served, its inputs and outputs."""

    name: str
    versions: list[str] = Field(description="The version in service (none without a model)")
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferenceError(BaseModel):
    """A refusal in the protocol's shape, with this API's problems and registry status."""

    error: str
    detail: list[Problem] | None = Field(
        default=None, description="Each problem: where (inputs.<column>.data.<row>) and why"
    )
    registry: RegistryCheck | None = Field(
        default=None, description="With no model: what the registry last said"
    )


def input_metadata() -> list[dict[str, Any]]:
    """One input per column; `parameters.required` marks those every encounter needs."""
    return [
        {
            "name": column.name,
            "datatype": INTEGER_DATATYPE if column.is_integer else TEXT_DATATYPE,
            "shape": [-1],
            "parameters": {"required": column.key in schema.REQUIRED_IN_REQUEST},
        }
        for column in INPUT_COLUMNS
    ]


def output_metadata(classes: int = len(schema.READMITTED_CLASSES)) -> list[dict[str, Any]]:
    return [
        {"name": PREDICT, "datatype": TEXT_DATATYPE, "shape": [-1]},
        {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, classes]},
    ]


def check_model(name: str) -> None:
    """Only MODEL_NAME is served here: another name is the protocol's 404."""
    if name != MODEL_NAME:
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise ProtocolError(
            404, f"model {shown!r} is not served here; this API serves {MODEL_NAME!r}"
        )


def check_version(version: str | None, serving: str) -> None:
    """Only the version in service can be asked for by number."""
    if version is not None and version != serving:
        shown = version if len(version) <= 40 else version[:40] + "..."
        raise ProtocolError(
            404,
            f"version {shown!r} of {MODEL_NAME} is not served: this API serves the version "
            f"holding the production alias, {serving}",
        )


def _flat(data: list[Any]) -> list[Any]:
    return [value for item in data for value in (item if isinstance(item, list) else [item])]


def _tensor_problems(number: int, tensor: RequestInput, column: schema.Column) -> list[dict]:
    """What is wrong with one input tensor, before its values are read as encounters."""
    where = ("inputs", number)
    found = []
    if column.is_integer and tensor.datatype not in NUMERIC_DATATYPES:
        message = f"{column.name} is an integer column: INT64 (or another numeric datatype)"
        found.append(problem((*where, "datatype"), message, tensor.datatype))
    if not column.is_integer and tensor.datatype != TEXT_DATATYPE:
        message = f"{column.name} is a text column: BYTES"
        found.append(problem((*where, "datatype"), message, tensor.datatype))
    shape, values = tensor.shape, _flat(tensor.data)
    if len(shape) == 2 and shape[1] != 1:
        found.append(problem((*where, "shape"), "must be [n] or [n, 1]: one value a row", shape))
    elif math.prod(shape) != len(values):
        message = f"holds {len(values)} values for the shape {shape}"
        found.append(problem((*where, "data"), message))
    wrong = str if column.is_integer else (int, float, bool)
    for row, value in enumerate(values):
        if isinstance(value, wrong) or (column.is_integer and isinstance(value, bool)):
            message = f"a {tensor.datatype} tensor holds " + (
                "numbers or null" if column.is_integer else "strings or null"
            )
            found.append(problem((*where, "data", row), message, value))
            break
    return found


def _missing(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def encounters(request: InferenceRequest, max_batch: int) -> list[dict[str, Any]]:
    """The encounters of a request, checked like any other; raises RequestValidationError
    with each problem located in the request (`inputs.<column>.data.<row>`)."""
    aliases = schema.key_aliases()
    found: list[dict[str, Any]] = []
    columns: dict[str, list[Any]] = {}
    keys: set[str] = set()
    for number, tensor in enumerate(request.inputs):
        key = aliases.get(tensor.name)
        column = schema.BY_KEY[key] if key is not None else None
        if column is None or column.kind is schema.Kind.TARGET:
            message = f"unknown input; GET /v2/models/{MODEL_NAME} lists the inputs"
            found.append(problem(("inputs", number, "name"), message, tensor.name))
            continue
        if key in keys:
            message = f"{column.name} is sent twice"
            found.append(problem(("inputs", number, "name"), message, tensor.name))
            continue
        keys.add(key)
        problems = _tensor_problems(number, tensor, column)
        found.extend(problems)
        if not problems:
            columns[tensor.name] = [_missing(v) for v in _flat(tensor.data)]
    absent = [c.name for c in INPUT_COLUMNS if c.key in schema.REQUIRED_IN_REQUEST - keys]
    if absent:
        message = f"required inputs missing (every encounter records them): {', '.join(absent)}"
        found.append(problem(("inputs",), message))
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        found.append(problem(("inputs",), f"every input needs one value per row: {shown}"))
    rows = max(lengths.values(), default=0)
    if not found and not 1 <= rows <= max_batch:
        message = f"holds {rows:,} rows: at least 1 and at most {max_batch:,} (API_MAX_BATCH)"
        found.append(problem(("inputs",), message))
    if found:
        raise RequestValidationError(found)
    records = [{name: values[i] for name, values in columns.items()} for i in range(rows)]
    checked, found = check_encounters(
        records, lambda row, field: ("body", "inputs", field or "*", "data", row)
    )
    if found:
        raise RequestValidationError(found)
    return checked


def requested_outputs(request: InferenceRequest) -> list[str]:
    """The outputs the request wants (all without `outputs`); an unknown one is refused."""
    if request.outputs is None:
        return list(OUTPUT_NAMES)
    found = [
        problem(("outputs", number, "name"), f"the outputs are {', '.join(OUTPUT_NAMES)}", o.name)
        for number, o in enumerate(request.outputs)
        if o.name not in OUTPUT_NAMES
    ]
    if found:
        raise RequestValidationError(found)
    return list(dict.fromkeys(o.name for o in request.outputs))


def output_tensors(answers: list[Scored], classes: list[str], wanted: list[str]) -> list[dict]:
    """The outputs asked for, flattened row-major."""
    tensors = {
        PREDICT: {
            "name": PREDICT,
            "datatype": TEXT_DATATYPE,
            "shape": [len(answers)],
            "data": [a.prediction for a in answers],
        },
        PREDICT_PROBA: {
            "name": PREDICT_PROBA,
            "datatype": "FP64",
            "shape": [len(answers), len(classes)],
            "data": [a.probabilities[c] for a in answers for c in classes],
        },
    }
    return [tensors[name] for name in wanted]


def request_id(request: InferenceRequest) -> str:
    """The request's id, or a new one (as KServe's server does)."""
    return request.id if request.id is not None else uuid.uuid4().hex


BINARY_HEADER = "inference-header-content-length"


class InferenceRoute(ProtocolRoute):
    """A /v2 route: the body read as JSON whatever its Content-Type (tritonclient sends
    none of its own, and the protocol names none), refusals as `{"error": ...}`."""

    async def prepare(self, request: Request) -> Request:
        if BINARY_HEADER in request.headers:
            raise ProtocolError(
                400,
                "binary tensor data (Triton's binary-data extension) is not accepted: send "
                "the tensors as JSON (tritonclient: binary_data=False)",
            )
        return with_body(request)

    @staticmethod
    def refusal(_status: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"error": message, **extra}
