"""A route that reads its JSON body strictly: UTF-8 JSON only; a key twice in one JSON
object is refused (parsers differ on which value wins, first or last, so a proxy that
checked one could pass the other), and so is a compressed body (the API does not inflate
bodies: a small gzip could expand past the size limit after the check).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            shown = key if len(key) <= 40 else key[:40] + "..."
            # FastAPI turns a JSONDecodeError into a 422 `invalid JSON: <msg>` on `body`
            raise json.JSONDecodeError(f"the key {shown!r} appears twice in one object", "", 0)
        found[key] = value
    return found


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # UTF-8 only (RFC 8259 8.1): json.loads would guess UTF-16 and UTF-32 from bytes
            text = (await self.body()).decode("utf-8")
            self._json = json.loads(text, object_pairs_hook=_unique_keys)
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body may not repeat a key nor come compressed."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                reason = f"Content-Encoding {encoding[:40]} is not accepted: send the JSON as is"
                raise RequestValidationError(
                    [{"type": "content_encoding", "loc": ("body",), "msg": reason, "input": None}]
                )
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict
