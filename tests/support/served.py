"""Fixtures for tests that need the platform serving: one world per test module, with a store
of synthetic encounters, a throwaway MLflow holding a Production model trained on them, and
the API on a real socket. Registered for every test by tests/conftest.py."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from readmission import pipeline, synthetic
from readmission.api import create_app
from readmission.registry import Registry
from readmission.settings import Settings, get_settings
from tests.support.processes import MlflowServer
from tests.support.servers import ServerThread


@dataclass
class World:
    settings: Settings
    url: str
    client: httpx.Client
    server: ServerThread

    def wait_for(self, check: Callable[[], Any], timeout: float = 20) -> Any:
        """Ask `check` until it answers something true, and return that answer."""
        deadline = time.monotonic() + timeout
        while not (answer := check()):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
        return answer


def client_records(n: int, seed: int, first_patient: int | None = None) -> list[dict]:
    """Synthetic encounters as a client sends them (UCI names, '?' for missing, integers as
    integers); with `first_patient`, one patient each from that number (no shared history)."""
    from readmission import schema

    records = schema.request_records(synthetic.encounters(n, seed=seed).to_dict("records"))
    if first_patient is not None:
        for number, record in enumerate(records):
            record["patient_nbr"] = first_patient + number
    return records


def store_settings(root: Path, mlflow_uri: str, **extra) -> Settings:
    """Settings of a SQLite store under `root` fed from `root`'s synthetic file."""
    from readmission import dataset

    csv = root / "encounters.csv.gz"
    return Settings(
        DIABETES_CSV=csv,
        DIABETES_CSV_SHA256=dataset.sha256_of(csv),
        DATA_DATABASE_URL=f"sqlite:///{root / 'store' / 'main.db'}",
        READMISSION_STATE_DIR=root,
        MLFLOW_TRACKING_URI=mlflow_uri,
        RAW_BATCH_SIZE=500,
        **extra,
    )


def build_store(root: Path, mlflow_uri: str, rows: int = 2_000, **extra) -> Settings:
    """Load and clean synthetic encounters into a SQLite store under `root`."""
    synthetic.write_csv(synthetic.encounters(rows, seed=5), root / "encounters.csv.gz")
    settings = store_settings(root, mlflow_uri, **extra)
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    return settings


def point_mlflow_at(patch: pytest.MonkeyPatch, uri: str) -> None:
    """Point this process's MLflow (environment and process-wide globals) at `uri`;
    `patch` puts back what was there when it is undone."""
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_EXPERIMENT_NAME",
    ):
        patch.setenv(name, "")  # so that undoing restores what MLflow sets meanwhile
        patch.delenv(name)
    patch.setattr(_tracking_service.utils, "_tracking_uri", None)
    patch.setattr(_model_registry.utils, "_registry_uri", None)
    patch.setattr(fluent, "_active_experiment_id", None)
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # for the tests' own fluent calls (mlflow.get_run, ...)
    mlflow.set_registry_uri(uri)


@pytest.fixture(scope="module")
def mlflow_module(tmp_path_factory, mlflow_empty_store: Path) -> Iterator[str]:
    """A module-wide throwaway MLflow; MLflow's process-wide state restored afterwards."""
    root = tmp_path_factory.mktemp("mlflow")
    copy_sqlite(mlflow_empty_store, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        point_mlflow_at(patch, uri)
        Registry(uri).ensure_experiment(artifact_location=(root / "artifacts").as_uri())
        yield uri


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory, mlflow_empty_store: Path) -> Iterator[MlflowServer]:
    """A real MLflow server process; this process's MLflow points at it, restored after."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), template=mlflow_empty_store)
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        point_mlflow_at(patch, server.url)
        Registry(server.url).ensure_experiment()
        try:
            yield server
        finally:
            server.stop()


#: Settings of the served world: the API polls and flushes often, so tests wait little.
WORLD_SETTINGS = {
    "API_MODEL_POLL_SECONDS": 0.3,
    "API_PREDICTION_LOG_FLUSH_SECONDS": 0.2,
    "PERFORMANCE_REFRESH_SECONDS": 1,
}


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, mlflow_empty_store: Path) -> Path:
    """A store and an MLflow holding a first Production model (quick search, gradient
    boosting), built once a session: `world/` and `mlflow/` under the folder returned.
    Training it took 5 to 20 s in each of some fifteen modules; `trained` copies it."""
    root = tmp_path_factory.mktemp("trained-template")
    database = root / "mlflow" / "mlflow.db"
    copy_sqlite(mlflow_empty_store, database)
    uri = f"sqlite:///{database}"
    with pytest.MonkeyPatch.context() as patch:
        point_mlflow_at(patch, uri)
        Registry(uri).ensure_experiment(artifact_location=(root / "mlflow" / "artifacts").as_uri())
        settings = build_store(root / "world", uri, **WORLD_SETTINGS)
        get_settings.cache_clear()
        pipeline.train_and_promote(["hist_gradient_boosting"], "quick", settings)
        pipeline.engine(settings).dispose()  # its SQLite files closed and checkpointed
    get_settings.cache_clear()
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_module, trained_template: Path) -> Settings:
    """A store and a first Production model (quick search, gradient boosting): the
    session's template copied into this module's folders and its MLflow, the paths MLflow
    recorded moved with them, so that a module changes only its own copy."""
    root = tmp_path_factory.mktemp("world")
    shutil.copytree(trained_template / "world", root, dirs_exist_ok=True, ignore=_SQLITE_SCRATCH)
    database = Path(mlflow_module.removeprefix("sqlite:///"))
    shutil.copytree(
        trained_template / "mlflow" / "artifacts", database.parent / "artifacts", dirs_exist_ok=True
    )
    staged = root / "mlflow-copy.db"
    copy_sqlite(trained_template / "mlflow" / "mlflow.db", staged)
    _replace_text(staged, str(trained_template / "mlflow"), str(database.parent))
    copy_sqlite(staged, database)  # into the database this module's MLflow has open
    staged.unlink()
    get_settings.cache_clear()
    return store_settings(root, mlflow_module, **WORLD_SETTINGS)


#: SQLite's shared-memory index: rebuilt from the database and its log when opened.
_SQLITE_SCRATCH = shutil.ignore_patterns("*-shm")


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (its backup API), over `target` if it
    exists, even while other connections have it open."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _replace_text(database: Path, old: str, new: str) -> None:
    """`old` replaced by `new` in every text value of every table of a SQLite database."""
    with closing(sqlite3.connect(database)) as conn, conn:
        listed = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for table in [row[0] for row in listed]:
            for column in conn.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" in column[2].upper() or "TEXT" in column[2].upper():
                    conn.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE instr("{column[1]}", ?) > 0',
                        (old, new, old),
                    )


@pytest.fixture(scope="module")
def world(trained) -> Iterator[World]:
    server = ServerThread(create_app(trained)).start()
    client = httpx.Client(base_url=server.url, timeout=30)
    served = World(trained, server.url, client, server)
    served.wait_for(lambda: client.get("/ready").status_code == 200)
    yield served
    client.close()
    server.stop()
