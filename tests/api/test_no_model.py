"""An API started before any model exists answers 503 with what to do, then serves the first
model as soon as it is promoted, without a restart."""

from __future__ import annotations

import time

import httpx
import pytest

from readmission import pipeline
from readmission.api import create_app
from readmission.api.schemas import EXAMPLE
from readmission.names import MODEL_NAME
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
        _the_protocols_say_so_in_their_own_shape(client)

        pipeline.train_and_promote(["logistic_regression"], "quick", settings)
        deadline = time.monotonic() + 15
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the first model was not picked up"
            time.sleep(0.1)
        assert client.post("/predict", json=EXAMPLE).status_code == 200
    finally:
        server.stop()


def _the_protocols_say_so_in_their_own_shape(client: httpx.Client) -> None:
    """MLflow's /invocations and the V2 routes: the same 503 and how-to, their shape."""
    scoring = client.post("/invocations", json={"dataframe_records": [EXAMPLE]})
    assert scoring.status_code == 503
    assert scoring.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "python -m readmission train" in scoring.json()["message"]
    assert client.get("/ping").status_code == 503
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert "python -m readmission train" in ready.json()["error"]
    assert client.get(f"/v2/models/{MODEL_NAME}/ready").status_code == 503
    assert client.get(f"/v2/models/{MODEL_NAME}").json()["versions"] == []
    tensors = [
        {
            "name": k,
            "shape": [1],
            "datatype": "INT64" if isinstance(v, int) else "BYTES",
            "data": [v],
        }
        for k, v in EXAMPLE.items()
    ]
    infer = client.post(f"/v2/models/{MODEL_NAME}/infer", json={"inputs": tensors})
    assert infer.status_code == 503
    assert "python -m readmission train" in infer.json()["error"]
    bad = client.post(f"/v2/models/{MODEL_NAME}/infer", json={"inputs": tensors[:3]})
    assert bad.status_code == 400  # still checked
