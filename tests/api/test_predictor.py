"""The predictor's queue: requests batched into one model call fail alone, and the queue is
bounded (a 503 with Retry-After when full), both counted.

A stand-in model (the real ones cannot be made to fail on one record, nor to wait on a
gate) blocks its first call until the test opens the gate, so that the next requests
queue up and are scored together, deterministically."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from readmission.api import create_app
from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import LoadedModel
from readmission.api.predictor import Predictor, QueueFullError
from readmission.api.schemas import EXAMPLE, Encounter, encounter_records
from tests.support.servers import ServerThread

POISON = 299  # num_lab_procedures of the record the stand-in model cannot score


class PoisonError(RuntimeError):
    pass


class GatedModel:
    """Probabilities (0.5, 0.3, 0.2); refuses any call holding a POISON record; its first
    call waits for `gate`."""

    classes_ = np.array(["NO", ">30", "<30"])

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def predict_proba(self, frame):
        self.calls.append(len(frame))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(30)
        if (frame["num_lab_procedures"] == POISON).any():
            raise PoisonError("this record breaks the model")
        return np.tile([0.5, 0.3, 0.2], (len(frame), 1))

    def decide(self, proba):
        return self.classes_[proba.argmax(axis=1)]


def _records(n: int, labs: int = 40) -> list[dict]:
    body = {**EXAMPLE, "patient_nbr": None, "num_lab_procedures": labs}
    return encounter_records([Encounter.model_validate(body)] * n)


def _predictor(model: GatedModel, **options) -> tuple[Predictor, ApiMetrics]:
    metrics = ApiMetrics()
    loaded = LoadedModel(model, "diabetes-readmission", "1", "production", {})
    return Predictor(SimpleNamespace(current=loaded), metrics, **options), metrics


def _value(metrics: ApiMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_one_bad_record_fails_only_the_request_that_sent_it():
    model = GatedModel()
    predictor, metrics = _predictor(model)

    async def scenario():
        first = asyncio.ensure_future(predictor.score(_records(1)))
        await asyncio.to_thread(model.entered.wait, 30)  # the worker holds the first call
        queued = [
            asyncio.ensure_future(predictor.score(r))
            for r in (_records(2), _records(1, labs=POISON), _records(3))
        ]
        await asyncio.sleep(0.2)  # they queue behind the gate
        model.gate.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    try:
        first, good, bad, other = asyncio.run(scenario())
    finally:
        predictor.close()
    assert isinstance(bad, PoisonError)
    assert [len(first[0]), len(good[0]), len(other[0])] == [1, 2, 3]
    assert good[0][0].probabilities == {"NO": 0.5, ">30": 0.3, "<30": 0.2}
    assert model.calls[:2] == [1, 6]  # the three queued requests were tried in one call
    assert _value(metrics, "api_predict_failures_total") == 1


def test_a_full_queue_refuses_at_once_and_counts_it():
    model = GatedModel()
    predictor, metrics = _predictor(model, max_queued_rows=3)

    async def scenario():
        first = asyncio.ensure_future(predictor.score(_records(1)))
        await asyncio.to_thread(model.entered.wait, 30)
        second = asyncio.ensure_future(predictor.score(_records(2)))  # 2 rows queued
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await predictor.score(_records(2))  # 4 > 3
        third = asyncio.ensure_future(predictor.score(_records(1)))  # 3 rows: fits
        await asyncio.sleep(0)
        assert _value(metrics, "api_predict_queue_rows") == 3
        model.gate.set()
        return await asyncio.gather(first, second, third)

    try:
        answers = asyncio.run(scenario())
    finally:
        predictor.close()
    assert [len(a[0]) for a in answers] == [1, 2, 1]
    assert _value(metrics, "api_predict_queue_full_total") == 1
    assert _value(metrics, "api_predict_queue_rows") == 0


def test_a_full_queue_is_a_503_with_retry_after_over_http(trained):
    """Concurrent clients against a slow model and a queue of two rows: some are told to
    come back, none waits unboundedly, every other one is answered."""
    settings = trained.updated(API_PREDICT_QUEUE_ROWS=2, API_PREDICTION_LOG=False)
    app = create_app(settings)
    server = ServerThread(app).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        loaded = app.state.services.store.current
        real = loaded.model.predict_proba

        def slow(frame):
            time.sleep(0.3)
            return real(frame)

        loaded.model.predict_proba = slow
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: client.post("/predict", json=EXAMPLE), range(12)))
        statuses = [a.status_code for a in answers]
        assert set(statuses) == {200, 503}, statuses
        refused = [a for a in answers if a.status_code == 503]
        assert all(a.headers["retry-after"] == "1" for a in refused)
        assert all("queue" in a.json()["detail"] for a in refused)
        metrics = client.get("/metrics").text
        full = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("api_predict_queue_full_total ")
        )
        assert full == len(refused)
    finally:
        client.close()
        server.stop()


def test_the_worker_survives_a_failure_outside_the_model_call(monkeypatch):
    """Whatever fails after the answers are handed back (the shadow step, say) neither
    kills the worker nor leaves a request waiting."""
    import asyncio
    from types import SimpleNamespace

    from readmission.api.metrics import ApiMetrics
    from readmission.api.predictor import Predictor

    class Exploding:
        current = None

        @property
        def shadow(self):
            raise RuntimeError("a bug after the answers were sent")

    store = Exploding()
    predictor = Predictor(store, ApiMetrics())
    scored = []

    def score(_loaded, records, _explained=None):
        scored.append(records)
        return [], None  # the answers, nothing to explain

    monkeypatch.setattr(predictor, "_score", score)
    store.current = SimpleNamespace(explainer=None, version="1")

    async def twice():
        await predictor.score([])
        await predictor.score([])

    try:
        asyncio.run(asyncio.wait_for(twice(), timeout=10))
    finally:
        predictor.close()
    assert len(scored) == 2  # the worker scored the second call too
