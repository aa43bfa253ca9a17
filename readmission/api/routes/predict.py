"""Predictions: one encounter, or a batch; their bodies are read strictly (`strict_json`)."""

from typing import Annotated

from fastapi import APIRouter, Query

from readmission.api.deps import ServicesDep
from readmission.api.model_store import LoadedModel
from readmission.api.predictor import Scored
from readmission.api.schemas import (
    BatchResponse,
    Encounter,
    Message,
    PredictionResponse,
    ValidationProblems,
    encounter_records,
)
from readmission.api.strict_json import StrictJsonRoute

router = APIRouter(tags=["predict"], route_class=StrictJsonRoute)
REFUSALS = {
    413: {"model": Message, "description": "Body too large"},
    422: {
        "model": ValidationProblems,
        "description": "Invalid input: each problem names the field and the reason",
    },
    409: {
        "model": Message,
        "description": "explain=true, but the served model cannot be explained (the reason)",
    },
    503: {
        "model": Message,
        "description": "No model loaded yet, or the scoring queue is full (Retry-After)",
    },
}


#: The query parameter asking for explanations.
Explain = Annotated[
    bool,
    Query(
        description="Also return, per encounter, the 5 features raising and the 5 lowering "
        "its <30 (readmission within 30 days) score most, with the patient's value and the "
        "exact contribution (TreeSHAP for tree models, linear contributions otherwise)"
    ),
]


def _answer(scored: Scored, loaded: LoadedModel) -> dict:
    history = {
        "status": scored.history.status,
        "earlier_encounters": scored.history.earlier_encounters,
    }
    answer = {
        "prediction": scored.prediction,
        "probabilities": scored.probabilities,
        "readmission_30d_risk": scored.risk_30d,
        "risk_tier": scored.tier,
        "risk_tier_starts": None if loaded.tiers is None else loaded.tiers.thresholds(),
        "history": history,
    }
    if scored.explanation is not None:
        answer["explanation"] = scored.explanation.to_dict()
    return answer


@router.post(
    "/predict",
    response_model=PredictionResponse,
    response_model_exclude_unset=True,
    responses=REFUSALS,
    summary="Readmission risk of one encounter",
)
async def predict(encounter: Encounter, services: ServicesDep, explain: Explain = False) -> dict:
    """Score one encounter: UCI column names (or the original clients' spellings); missing
    values as null, "?" or absent. Identifiers and `readmitted` are accepted and ignored
    by the model; a `patient_nbr` lets the API add the patient's earlier encounters."""
    answers, loaded = await services.score(encounter_records([encounter]), explain)
    return {**_answer(answers[0], loaded), "model": loaded.ref}


def batch_route(batch_model: type) -> APIRouter:
    """The batch route, typed with the app's batch model (its length limit is a setting)."""
    batch_router = APIRouter(tags=["predict"], route_class=StrictJsonRoute)

    @batch_router.post(
        "/predict/batch",
        response_model=BatchResponse,
        response_model_exclude_unset=True,
        responses=REFUSALS,
        summary="Readmission risk of up to API_MAX_BATCH encounters",
    )
    async def predict_batch(
        batch: batch_model, services: ServicesDep, explain: Explain = False
    ) -> dict:
        """Score several encounters in one call; answers come in request order."""
        answers, loaded = await services.score(encounter_records(batch.encounters), explain)
        return {"predictions": [_answer(a, loaded) for a in answers], "model": loaded.ref}

    return batch_router
