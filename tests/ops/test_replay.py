"""`make replay`, end to end: the closed loop in the local mode. Held-out encounters are
served through the API, their outcomes arrive as a later batch, model_performance_pipeline
joins them, and realized, estimated and test figures are printed side by side."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from readmission import dataset
from readmission.names import FAMILIES, PERFORMANCE_DAG, RETRAIN_DAG, TRAIN_DAG
from tests.support.pgserver import free_port

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d\.\d{3}"


def test_replay_prints_realized_against_estimated_against_test(tmp_path, sample_csv):
    env = {
        **os.environ,
        "READMISSION_STATE_DIR": str(tmp_path / "state"),
        "DIABETES_CSV": str(sample_csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(sample_csv),
        "RAW_BATCH_SIZE": "300",  # 1,000 rows: batches 0-2 trained on, batch 3 held out
        "DECISION_SUBGROUP_TOLERANCE": "0.99",
        "LOCAL_AIRFLOW_PORT": str(free_port()),
        "LOCAL_MLFLOW_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "LOCAL_STREAMLIT_PORT": str(free_port()),
        "LOCAL_PROMETHEUS_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        # the retraining check at the end requests a run at once: any drift counts (100
        # encounters), sustained for 0 h, no guard
        "API_DRIFT_MIN_ROWS": "50",
        "API_DRIFT_PSI_THRESHOLD": "0.001",
        "RETRAIN_SUSTAINED_HOURS": "0",
        "RETRAIN_MIN_INTERVAL_HOURS": "0",
        # no scheduled check but the one at start (no model yet): the replay's is the one
        "RETRAIN_CHECK_MINUTES": "1440",
    }
    for name in ("AIRFLOW_HOME", "MLFLOW_TRACKING_URI", "TRAINING_PROFILE", "DATA_DATABASE_URL"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "readmission", "replay"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text[-5000:]
    assert "(quick search)" in text
    assert "served 100 held-out encounters with v1" in text
    assert re.search(rf"^{PERFORMANCE_DAG}: success in \d", text, re.M), text[-5000:]
    assert "v1 on 100 held-out encounters served, 100 with their outcome now:" in text
    for title in ("<30 ROC-AUC", "macro-F1", "<30 Brier score"):
        assert re.search(rf"^  {re.escape(title)} +{NUMBER} +{NUMBER}", text, re.M), text[-3000:]
    assert re.search(rf"^  <30 ROC-AUC +{NUMBER} +{NUMBER} +{NUMBER}$", text, re.M)
    # the retraining trigger, on the real scheduler: its request starts a training run
    # through the retraining_request Asset, which records why
    assert re.search(rf"^{RETRAIN_DAG}: success in \d", text, re.M), text[-5000:]
    assert "retraining check of v1:\n  drift        past its threshold: input drift: PSI " in text
    assert "over the last 100 predictions of v1" in text
    requested = re.search(r"^retraining requested: (retraining_trigger_pipeline: .+)$", text, re.M)
    assert requested, text[-5000:]
    assert re.search(rf"^following {TRAIN_DAG} \(asset_triggered__", text, re.M), text[-5000:]
    assert re.search(rf"^{TRAIN_DAG}: success in \d", text, re.M), text[-5000:]
    # the outcomes batch, cleaned while training was paused, is new to it too
    trained = f"{TRAIN_DAG} trained {len(FAMILIES)} candidates"
    recorded = f"{trained}, recorded reason: {requested.group(1)}; "
    assert f"{recorded}new clean data\n" in text, text[-5000:]
    # its own state folder, the configured one untouched but for it
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["replay"]
