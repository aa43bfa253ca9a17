"""Real server processes for fault tests and the soak: an MLflow tracking server and the API.

Each runs in its own session (process group), so a stop reaches every child it forked
(`mlflow server` runs uvicorn underneath) and a SIGKILL is a real crash. Both can be
started again on the same port and store, which is what an outage followed by a recovery
looks like to a client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.pgserver import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({process.returncode}):\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


class _Process:
    """A command in its own process group, its output in a log file."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, command: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.starts += 1
        out = self.log.open("a")
        out.write(f"\n--- start {self.starts} ---\n")
        out.flush()
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """Send `sig` to the whole group and wait; SIGKILL if it does not go."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(ProcessLookupError):  # children left behind by a SIGTERM
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


class MlflowServer(_Process):
    """`mlflow server` with a SQLite backend and proxied artifacts under `root`, on one port.

    `template` is an already migrated, empty MLflow database to start from (migrating a new
    one costs seconds). The server's background job runner (a handful of huey consumers
    that the platform never uses) is switched off: on 2 shared cores it tripled start-up.
    """

    def __init__(self, root: Path, port: int | None = None, template: Path | None = None) -> None:
        super().__init__(root, "mlflow")
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.database = root / "mlflow.db"
        if template is not None and not self.database.exists():
            shutil.copy(template, self.database)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> MlflowServer:
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self._spawn(
            [
                str(VENV_BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.database}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            env,
            cwd=self.root,
        )
        _wait_http(f"{self.url}/health", self.process, self.log, timeout)
        return self


class ApiProcess(_Process):
    """The inference API as deployed: `uvicorn app.main:app`, configured by environment."""

    def __init__(
        self, root: Path, env: dict[str, str], port: int | None = None, name: str = "api"
    ) -> None:
        super().__init__(root, name)
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120, wait_for: str = "/health") -> ApiProcess:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(PROJECT_ROOT),
            **self.env,
            "API_PORT": str(self.port),
        }
        self._spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env,
            cwd=PROJECT_ROOT,
        )
        _wait_http(f"{self.url}{wait_for}", self.process, self.log, timeout)
        return self

    def rss_mb(self) -> float:
        """Resident memory of the API process (uvicorn serves the app in this one process)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def tail(self) -> str:
        return _tail(self.log)
