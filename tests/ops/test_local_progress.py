"""What `make run` prints while it waits: each task's state as it changes, how long each
DAG run took, and how long each stage took; driven by a fake of Airflow's REST API."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import httpx
import pytest

from readmission.names import CLEAN_DAG, RAW_DAG, TRAIN_DAG
from readmission.ops import localstack
from readmission.ops.localstack import LocalStackError, RunProgress, Stages


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ti(task_id: str, state: str | None, map_index: int = -1, seconds: float | None = None):
    return {"task_id": task_id, "map_index": map_index, "state": state, "duration": seconds}


def test_each_change_is_one_line_with_the_task_its_map_index_state_and_times():
    out, clock = io.StringIO(), FakeClock()
    progress = RunProgress(out=out, clock=clock)
    clock.now += 2
    progress.update([ti("plan", "running"), ti("load_batch", None), ti("publish", None)])
    clock.now += 3
    progress.update(
        [
            ti("plan", "success", seconds=2.5),
            ti("load_batch", "queued", 0),
            ti("load_batch", "running", 1),
            ti("publish", None),
        ]
    )
    progress.update([ti("plan", "success", seconds=2.5), ti("load_batch", "running", 1)])
    clock.now += 70
    progress.update(
        [
            ti("plan", "success", seconds=2.5),
            ti("load_batch", "success", 0, 61.2),
            ti("load_batch", "failed", 1, 70.0),
            ti("publish", "upstream_failed"),
        ]
    )
    assert out.getvalue().splitlines() == [
        "    0:02  plan                         running",
        "    0:05  plan                         success (2.5 s)",
        "    0:05  load_batch[1]                running",
        "    1:15  load_batch[0]                success (1 min 01 s)",
        "    1:15  load_batch[1]                failed (1 min 10 s)",
        "    1:15  publish                      upstream_failed",
    ]


def _raised(exc: BaseException) -> list[dict]:
    """The exception as Airflow's task logs carry it (structlog's dict of tracebacks)."""
    import structlog

    try:
        raise exc
    except type(exc):
        return structlog.tracebacks.ExceptionDictTransformer(show_locals=False)(sys.exc_info())


def test_a_failed_attempt_is_explained_by_its_exception_and_the_supervisors_errors():
    events = [
        {"event": "Executing workload", "level": "info", "logger": "supervisor"},
        {"event": "INFO mlflow: creating a run", "level": "error", "logger": "task.stderr"},
        {
            "event": "Task failed with exception",
            "level": "error",
            "logger": "task",
            "error_detail": _raised(OSError("database is locked")),
        },
        {
            "event": "Process terminated by signal. Likely out of memory error (OOM).",
            "level": "error",
            "logger": "supervisor",
        },
    ]
    lines = localstack.failure_lines(events)
    assert len(lines) == 2
    assert re.fullmatch(
        r"OSError: database is locked \(.*test_local_progress\.py:\d+ in _raised\)", lines[0]
    )
    assert lines[1] == "Process terminated by signal. Likely out of memory error (OOM)."


def test_a_failed_attempt_without_an_exception_shows_the_last_lines_of_its_stderr():
    events = [{"event": f"line {i}\n", "level": "error", "logger": "task.stderr"} for i in range(9)]
    events.append("a line Airflow could not parse")
    assert localstack.failure_lines(events) == [
        *(f"line {i}" for i in range(4, 9)),
        "a line Airflow could not parse",
    ]
    assert localstack.failure_lines([]) == []


def test_a_task_up_for_retry_or_failed_has_what_went_wrong_printed_under_it():
    out, clock = io.StringIO(), FakeClock()
    asked = []

    def explain(task_instance: dict) -> list[str]:
        asked.append((task_instance["task_id"], task_instance["map_index"]))
        return ["ValueError: boom (training.py:12 in fit)"]

    progress = RunProgress(out=out, clock=clock, on_failure=explain)
    progress.update([ti("train_candidate", "running", 0), ti("promote", None)])
    clock.now += 14
    progress.update([ti("train_candidate", "up_for_retry", 0, 13.4), ti("promote", None)])
    progress.update([ti("train_candidate", "up_for_retry", 0, 13.4), ti("promote", None)])
    clock.now += 60
    progress.update([ti("train_candidate", "failed", 0, 5.9), ti("promote", "upstream_failed")])
    assert asked == [("train_candidate", 0), ("train_candidate", 0)]
    assert out.getvalue().splitlines() == [
        "    0:00  train_candidate[0]           running",
        "    0:14  train_candidate[0]           up_for_retry (13.4 s)",
        "          ValueError: boom (training.py:12 in fit)",
        "    1:14  train_candidate[0]           failed (5.9 s)",
        "          ValueError: boom (training.py:12 in fit)",
        "    1:14  promote                      upstream_failed",
    ]


def test_a_log_that_cannot_be_read_says_so_instead_of_stopping_the_run():
    class Unreachable:
        def task_log(self, task_instance: dict) -> list:
            raise httpx.ConnectError("connection refused")

    lines = localstack._failure(Unreachable(), ti("train_candidate", "failed", 0))
    assert lines == ["(its log could not be read: connection refused)"]


def test_while_nothing_changes_a_line_says_what_still_runs():
    out, clock = io.StringIO(), FakeClock()
    progress = RunProgress(out=out, clock=clock)
    training = [ti("train_candidate", "running", i) for i in range(2)]
    progress.update(training)
    for _ in range(3):
        clock.now += 20
        progress.update(training)
    lines = out.getvalue().splitlines()
    assert lines[2:] == [
        "    0:40  still running: train_candidate[0], train_candidate[1]",
    ]


def test_stages_are_reported_with_their_times_and_a_total():
    out, clock = io.StringIO(), FakeClock()
    stages = Stages(out=out, clock=clock)
    for stage, seconds in (("stack start", 48.0), ("raw load", 35.2), ("training", 245.0)):
        with stages.timed(stage):
            clock.now += seconds
    stages.times["cleaning"] = None
    clock.now += 1
    stages.report()
    assert out.getvalue().splitlines() == [
        "stage               time",
        "stack start         48.0 s",
        "raw load            35.2 s",
        "training            4 min 05 s",
        "cleaning            -",
        "total               5 min 29 s",
    ]


class FakeAirflow:
    """Airflow's REST API as `make run` uses it: each DAG run goes through the given polls
    (run state, task instances), one per call of `task_instances`."""

    def __init__(self, polls: dict[str, list[tuple[str, list[dict]]]]) -> None:
        self.polls = polls
        self.asked: dict[str, int] = dict.fromkeys(polls, 0)
        self.triggered: list[str] = []

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self.triggered.append(dag_id)
        return f"manual__{dag_id}"

    def _poll(self, dag_id: str) -> tuple[str, list[dict]]:
        polls = self.polls[dag_id]
        return polls[min(self.asked[dag_id], len(polls) - 1)]

    def run(self, dag_id: str, run_id: str) -> dict:
        state = self._poll(dag_id)[0]
        return {"dag_id": dag_id, "dag_run_id": run_id, "state": state, "start_date": "t0"}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        tasks = self._poll(dag_id)[1]
        self.asked[dag_id] += 1
        return tasks

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {t["task_id"]: t["state"] for t in self.polls[dag_id][-1][1]}

    def runs_after(self, dag_id: str, after: str) -> list[dict]:
        return [{"dag_run_id": f"asset_triggered__{dag_id}"}] if dag_id in self.polls else []

    def task_log(self, task_instance: dict) -> list:
        error = ValueError(f"{task_instance['task_id']}[{task_instance['map_index']}] broke")
        return [{"event": "Task failed", "level": "error", "error_detail": _raised(error)}]


RAW = [
    ("running", [ti("plan", "running"), ti("load_batch", None), ti("publish", None)]),
    ("running", [ti("plan", "success", seconds=1.0), ti("load_batch", "running", 0)]),
    (
        "success",
        [
            ti("plan", "success", seconds=1.0),
            ti("load_batch", "success", 0, 3.0),
            ti("publish", "success", seconds=0.5),
        ],
    ),
]
CLEAN = [("success", [ti("clean", "success", seconds=4.0), ti("report", "success", seconds=1.0)])]
TRAIN = [
    ("running", [ti("pin_data", "success", seconds=1.0), ti("first_model", "running")]),
    (
        "running",
        [
            ti("pin_data", "success", seconds=1.0),
            ti("first_model", "success", seconds=40.0),
            ti("train_candidate", "running", 0),
        ],
    ),
    (
        "success",
        [
            ti("pin_data", "success", seconds=1.0),
            ti("first_model", "success", seconds=40.0),
            ti("train_candidate", "success", 0, 200.0),
            ti("promote", "success", seconds=2.0),
        ],
    ),
]


@pytest.fixture
def store(monkeypatch):
    """What the stores say when the pipeline asks: nothing left to clean; no model yet
    unless `production` is set."""
    state = {"production": None}
    monkeypatch.setattr(localstack, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(localstack.pipeline, "store_summary", lambda _s: {"pending_clean": 0})
    monkeypatch.setattr(localstack.pipeline, "production_model", lambda _s: state["production"])
    return state


def test_the_pipeline_follows_each_dag_prints_its_tasks_and_times_each_stage(
    store, capsys, tmp_path
):
    client = FakeAirflow({RAW_DAG: RAW, CLEAN_DAG: CLEAN, TRAIN_DAG: TRAIN})
    stages = Stages()
    localstack.run_pipeline(client, tmp_path / "stack.log", None, stages)
    text = capsys.readouterr().out
    for dag_id in (RAW_DAG, CLEAN_DAG, TRAIN_DAG):
        assert re.search(rf"^{dag_id}: success in \d+\.\d s$", text, re.M), text
    assert re.search(r"^ +0:\d\d  load_batch\[0\] +success \(3\.0 s\)$", text, re.M), text
    assert re.search(r"^ +0:\d\d  train_candidate\[0\] +success \(3 min 20 s\)$", text, re.M)
    assert re.search(r"^ +0:\d\d  promote +success \(2\.0 s\)$", text, re.M)
    assert client.triggered == [RAW_DAG]  # the other two came from the Assets
    assert list(stages.times) == ["raw load", "cleaning", "training"]
    assert all(seconds is not None for seconds in stages.times.values())


def test_the_first_model_in_production_is_a_milestone_of_the_report(
    store, capsys, tmp_path, monkeypatch
):
    """The stand-in (first_model) puts a model in Production while the search goes on: the
    report says when, once, from the start of `make run`."""
    asked = []

    def production(_settings):  # nothing before training, in Production from first_model on
        asked.append(len(asked))
        return {"version": "1"} if len(asked) > 1 else None

    monkeypatch.setattr(localstack.pipeline, "production_model", production)
    clock = FakeClock()
    stages = Stages(clock=clock)
    clock.now += 95
    client = FakeAirflow({RAW_DAG: RAW, CLEAN_DAG: CLEAN, TRAIN_DAG: TRAIN})
    localstack.run_pipeline(client, tmp_path / "stack.log", None, stages)
    assert stages.milestones == {localstack.FIRST_MODEL: 95.0}
    assert len(asked) == 3  # before training, at first_model's success, at promote's
    stages.report()
    assert (
        capsys.readouterr().out.splitlines()[-1] == "a first model in Production after 1 min 35 s"
    )


def test_no_milestone_while_nothing_is_in_production(store, tmp_path):
    stages = Stages()
    client = FakeAirflow({RAW_DAG: RAW, CLEAN_DAG: CLEAN, TRAIN_DAG: TRAIN})
    localstack.run_pipeline(client, tmp_path / "stack.log", None, stages)
    assert stages.milestones == {}


def test_no_first_model_milestone_when_a_model_was_served_before_the_run(store, tmp_path):
    store["production"] = {"version": "3"}  # new data on a platform that serves already
    stages = Stages()
    client = FakeAirflow({RAW_DAG: RAW, CLEAN_DAG: CLEAN, TRAIN_DAG: TRAIN})
    localstack.run_pipeline(client, tmp_path / "stack.log", None, stages)
    assert stages.milestones == {}
    assert stages.times["training"] is not None


def test_a_run_with_nothing_new_says_so_and_shows_the_idle_stages_as_dashes(
    store, capsys, tmp_path
):
    store["production"] = {"version": "1"}
    skipped = [("success", [ti("plan", "success", seconds=1.0), ti("publish", "skipped")])]
    stages = Stages()
    localstack.run_pipeline(FakeAirflow({RAW_DAG: skipped}), Path(tmp_path), None, stages)
    text = capsys.readouterr().out
    assert "publish                      skipped" in text
    assert "nothing new to load, clean or train" in text
    assert stages.times["cleaning"] is None
    assert stages.times["training"] is None


def test_a_failed_run_stops_the_pipeline_after_showing_which_task_failed(store, capsys, tmp_path):
    failed = [("failed", [ti("plan", "success", seconds=1.0), ti("load_batch", "failed", 2, 9.0)])]
    with pytest.raises(LocalStackError, match=f"{RAW_DAG} run manual__{RAW_DAG} failed"):
        localstack.run_pipeline(FakeAirflow({RAW_DAG: failed}), tmp_path, None, Stages())
    text = capsys.readouterr().out
    assert (
        "load_batch[2]                failed (9.0 s)\n          ValueError: load_batch[2] broke ("
        in text
    )
    assert f"{RAW_DAG}: failed in " in text


def _client(answers: list, sent: list) -> localstack.AirflowClient:
    """An AirflowClient whose requests get `answers` in turn (a status code, or an
    exception to raise): Airflow's API server with its SQLite metadata database locked by
    another component, which it answers with a 500 after waiting 5 s (seen in CI)."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        given = answers.pop(0)
        if isinstance(given, Exception):
            raise given
        return httpx.Response(given, json={"dag_runs": [], "state": "running"})

    config = localstack.AirflowConfig(home=Path("/nonexistent"), dags_folder=Path("/dags"))
    return localstack.AirflowClient(
        config, transport=httpx.MockTransport(answer), retry_pauses=(0.0, 0.0, 0.0)
    )


def test_a_read_or_an_unpause_is_asked_again_while_airflow_answers_5xx_or_is_unreachable():
    sent: list[str] = []
    client = _client([500, httpx.ConnectError("refused"), 200], sent)
    client.unpause("model_training_pipeline")
    assert sent == ["PATCH"] * 3
    sent.clear()
    client = _client([503, 200], sent)
    assert client.run("model_training_pipeline", "manual__1")["state"] == "running"
    assert sent == ["GET", "GET"]


def test_a_lasting_error_is_raised_after_the_last_try_and_a_trigger_is_never_repeated():
    sent: list[str] = []
    client = _client([500, 500, 500, 500], sent)
    with pytest.raises(httpx.HTTPStatusError, match="500"):
        client.unpause("model_training_pipeline")
    assert len(sent) == 4
    sent.clear()
    client = _client([404], sent)  # a client error is an answer, not a hiccup
    with pytest.raises(httpx.HTTPStatusError, match="404"):
        client.run("model_training_pipeline", "manual__1")
    assert sent == ["GET"]
    sent.clear()
    client = _client([500], sent)  # a run might have been created: not asked twice
    with pytest.raises(httpx.HTTPStatusError, match="500"):
        client.trigger("model_training_pipeline")
    assert sent == ["POST"]
