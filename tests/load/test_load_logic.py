"""The load test's logic without running Locust: the records it sends, the weights of its
tasks, how it judges answers, its settings, and the rule that fails a run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import load_logic
import pytest

from readmission import dataset, schema, synthetic
from readmission.api.schemas import Encounter
from readmission.settings import Settings
from tests.load.conftest import LOCUST, LOCUSTFILE, PROJECT_ROOT
from tests.support.pgserver import free_port
from tests.support.tools import require_real_csv

REQUEST_NAMES = [c.name for c in schema.COLUMNS if c.kind is not schema.Kind.TARGET]
MODEL = {"name": "diabetes-readmission", "version": "3", "alias": "production"}
SCORED = {
    "prediction": ">30",
    "probabilities": {"NO": 0.5, ">30": 0.3, "<30": 0.2},
    "readmission_30d_risk": 0.2,
}


def _assert_sent_as_the_file_writes_them(records: list[load_logic.Record]) -> None:
    for record in records:
        assert list(record) == REQUEST_NAMES
        for column in schema.COLUMNS:
            if column.is_integer and record.get(column.name) != schema.MISSING_MARKER:
                assert isinstance(record[column.name], int), column.name
        Encounter.model_validate(record)  # what the API accepts


def _load(**values) -> load_logic.LoadSettings:
    return load_logic.LoadSettings(**values)


# --- records


def test_synthetic_records_have_the_uci_names_and_validate_against_the_api_model():
    pool = load_logic.build_pool(_load(records="synthetic", pool_size=300))
    assert pool.source == "synthetic encounters"
    assert len(pool.records) == 300
    _assert_sent_as_the_file_writes_them(pool.records)
    assert any(record["weight"] == "?" for record in pool.records)  # missing as the file has it


def test_rows_of_the_data_file_are_sent_as_the_file_writes_them(tmp_path: Path):
    csv = synthetic.write_csv(synthetic.encounters(400, seed=2), tmp_path / "d.csv.gz")
    settings = Settings(DIABETES_CSV=csv, DIABETES_CSV_SHA256=dataset.sha256_of(csv))
    pool = load_logic.build_pool(_load(records="real", pool_size=250, seed=1), settings)
    assert pool.source == f"the UCI file {csv}"
    assert len(pool.records) == 250
    assert len({record["encounter_id"] for record in pool.records}) == 250  # no row twice
    _assert_sent_as_the_file_writes_them(pool.records)


@pytest.mark.realdata
def test_rows_of_the_real_uci_file_all_validate_against_the_api_model():
    path = require_real_csv()
    pool = load_logic.build_pool(_load(records="real"), Settings(DIABETES_CSV=path))
    assert len(pool.records) == 2_000
    _assert_sent_as_the_file_writes_them(pool.records)


def test_without_a_data_file_auto_uses_synthetic_records_and_real_refuses():
    assert "no UCI file found" in load_logic.build_pool(_load(pool_size=50)).source
    with pytest.raises(dataset.DatasetError, match="DIABETES_CSV"):
        load_logic.build_pool(_load(records="real", pool_size=50))


def test_the_same_seed_gives_the_same_pool():
    first = load_logic.build_pool(_load(records="synthetic", pool_size=100, seed=4))
    again = load_logic.build_pool(_load(records="synthetic", pool_size=100, seed=4))
    assert first.records == again.records
    assert [first.one() for _ in range(5)] == [again.one() for _ in range(5)]


def test_batches_hold_5_to_20_distinct_encounters():
    pool = load_logic.build_pool(_load(records="synthetic", pool_size=200))
    sizes = set()
    for _ in range(300):
        batch = pool.batch()
        sizes.add(len(batch))
        assert len({record["encounter_id"] for record in batch}) == len(batch)
    assert min(sizes) == 5
    assert max(sizes) == 20
    json.dumps({"encounters": pool.batch()})  # what goes over the wire


# --- the task mix


def test_the_task_mix_is_mostly_single_predictions_and_rarely_model():
    weights = load_logic.TASK_WEIGHTS
    assert sum(weights.values()) == 100
    assert weights["predict"] > sum(w for name, w in weights.items() if name != "predict")
    assert weights["predict_batch"] > weights["health"] == weights["ready"] > weights["model"] > 0


def test_the_locust_user_runs_each_task_with_its_weight():
    """Asked of Locust itself, in a subprocess: importing locust patches the process with
    gevent, which the other tests' threads and sockets must not get."""
    shown = subprocess.run(
        [str(LOCUST), "-f", str(LOCUSTFILE), "--show-task-ratio-json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    tasks = json.loads(shown)["per_class"]["ApiClient"]["tasks"]
    total = sum(load_logic.TASK_WEIGHTS.values())
    assert {name: task["ratio"] for name, task in tasks.items()} == {
        name: pytest.approx(weight / total) for name, weight in load_logic.TASK_WEIGHTS.items()
    }


def test_the_locust_folder_does_not_shadow_the_library():
    """With the project root first on sys.path (pytest, `python -c` from the root), `import
    locust` is still the library: locust/ has no __init__.py."""
    assert not (PROJECT_ROOT / "locust" / "__init__.py").exists()
    found = subprocess.run(
        [sys.executable, "-c", "import locust, sys; print(locust.__file__, locust.__version__)"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages" in found, found


# --- settings


def test_defaults_reproduce_the_original_test(monkeypatch: pytest.MonkeyPatch):
    for name in (
        "LOAD_USERS",
        "LOAD_SPAWN_RATE",
        "LOAD_RUN_TIME",
        "LOAD_P95_MS",
        "LOAD_USER_RPS",
        "API_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_logic.load_settings()
    assert (settings.users, settings.spawn_rate, settings.user_rps) == (2, 2, 1)
    assert settings.run_time == "60s"
    assert settings.p95_ms == 200
    assert settings.pool_size == 2_000
    assert load_logic.api_url() == "http://127.0.0.1:8989"


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "LOAD_USERS": "8",
        "LOAD_SPAWN_RATE": "0.5",
        "LOAD_RUN_TIME": "2m",
        "LOAD_P95_MS": "0.001",
        "LOAD_USER_RPS": "3",
        "LOAD_RECORDS": "synthetic",
        "API_URL": "http://fast-api:8989/",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_logic.load_settings()
    assert (settings.users, settings.spawn_rate, settings.run_time) == (8, 0.5, "2m")
    assert (settings.p95_ms, settings.user_rps, settings.records) == (0.001, 3, "synthetic")
    assert load_logic.api_url() == "http://fast-api:8989"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOAD_USERS", "0"),
        ("LOAD_USERS", "two"),
        ("LOAD_P95_MS", "-1"),
        ("LOAD_RUN_TIME", "soon"),
        ("LOAD_RUN_TIME", "0s"),
        ("LOAD_RECORDS", "some"),
    ],
)
def test_a_bad_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.setenv(name, value)
    with pytest.raises(load_logic.LoadConfigError, match=name):
        load_logic.load_settings()


@pytest.mark.parametrize(
    ("text", "seconds"), [("60s", 60), ("90", 90), ("5m", 300), ("1h30m", 5400), (" 2M ", 120)]
)
def test_run_times_read_as_locust_reads_them(text: str, seconds: int):
    assert load_logic.timespan_seconds(text) == seconds


# --- judging answers


def _problem(body: object, check: load_logic.Check, status: int = 200) -> str | None:
    return load_logic.answer_problem(status, json.dumps(body).encode(), check)


def test_a_prediction_that_keeps_the_contract_passes():
    assert _problem({**SCORED, "model": MODEL}, load_logic.prediction_problem) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"prediction": "maybe"}, "prediction"),
        ({"probabilities": {"NO": 0.5, ">30": 0.5}}, "probabilities"),
        ({"probabilities": {"NO": 0.9, ">30": 0.3, "<30": 0.2}}, "sum to 1"),
        ({"probabilities": {"NO": 1.2, ">30": -0.4, "<30": 0.2}}, "in \\[0, 1\\]"),
        ({"readmission_30d_risk": None}, "readmission_30d_risk"),
        ({"model": {"name": "x"}}, "version"),
    ],
)
def test_a_prediction_off_contract_is_a_failure(change: dict, reason: str):
    problem = _problem({**SCORED, "model": MODEL, **change}, load_logic.prediction_problem)
    assert problem is not None
    assert re.search(reason, problem), problem


def test_an_error_status_or_a_body_that_is_not_json_is_a_failure():
    assert "HTTP 503" in _problem({"detail": "no model"}, load_logic.prediction_problem, 503)
    assert "HTTP 422" in _problem({"detail": []}, load_logic.prediction_problem, 422)
    problem = load_logic.answer_problem(200, b"<html>", load_logic.prediction_problem)
    assert "not JSON" in problem


def test_a_batch_answer_needs_one_valid_prediction_per_encounter():
    check = load_logic.batch_problem(2)
    assert _problem({"predictions": [SCORED, SCORED], "model": MODEL}, check) is None
    assert "1 predictions for 2" in _problem({"predictions": [SCORED], "model": MODEL}, check)
    broken = {**SCORED, "prediction": None}
    assert "prediction 1" in _problem({"predictions": [SCORED, broken], "model": MODEL}, check)
    assert "version" in _problem({"predictions": [SCORED, SCORED]}, check)


def test_probes_and_model_answers_are_checked():
    assert _problem({"status": "ok"}, load_logic.health_problem) is None
    assert _problem({"status": "down"}, load_logic.health_problem)
    assert _problem({"status": "ready", "model": MODEL}, load_logic.ready_problem) is None
    assert _problem({"status": "ready"}, load_logic.ready_problem)
    assert _problem({"version": "3", "run_id": "abc"}, load_logic.model_problem) is None
    assert _problem({"detail": "no model"}, load_logic.model_problem)


# --- before and after a run


def test_an_api_that_does_not_answer_is_reported_with_what_to_do():
    problem = load_logic.readiness_problem(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert "does not answer" in problem
    assert "make run" in problem


def test_an_api_without_a_model_is_reported_with_how_to_train_one():
    class NoModel(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"detail": "no model loaded"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        problem = load_logic.readiness_problem(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert "no model to serve" in problem
    assert "no model loaded" in problem
    assert "python -m readmission train" in problem


def test_a_run_fails_on_any_failure_on_a_slow_p95_and_on_no_request():
    assert load_logic.run_problems(120, 0, 35, 200) == []
    assert load_logic.run_problems(120, 1, 35, 200) == ["1 of 120 requests failed"]
    (slow,) = load_logic.run_problems(120, 0, 250, 200)
    assert "p95" in slow
    assert "LOAD_P95_MS=200" in slow
    assert load_logic.run_problems(0, 0, 0, 200) == ["no request was made"]
    assert len(load_logic.run_problems(10, 2, 6, 0.001)) == 2
