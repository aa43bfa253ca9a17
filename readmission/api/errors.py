"""How the API refuses: every bad request is a 4xx naming the field and the reason.

Validation problems become 422 `{"detail": [{"field", "reason", "input"}]}`, a body that
cannot be read as JSON too (not UTF-8, nested too deeply); no model is one 503 that says
why and what the registry last answered; a full scoring queue a 503 with Retry-After; an
explanation (or a global importance) the served model cannot give a 409 that says why. The
413 of an oversized body and the 500 of an unexpected error come from
`readmission.api.middleware`. The protocol routes (MLflow's /invocations, KServe V2) refuse
for the same reasons in their protocol's shape: `readmission.api.protocol_route`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from readmission import schema
from readmission.api.predictor import ExplanationUnavailableError, NoModelError, QueueFullError
from readmission.api.schemas import REQUIRED_REASON

log = logging.getLogger(__name__)
NO_MODEL = (
    "no model loaded: no model is in Production yet, or the registry cannot be reached. "
    "Train one with `make run` or `python -m readmission train`, then retry (the API picks "
    "it up by itself, or at once with POST /model/reload)."
)
RETRY_AFTER_SECONDS = 1
QUEUE_FULL = (
    "the scoring queue is full (API_PREDICT_QUEUE_ROWS encounters wait already): retry in "
    f"{RETRY_AFTER_SECONDS} s"
)


def _printable(text: str) -> str:
    """Lone surrogates (JSON allows "\\ud800") cannot be encoded as UTF-8: replaced."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _shown(value: Any) -> Any:
    """The offending input, shortened so an error never echoes megabytes; always JSON-able."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value[:200]).decode("utf-8", errors="replace")
    if isinstance(value, str):
        value = _printable(value)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, str) and len(value) > 80:
        return value[:80] + f"... ({len(value):,} characters)"
    if isinstance(value, dict | list):
        try:
            shown = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (ValueError, TypeError, RecursionError):  # NaN inside, a lone surrogate...
            shown = None
        if shown is None or len(shown) > 200:
            return f"<{type(value).__name__} of {len(value)} items>"
        return value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _printable(str(value)[:80])


def problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as (field, reason, input), the field as a dotted path."""
    out = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        field = ".".join(location) or "body"
        kind = error.get("type", "")
        reason = error.get("msg", "invalid")
        if kind == "json_invalid":
            field, reason = "body", f"invalid JSON: {error.get('ctx', {}).get('error', reason)}"
        elif kind == "missing" and field == "body":
            reason = "a JSON object is required"
        elif kind == "extra_forbidden":
            reason = "unknown field"
        elif kind == "model_attributes_type" and isinstance(error.get("input"), bytes):
            reason = "must be a JSON object sent with Content-Type: application/json"
        elif kind == "model_attributes_type" or (kind == "dict_type" and field == "body"):
            reason = "must be a JSON object"
        elif kind == "string_unicode":
            reason = "must be valid Unicode text (a lone surrogate such as \\ud800 is not)"
        reason = reason.removeprefix("Value error, ")
        if reason.startswith(REQUIRED_REASON) and field in schema.BY_KEY:
            field = schema.BY_KEY[field].name  # an absent field is located by its key
        if len(field) > 120:  # an unknown key of megabytes is named, not echoed
            field = field[:120] + f"... ({len(field):,} characters)"
        out.append(
            {
                "field": _printable(field),
                "reason": _printable(reason),
                "input": _shown(error.get("input")),
            }
        )
    return out


def unreadable(cause: BaseException | None) -> str:
    """Why FastAPI could not parse a body (it says only "error parsing the body")."""
    if isinstance(cause, UnicodeDecodeError):
        return f"invalid JSON: the body is not UTF-8 text (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "invalid JSON: nested too deeply"
    return "invalid JSON: the body cannot be parsed"


def in_one_line(found: list[dict[str, Any]], most: int = 5) -> str:
    """Problems as one sentence (for protocols whose errors are a single message)."""
    shown = "; ".join(f"{p['field']}: {p['reason']}" for p in found[:most])
    if len(found) > most:
        shown += f"; and {len(found) - most:,} more"
    return f"invalid input: {shown}"


def no_model_response(registry_status: dict) -> JSONResponse:
    """The one 503 of a service without a model: why, and what the registry last said."""
    return JSONResponse({"detail": NO_MODEL, "registry": registry_status}, status_code=503)


def install(app: FastAPI) -> None:
    """Register the exception handlers."""

    @app.exception_handler(RequestValidationError)
    async def validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": problems(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.__cause__ is not None:  # the body could not be read
            problem = {"field": "body", "reason": unreadable(exc.__cause__), "input": None}
            return JSONResponse({"detail": [problem]}, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(QueueFullError)
    async def queue_full(_request: Request, _exc: QueueFullError) -> JSONResponse:
        return JSONResponse(
            {"detail": QUEUE_FULL},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(ExplanationUnavailableError)
    async def unexplainable(_request: Request, exc: ExplanationUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(NoModelError)
    async def no_model(request: Request, _exc: NoModelError) -> JSONResponse:
        return no_model_response(request.app.state.services.store.status.to_dict())
