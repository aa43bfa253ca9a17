"""Fixtures of the Streamlit UI tests: the app's folder on sys.path, and a stub of the
inference API served over real HTTP (uvicorn in a thread) with canned answers.

The stub follows the API contract: /health, /ready, /predict (with `explain=true`, an
explanation), /predict/batch, /model, /model/versions, /model/history, /model/importance,
/model/operating-points and /model/card (their figures made by the platform's own
`assessment` and `card` from synthetic risks). Its `mode` switches every prediction and
model endpoint to a failure:
`invalid` (422 with field details), `no_model` (503), `broken` (500), `slow` (answers
after `slow_seconds`); `registry_down` only marks the registry unreachable in GET /model;
`unexplainable` refuses explain=true (409) and GET /model/importance (409) only.
It records the bodies it received, and each request's path with the client's port (one
port for many requests: one connection, kept alive and reused).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

UI_DIR = Path(__file__).resolve().parents[2] / "streamlit"
APP_PATH = UI_DIR / "streamlit_app.py"
if str(UI_DIR) not in sys.path:
    sys.path.insert(0, str(UI_DIR))  # as `streamlit run` does for the app's own modules

MODEL_REF = {"name": "diabetes-readmission", "version": "3", "alias": "production"}
PROBABILITIES = {"NO": 0.51, ">30": 0.33, "<30": 0.16}
NO_MODEL = "no model loaded: train one with `make run` or `python -m readmission train`"
CLASSES = ("NO", ">30", "<30")
EXPLANATION = {
    "target_class": "<30",
    "unit": "log-odds",
    "baseline": -2.2,
    "score": -1.6,
    "raising": [
        {"feature": "number_inpatient", "value": 2, "contribution": 0.41},
        {"feature": "admission_source_id_code", "value": "Emergency Room", "contribution": 0.2},
    ],
    "lowering": [{"feature": "race", "value": None, "contribution": -0.01}],
    "note": None,
}
IMPORTANCE = {
    "model": MODEL_REF,
    "target_class": "<30",
    "unit": "log-odds",
    "method": "TreeSHAP (path-dependent)",
    "rows": 2000,
    "features": [
        {"feature": "number_inpatient", "mean_abs_contribution": 0.3},
        {"feature": "discharge_disposition_id_code", "mean_abs_contribution": 0.2},
        {"feature": "age_years", "mean_abs_contribution": 0.05},
    ],
}
UNEXPLAINABLE = "model v3 cannot be explained: no explanation method for X"
MAX_BATCH = 1_000
TIER_STARTS = {"high": 0.21, "medium": 0.14, "low": 0.0}


def _assessed() -> dict[str, Any]:
    """An assessment as training makes one, of synthetic risks."""
    from tests.support.assessments import synthetic_assessment

    return synthetic_assessment(3_000, rows_per_patient=1, resamples=30)


ASSESSED = _assessed()


def registry_version(
    number: str,
    stage: str,
    aliases: list[str],
    decision: str,
    promoted_at: str | None,
    valid_f1: float,
) -> dict[str, Any]:
    """One version as GET /model/versions describes it."""
    tags = {"family": "hist_gradient_boosting", "promotion_decision": decision}
    if promoted_at:
        tags["promoted_at"] = promoted_at
    return {
        "name": "diabetes-readmission",
        "version": number,
        "run_id": f"run{number}" * 4,
        "stage": stage,
        "aliases": aliases,
        "tags": tags,
        "metrics": {
            "valid_macro_f1": valid_f1,
            "test_macro_f1": valid_f1 - 0.007,
            "test_roc_auc_lt30": 0.686,
        },
        "created_at": f"2026-11-2{number}T10:00:00+00:00",
    }


#: The moves of the production alias as GET /model/history gives them, newest first.
MOVES = [
    {
        "number": number,
        "at": at,
        "alias": "production",
        "action": action,
        "from_version": before,
        "to_version": after,
        "reason": reason,
        "by": by,
    }
    for number, at, action, before, after, reason, by in [
        (3, "2026-11-23T10:05:00+00:00", "promote", "1", "3", "valid_macro_f1 0.48", "dag run"),
        (2, "2026-11-22T09:00:00+00:00", "rollback", "2", "1", "odd tiers on ward 4", "cli"),
        (1, "2026-11-21T10:05:00+00:00", "promote", None, "1", "first model", "dag run"),
    ]
]

VERSIONS = [
    registry_version("3", "Production", ["production"], "promoted", "2026-11-23T10:05:00Z", 0.48),
    registry_version("2", "Archived", [], "rejected", None, 0.47),
    registry_version("1", "Archived", [], "promoted", "2026-11-21T10:05:00Z", 0.46),
]


@dataclass
class StubApi:
    """The stub's address, its failure mode and what it received."""

    url: str
    mode: str = "ok"
    slow_seconds: float = 2.0
    predict_bodies: list[dict[str, Any]] = field(default_factory=list)
    predict_queries: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)

    def reset(self) -> None:
        self.mode = "ok"
        self.predict_bodies.clear()
        self.predict_queries.clear()
        self.batch_sizes.clear()
        self.requests.clear()

    def calls(self, path: str) -> int:
        """How many requests asked for `path`."""
        return sum(asked == path for asked, _port in self.requests)


def _failure(stub: StubApi, field_name: str = "num_lab_procedures") -> JSONResponse | None:
    """The answer of the stub's failure mode, None in mode `ok`."""
    if stub.mode == "slow":
        time.sleep(stub.slow_seconds)
    if stub.mode == "no_model":
        return JSONResponse({"detail": NO_MODEL}, status_code=503)
    if stub.mode == "broken":
        return JSONResponse({"detail": "internal error"}, status_code=500)
    if stub.mode == "invalid":
        detail = [{"field": field_name, "reason": "must be <= 300", "input": 999}]
        return JSONResponse({"detail": detail}, status_code=422)
    return None


def _too_many_labs(encounter: dict[str, Any]) -> bool:
    value = encounter.get("num_lab_procedures")
    return isinstance(value, int) and value > 300


def build_stub_app(stub: StubApi) -> FastAPI:
    """A FastAPI app answering like the inference API, canned."""
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next):
        stub.requests.append((request.url.path, request.client.port if request.client else 0))
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> Any:
        return _failure(stub) or {"status": "ready", "model": MODEL_REF}

    @app.post("/predict")
    def predict(request: Request, body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        stub.predict_bodies.append(body)
        stub.predict_queries.append(str(request.url.query))
        if failure := _failure(stub):
            return failure
        explain = request.query_params.get("explain") == "true"
        if explain and stub.mode == "unexplainable":
            return JSONResponse({"detail": UNEXPLAINABLE}, status_code=409)
        if _too_many_labs(body):
            return _failure(StubApi(stub.url, mode="invalid"))
        known = body.get("patient_nbr") is not None
        return {
            "prediction": "<30",
            "probabilities": PROBABILITIES,
            "readmission_30d_risk": PROBABILITIES["<30"],
            "risk_tier": "medium",
            "risk_tier_starts": TIER_STARTS,
            "history": {
                "status": "looked_up" if known else "no_patient",
                "earlier_encounters": 1 if known else 0,
            },
            "model": MODEL_REF,
            **({"explanation": EXPLANATION} if explain else {}),
        }

    @app.post("/predict/batch")
    def predict_batch(body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        encounters = body.get("encounters") or []
        stub.batch_sizes.append(len(encounters))
        if failure := _failure(stub, "encounters.1.num_lab_procedures"):
            return failure
        if len(encounters) > MAX_BATCH:
            detail = [
                {
                    "field": "encounters",
                    "reason": f"at most {MAX_BATCH} encounters",
                    "input": len(encounters),
                }
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        bad = [
            {
                "field": f"encounters.{i}.num_lab_procedures",
                "reason": "must be <= 300",
                "input": e["num_lab_procedures"],
            }
            for i, e in enumerate(encounters)
            if _too_many_labs(e)
        ]
        if bad:
            return JSONResponse({"detail": bad}, status_code=422)
        predictions = []
        for i, _ in enumerate(encounters):
            probabilities = dict(zip(CLASSES, (0.5, 0.3, 0.2), strict=True))
            predictions.append(
                {
                    "prediction": CLASSES[i % 3],
                    "probabilities": probabilities,
                    "readmission_30d_risk": probabilities["<30"],
                    "history": {"status": "no_patient", "earlier_encounters": 0},
                }
            )
        return {"predictions": predictions, "model": MODEL_REF}

    @app.get("/model")
    def model() -> Any:
        if failure := _failure(stub):
            return failure
        registry = {
            "reachable": stub.mode != "registry_down",
            "message": "connection refused",
            "checked_at": "2026-11-23T11:00:00Z",
        }
        return {
            **VERSIONS[0],
            "alias": "production",
            "loaded_at": "2026-11-23T10:06:00Z",
            "registry": registry,
        }

    @app.get("/model/operating-points")
    def operating_points() -> Any:
        if failure := _failure(stub):
            return failure
        return {
            "model": MODEL_REF,
            "target": "<30",
            "tiers": {
                "high": {"top_percent": 10, "threshold": TIER_STARTS["high"]},
                "medium": {"top_percent": 30, "threshold": TIER_STARTS["medium"]},
            },
            "operating_points": ASSESSED["operating_points"],
            "calibration": ASSESSED["calibration"],
            "intervals": ASSESSED["bootstrap"],
        }

    @app.get("/model/card")
    def model_card(format: str = "json") -> Any:
        from fastapi.responses import PlainTextResponse

        from readmission import card

        if failure := _failure(stub):
            return failure
        built = card.build(ASSESSED, None, VERSIONS[0])
        if format == "markdown":
            return PlainTextResponse(card.markdown(built), media_type="text/markdown")
        return built

    @app.get("/model/importance")
    def importance() -> Any:
        if stub.mode == "unexplainable":
            detail = "model v3 carries no global importance"
            return JSONResponse({"detail": detail}, status_code=409)
        return _failure(stub) or IMPORTANCE

    @app.get("/model/history")
    def history() -> Any:
        if stub.mode == "no_model":
            detail = "model registry unreachable: connection refused"
            return JSONResponse({"detail": detail}, status_code=503)
        return _failure(stub) or {"alias": "production", "moves": MOVES}

    @app.get("/model/versions")
    def versions() -> Any:
        if stub.mode == "no_model":
            detail = "model registry unreachable: connection refused"
            return JSONResponse({"detail": detail}, status_code=503)
        return _failure(stub) or {"versions": VERSIONS}

    return app


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers that take a port number)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def stub_server() -> Iterator[StubApi]:
    """The stub API on a free port for the whole session (the socket is bound first, so
    the port cannot be taken in between)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    stub = StubApi(url=f"http://{host}:{port}")
    config = uvicorn.Config(build_stub_app(stub), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the stub API did not start")
        time.sleep(0.01)
    try:
        yield stub
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def stub_api(stub_server: StubApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[StubApi]:
    """The stub API in mode `ok`, its URL in API_URL for the app; the app's caches (the
    shared client, the registry's answers) start empty."""
    stub_server.reset()
    st.cache_data.clear()
    st.cache_resource.clear()
    monkeypatch.setenv("API_URL", stub_server.url)
    monkeypatch.setenv("MLFLOW_UI_URL", "http://mlflow.test:5000")
    monkeypatch.delenv("API_TIMEOUT_SECONDS", raising=False)
    yield stub_server
    stub_server.reset()


@pytest.fixture
def api_down(monkeypatch: pytest.MonkeyPatch) -> str:
    """API_URL pointing at a port where nothing listens."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", url)
    return url
