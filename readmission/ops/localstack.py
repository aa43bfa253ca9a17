"""The embedded local mode: the whole platform on this machine, no Docker.

`python -m readmission local` (what `make run` calls) finds and verifies the data file,
starts with honcho (`Procfile.local`) an MLflow server (SQLite store, artifacts on disk),
Airflow 3 (api-server, scheduler, dag-processor and triggerer, as `airflow standalone`
would run them but without the log servers it binds to every interface) with the DAGs of
`dags/`, the inference API and the Streamlit app, all on 127.0.0.1 with their state under
the state folder; triggers
`raw_data_initial_batch_load` and follows the Asset-triggered `clean_data_pipeline` and
`model_training_pipeline` (training also runs when no model is in Production yet),
printing each task's state as it changes, how long each DAG run took and, at the end, how
long each stage took (stack start, raw load, cleaning, training, serving); prints what the
stores hold, the Production model with its test metrics, the URLs and the Airflow login;
and serves until Ctrl-C, which stops every service. Re-running it loads nothing twice and
trains only when the data changed or no model is in Production.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx
import psutil

from readmission import dataset, pipeline, warehouse
from readmission.names import (
    CLEAN_DAG,
    PERFORMANCE_DAG,
    RAW_DAG,
    RETRAIN_DAG,
    SCORING_DAG,
    TRAIN_DAG,
)
from readmission.settings import Settings, get_settings

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
DAGS = (RAW_DAG, CLEAN_DAG, TRAIN_DAG, PERFORMANCE_DAG, SCORING_DAG, RETRAIN_DAG)
# Procfile.local's Airflow components. The scheduler and the triggerer run without their
# log servers: those listen on every interface, and the api-server reads task logs from
# the files they write on this same machine.
AIRFLOW_PROCESSES = (
    "airflow-api",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
FINISHED = {"success", "failed"}
#: Task states worth a line; a task passes through scheduled and queued in moments.
SHOWN_STATES = {"running", "success", "failed", "skipped", "up_for_retry", "upstream_failed"}
#: How often a DAG run being followed is asked for its state.
POLL_SECONDS = 3.0
#: Pauses before asking Airflow again a read or a change that can be made twice, while it
#: answers 5xx or cannot be reached (AirflowClient._send).
RETRY_PAUSES = (1.0, 2.0, 4.0)
#: While nothing changes, a line every this many seconds says what still runs.
HEARTBEAT_SECONDS = 30.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
        """The environment of the Airflow components (Procfile.local's airflow-*)."""
        venv_bin = str(Path(sys.executable).parent)
        return {
            **base,
            "PATH": f"{venv_bin}{os.pathsep}{base.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # paused until every service answers (wait_ready unpauses them): a DAG created
            # unpaused ran its first scheduled run at once, before MLflow listened
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # Its health server would listen on every interface; the REST API's
            # /api/v2/monitor/health (heartbeats) is what the local mode checks.
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }

    def password(self) -> str:
        return json.loads(self.passwords_file.read_text())[self.user]

    def ensure_password(self) -> str:
        """The admin's password, drawn once and kept in AIRFLOW_HOME (mode 600)."""
        if not self.passwords_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            partial = self.passwords_file.with_suffix(".partial")
            partial.write_text(json.dumps({self.user: secrets.token_urlsafe(16)}))
            partial.chmod(0o600)
            partial.replace(self.passwords_file)
        return self.password()


def airflow_config(settings: Settings) -> AirflowConfig:
    return AirflowConfig(
        home=settings.store.state_dir / "airflow",
        dags_folder=PROJECT_ROOT / "dags",
        port=settings.local.airflow_port,
    )


class AirflowClient:
    """The few calls of Airflow's REST API (v2) the local mode needs."""

    def __init__(
        self,
        config: AirflowConfig,
        transport: httpx.BaseTransport | None = None,
        retry_pauses: tuple[float, ...] = RETRY_PAUSES,
    ) -> None:
        self.config = config
        self.http = httpx.Client(base_url=config.url, timeout=30, transport=transport)
        self.retry_pauses = retry_pauses

    def _send(self, method: str, url: str, **kwargs) -> httpx.Response:
        """A read, or a change that can be made twice, asked again after each of
        `retry_pauses` while Airflow answers 5xx or cannot be reached: its metadata database
        (SQLite in the local mode) can stay locked by another component for longer than
        the 5 s its API server waits, and the request then fails with a 500."""
        for pause in self.retry_pauses:
            with contextlib.suppress(httpx.TransportError):
                response = self.http.request(method, url, **kwargs)
                if response.status_code < 500:
                    return response
            time.sleep(pause)
        return self.http.request(method, url, **kwargs)  # its answer or error, as it is

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

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        self._send("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        response = self.http.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        response = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()

    def runs_after(self, dag_id: str, after: str) -> list[dict]:
        response = self._send(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns",
            params={"run_after_gte": after, "order_by": "-run_after", "limit": 5},
        )
        response.raise_for_status()
        return response.json()["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (task_id, map_index, state, duration, ...)."""
        response = self._send(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )
        response.raise_for_status()
        return response.json()["task_instances"]

    def returned(self, dag_id: str, run_id: str, task_id: str) -> object:
        """What a task of the run returned (its `return_value` XCom, stored as JSON)."""
        response = self._send(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
            "/xcomEntries/return_value",
        )
        response.raise_for_status()
        value = response.json()["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # a string returned as such
                return json.loads(value)
        return value

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def task_log(self, ti: dict) -> list:
        """The log of a task instance's current attempt, as Airflow stored it: one dict per
        event (timestamp, event, level, logger, error_detail, ...)."""
        response = self._send(
            "GET",
            f"/api/v2/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances"
            f"/{ti['task_id']}/logs/{ti['try_number']}",
            params={"map_index": ti.get("map_index", -1), "full_content": True},
            headers={"Accept": "application/json"},
        )
        response.raise_for_status()
        return response.json()["content"]


#: How many lines of a failed attempt's log `failure_lines` gives at most.
FAILURE_LINES = 6


def failure_lines(events: list) -> list[str]:
    """What a failed attempt's log says went wrong: each exception (type, message, where it
    was raised) and the supervisor's errors (a signal, lost heartbeats); failing both, the
    last lines the task wrote to stderr."""
    found: list[str] = []
    stderr: list[str] = []
    for event in events:
        if not isinstance(event, dict):  # a line Airflow could not parse
            stderr.append(str(event))
            continue
        text = str(event.get("event") or "").strip()
        if event.get("logger") == "task.stderr":
            stderr.extend(line for line in text.splitlines() if line.strip())
            continue
        details = event.get("error_detail") or []
        for detail in details if isinstance(details, list) else []:
            frames = detail.get("frames") or [{}]
            where = frames[-1]
            line = f"{detail.get('exc_type')}: {detail.get('exc_value')}"
            if where:
                line += f" ({where.get('filename')}:{where.get('lineno')} in {where.get('name')})"
            found.append(line)
        if not details and event.get("level") in ("error", "critical") and text:
            found.append(text)
    return (found or stderr)[-FAILURE_LINES:]


def duration(seconds: float) -> str:
    """`12.3 s`, or `4 min 05 s` from a minute on."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:d}:{rest:02d}"


@dataclass
class RunProgress:
    """Prints a DAG run's task states as they change (task id, map index, state, time since
    the run was followed, and how long a finished task took), and, while nothing changes,
    every HEARTBEAT_SECONDS which tasks still run."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    last_line: float = field(init=False)
    seen: dict[tuple[str, int], str | None] = field(default_factory=dict)
    #: Called with a task's name when it first succeeds.
    on_success: Callable[[str], None] | None = None
    #: Called with a task instance that failed or is up for retry: what went wrong, a line
    #: each, printed under its state.
    on_failure: Callable[[dict], list[str]] | None = None

    def __post_init__(self) -> None:
        self.started = self.last_line = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, task_instances: list[dict]) -> None:
        for ti in sorted(task_instances, key=_happened):
            key = (ti["task_id"], ti.get("map_index", -1))
            state = ti.get("state")
            if self.seen.get(key) == state:
                continue
            self.seen[key] = state
            if state in SHOWN_STATES:
                took = f" ({duration(ti['duration'])})" if ti.get("duration") is not None else ""
                took = took if state != "running" else ""
                self._say(f"{_name(*key):<28} {state}{took}")
            if state in ("failed", "up_for_retry") and self.on_failure is not None:
                for line in self.on_failure(ti):
                    print(f"{'':10}{line}", file=self.out, flush=True)
            if state == "success" and self.on_success is not None:
                self.on_success(_name(*key))
        running = sorted(_name(*key) for key, state in self.seen.items() if state == "running")
        if running and self.clock() - self.last_line >= HEARTBEAT_SECONDS:
            self._say("still running: " + ", ".join(running))

    def _say(self, text: str) -> None:
        self.last_line = self.clock()
        print(f"  {_clock(self.elapsed):>6}  {text}", file=self.out, flush=True)


def _happened(ti: dict) -> str:
    """In the order things happened: when a task ended, else when it started (ISO times)."""
    return ti.get("end_date") or ti.get("start_date") or ""


def _name(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


@dataclass
class Stages:
    """How long each stage of `make run` took, printed as a table at the end."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    times: dict[str, float | None] = field(default_factory=dict)
    #: Moments reached, in seconds since the start (a first model in Production).
    milestones: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def reached(self, milestone: str) -> None:
        """Records `milestone` as reached now (the first time only)."""
        self.milestones.setdefault(milestone, self.elapsed)

    def timed(self, stage: str) -> contextlib.AbstractContextManager[None]:
        """Times the block as `stage`."""

        @contextlib.contextmanager
        def timing():
            began = self.clock()
            try:
                yield
            finally:
                self.times[stage] = self.clock() - began

        return timing()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    def report(self) -> None:
        lines = ["stage               time"]
        for stage, seconds in self.times.items():
            lines.append(f"{stage:<18}  {duration(seconds) if seconds is not None else '-'}")
        lines.append(f"{'total':<18}  {duration(self.clock() - self.started)}")
        for milestone, seconds in self.milestones.items():
            lines.append(f"{milestone} after {duration(seconds)}")
        print("\n".join(lines), file=self.out, flush=True)


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


PROCFILE = PROJECT_ROOT / "Procfile.local"


@dataclass(frozen=True)
class Stack:
    """Where each service of the local stack listens."""

    settings: Settings
    airflow: AirflowConfig

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.local.mlflow_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api.port}"

    @property
    def streamlit_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.local.streamlit_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.local.prometheus_port}"

    @property
    def with_prometheus(self) -> bool:
        """Prometheus runs when its binary is installed (Debian package `prometheus`)."""
        return shutil.which("prometheus") is not None

    def processes(self) -> list[str]:
        """The Procfile's processes this machine can run."""
        names = ["mlflow", *AIRFLOW_PROCESSES, "api", "streamlit"]
        return [*names, "prometheus"] if self.with_prometheus else names

    def ports(self) -> dict[str, int]:
        ports = {
            "MLflow": self.settings.local.mlflow_port,
            "Airflow": self.airflow.port,
            "API": self.settings.api.port,
            "Streamlit": self.settings.local.streamlit_port,
        }
        if self.with_prometheus:
            ports["Prometheus"] = self.settings.local.prometheus_port
        return ports

    def environment(self) -> dict[str, str]:
        """What every process of the stack sees: the local settings, spelled out."""
        env = self.airflow.environment(dict(os.environ))
        env.update(
            {
                "READMISSION_STATE_DIR": str(self.settings.store.state_dir),
                "DATA_DATABASE_URL": self.settings.database_url,
                "TRAINING_PROFILE": self.settings.training.profile,
                "MLFLOW_TRACKING_URI": self.mlflow_url,
                "LOCAL_MLFLOW_PORT": str(self.settings.local.mlflow_port),
                "API_PORT": str(self.settings.api.port),
                "API_URL": self.api_url,
                "API_MODEL_POLL_SECONDS": "10",
                "LOCAL_STREAMLIT_PORT": str(self.settings.local.streamlit_port),
                "LOCAL_PROMETHEUS_PORT": str(self.settings.local.prometheus_port),
                "MLFLOW_UI_URL": self.mlflow_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.settings.dataset.csv:
            env["DIABETES_CSV"] = str(self.settings.dataset.csv)
        return env


def start_stack(stack: Stack) -> tuple[subprocess.Popen, Path]:
    """Start every service with honcho (Procfile.local), in its own process group."""
    for name, port in stack.ports().items():
        if not _port_free("127.0.0.1", port):
            raise LocalStackError(f"port {port} ({name}) is in use: stop what listens there")
    (stack.settings.store.state_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    log = stack.settings.store.state_dir / "stack.log"
    prepare_airflow(stack, log)
    command = [
        str(Path(sys.executable).parent / "honcho"),
        "start",
        "--no-colour",
        "--procfile",
        str(PROCFILE),
        "--app-root",
        str(PROJECT_ROOT),
        "--env",
        os.devnull,  # the .env file holds the Compose values
        *stack.processes(),
    ]
    process = subprocess.Popen(
        command,
        env=stack.environment(),
        cwd=PROJECT_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


def prepare_airflow(stack: Stack, log: Path) -> None:
    """What `airflow standalone` did before starting the components: the admin's password
    and the metadata database (created or migrated; a no-op when up to date)."""
    stack.airflow.ensure_password()
    with log.open("ab") as out:
        migrated = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
            env=stack.environment(),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if migrated.returncode != 0:
        raise LocalStackError(f"airflow db migrate failed ({migrated.returncode}); see {log}")


def stop(process: subprocess.Popen, timeout: float = 60) -> None:
    """Stop the stack: SIGINT to its process group (each service stops cleanly), then
    SIGKILL whatever is left after `timeout`, in the group or not.

    Airflow's scheduler runs each task in a process group of its own, which the group's
    signals do not reach and which outlives the scheduler (a training task would go on
    for minutes): every process the stack started, found before and after the wait, is
    killed if still running."""
    started = _descendants(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    started += _descendants(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
    for straggler in started:
        with contextlib.suppress(psutil.Error):
            straggler.kill()  # psutil checks it is still the process it was
    process.wait()


def _descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_services(stack: Stack, process: subprocess.Popen, log: Path) -> None:
    """Wait until MLflow, the API and Streamlit answer (Airflow has its own check)."""
    checks = {
        "MLflow": f"{stack.mlflow_url}/health",
        "the API": f"{stack.api_url}/health",
        "Streamlit": f"{stack.streamlit_url}/_stcore/health",
    }
    if stack.with_prometheus:
        checks["Prometheus"] = f"{stack.prometheus_url}/-/ready"
    for name, url in checks.items():

        def ready(url: str = url) -> bool:
            if process.poll() is not None:
                raise LocalStackError(f"the stack stopped (exit {process.returncode}); see {log}")
            return _http_ok(url)

        _wait(f"{name} to answer", ready, timeout=240, interval=1, log=log)


def wait_ready(client: AirflowClient, process: subprocess.Popen, log: Path) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            raise LocalStackError(f"the stack stopped (exit {process.returncode}); see {log}")
        return client.healthy() and client.config.passwords_file.exists()

    _wait("Airflow to become healthy", ready, timeout=240, log=log)
    client.login()
    _wait("the DAGs to be parsed", lambda: all(client.dag_loaded(d) for d in DAGS), 180, log=log)
    for dag_id in DAGS:
        client.unpause(dag_id)


def _follow(
    client: AirflowClient,
    dag_id: str,
    run_id: str,
    log: Path,
    timeout: float,
    on_success: Callable[[str], None] | None = None,
) -> dict:
    """Wait for the run to finish, printing its tasks' states as they change and how long
    it took; `on_success` is called with each task's name as it succeeds."""
    print(f"following {dag_id} ({run_id})", flush=True)
    progress = RunProgress(on_success=on_success, on_failure=lambda ti: _failure(client, ti))

    def finished() -> dict | None:
        run = client.run(dag_id, run_id)
        progress.update(client.task_instances(dag_id, run_id))
        return run if run["state"] in FINISHED else None

    done = _wait(f"{dag_id} to finish", finished, timeout, interval=POLL_SECONDS, log=log)
    print(f"{dag_id}: {done['state']} in {duration(progress.elapsed)}", flush=True)
    if done["state"] != "success":
        raise LocalStackError(f"{dag_id} run {run_id} {done['state']}: see the Airflow UI")
    return done


def _failure(client: AirflowClient, ti: dict) -> list[str]:
    """What a failed attempt's log says, or why it could not be read."""
    try:
        return failure_lines(client.task_log(ti))
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return [f"(its log could not be read: {exc})"]


def _next_run(
    client: AirflowClient, dag_id: str, previous: dict, publisher: str, log: Path
) -> str | None:
    """The run an Asset event of `previous` scheduled, if its publishing task succeeded."""
    if client.task_states(previous["dag_id"], previous["dag_run_id"]).get(publisher) != "success":
        return None
    runs = _wait(
        f"{dag_id} to be scheduled by the Asset",
        lambda: client.runs_after(dag_id, previous["start_date"]),
        120,
        log=log,
    )
    return runs[0]["dag_run_id"]


#: The milestone `make run` reports: a model in Production, which the API then serves.
FIRST_MODEL = "a first model in Production"


def run_pipeline(
    client: AirflowClient, log: Path, settings: Settings, stages: Stages | None = None
) -> None:
    """Trigger the raw load and follow what it leads to; start what an earlier, stopped
    run left undone (rows to clean, no Production model yet). `stages` times each DAG,
    from the moment it is triggered or awaited; a stage with nothing to do shows `-`."""
    stages = stages or Stages()
    with stages.timed("raw load"):
        raw_run = client.trigger(RAW_DAG, {"batches": 0})
        print(f"triggered {RAW_DAG} ({raw_run})", flush=True)
        raw = _follow(client, RAW_DAG, raw_run, log, timeout=900)
    with stages.timed("cleaning"):
        clean_run = _next_run(client, CLEAN_DAG, raw, "publish", log)
        if clean_run is None and pipeline.store_summary(settings)["pending_clean"] > 0:
            clean_run = client.trigger(CLEAN_DAG, {"full_refresh": False})
        clean = _follow(client, CLEAN_DAG, clean_run, log, timeout=900) if clean_run else None
    with stages.timed("training"):
        train_run = _next_run(client, TRAIN_DAG, clean, "clean", log) if clean else None
        served_before = pipeline.production_model(settings) is not None
        if train_run is None and not served_before:
            train_run = client.trigger(TRAIN_DAG, {})  # the profile: TRAINING_PROFILE
        if train_run is not None:

            def served(task: str) -> None:  # a stand-in (first_model) or the search's best
                if (
                    not served_before
                    and task in ("first_model", "promote")
                    and pipeline.production_model(settings)
                ):
                    stages.reached(FIRST_MODEL)

            _follow(client, TRAIN_DAG, train_run, log, timeout=3600, on_success=served)
    if clean is None:
        stages.times["cleaning"] = None
    if train_run is None:
        stages.times["training"] = None
        print("nothing new to load, clean or train", flush=True)


def format_model(described: dict | None) -> str:
    """The Production model in a few lines."""
    if described is None:
        return "no Production model"
    metrics = described.get("metrics", {})
    family = described.get("tags", {}).get("family", "?")
    lines = [
        f"Production model: {described['name']} v{described['version']} "
        f"({family}, run {described['run_id']})"
    ]
    shown = ("macro_f1", "roc_auc_lt30", "accuracy", "weighted_f1", "log_loss")
    lines.append(
        "  test:  "
        + "  ".join(f"{m} {metrics[f'test_{m}']:.3f}" for m in shown if f"test_{m}" in metrics)
    )
    lines.append(
        "  valid: "
        + "  ".join(f"{m} {metrics[f'valid_{m}']:.3f}" for m in shown if f"valid_{m}" in metrics)
    )
    return "\n".join(lines)


@contextlib.contextmanager
def running_stack(
    settings: Settings, stages: Stages
) -> Iterator[tuple[Stack, AirflowClient, Path, subprocess.Popen]]:
    """Start every service and wait until each answers and the DAGs are unpaused (timed as
    the stage `stack start`); stop them all when the block ends."""
    stack = Stack(settings, airflow_config(settings))
    process = None
    try:
        with stages.timed("stack start"):
            process, log = start_stack(stack)
            print(f"starting MLflow, Airflow, the API and Streamlit (log: {log}) ...", flush=True)
            wait_services(stack, process, log)
            client = AirflowClient(stack.airflow)
            wait_ready(client, process, log)
            print(f"every service answers after {duration(stages.elapsed)}", flush=True)
        yield stack, client, log, process
    finally:
        if process is not None:
            stop(process)


def stack_settings(settings: Settings) -> Settings:
    """`settings` with this process asking the stack's MLflow too."""
    return settings.updated(
        MLFLOW_TRACKING_URI=Stack(settings, airflow_config(settings)).mlflow_url
    )


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached the local mode: it stops the stack as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def stop_on_terminate() -> None:
    """The services run in their own process group: Ctrl-C in the terminal reaches them all,
    a `kill` of this process (or the terminal's SIGHUP) would not. Such a signal unwinds
    this process like Ctrl-C instead, so `running_stack` stops them."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_terminated)


def main(serve: bool = True) -> int:
    stop_on_terminate()
    settings = get_settings()
    try:
        source = dataset.locate(settings)
    except dataset.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"data file: {source.path} (sha256 verified)", flush=True)
    pipeline.engine(settings)  # create the stores before the services race to
    stages = Stages()
    try:
        with running_stack(settings, stages) as (stack, client, log, process):
            settings = stack_settings(settings)
            run_pipeline(client, log, settings, stages)
            with stages.timed("serving"):
                # the new model in service now, not at the API's next poll
                httpx.post(f"{stack.api_url}/model/reload", timeout=120)
                described = pipeline.production_model(settings)
            print(warehouse.format_summary(pipeline.store_summary(settings)), flush=True)
            print(format_model(described), flush=True)
            stages.report()
            print(
                f"\n  Airflow    {stack.airflow.url}  (login {stack.airflow.user} / "
                f"{stack.airflow.password()})\n  MLflow     {stack.mlflow_url}\n"
                f"  API        {stack.api_url}  (docs: {stack.api_url}/docs)\n"
                f"  Streamlit  {stack.streamlit_url}\n"
                + (
                    f"  Prometheus {stack.prometheus_url}  (Grafana: see grafana/README.md)\n"
                    if stack.with_prometheus
                    else "  Prometheus not installed (apt-get install prometheus), not started\n"
                ),
                flush=True,
            )
            if serve:
                print("Serving until Ctrl-C.", flush=True)
                process.wait()
                print(f"a service stopped, so the stack did; see {log}", flush=True)
                return 1
            return 0
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except Terminated as exc:
        print(f"\n{exc}: stopping ...", flush=True)
        return 128 + exc.signum
