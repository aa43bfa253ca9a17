"""The DAG files parse, read like configuration and are wired as the original project."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

DAG_IDS = (
    "raw_data_initial_batch_load",
    "clean_data_pipeline",
    "model_training_pipeline",
    "model_performance_pipeline",
    "batch_scoring_pipeline",
    "retraining_trigger_pipeline",
)
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"


def test_dag_folder_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(DAG_IDS) <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dags_have_tags_docs_retries_and_no_catchup(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert "diabetes" in dag.tags
    assert dag.doc_md
    assert dag.doc_md.strip().startswith("###")
    assert dag.catchup is False
    assert dag.start_date is not None
    assert dag.start_date.year == 2025
    assert dag.max_active_runs == 1
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_task_sets_the_package_log_level_before_it_runs(dagbag, dag_id):
    from readmission.ops.orchestration import follow_log_level

    for task in dagbag.get_dag(dag_id).tasks:
        callbacks = task.on_execute_callback
        assert follow_log_level in (callbacks if isinstance(callbacks, list) else [callbacks])


def test_raw_load_is_manual_and_publishes_the_raw_asset(dagbag):
    dag = dagbag.get_dag("raw_data_initial_batch_load")
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: by hand
    outlets = dag.get_task("publish").outlets
    assert [a.name for a in outlets] == ["raw_data.diabetes"]
    assert dag.params["batches"] == 0


def test_cleaning_runs_on_the_raw_asset_and_publishes_the_clean_asset(dagbag):
    dag = dagbag.get_dag("clean_data_pipeline")
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["raw_data.diabetes"]
    assert [a.name for a in dag.get_task("clean").outlets] == ["clean_data.diabetes"]
    assert dag.params["full_refresh"] is False


@pytest.mark.parametrize("path", sorted(DAGS_FOLDER.glob("*.py")), ids=lambda p: p.name)
def test_parsing_a_dag_file_does_no_data_work(path, tmp_path):
    """Parsing imports neither pandas nor the store, even with no data and a dead database."""
    probe = (
        "import runpy, sys\n"
        f"runpy.run_path({str(path)!r})\n"
        "heavy = sorted(m for m in ('pandas', 'readmission.db', 'readmission.ingest', 'psycopg')"
        " if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    env = {
        **os.environ,
        "DATA_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "DIABETES_CSV": str(tmp_path / "absent.csv"),
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY=\n" in result.stdout, result.stdout[-2000:]


def test_training_runs_on_new_clean_data_or_a_retraining_request_one_task_per_family(dagbag):
    dag = dagbag.get_dag("model_training_pipeline")
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"  # either starts a run
    assert [a.name for a in condition.objects] == [
        "clean_data.diabetes",
        "retraining_request.diabetes",
    ]
    assert type(dag.get_task("train_candidate")).__name__.endswith("MappedOperator")
    assert set(dag.task_ids) == {"pin_data", "first_model", "train_candidate", "promote"}
    # a stand-in first, on every core; the search after it; promote judges them all
    assert dag.get_task("first_model").downstream_task_ids == {"train_candidate", "promote"}
    assert dag.get_task("promote").upstream_task_ids == {
        "pin_data",
        "first_model",
        "train_candidate",
    }
    # an Asset-triggered run has no conf: the default defers to the TRAINING_PROFILE setting
    assert dag.params["profile"] == "default"
    assert dag.params["reason"] is None  # optional: an Asset-triggered run's are its events'


def test_the_retraining_check_interval_is_read_from_the_environment(monkeypatch):
    import runpy

    monkeypatch.setenv("RETRAIN_CHECK_MINUTES", "7.5")
    parsed = runpy.run_path(str(DAGS_FOLDER / "retraining.py"))
    assert parsed["_check_interval"]() == timedelta(minutes=7.5)


def test_retraining_triggers_are_checked_on_a_schedule_and_request_through_an_asset(
    dagbag, monkeypatch
):
    from readmission import retraining
    from readmission.ops.orchestration import CLEAN_DATA, RETRAIN_REQUEST

    dag = dagbag.get_dag("retraining_trigger_pipeline")
    assert dag.timetable.delta == timedelta(minutes=30)  # RETRAIN_CHECK_MINUTES
    assert set(dag.task_ids) == {"check", "request"}
    assert dag.get_task("request").outlets == [RETRAIN_REQUEST]
    # the names the training run reads its reason by
    assert (
        RETRAIN_REQUEST.name,
        CLEAN_DATA.name,
    ) == (retraining.REQUEST_ASSET, retraining.CLEAN_ASSET)


def test_performance_runs_on_the_clean_asset(dagbag):
    dag = dagbag.get_dag("model_performance_pipeline")
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["clean_data.diabetes"]
    assert set(dag.task_ids) == {"measure", "report"}


def test_batch_scoring_runs_on_the_clean_asset(dagbag):
    dag = dagbag.get_dag("batch_scoring_pipeline")
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["clean_data.diabetes"]
    assert set(dag.task_ids) == {"score", "report"}
