"""What the routes share, as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import LoadedModel, ModelStore
from readmission.api.prediction_log import PredictionLog
from readmission.api.predictor import NoModelError, Predictor
from readmission.settings import Settings


@dataclass
class Services:
    """The service's long-lived parts, built once per app."""

    settings: Settings
    metrics: ApiMetrics
    store: ModelStore
    predictor: Predictor
    prediction_log: PredictionLog | None


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def current_model(services: ServicesDep) -> LoadedModel:
    """The model in service; without one, the one 503 (`errors.no_model_response`)."""
    loaded = services.store.current
    if loaded is None:
        raise NoModelError
    return loaded


CurrentModel = Annotated[LoadedModel, Depends(current_model)]
