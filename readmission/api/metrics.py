"""The API's Prometheus metrics: one registry per app, names `api_<what>_<unit>`.

Request counts and latency by route and status come from
prometheus-fastapi-instrumentator (`api_http_requests_total`,
`api_http_request_duration_seconds`); the process collector adds the original
dashboard's `process_resident_memory_bytes` and `process_cpu_seconds_total`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as instrumentator_metrics

from readmission.names import (
    BATCH_ROWS,
    DRIFT_PSI,
    DRIFT_ROWS,
    DRIFT_THRESHOLD,
    HISTORY_FAILURES,
    LOG_DROPPED,
    LOG_QUEUE,
    LOG_WRITE_FAILURES,
    LOG_WRITTEN,
    MODEL_INFO,
    MODEL_LOADED_AT,
    MODEL_PERFORMANCE,
    MODEL_PERFORMANCE_ROWS,
    MODEL_RELOADS,
    MODEL_VERSION,
    PERFORMANCE_FIGURES,
    PERFORMANCE_MARGIN,
    PERFORMANCE_MIN_OUTCOMES,
    PREDICT_FAILURES,
    PREDICTIONS,
    QUEUE_FULL,
    QUEUE_ROWS,
    WITHOUT_HISTORY,
)

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
    5.0,
)


def _replace(gauge: Gauge, values: dict[tuple[str, ...], float]) -> None:
    """Set the gauge's series to `values`, removing the others: a scrape in between sees
    the old value or the new one, never an empty gauge (as `clear()` then `set` would)."""
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    for sample in gauge.collect()[0].samples:
        labels = tuple(sample.labels.values())  # in the gauge's label order
        if labels not in values:
            gauge.remove(*labels)


class ApiMetrics:
    """Every metric the service exports, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # resident memory, CPU seconds
        self.predictions = Counter(
            PREDICTIONS,
            "Predictions served, by predicted class and model version",
            ["prediction", "model_version"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            MODEL_INFO,
            "The model in service (value 1), by name and version",
            ["name", "version"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            MODEL_VERSION,
            "Version number of the model in service (0: none)",
            registry=self.registry,
        )
        self.model_loaded_seconds = Gauge(
            MODEL_LOADED_AT,
            "When the model in service was loaded",
            registry=self.registry,
        )
        self.reloads = Counter(
            MODEL_RELOADS,
            "Model swaps (success) and failed checks or loads (failure)",
            ["result"],
            registry=self.registry,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.batch_rows = Histogram(
            BATCH_ROWS,
            "Encounters scored together by one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=self.registry,
        )
        self.log_write_failures = Counter(
            LOG_WRITE_FAILURES,
            "Failed attempts to write queued predictions to the database",
            registry=self.registry,
        )
        self.log_dropped = Counter(
            LOG_DROPPED,
            "Predictions never written because the queue was full",
            registry=self.registry,
        )
        self.log_written = Counter(
            LOG_WRITTEN,
            "Predictions written to the database",
            registry=self.registry,
        )
        self.log_queue = Gauge(
            LOG_QUEUE,
            "Predictions waiting to be written",
            registry=self.registry,
        )
        self.without_history = Counter(
            WITHOUT_HISTORY,
            "Encounters scored without their patient's history: the look-up was unavailable",
            registry=self.registry,
        )
        self.predict_failures = Counter(
            PREDICT_FAILURES,
            "Requests whose encounters could not be scored (others batched with them are "
            "scored apart)",
            registry=self.registry,
        )
        self.queue_full = Counter(
            QUEUE_FULL,
            "Requests refused with 503 because the scoring queue was full",
            registry=self.registry,
        )
        self.queue_rows = Gauge(
            QUEUE_ROWS, "Encounters waiting to be scored", registry=self.registry
        )
        self.history_failures = Counter(
            HISTORY_FAILURES,
            "Patient-history look-ups that failed (the prediction used no history)",
            registry=self.registry,
        )

        self.drift_psi = Gauge(
            DRIFT_PSI,
            "Population stability index of each input feature: recent requests vs training",
            ["feature"],
            registry=self.registry,
        )
        self.drift_threshold = Gauge(
            DRIFT_THRESHOLD,
            "PSI above which a feature counts as drifted",
            registry=self.registry,
        )
        self.drift_rows = Gauge(
            DRIFT_ROWS,
            "Recent encounters in the drift window",
            registry=self.registry,
        )

        self.performance_figures = Gauge(
            MODEL_PERFORMANCE,
            "Each version's figures over its recent window: realized (outcomes known), "
            "estimated (from the probabilities) and its test split's, by figure",
            ["version", "source", "metric"],
            registry=self.registry,
        )
        self.performance_rows = Gauge(
            MODEL_PERFORMANCE_ROWS,
            "Predictions in each version's recent window, and how many have a known outcome",
            ["version", "kind"],
            registry=self.registry,
        )
        self.performance_margin = Gauge(
            PERFORMANCE_MARGIN,
            "RealizedPerformanceDrop: how far below its test figure a realized <30 ROC-AUC "
            "may fall",
            registry=self.registry,
        )
        self.performance_min_outcomes = Gauge(
            PERFORMANCE_MIN_OUTCOMES,
            "RealizedPerformanceDrop: outcomes a recent window needs before it is judged",
            registry=self.registry,
        )

    def performance(self, windows: list[dict]) -> None:
        """Publish the recent window of every version (`performance.recent`): a figure that
        is unknown has no series."""
        figures: dict[tuple[str, ...], float] = {}
        rows: dict[tuple[str, ...], float] = {}
        for window in windows:
            version = str(window["model_version"])
            rows[(version, "predictions")] = window["predictions"]
            rows[(version, "outcomes")] = window["outcomes"]
            for metric in PERFORMANCE_FIGURES:
                for source in ("realized", "estimated", "test"):
                    value = window.get(f"{source}_{metric}")
                    if value is not None:
                        figures[(version, source, metric)] = value
        _replace(self.performance_figures, figures)
        _replace(self.performance_rows, rows)

    def drift(self, scores: dict[str, float], rows: int) -> None:
        """Publish the drift window's scores (none until it holds enough rows)."""
        self.drift_rows.set(rows)
        _replace(self.drift_psi, {(feature,): value for feature, value in scores.items()})

    def serving(self, name: str, version: str, loaded_at: float) -> None:
        """Record the model now in service."""
        self.model_info.clear()
        self.model_info.labels(name, version).set(1)
        self.model_version.set(float(version) if version.isdigit() else 0)
        self.model_loaded_seconds.set(loaded_at)

    def instrument(self, app: FastAPI) -> None:
        """Count every request by route and status and time it (`HTTP_REQUESTS`,
        `HTTP_DURATION`), and expose this registry at /metrics."""
        instrumentator = Instrumentator(
            should_group_status_codes=False, excluded_handlers=["/metrics"], registry=self.registry
        )
        instrumentator.add(
            instrumentator_metrics.requests(metric_namespace="api", registry=self.registry)
        )
        instrumentator.add(
            instrumentator_metrics.latency(
                metric_namespace="api", buckets=LATENCY_BUCKETS, registry=self.registry
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
