"""The model in service, the registry's versions, and a forced reload."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from readmission.api.deps import CurrentModel, ServicesDep
from readmission.api.schemas import Importance, Message, ModelDescription, NoModel, Versions
from readmission.text import short_error

router = APIRouter(tags=["model"])


def _registry_status(services) -> dict:
    return services.store.status.to_dict()


@router.get(
    "/model",
    response_model=ModelDescription,
    summary="The model in service, its metrics, when it was loaded",
)
async def model(loaded: CurrentModel, services: ServicesDep) -> dict:
    described, described_at = services.store.description() or (loaded.described, None)
    return {
        **described,
        "alias": loaded.alias,
        "loaded_at": loaded.loaded_at,
        "described_at": described_at or loaded.loaded_at,
        "registry": _registry_status(services),
    }


@router.get(
    "/model/importance",
    response_model=Importance,
    responses={
        409: {"model": Message, "description": "The served model carries no global importance"},
        503: {"model": NoModel, "description": "No model loaded yet"},
    },
    summary="Global importance of the served model's features (mean |contribution| to <30)",
)
async def importance(loaded: CurrentModel) -> dict | JSONResponse:
    """Measured when the model was trained, on a sample of the valid split: each feature's
    mean absolute contribution to the `<30` score (the unit of POST /predict?explain=true)."""
    found = getattr(loaded.model, "importance_", None)
    if not isinstance(found, dict) or not isinstance(found.get("features"), dict):
        detail = (
            f"model v{loaded.version} carries no global importance (trained before it was "
            "measured): train and promote a new model"
        )
        return JSONResponse({"detail": detail}, status_code=409)
    return {
        "model": loaded.ref,
        "target_class": found["target_class"],
        "unit": found["unit"],
        "method": found["method"],
        "rows": found["rows"],
        "features": [
            {"feature": name, "mean_abs_contribution": value}
            for name, value in found["features"].items()
        ],
    }


@router.get(
    "/model/versions",
    response_model=Versions,
    summary="Every registered version with its metrics",
)
async def versions(services: ServicesDep) -> dict | JSONResponse:
    try:
        found = await asyncio.to_thread(services.store.registry.list_versions)
    except Exception as exc:  # noqa: BLE001 - an unreachable registry is a 503, not a 500
        message = short_error(exc)
        return JSONResponse({"detail": f"model registry unreachable: {message}"}, status_code=503)
    return {"versions": found}


@router.post("/model/reload", summary="Check the registry now and load a new Production model")
async def reload(services: ServicesDep) -> dict:
    result = await asyncio.to_thread(services.store.check)
    loaded = services.store.current
    return {"result": result, "model": loaded.ref if loaded else None}
