"""Fixtures shared by every test tier.

`sample_csv` is a small synthetic file with the UCI header; `settings_for` builds settings
that point at it (its sha256 included) and at a throwaway state folder. The PostgreSQL
server is real: started once per session from the Debian binaries, one fresh database
per test.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmission import dataset, logs, synthetic
from readmission.settings import Settings, get_settings
from tests.support.pgserver import PostgresServer, PostgresUnavailableError

pytest_plugins = ["tests.support.served"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Airflow reads its home when first imported: point it at a throwaway one first."""
    if "AIRFLOW_HOME" not in os.environ or not os.environ.get("READMISSION_KEEP_AIRFLOW_HOME"):
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="readmission-airflow-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(PROJECT_ROOT / "dags")


#: Fixtures that start or reach a real server (PostgreSQL, MLflow, the API, Airflow's
#: database): a test using one is an integration test, any other a unit test.
SERVER_FIXTURES = frozenset(
    {
        "postgres_server",
        "postgres_url",
        "store_url",
        "sqlite_url",
        "mlflow_tracking",
        "mlflow_module",
        "tracking_server",
        "model_registry",
        "trained",
        "world",
        "airflow_db",
        "dagbag",
    }
)


#: The longest test modules (a whole stack each, or the real data), longest first: on
#: worker processes they are handed out before the others, so that none of them starts
#: last and keeps one core busy while the other has nothing left to do.
LONGEST_MODULES = (
    "tests/ops/test_replay.py",
    "tests/training/test_training.py",
    "tests/ops/test_local_mode.py",
    "tests/model/test_behaviour.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier is a marker, not a folder: `integration` when a test uses a real server,
    `unit` otherwise (`pytest -m unit` runs the quick ones). On pytest-xdist's workers,
    the longest modules first (`LONGEST_MODULES`), then the others, most tests first."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if fixtures & SERVER_FIXTURES else pytest.mark.unit)
        _node_id_with_its_parameters(item)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = longest_first(items)


def longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """`items` with whole modules reordered: `LONGEST_MODULES` in their order, then the
    others by their number of tests, most first (the order xdist itself would pick);
    within a module, the order is kept. The same on every worker: they must agree."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def rank(module: str) -> tuple[int, int]:
        known = LONGEST_MODULES.index(module) if module in LONGEST_MODULES else None
        return (known, 0) if known is not None else (len(LONGEST_MODULES), -len(modules[module]))

    return [item for module in sorted(modules, key=rank) for item in modules[module]]


def _node_id_with_its_parameters(item: pytest.Item) -> None:
    """schemathesis 4 names each operation's item `test[GET /health]` but, under pytest 9.2
    (which builds a node id from the parametrization, not the name), leaves them all one
    node id: pytest-xdist keeps one item per node id, so only the first operation would be
    fuzzed. The node id gets the parameters the name has."""
    original = getattr(item, "originalname", None)
    if not original or item.name == original or item.nodeid.endswith("]"):
        return
    if item.name.startswith(f"{original}[") and item.name.endswith("]"):
        item._id = item._id.with_params(item.name[len(original) + 1 : -1])


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test's logging configuration is undone: the root logger and the loggers
    `logs.configure` touches. A test that runs the CLI in-process (`main([...])`) would
    otherwise leave the root logger writing to its captured stderr, closed once the test
    ends ("Logging error ... I/O operation on closed file" in every later test)."""
    names = ("", logs.PACKAGE_LOGGER, *logs.CHATTY, *logs.UVICORN, logs.UVICORN_ACCESS)
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's environment or writes to the project's .local."""
    for name in ("DIABETES_CSV", "DATA_DATABASE_URL", "DIABETES_CSV_SHA256", "RAW_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("READMISSION_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("READMISSION_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def sample_frame():
    return synthetic.encounters(1_000, seed=7)


@pytest.fixture
def sample_csv(tmp_path: Path, sample_frame) -> Path:
    return synthetic.write_csv(sample_frame, tmp_path / "sample" / "diabetic_data.csv.gz")


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a given data file and store URL (the file's hash is trusted)."""

    def build(csv: Path, database_url: str | None = None, **extra) -> Settings:
        return Settings(
            DIABETES_CSV=csv,
            DIABETES_CSV_SHA256=dataset.sha256_of(csv),
            DATA_DATABASE_URL=database_url,
            READMISSION_STATE_DIR=tmp_path / "state",
            **extra,
        )

    return build


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer().start()
    except PostgresUnavailableError as exc:
        pytest.fail(f"the integration tests need a PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield postgres_server.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'main.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on both back ends."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def mlflow_empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated, empty MLflow database (migrating costs ~2 s) that tests copy."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_tracking(
    mlflow_empty_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A private MLflow (SQLite store, artifacts in tmp_path), its URI in the environment;
    MLflow's process-wide globals restored afterwards."""
    import mlflow

    from readmission.registry import Registry
    from tests.support.served import copy_sqlite, point_mlflow_at

    database = tmp_path / "mlflow.db"
    copy_sqlite(mlflow_empty_store, database)
    uri = f"sqlite:///{database}"
    point_mlflow_at(monkeypatch, uri)
    Registry(uri).ensure_experiment(artifact_location=(tmp_path / "artifacts").as_uri())
    get_settings.cache_clear()
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def model_registry():
    """The registry the test's MLflow fixture points this process at (list that fixture,
    `mlflow_tracking`, `mlflow_module`, `trained`, ..., before this one)."""
    import mlflow

    from readmission.registry import Registry

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        pytest.fail("model_registry needs an MLflow fixture before it (mlflow_tracking, ...)")
    return Registry(mlflow.get_tracking_uri())
