"""How the API refuses: every bad request is a 4xx naming the field and the reason.

Validation problems become 422 `{"detail": [{"field", "reason", "input"}]}`; a body over
the size limit is a 413 before it is read; an unexpected error is a 500 without a trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from readmission.api.predictor import NoModelError

log = logging.getLogger(__name__)
NO_MODEL = (
    "no model loaded: no model is in Production yet, or the registry cannot be reached. "
    "Train one with `make run` or `python -m readmission train`, then retry (the API picks "
    "it up by itself, or at once with POST /model/reload)."
)


def _shown(value: Any) -> Any:
    """The offending input, shortened so an error never echoes megabytes; always JSON-able."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value[:200]).decode("utf-8", errors="replace")
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, str) and len(value) > 80:
        return value[:80] + f"... ({len(value):,} characters)"
    if isinstance(value, dict | list) and len(str(value)) > 200:
        return f"<{type(value).__name__} of {len(value)} items>"
    if value is None or isinstance(value, bool | int | float | str | dict | list):
        return value
    return str(value)[:80]


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
        elif kind == "model_attributes_type" and isinstance(error.get("input"), bytes | str):
            reason = "must be a JSON object sent with Content-Type: application/json"
        elif kind == "model_attributes_type" or (kind == "dict_type" and field == "body"):
            reason = "must be a JSON object"
        reason = reason.removeprefix("Value error, ")
        out.append({"field": field, "reason": reason, "input": _shown(error.get("input"))})
    return out


class BodySizeLimit:
    """Refuse a body larger than `limit` bytes with 413, whatever Content-Length claims."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise _TooLargeError
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLargeError:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.limit:,} bytes"},
                                status_code=413)  # fmt: skip
        await response({"type": "http"}, _no_body, send)


class _TooLargeError(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def install(app: FastAPI) -> None:
    """Register the exception handlers."""

    @app.exception_handler(RequestValidationError)
    async def validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": problems(exc)}, status_code=422)

    @app.exception_handler(NoModelError)
    async def no_model(_request: Request, _exc: NoModelError) -> JSONResponse:
        return JSONResponse({"detail": NO_MODEL}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, _exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; it has been logged"}, status_code=500)
