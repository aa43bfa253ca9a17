"""Predictions: one encounter, or a batch.

Their bodies are read strictly: UTF-8 JSON only; a key twice in one JSON object is refused
(parsers differ on which value wins, first or last, so a proxy that checked one could pass
the other), and so is a compressed body (the API does not inflate bodies: a small gzip
could expand past the size limit after the check).
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from readmission.api.deps import Services, ServicesDep
from readmission.api.predictor import Scored
from readmission.api.schemas import (
    BatchResponse,
    Encounter,
    Message,
    PredictionResponse,
    ValidationProblems,
    encounter_records,
)


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


router = APIRouter(tags=["predict"], route_class=StrictJsonRoute)
REFUSALS = {
    413: {"model": Message, "description": "Body too large"},
    422: {
        "model": ValidationProblems,
        "description": "Invalid input: each problem names the field and the reason",
    },
    503: {
        "model": Message,
        "description": "No model loaded yet, or the scoring queue is full (Retry-After)",
    },
}


def _answer(scored: Scored) -> dict:
    history = {
        "status": scored.history.status,
        "earlier_encounters": scored.history.earlier_encounters,
    }
    return {
        "prediction": scored.prediction,
        "probabilities": scored.probabilities,
        "readmission_30d_risk": scored.risk_30d,
        "history": history,
    }


async def _score(services: Services, records: list[dict]):
    answers, loaded = await services.predictor.score(records)
    if services.prediction_log is not None:
        services.prediction_log.add(records, answers, loaded.name, loaded.version)
    return answers, loaded


@router.post(
    "/predict",
    response_model=PredictionResponse,
    responses=REFUSALS,
    summary="Readmission risk of one encounter",
)
async def predict(encounter: Encounter, services: ServicesDep) -> dict:
    """Score one encounter: UCI column names (or the original clients' spellings); missing
    values as null, "?" or absent. Identifiers and `readmitted` are accepted and ignored
    by the model; a `patient_nbr` lets the API add the patient's earlier encounters."""
    answers, loaded = await _score(services, encounter_records([encounter]))
    return {**_answer(answers[0]), "model": loaded.ref}


def batch_route(batch_model: type) -> APIRouter:
    """The batch route, typed with the app's batch model (its length limit is a setting)."""
    batch_router = APIRouter(tags=["predict"], route_class=StrictJsonRoute)

    @batch_router.post(
        "/predict/batch",
        response_model=BatchResponse,
        responses=REFUSALS,
        summary="Readmission risk of up to API_MAX_BATCH encounters",
    )
    async def predict_batch(batch: batch_model, services: ServicesDep) -> dict:
        """Score several encounters in one call; answers come in request order."""
        answers, loaded = await _score(services, encounter_records(batch.encounters))
        return {"predictions": [_answer(a) for a in answers], "model": loaded.ref}

    return batch_router
