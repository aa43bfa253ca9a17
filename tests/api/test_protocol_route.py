"""How the protocol routes refuse, without a model: each reason in each protocol's shape,
and CSV read as pandas writes it."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from readmission.api import errors
from readmission.api.mlflow_scoring import ScoringRoute, csv_records
from readmission.api.open_inference import InferenceRoute
from readmission.api.predictor import NoModelError, QueueFullError
from readmission.api.protocol_route import ProtocolError
from tests.support.servers import ServerThread

REGISTRY = {"reachable": False, "checked_at": None, "message": "registry unreachable: boom"}


class Body(BaseModel):
    count: int


def _app(route_class: type) -> FastAPI:
    """An app whose routes raise each refusal the protocol routes know."""
    app = FastAPI()
    app.state.services = SimpleNamespace(
        store=SimpleNamespace(status=SimpleNamespace(to_dict=lambda: REGISTRY))
    )
    router = APIRouter(route_class=route_class)
    raised = {
        "no-model": NoModelError(),
        "queue-full": QueueFullError(),
        "not-served": ProtocolError(404, "model 'x' is not served here"),
    }

    @router.post("/echo")
    async def echo(body: Body) -> dict:
        return {"count": body.count}

    @router.post("/raise/{what}")
    async def fail(what: str) -> dict:
        raise raised[what]

    app.include_router(router)
    return app


@pytest.fixture(scope="module", params=[ScoringRoute, InferenceRoute], ids=["mlflow", "v2"])
def served(request) -> Iterator[tuple[type, httpx.Client]]:
    server = ServerThread(_app(request.param)).start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield request.param, client
    server.stop()


SHAPES = {
    ScoringRoute: lambda body: (body["error_code"], body["message"]),
    InferenceRoute: lambda body: (None, body["error"]),
}


def test_each_refusal_takes_the_protocols_shape(served):
    route_class, client = served
    shape = SHAPES[route_class]

    invalid = client.post("/echo", json={"count": "many"})
    assert invalid.status_code == 400
    code, message = shape(invalid.json())
    assert code in (None, "BAD_REQUEST")
    assert message.startswith("invalid input: count:")
    assert invalid.json()["detail"][0]["field"] == "count"

    unreadable = client.post(
        "/echo", content=b'{"count": "\xff"}', headers={"content-type": "application/json"}
    )
    assert unreadable.status_code == 400
    assert "not UTF-8" in shape(unreadable.json())[1]

    no_model = client.post("/raise/no-model")
    assert no_model.status_code == 503
    assert shape(no_model.json())[1] == errors.NO_MODEL
    assert no_model.json()["registry"] == REGISTRY

    full = client.post("/raise/queue-full")
    assert full.status_code == 503
    assert full.headers["retry-after"] == str(errors.RETRY_AFTER_SECONDS)
    assert shape(full.json())[1] == errors.QUEUE_FULL

    not_served = client.post("/raise/not-served")
    assert not_served.status_code == 404
    assert "not served" in shape(not_served.json())[1]

    assert client.post("/echo", json={"count": 3}).json() == {"count": 3}


@pytest.mark.parametrize("served", [ScoringRoute], ids=["mlflow"], indirect=True)
def test_mlflow_refusals_carry_mlflows_error_codes(served):
    _, client = served
    assert client.post("/raise/no-model").json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert client.post("/echo", json={}).json()["error_code"] == "BAD_REQUEST"


def test_a_compressed_body_is_refused_in_the_protocols_shape(served):
    route_class, client = served
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    answer = client.post("/echo", content=b"\x1f\x8b", headers=headers)
    assert answer.status_code == 400
    assert "Content-Encoding gzip" in SHAPES[route_class](answer.json())[1]


def test_csv_is_read_as_pandas_writes_it():
    frame = pd.DataFrame(
        {
            "race": ["Asian", None],
            "num_procedures": [1, 2],
            "encounter_id": [10.0, float("nan")],
            "time_in_hospital": ["3", "?"],
        }
    )
    records = csv_records(frame.to_csv().encode())  # the unnamed index column dropped
    assert records == [
        {"race": "Asian", "num_procedures": 1, "encounter_id": 10.0, "time_in_hospital": 3},
        {"race": None, "num_procedures": 2, "encounter_id": None, "time_in_hospital": "?"},
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"race\n", "a header and one row"),
        (b"", "a header and one row"),
        (b"race,age\nAsian\n", "1 values for 2 columns"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_unreadable_csv_is_refused_saying_why(body, reason):
    with pytest.raises(RequestValidationError) as refused:
        csv_records(body)
    assert reason in refused.value.errors()[0]["msg"]
