"""readmission/logs.py: LOG_LEVEL and LOG_FORMAT applied by the CLI, the API (uvicorn's
loggers, the access log switch, over HTTP) and the DAG tasks."""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import datetime

import httpx
import pydantic
import pytest

from readmission import logs
from readmission.settings import LoggingSettings, Settings
from tests.support.pgserver import free_port
from tests.support.processes import ApiProcess

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$"
)


def _configured(**variables: str) -> io.StringIO:
    stream = io.StringIO()
    logs.configure(Settings(**variables).logging, stream)
    return stream


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_format_is_one_object_a_line_with_time_level_logger_and_message():
    stream = _configured(LOG_FORMAT="json")
    log = logging.getLogger("readmission.api.model_store")
    log.info("now serving %s v%s", "diabetes-readmission", 3, extra={"model_version": "3"})
    try:
        raise RuntimeError("registry down")
    except RuntimeError:
        log.exception("check failed")

    first, second = _json_lines(stream.getvalue())
    assert first["level"] == "INFO"
    assert first["logger"] == "readmission.api.model_store"
    assert first["message"] == "now serving diabetes-readmission v3"
    assert first["model_version"] == "3"
    assert datetime.fromisoformat(first["time"]).utcoffset().total_seconds() == 0
    assert second["level"] == "ERROR"
    assert second["message"] == "check failed"
    assert "RuntimeError: registry down" in second["exception"]


def test_text_format_has_the_time_the_level_and_the_logger_name():
    stream = _configured()
    logging.getLogger("readmission.pipeline").warning("disk %d%% full", 93)
    match = TEXT_LINE.match(stream.getvalue().rstrip("\n"))
    assert match, stream.getvalue()
    assert match.groupdict() == {
        "level": "WARNING",
        "logger": "readmission.pipeline",
        "message": "disk 93% full",
    }


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["DEBUG", "INFO", "WARNING"]),
        ("INFO", ["INFO", "WARNING"]),
        ("Warning", ["WARNING"]),
    ],
)
def test_log_level_sets_the_lowest_level_shown(level, shown):
    stream = _configured(LOG_LEVEL=level, LOG_FORMAT="json")
    log = logging.getLogger("readmission.training")
    log.debug("d")
    log.info("i")
    log.warning("w")
    assert [entry["level"] for entry in _json_lines(stream.getvalue())] == shown


def test_unknown_level_or_format_is_refused():
    with pytest.raises(pydantic.ValidationError, match="LOG_LEVEL"):
        Settings(LOG_LEVEL="LOUD")
    with pytest.raises(pydantic.ValidationError, match="LOG_FORMAT"):
        Settings(LOG_FORMAT="xml")


def test_configuring_again_replaces_its_handler_and_keeps_the_others():
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    _configured()
    stream = _configured(LOG_FORMAT="json")
    logging.getLogger("readmission").warning("once")
    assert other in logging.getLogger().handlers
    assert len(_json_lines(stream.getvalue())) == 1
    assert sum(isinstance(h, logs._Handler) for h in logging.getLogger().handlers) == 1


def test_http_clients_log_their_requests_only_at_debug():
    _configured(LOG_LEVEL="INFO")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    _configured(LOG_LEVEL="DEBUG")
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG


def test_in_an_airflow_task_only_the_package_loggers_follow_the_level():
    from readmission.ops.orchestration import follow_log_level

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logs.follow_level(LoggingSettings(LOG_LEVEL="DEBUG"))
    assert logging.getLogger("readmission.pipeline").getEffectiveLevel() == logging.DEBUG
    assert (root.handlers, root.level) == (handlers, level)
    follow_log_level({})  # the DAGs' on_execute_callback: the environment's LOG_LEVEL (INFO)
    assert logging.getLogger("readmission").level == logging.INFO


def test_the_cli_logs_at_log_level_in_log_format(monkeypatch, capsys):
    from readmission.__main__ import main

    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    main(["summary", "--json"])
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    assert isinstance(handler.formatter, logs.JsonFormatter)
    assert logging.getLogger().level == logging.ERROR
    assert json.loads(capsys.readouterr().out)["raw_rows"] is not None
    main(["-v", "summary", "--json"])  # --verbose: DEBUG whatever LOG_LEVEL says
    assert logging.getLogger().level == logging.DEBUG


def _api_log(tmp_path, **variables: str) -> list[dict]:
    """Start `uvicorn app.main:app` with these settings, call /health twice and reload the
    model once (the registry is unreachable), stop it, and return what it logged
    (LOG_FORMAT=json), one dict a line."""
    env = {
        "LOG_FORMAT": "json",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "API_REGISTRY_TIMEOUT_SECONDS": "1",
        "API_PATIENT_HISTORY": "false",
        "API_PREDICTION_LOG": "false",
        "READMISSION_STATE_DIR": str(tmp_path / "state"),
        **variables,
    }
    api = ApiProcess(tmp_path, env).start()
    try:
        for _ in range(2):
            assert httpx.get(f"{api.url}/health", timeout=10).status_code == 200
        assert httpx.post(f"{api.url}/model/reload", timeout=30).status_code == 200
    finally:
        api.stop()
    # every line is JSON, uvicorn's included, but the harness's own "--- start N ---"
    lines = [line for line in api.log.read_text().splitlines() if not line.startswith("---")]
    assert lines, "the API logged nothing"
    return [json.loads(line) for line in lines if line]


@pytest.mark.slow
@pytest.mark.parametrize("access_log", [True, False])
def test_the_api_logs_json_and_its_access_log_follows_the_switch(tmp_path, access_log):
    entries = _api_log(tmp_path, API_ACCESS_LOG=str(access_log).lower())
    by_logger = {e["logger"] for e in entries}
    assert "uvicorn.error" in by_logger  # uvicorn's own lines, in the same format
    assert any("Application startup complete" in e["message"] for e in entries)
    unreachable = [e for e in entries if "registry unreachable" in e["message"]]
    assert [e["level"] for e in unreachable[:1]] == ["WARNING"], entries
    access = [e["message"] for e in entries if e["logger"] == "uvicorn.access"]
    if access_log:  # the harness's readiness probes, then the test's calls
        assert sum('"GET /health HTTP/1.1" 200' in m for m in access) >= 2, access
        assert sum('"POST /model/reload HTTP/1.1" 200' in m for m in access) == 1, access
    else:
        assert access == []


@pytest.mark.slow
def test_the_access_log_shows_even_when_log_level_is_higher(tmp_path):
    entries = _api_log(tmp_path, API_ACCESS_LOG="true", LOG_LEVEL="WARNING")
    assert {e["level"] for e in entries if e["logger"] != "uvicorn.access"} <= {
        "WARNING",
        "ERROR",
        "CRITICAL",
    }
    assert len([e for e in entries if e["logger"] == "uvicorn.access"]) >= 3
