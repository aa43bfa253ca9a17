"""The README's main command, end to end: MLflow and Airflow standalone run the three DAGs,
chained by Assets, and leave a Production model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from readmission import dataset
from tests.support.pgserver import free_port

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_local_mode_runs_the_pipeline_serves_the_ui_and_stops_on_ctrl_c(tmp_path, sample_csv):
    port, mlflow_port = free_port(), free_port()
    state = tmp_path / "state"
    env = {
        **os.environ,
        "READMISSION_STATE_DIR": str(state),
        "DIABETES_CSV": str(sample_csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(sample_csv),
        "RAW_BATCH_SIZE": "300",
        "LOCAL_AIRFLOW_PORT": str(port),
        "LOCAL_MLFLOW_PORT": str(mlflow_port),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AIRFLOW_HOME", None)  # the local mode picks its own, under the state folder
    env.pop("MLFLOW_TRACKING_URI", None)  # and its own MLflow server
    log = tmp_path / "local.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "readmission", "local"], cwd=PROJECT_ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while "Ctrl-C stops them" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        text = log.read_text()
        assert f"Airflow UI: http://127.0.0.1:{port}  login: admin / " in text
        assert "following clean_data_pipeline (asset_triggered__" in text
        assert "total          1,000       1,000" in text
        assert "batches loaded: 4 [0, 1, 2, 3]" in text
        assert "following model_training_pipeline (asset_triggered__" in text
        assert "Production model: diabetes-readmission v1 (" in text
        assert f"MLflow UI:  http://127.0.0.1:{mlflow_port}" in text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(2)
    for pattern in (f"airflow.*{port}", f"mlflow.*{mlflow_port}"):
        leftovers = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        assert leftovers.stdout.strip() == "", f"processes left running: {pattern}"
