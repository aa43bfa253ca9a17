"""The FastAPI application: assembled here, routes in `routes/`, parts built once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from functools import partial

from fastapi import FastAPI

from readmission import __version__, db
from readmission.api import errors, middleware
from readmission.api.deps import Services
from readmission.api.history import lookup
from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import ModelStore
from readmission.api.prediction_log import PredictionLog
from readmission.api.predictor import Predictor
from readmission.api.routes import health, inference_v2, invocations, model, predict
from readmission.api.schemas import Message, encounter_batch
from readmission.registry import Registry
from readmission.settings import Settings, get_settings
from readmission.text import short_error

log = logging.getLogger(__name__)

DESCRIPTION = """
Readmission risk of diabetic patients (UCI Diabetes 130-US hospitals), served from the
model that carries the `production` alias in the MLflow registry. A newly promoted model
is picked up without a restart.
"""


#: Documented once for the /model routes: each answers 503 with a `detail` when no model
#: is loaded or the registry cannot be reached.
NO_MODEL_OR_REGISTRY = {
    503: {"model": Message, "description": "No model loaded, or the registry is unreachable"}
}


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


def _shadow_log(prediction_log: PredictionLog | None):
    """The challenger's answers into the prediction log, as `shadow` rows."""
    if prediction_log is None:
        return None

    def log_shadow(records: list[dict], answers: list, loaded) -> None:
        prediction_log.add(records, answers, loaded.name, loaded.version, role="shadow")

    return log_shadow


def _read_performance(engine, metrics: ApiMetrics) -> None:
    from readmission import performance

    try:
        metrics.performance(performance.recent(engine))
    except Exception as exc:  # noqa: BLE001 - the gauges keep their last values; retried
        log.warning("could not read the model performance table: %s", short_error(exc))


async def _poll_performance(engine, metrics: ApiMetrics, every: float) -> None:
    """Export what model_performance_pipeline last wrote, every `every` seconds."""
    while True:
        await asyncio.to_thread(_read_performance, engine, metrics)
        await asyncio.sleep(every)


def _lifespan(settings: Settings):
    """Build the service's parts at start-up, in order, and take them down at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        api, metrics = settings.api, app.state.metrics
        engine = _store_engine(settings) if api.patient_history or api.prediction_log else None
        store = ModelStore(
            _serving_registry(settings),
            metrics,
            api.drift_window,
            api.drift_min_rows,
            settings.decision,
            shadow=api.shadow,
        )
        metrics.drift_threshold.set(api.drift_psi_threshold)
        metrics.performance_margin.set(settings.performance.drop_margin)
        metrics.performance_min_outcomes.set(settings.performance.min_outcomes)
        history = partial(lookup, engine) if api.patient_history else None
        prediction_log = None
        if api.prediction_log:
            prediction_log = PredictionLog(
                engine, metrics, api.prediction_log_queue, api.prediction_log_flush_seconds
            )
        predictor = Predictor(
            store,
            metrics,
            history,
            max_queued_rows=api.predict_queue_rows,
            on_shadow=_shadow_log(prediction_log),
        )
        app.state.services = Services(settings, metrics, store, predictor, prediction_log, engine)
        pollers = [asyncio.create_task(_poll(store, api.model_poll_seconds))]
        if engine is not None:
            every = settings.performance.refresh_seconds
            pollers.append(asyncio.create_task(_poll_performance(engine, metrics, every)))
        try:
            yield
        finally:
            for poller in pollers:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            predictor.close()
            if prediction_log is not None:
                await asyncio.to_thread(prediction_log.close)
            if engine is not None:
                engine.dispose()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve app; `settings` default to the environment's."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Diabetes readmission API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings),
    )
    app.state.metrics = ApiMetrics()
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(predict.batch_route(encounter_batch(settings.api.max_batch)))
    app.include_router(model.router, responses=NO_MODEL_OR_REGISTRY)
    app.include_router(invocations.invocations_router(settings.api.max_batch))
    app.include_router(inference_v2.inference_router(settings.api.max_batch))
    errors.install(app)
    app.add_middleware(middleware.BodySizeLimit, limit=settings.api.max_body_bytes)
    app.add_middleware(middleware.UnexpectedErrors)  # outside the size limit, inside the metrics
    app.state.metrics.instrument(app)
    return app
