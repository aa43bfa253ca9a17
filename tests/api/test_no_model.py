"""An API started before any model exists answers 503 with what to do, then serves the first
model as soon as it is promoted, without a restart."""

from __future__ import annotations

import time

import httpx
import pytest

from readmission import pipeline
from readmission.api import create_app
from readmission.api.schemas import EXAMPLE
from tests.support.served import build_store
from tests.support.servers import ServerThread

pytestmark = pytest.mark.slow


def test_no_model_is_503_with_a_how_to_then_the_first_model_is_served(tmp_path, mlflow_module):
    settings = build_store(tmp_path, mlflow_module, rows=1_500, API_MODEL_POLL_SECONDS=0.3)
    server = ServerThread(create_app(settings)).start()
    try:
        client = httpx.Client(base_url=server.url, timeout=30)
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        refused = client.post("/predict", json=EXAMPLE)
        assert refused.status_code == 503
        assert "python -m readmission train" in refused.json()["detail"]
        assert client.get("/model").status_code == 503
        assert client.post("/predict", json={"race": "Martian"}).status_code == 422  # still checked

        pipeline.train_and_promote(["logistic_regression"], "quick", settings)
        deadline = time.monotonic() + 15
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the first model was not picked up"
            time.sleep(0.1)
        assert client.post("/predict", json=EXAMPLE).status_code == 200
    finally:
        server.stop()
