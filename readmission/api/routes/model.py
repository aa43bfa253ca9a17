"""The model in service, the registry's versions, and a forced reload."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from readmission import card, performance
from readmission.api.deps import CurrentModel, ServicesDep
from readmission.api.model_store import LoadedModel
from readmission.api.schemas import (
    History,
    Importance,
    Message,
    ModelCard,
    ModelDescription,
    NoModel,
    OperatingPoints,
    Shadow,
    ValidationProblems,
    Versions,
)
from readmission.names import PRODUCTION_ALIAS
from readmission.text import short_error

log = logging.getLogger(__name__)
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


@router.get(
    "/model/history",
    response_model=History,
    summary="Every move of the production alias: promotions and rollbacks, newest first",
)
async def history(services: ServicesDep) -> dict | JSONResponse:
    """When, from which version to which, why, and by what (`cli`, or the training DAG's
    run); read from the registry at each call."""
    try:
        moves = await asyncio.to_thread(services.store.registry.history)
    except Exception as exc:  # noqa: BLE001 - an unreachable registry is a 503, not a 500
        message = short_error(exc)
        return JSONResponse({"detail": f"model registry unreachable: {message}"}, status_code=503)
    return {"alias": PRODUCTION_ALIAS, "moves": [move.to_dict() for move in moves]}


@router.get(
    "/model/shadow",
    response_model=Shadow,
    responses={
        409: {"model": Message, "description": "Shadowing is off (API_SHADOW=false)"},
    },
    summary="The challenger scored beside the served model: agreement, risk gap, latency",
)
async def shadow(services: ServicesDep) -> dict | JSONResponse:
    """Since the served or the challenger version last changed: how often both chose the
    same class and tier, the mean absolute difference of their `<30` risks, the
    challenger's time per call; and, per version, the realized and estimated figures
    `model_performance_pipeline` last measured (both answers are logged)."""
    if not services.settings.api.shadow:
        detail = "shadow scoring is off: start the API with API_SHADOW=true"
        return JSONResponse({"detail": detail}, status_code=409)
    challenger = services.store.challenger
    current = services.store.current
    measured = []
    if services.engine is not None and (challenger or current):
        versions = {m.version for m in (current, challenger) if m is not None}
        try:
            found = await asyncio.to_thread(performance.recent, services.engine)
        except Exception as exc:  # noqa: BLE001 - the comparison stands without it
            log.warning("could not read the model performance table: %s", short_error(exc))
            found = []
        measured = [performance.summary_line(r) for r in found if r["model_version"] in versions]
    return {
        "challenger": None if challenger is None else challenger.ref,
        "served": None if current is None else current.ref,
        "comparison": services.predictor.shadow.to_dict(),
        "performance": measured,
    }


@router.post("/model/reload", summary="Check the registry now and load a new Production model")
async def reload(services: ServicesDep) -> dict:
    result = await asyncio.to_thread(services.store.check)
    loaded = services.store.current
    return {"result": result, "model": loaded.ref if loaded else None}


def _not_assessed(loaded: LoadedModel) -> JSONResponse:
    return JSONResponse(
        {
            "detail": f"{loaded.name} v{loaded.version} carries no operating points: it was "
            "trained before models were assessed; train and promote a new version"
        },
        status_code=404,
    )


@router.get(
    "/model/operating-points",
    response_model=OperatingPoints,
    responses={404: {"model": Message, "description": "The model carries no assessment"}},
    summary="Risk thresholds for flagging the top k % of discharges, and what each achieves",
)
async def operating_points(loaded: CurrentModel) -> dict | JSONResponse:
    """For k in 5, 10, 20, 30: the `<30` risk threshold (chosen on the valid split) and, on
    the test split, the flagged count, sensitivity, PPV and number needed to evaluate, each
    with a 95 % interval from a bootstrap over patients; the tiers /predict answers with."""
    assessed = getattr(loaded.model, "assessment_", None)
    if assessed is None or loaded.tiers is None:
        return _not_assessed(loaded)
    return {
        "model": loaded.ref,
        "target": assessed["target"],
        "tiers": loaded.tiers.to_dict(),
        "operating_points": assessed["operating_points"],
        "calibration": assessed["calibration"],
        "intervals": assessed["bootstrap"],
    }


@router.get(
    "/model/card",
    response_model=ModelCard,
    responses={
        200: {"content": {"text/markdown": {"schema": {"type": "string"}}}},
        422: {"model": ValidationProblems, "description": "An unknown format"},
    },
    summary="The served version's model card (JSON, or Markdown with ?format=markdown)",
)
async def model_card(
    loaded: CurrentModel,
    services: ServicesDep,
    format: Literal["json", "markdown"] = Query("json", description="json, or markdown for people"),
) -> dict | PlainTextResponse:
    """Intended use, data, metrics, calibration, operating points, subgroups with intervals,
    the promotion decision and known limitations of the version in service."""
    described, _ = services.store.description() or (loaded.described, None)
    built = card.build(
        getattr(loaded.model, "assessment_", None),
        getattr(loaded.model, "lineage_", None),
        described,
        services.store.history,
    )
    if format == "markdown":
        return PlainTextResponse(card.markdown(built), media_type="text/markdown")
    return built
