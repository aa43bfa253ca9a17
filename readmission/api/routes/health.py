"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from readmission.api.deps import ServicesDep
from readmission.api.errors import NO_MODEL

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="A model is loaded (503 otherwise)",
    responses={503: {"description": "No model loaded"}},
)
async def ready(services: ServicesDep) -> JSONResponse:
    loaded = services.store.current
    if loaded is None:  # says why: nothing promoted yet, or the registry unreachable
        return JSONResponse(
            {"detail": NO_MODEL, "registry": services.store.status.to_dict()}, status_code=503
        )
    return JSONResponse({"status": "ready", "model": loaded.ref})
