"""What the Airflow DAG files share: the Assets that chain them, default arguments, tags.

Only `airflow.sdk` and the standard library are imported here, so parsing a DAG file stays
cheap; tasks import the heavy modules when they run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset

START_DATE = datetime(2025, 1, 1)

#: Updated when a raw load inserted rows; schedules clean_data_pipeline.
RAW_DATA = Asset(name="raw_data.diabetes", uri="readmission://raw_data/diabetes")
#: Updated when cleaning inserted rows; schedules model_training_pipeline.
CLEAN_DATA = Asset(name="clean_data.diabetes", uri="readmission://clean_data/diabetes")

DEFAULT_ARGS = {
    "owner": "mlops",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
}

TAGS = ["diabetes", "proyecto3"]
