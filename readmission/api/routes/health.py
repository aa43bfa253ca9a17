"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from readmission.api.deps import CurrentModel

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="A model is loaded (503 otherwise)",
    responses={503: {"description": "No model loaded"}},
)
async def ready(loaded: CurrentModel) -> dict:
    return {"status": "ready", "model": loaded.ref}
