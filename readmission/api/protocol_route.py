"""Routes that speak another protocol (MLflow's scoring server, the Open Inference Protocol)
refuse in that protocol's error shape, for the same reasons as the rest of the API.

Around such a route, validation problems and an unreadable body become a 400 (both
protocols' "bad request"), no model and a full queue the usual 503s, and a `ProtocolError`
the route or its `prepare` raises (an unknown model, say) its own status. The subclass's
`refusal` shapes the body; this API's list of problems (`{"field", "reason", "input"}`)
stays in `detail`, so a client of either protocol still learns which field was wrong and
why. The body is read as strictly as everywhere else (`StrictJsonRoute`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from readmission.api import errors
from readmission.api.predictor import NoModelError, QueueFullError
from readmission.api.schemas import Message
from readmission.api.strict_json import StrictJsonRoute

#: Documented on every protocol route: what answers there in this API's own shape.
OTHER_CLIENT_ERRORS = {
    "4XX": {
        "model": Message,
        "description": "Any other client error, in this API's shape: a body over "
        "API_MAX_BODY_BYTES (413), a method the route does not take (405)",
    }
}


def problem(loc: tuple[str | int, ...], message: str, value: Any = None) -> dict[str, Any]:
    """A problem the route finds itself, as pydantic reports one (`loc` within the body)."""
    return {"type": "value_error", "loc": ("body", *loc), "msg": message, "input": value}


def with_body(request: Request, body: bytes | None = None) -> Request:
    """The request, read as JSON: its body replaced by `body` when given (a protocol's
    other encoding, converted), its Content-Type made application/json."""
    replaced = (b"content-type", b"content-length") if body is not None else (b"content-type",)
    headers = [(k, v) for k, v in request.scope["headers"] if k not in replaced]
    headers.append((b"content-type", b"application/json"))
    if body is None:
        return Request({**request.scope, "headers": headers}, request.receive)
    headers.append((b"content-length", b"%d" % len(body)))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({**request.scope, "headers": headers}, receive)


class ProtocolError(Exception):
    """A refusal the protocol defines (an unknown model, an unknown output...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ProtocolRoute(StrictJsonRoute):
    """A route whose refusals take its protocol's shape (`refusal`)."""

    @staticmethod
    def refusal(status: int, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        """The protocol's error body; `extra` holds `detail` (the problems) or `registry`."""
        raise NotImplementedError

    async def prepare(self, request: Request) -> Request:
        """The request the route reads; a subclass may refuse it or rewrite its body."""
        return request

    def _refuse(
        self,
        status: int,
        message: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        body = self.refusal(status, message, extra or {})
        return JSONResponse(body, status_code=status, headers=headers)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(await self.prepare(request))
            except RequestValidationError as exc:
                found = errors.problems(exc)
                return self._refuse(400, errors.in_one_line(found), {"detail": found})
            except StarletteHTTPException as exc:
                if exc.status_code != 400 or exc.__cause__ is None:
                    raise
                reason = errors.unreadable(exc.__cause__)  # the body could not be read
                problem = {"field": "body", "reason": reason, "input": None}
                return self._refuse(400, reason, {"detail": [problem]})
            except NoModelError:
                registry = request.app.state.services.store.status.to_dict()
                return self._refuse(503, errors.NO_MODEL, {"registry": registry})
            except QueueFullError:
                retry = {"Retry-After": str(errors.RETRY_AFTER_SECONDS)}
                return self._refuse(503, errors.QUEUE_FULL, headers=retry)
            except ProtocolError as exc:
                return self._refuse(exc.status, exc.message)

        return guarded
