"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from readmission.api.deps import CurrentModel
from readmission.api.schemas import NoModel, Ready

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Ready,
    summary="A model is loaded (503 otherwise)",
    responses={503: {"model": NoModel, "description": "No model loaded"}},
)
async def ready(loaded: CurrentModel) -> dict:
    return {"status": "ready", "model": loaded.ref}
