"""The API's ASGI middlewares: the body size limit (413) and unexpected errors (500)."""

from __future__ import annotations

import contextlib
import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


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
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise _TooLargeError
            return message

        async def guarded(message: Message) -> None:
            # FastAPI turns the error raised while it reads the body into its own 400
            # answer: once the body is refused, the app's answer is dropped for the 413.
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLargeError):
            await self.app(scope, counted, guarded)
        if refused and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.limit:,} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_body, send)


class UnexpectedErrors:
    """An unexpected error is a 500 without a trace, and the connection stays usable.

    Not an `exception_handler(Exception)`: Starlette re-raises after such a handler, and
    uvicorn then closes the connection, so a client's next request on it (keep-alive) fails.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for an answer of our own
                raise
            response = JSONResponse(
                {"detail": "internal error; it has been logged"}, status_code=500
            )
            await response(scope, receive, send)


class _TooLargeError(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
