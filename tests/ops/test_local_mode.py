"""The README's main command, end to end: MLflow, Airflow, the API and Streamlit come up,
the three DAGs run chained by Assets, the API serves the Production model over HTTP, and
Ctrl-C stops every service."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from readmission import dataset
from readmission.api.schemas import EXAMPLE
from readmission.names import CLEAN_DAG, RAW_DAG, RETRAIN_DAG, TRAIN_DAG
from readmission.ops import localstack
from tests.support.pgserver import free_port
from tests.support.tools import require
from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _listening_addresses(pid: int) -> dict[str, set[str]]:
    """Every TCP address the process tree of `pid` listens on, by command."""
    import psutil

    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    found: dict[str, set[str]] = {}
    for proc in tree:
        try:
            sockets = proc.net_connections(kind="tcp")
            name = " ".join(proc.cmdline()[:3])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN:
                found.setdefault(name, set()).add(f"{sock.laddr.ip}:{sock.laddr.port}")
    return found


def _submit_the_form(url: str, version: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require(CHROMIUM, "chromium"), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)
            page.get_by_role("spinbutton", name="Time in hospital (days)", exact=True).fill("6")
            page.get_by_role("button", name="Predict", exact=True).click()
            expect(page.get_by_text(f"v{version}", exact=True)).to_be_visible()
            answer = re.compile(
                r"^(No readmission|Readmitted (within|after) 30 days) \((NO|>30|<30)\)$"
            )
            expect(page.get_by_text(answer)).to_be_visible()
        finally:
            browser.close()


def test_local_mode_serves_the_platform_and_stops_on_ctrl_c(tmp_path, sample_csv):
    require("prometheus", "prometheus")  # the stack starts it when installed; here it must be
    ports = {name: free_port() for name in ("airflow", "mlflow", "api", "streamlit", "prometheus")}
    env = {
        **os.environ,
        "READMISSION_STATE_DIR": str(tmp_path / "state"),
        "DIABETES_CSV": str(sample_csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(sample_csv),
        "RAW_BATCH_SIZE": "300",
        "LOCAL_AIRFLOW_PORT": str(ports["airflow"]),
        "LOCAL_MLFLOW_PORT": str(ports["mlflow"]),
        "API_PORT": str(ports["api"]),
        "LOCAL_STREAMLIT_PORT": str(ports["streamlit"]),
        "LOCAL_PROMETHEUS_PORT": str(ports["prometheus"]),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("AIRFLOW_HOME", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # the local mode picks its own
    log = tmp_path / "local.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "readmission", "local"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        while "Serving until Ctrl-C" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
        text = log.read_text()
        assert "following clean_data_pipeline (asset_triggered__" in text
        assert "following model_training_pipeline (asset_triggered__" in text
        # progress while it waits: tasks as they change, each run's time, each stage's
        assert re.search(r"^every service answers after \d", text, re.M), text
        assert re.search(r"^ +\d+:\d\d  load_batch\[3\] +success \(\d", text, re.M), text
        assert re.search(r"^ +\d+:\d\d  train_candidate\[0\] +(running|success)", text, re.M)
        for dag_id in (RAW_DAG, CLEAN_DAG, TRAIN_DAG):
            assert re.search(rf"^{dag_id}: success in \d", text, re.M), text
        stage = r"^(stack start|raw load|cleaning|training|serving|total) +\d[\d.]* (s|min \d\d s)$"
        assert [m[0] for m in re.findall(stage, text, re.M)] == [
            "stack start",
            "raw load",
            "cleaning",
            "training",
            "serving",
            "total",
        ]
        assert "total          1,000       1,000" in text
        # a fresh platform: the stand-in (v1) in Production while the full search went on,
        # then the search's best if it beat it
        assert re.search(r"^ +\d+:\d\d  first_model +success \(\d", text, re.M), text
        assert re.search(r"^a first model in Production after \d", text, re.M), text
        served = re.search(r"^Production model: diabetes-readmission v(\d+) \(", text, re.M)
        assert served, text
        assert f"Airflow    http://127.0.0.1:{ports['airflow']}  (login admin / " in text
        assert f"Streamlit  http://127.0.0.1:{ports['streamlit']}" in text
        api = f"http://127.0.0.1:{ports['api']}"
        answer = httpx.post(f"{api}/predict", json=EXAMPLE, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == served[1]
        assert httpx.get(f"http://127.0.0.1:{ports['streamlit']}/_stcore/health").status_code == 200
        # a person uses the form, end to end, on the real model
        _submit_the_form(f"http://127.0.0.1:{ports['streamlit']}", served[1])
        assert httpx.get(f"http://127.0.0.1:{ports['mlflow']}/health").status_code == 200
        # Prometheus (make test installs it) scrapes the API
        targets = httpx.get(f"http://127.0.0.1:{ports['prometheus']}/api/v1/targets").json()
        scraped = {t["scrapeUrl"] for t in targets["data"]["activeTargets"]}
        assert f"http://127.0.0.1:{ports['api']}/metrics" in scraped
        # Nothing listens beyond this machine, and Airflow wants a login.
        listening = _listening_addresses(process.pid)
        assert listening, "no listening socket found: the check would prove nothing"
        exposed = {
            name: sorted(a for a in addresses if a.rsplit(":", 1)[0] not in ("127.0.0.1", "::1"))
            for name, addresses in listening.items()
        }
        assert {name: a for name, a in exposed.items() if a} == {}, listening
        airflow = f"http://127.0.0.1:{ports['airflow']}"
        assert httpx.get(f"{airflow}/api/v2/dags", timeout=10).status_code == 401
        wrong = httpx.post(f"{airflow}/auth/token", json={"username": "admin", "password": "x"})
        assert wrong.status_code == 401
        # a task's log, as `make run` reads a failed attempt's through the REST API
        config = localstack.AirflowConfig(
            home=tmp_path / "state" / "airflow",
            dags_folder=PROJECT_ROOT / "dags",
            port=ports["airflow"],
        )
        client = localstack.AirflowClient(config)
        client.login()
        training = re.search(rf"^following {TRAIN_DAG} \((\S+)\)$", text, re.M)
        assert training, text
        candidates = [
            ti
            for ti in client.task_instances(TRAIN_DAG, training[1])
            if ti["task_id"] == "train_candidate" and ti["map_index"] == 0
        ]
        assert len(candidates) == 1
        events = client.task_log(candidates[0])
        assert events
        assert all(isinstance(event, dict) for event in events), events[:3]
        assert any(event.get("logger") == "readmission.training" for event in events)
        assert localstack.failure_lines(events) == []  # it succeeded: nothing went wrong
        # The DAGs start once every service answers: the retraining check's scheduled run
        # (due at once) used to run as its DAG was created, before MLflow listened, fail,
        # and come back a minute later, when the platform had changed under it.
        checks = client.http.get(
            f"/api/v2/dags/{RETRAIN_DAG}/dagRuns/~/taskInstances", params={"task_id": "check"}
        ).json()["task_instances"]
        assert checks, "the retraining check never ran"
        assert {(ti["state"], ti["try_number"]) for ti in checks} == {("success", 1)}, checks
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:  # let it stop its services, then insist
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                process.kill()
    time.sleep(2)
    left = [name for name, port in ports.items() if _listening(port)]
    assert left == [], f"still listening after Ctrl-C: {left}"
