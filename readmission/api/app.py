"""The FastAPI application: assembled here, routes in `routes/`, parts built once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from functools import partial

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as instrumentator_metrics
from pydantic import Field, create_model

from readmission import __version__, db
from readmission.api import errors
from readmission.api.deps import Services
from readmission.api.history import lookup
from readmission.api.metrics import LATENCY_BUCKETS, ApiMetrics
from readmission.api.model_store import ModelStore
from readmission.api.prediction_log import PredictionLog
from readmission.api.predictor import Predictor
from readmission.api.routes import health, model, predict
from readmission.api.schemas import EXAMPLE, Encounter, Message
from readmission.registry import Registry
from readmission.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Readmission risk of diabetic patients (UCI Diabetes 130-US hospitals), served from the
model that carries the `production` alias in the MLflow registry. A newly promoted model
is picked up without a restart.
"""


def _serving_registry(settings: Settings) -> Registry:
    """The registry, its calls failing fast instead of retrying for minutes while serving
    (MLflow reads these two knobs from the environment only; an explicit value wins)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.api.registry_timeout_seconds))
    )
    return Registry.from_settings(settings)


def _store_engine(settings: Settings):
    engine = db.make_engine(settings.database_url)
    try:
        db.create_tables(engine)
    except Exception as exc:  # noqa: BLE001 - serving goes on; logging retries later
        log.warning("data store not ready (%s): history and prediction log will retry", exc)
    return engine


async def _poll(store: ModelStore, every: float) -> None:
    while True:
        await asyncio.to_thread(store.check)
        await asyncio.sleep(every)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve app; `settings` default to the environment's."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = _serving_registry(settings)
        metrics = app.state.metrics
        engine = (
            _store_engine(settings)
            if settings.api.patient_history or settings.api.prediction_log
            else None
        )
        store = ModelStore(
            registry, metrics, settings.api.drift_window, settings.api.drift_min_rows
        )
        metrics.drift_threshold.set(settings.api.drift_psi_threshold)
        history = partial(lookup, engine) if settings.api.patient_history else None
        predictor = Predictor(
            store, metrics, history, max_queued_rows=settings.api.predict_queue_rows
        )
        prediction_log = (
            PredictionLog(
                engine,
                metrics,
                settings.api.prediction_log_queue,
                settings.api.prediction_log_flush_seconds,
            )
            if settings.api.prediction_log
            else None
        )
        app.state.services = Services(settings, metrics, store, predictor, prediction_log)
        poller = asyncio.create_task(_poll(store, settings.api.model_poll_seconds))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            predictor.close()
            if prediction_log is not None:
                await asyncio.to_thread(prediction_log.close)
            if engine is not None:
                engine.dispose()

    app = FastAPI(
        title="Diabetes readmission API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    metrics = ApiMetrics()
    app.state.metrics = metrics
    batch = create_model(
        "EncounterBatch",
        encounters=(
            list[Encounter],
            Field(
                min_length=1,
                max_length=settings.api.max_batch,
                description=f"At most {settings.api.max_batch:,}.",
            ),
        ),
        __config__={
            "extra": "forbid",
            "json_schema_extra": {"examples": [{"encounters": [EXAMPLE]}]},
        },
    )
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(predict.batch_route(batch))
    # Documented here rather than per route: every /model route answers 503 with a `detail`
    # when no model is loaded or the registry cannot be reached.
    app.include_router(
        model.router,
        responses={
            503: {
                "model": Message,
                "description": "No model loaded, or the registry is unreachable",
            },
        },
    )
    errors.install(app)
    app.add_middleware(errors.BodySizeLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(errors.UnexpectedErrors)  # outside the size limit, inside the metrics
    instrumentator = Instrumentator(
        should_group_status_codes=False, excluded_handlers=["/metrics"], registry=metrics.registry
    )
    instrumentator.add(
        instrumentator_metrics.requests(metric_namespace="api", registry=metrics.registry)
    )
    instrumentator.add(
        instrumentator_metrics.latency(
            metric_namespace="api", buckets=LATENCY_BUCKETS, registry=metrics.registry
        )
    )
    instrumentator.instrument(app).expose(
        app,
        endpoint="/metrics",
        tags=["monitoring"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    return app
