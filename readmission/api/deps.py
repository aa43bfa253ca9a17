"""What the routes share, as FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import LoadedModel, ModelStore
from readmission.api.prediction_log import PredictionLog
from readmission.api.predictor import NoModelError, Predictor, Scored
from readmission.settings import Settings


@dataclass
class Services:
    """The service's long-lived parts, built once per app."""

    settings: Settings
    metrics: ApiMetrics
    store: ModelStore
    predictor: Predictor
    prediction_log: PredictionLog | None
    #: The data store (history, prediction log, performance); None when neither is on.
    engine: Engine | None = None

    async def score(
        self, records: list[dict], explain: bool = False
    ) -> tuple[list[Scored], LoadedModel]:
        """Score validated encounters (dicts keyed by column key), explained if `explain`,
        and log them: the one path every prediction route takes, whatever protocol its
        request came in."""
        answers, loaded = await self.predictor.score(records, explain)
        if self.prediction_log is not None:
            self.prediction_log.add(records, answers, loaded.name, loaded.version)
        return answers, loaded


async def get_services(request: Request) -> Services:
    """The app's services (async: FastAPI would run a plain function in a thread)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_model(services: ServicesDep) -> LoadedModel:
    """The model in service; without one, the one 503 (`errors.no_model_response`)."""
    loaded = services.store.current
    if loaded is None:
        raise NoModelError
    return loaded


CurrentModel = Annotated[LoadedModel, Depends(current_model)]
