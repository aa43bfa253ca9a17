"""What the Airflow DAG files share: the Assets that chain them, default arguments, tags.

Only `airflow.sdk` and the standard library are imported here, so parsing a DAG file stays
cheap; tasks import the heavy modules when they run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset

START_DATE = datetime(2025, 1, 1)

#: Updated when a raw load inserted rows; schedules clean_data_pipeline.
RAW_DATA = Asset(name="raw_data.diabetes", uri="readmission://raw_data/diabetes")
#: Updated when cleaning inserted rows; schedules model_training_pipeline and the measures.
CLEAN_DATA = Asset(name="clean_data.diabetes", uri="readmission://clean_data/diabetes")
#: Updated when retraining_trigger_pipeline requests a training run (its reason in the event's
#: extra); schedules model_training_pipeline too.
RETRAIN_REQUEST = Asset(
    name="retraining_request.diabetes", uri="readmission://serving/retraining_request"
)


def follow_log_level(context: Mapping[str, Any]) -> None:  # noqa: ARG001 - Airflow's signature
    """Before each task runs: the package's loggers at LOG_LEVEL (readmission/logs.py),
    Airflow's own handlers, which write the task's log, left as they are."""
    from readmission import logs
    from readmission.settings import get_settings

    logs.follow_level(get_settings().logging)


DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "on_execute_callback": [follow_log_level],
}

TAGS = ["diabetes", "proyecto3"]
