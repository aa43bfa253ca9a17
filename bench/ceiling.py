"""The ceiling `bench/serve.py` measures the API against: a bare Starlette endpoint, served
by the same uvicorn as the API (one process, no access log), that only reads and parses the
request's JSON body and answers a constant. What HTTP handling and JSON parsing cost on this
machine, with no validation, cleaning, model or logging: no API can answer faster.

    python -m uvicorn bench.ceiling:app --port 18991
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def predict(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"fields": len(body)})


async def ready(_request: Request) -> Response:
    return JSONResponse({"status": "ready"})


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])
