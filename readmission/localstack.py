"""The embedded local mode: Airflow standalone on this machine, the pipeline run through it.

`python -m readmission local` (what `make run` calls) finds and verifies the data file,
starts `airflow standalone` (UI on http://127.0.0.1:8080) with the DAGs of `dags/` and
the SQLite stores under the state folder, triggers `raw_data_initial_batch_load`, follows
the Asset-triggered `clean_data_pipeline`, prints what the stores hold and the login,
then keeps Airflow serving until Ctrl-C. Re-running it loads nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from readmission import dataset, pipeline, warehouse
from readmission.settings import Settings, get_settings

RAW_DAG = "raw_data_initial_batch_load"
CLEAN_DAG = "clean_data_pipeline"
DAGS = (RAW_DAG, CLEAN_DAG)
FINISHED = {"success", "failed"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class LocalStackError(RuntimeError):
    """The local stack could not start or the pipeline did not finish; says why."""


@dataclass(frozen=True)
class AirflowConfig:
    """Where the local Airflow lives and listens."""

    home: Path
    dags_folder: Path
    host: str = "127.0.0.1"
    port: int = 8080
    user: str = "admin"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """The process environment of `airflow standalone` and everything it starts."""
        venv_bin = str(Path(sys.executable).parent)
        return {
            **base,
            "PATH": f"{venv_bin}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        }

    def password(self) -> str:
        return json.loads(self.passwords_file.read_text())[self.user]


def airflow_config(settings: Settings) -> AirflowConfig:
    return AirflowConfig(
        home=settings.state_dir / "airflow",
        dags_folder=PROJECT_ROOT / "dags",
        port=settings.airflow_port,
    )


class AirflowClient:
    """The few calls of Airflow's REST API (v2) the local mode needs."""

    def __init__(self, config: AirflowConfig) -> None:
        self.config = config
        self.http = httpx.Client(base_url=config.url, timeout=30)

    def login(self) -> None:
        response = self.http.post(
            "/auth/token",
            json={"username": self.config.user, "password": self.config.password()},
        )
        response.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def healthy(self) -> bool:
        try:
            health = self.http.get("/api/v2/monitor/health").json()
        except (httpx.HTTPError, ValueError):
            return False
        parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all(health.get(p, {}).get("status") == "healthy" for p in parts)

    def dag_loaded(self, dag_id: str) -> bool:
        return self.http.get(f"/api/v2/dags/{dag_id}").status_code == 200

    def unpause(self, dag_id: str) -> None:
        self.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        response = self.http.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        response = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()

    def runs_after(self, dag_id: str, after: str) -> list[dict]:
        response = self.http.get(
            f"/api/v2/dags/{dag_id}/dagRuns",
            params={"run_after_gte": after, "order_by": "-run_after", "limit": 5},
        )
        response.raise_for_status()
        return response.json()["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        response = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}


def _wait(what: str, check, timeout: float, interval: float = 2.0, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    tail = ""
    if log and log.exists():
        tail = "\nlast lines of " + str(log) + ":\n" + "\n".join(log.read_text().splitlines()[-30:])
    raise LocalStackError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def _port_free(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        return sock.connect_ex((host, port)) != 0


def start_airflow(config: AirflowConfig) -> tuple[subprocess.Popen, Path]:
    """Start `airflow standalone` in its own process group, its output in a log file."""
    if not _port_free(config.host, config.port):
        raise LocalStackError(
            f"port {config.port} is in use: stop what listens there (another Airflow?) and retry"
        )
    config.home.mkdir(parents=True, exist_ok=True)
    log = config.home / "standalone.log"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        env=config.environment(dict(os.environ)),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop Airflow and every process it started (SIGTERM to the group, then SIGKILL)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_ready(client: AirflowClient, process: subprocess.Popen, log: Path) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise LocalStackError(f"airflow standalone exited with {process.returncode}; see {log}")
        return client.healthy() and client.config.passwords_file.exists()

    _wait("Airflow to become healthy", ready, timeout=240, log=log)
    client.login()
    _wait("the DAGs to be parsed", lambda: all(client.dag_loaded(d) for d in DAGS), 180, log=log)
    for dag_id in DAGS:
        client.unpause(dag_id)


def run_pipeline(client: AirflowClient, log: Path) -> None:
    """Trigger the raw load, then follow (or start) the cleaning run it leads to."""
    raw_run = client.trigger(RAW_DAG, {"batches": 0})
    print(f"triggered {RAW_DAG} ({raw_run})", flush=True)
    finished = _wait(f"{RAW_DAG} to finish", lambda: _finished(client, RAW_DAG, raw_run), 900,
                     log=log)  # fmt: skip
    if finished["state"] != "success":
        raise LocalStackError(f"{RAW_DAG} run {raw_run} {finished['state']}: see the Airflow UI")
    published = client.task_states(RAW_DAG, raw_run).get("publish") == "success"
    if published:  # the Asset event schedules the cleaning run
        clean = _wait(
            f"{CLEAN_DAG} to be scheduled by the raw_data Asset",
            lambda: client.runs_after(CLEAN_DAG, finished["start_date"]),
            120,
            log=log,
        )
        clean_run = clean[0]["dag_run_id"]
    elif pipeline.store_summary()["pending_clean"] > 0:  # e.g. an earlier run stopped early
        clean_run = client.trigger(CLEAN_DAG, {"full_refresh": False})
    else:
        print("nothing new to load or clean", flush=True)
        return
    print(f"following {CLEAN_DAG} ({clean_run})", flush=True)
    done = _wait(f"{CLEAN_DAG} to finish", lambda: _finished(client, CLEAN_DAG, clean_run), 900,
                 log=log)  # fmt: skip
    if done["state"] != "success":
        raise LocalStackError(f"{CLEAN_DAG} run {clean_run} {done['state']}: see the Airflow UI")


def _finished(client: AirflowClient, dag_id: str, run_id: str) -> dict | None:
    run = client.run(dag_id, run_id)
    return run if run["state"] in FINISHED else None


def main(serve: bool = True) -> int:
    settings = get_settings()
    try:
        source = dataset.locate(settings)
    except dataset.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"data file: {source.path} (sha256 verified)", flush=True)
    pipeline.engine(settings)  # create the stores before Airflow's tasks race to
    config = airflow_config(settings)
    process, log = start_airflow(config)
    print(f"starting Airflow (log: {log}) ...", flush=True)
    try:
        client = AirflowClient(config)
        wait_ready(client, process, log)
        print(f"Airflow UI: {config.url}  login: {config.user} / {config.password()}", flush=True)
        run_pipeline(client, log)
        print(warehouse.format_summary(pipeline.store_summary(settings)), flush=True)
        if serve:
            print(f"\nAirflow keeps serving on {config.url} (login {config.user} / "
                  f"{config.password()}). Ctrl-C stops it.", flush=True)  # fmt: skip
            process.wait()
        return 0
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping Airflow ...", flush=True)
        return 0
    finally:
        stop(process)
