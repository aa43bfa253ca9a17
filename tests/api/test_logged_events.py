"""What the service tells its operators, at which level: a registry outage is one warning
and its end an info line, a model that fails to load an error, a prediction-log outage
one warning (and one more when rows are dropped) and its end an info line."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from readmission import db
from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import ModelStore
from readmission.api.prediction_log import PredictionLog
from readmission.names import LOG_DROPPED, LOG_WRITE_FAILURES, LOG_WRITTEN

PREDICTION_LOG = "readmission.api.prediction_log"


class FakeRegistry:
    """A registry that is down while `error` is set, and whose models fail to load."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.champion_version: int | None = None

    def champion(self):
        if self.error is not None:
            raise self.error
        return None if self.champion_version is None else SimpleNamespace(version=2)

    def load_version(self, version: str):
        raise OSError(f"model files of v{version} are gone")

    def history(self) -> list:
        return []


def _records(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == logger]


def test_a_registry_outage_is_one_warning_then_one_info_when_it_ends(caplog):
    caplog.set_level(logging.DEBUG, logger="readmission.api.model_store")
    registry = FakeRegistry()
    store = ModelStore(registry, ApiMetrics())
    registry.error = ConnectionError("connection refused")
    for _ in range(3):
        assert "registry unreachable" in store.check()
    registry.error = None
    assert store.check() == "no Production model in the registry"

    levels = [level for level, _ in _records(caplog, "readmission.api.model_store")]
    assert levels == ["WARNING", "DEBUG", "DEBUG", "INFO"]
    first, *_, last = _records(caplog, "readmission.api.model_store")
    assert first[1] == "registry unreachable, no model keeps serving: connection refused"
    assert last[1] == "registry reachable again"


def test_a_model_that_fails_to_load_is_an_error(caplog):
    caplog.set_level(logging.DEBUG, logger="readmission.api.model_store")
    registry = FakeRegistry()
    registry.champion_version = 2
    store = ModelStore(registry, ApiMetrics())
    assert store.check().startswith("v2 failed to load")
    assert _records(caplog, "readmission.api.model_store") == [
        ("ERROR", "loading model v2 failed, no model keeps serving: model files of v2 are gone")
    ]


@pytest.fixture
def flaky_store(tmp_path, monkeypatch):
    """A SQLite store whose writes fail while the returned event is set."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'main.db'}")
    db.create_tables(engine)
    down = threading.Event()
    append = db.append_rows

    def append_unless_down(*args, **kwargs):
        if down.is_set():
            raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("refused"))
        return append(*args, **kwargs)

    monkeypatch.setattr(db, "append_rows", append_unless_down)
    yield engine, down
    engine.dispose()


def _predictions(n: int, start: int = 0) -> tuple[list[dict], list]:
    records = [{"encounter_id": start + i, "patient_nbr": 7} for i in range(n)]
    answer = SimpleNamespace(prediction="NO", probabilities={"NO": 0.7, ">30": 0.2, "<30": 0.1})
    return records, [answer] * n


def _count(metrics: ApiMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def _wait(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_prediction_log_outage_is_one_warning_then_one_info_when_it_ends(caplog, flaky_store):
    engine, down = flaky_store
    caplog.set_level(logging.DEBUG, logger="readmission.api.prediction_log")
    metrics = ApiMetrics()
    down.set()
    log = PredictionLog(engine, metrics, capacity=100, flush_seconds=0.02)
    try:
        log.add(*_predictions(5), "diabetes-readmission", "1")
        _wait(lambda: _count(metrics, LOG_WRITE_FAILURES) >= 3)
        down.clear()
        _wait(lambda: log.queued == 0 and _count(metrics, LOG_WRITTEN) == 5)
    finally:
        log.close()
    told = [
        (level, message) for level, message in _records(caplog, PREDICTION_LOG) if level != "DEBUG"
    ]
    assert [level for level, _ in told] == ["WARNING", "INFO"], told
    assert told[0][1].startswith("prediction log: cannot write to the database (")
    assert "5 rows queued, retrying" in told[0][1]
    assert told[1][1].startswith("prediction log: writing again after ")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.predictions)).scalar() == 5


def test_predictions_dropped_from_a_full_queue_are_one_more_warning(caplog, flaky_store):
    engine, down = flaky_store
    caplog.set_level(logging.INFO, logger="readmission.api.prediction_log")
    metrics = ApiMetrics()
    down.set()
    log = PredictionLog(engine, metrics, capacity=3, flush_seconds=0.02)
    try:
        for start in range(0, 12, 4):
            log.add(*_predictions(4, start), "diabetes-readmission", "1")
        assert _count(metrics, LOG_DROPPED) >= 9
    finally:
        down.clear()
        log.close()
    full = [m for level, m in _records(caplog, PREDICTION_LOG) if "queue full" in m]
    assert full == [
        "prediction log: queue full (3 rows), dropping the oldest predictions until the "
        "database is back"
    ]
    assert [level for level, m in _records(caplog, PREDICTION_LOG) if "queue full" in m] == [
        "WARNING"
    ]
