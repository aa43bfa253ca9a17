"""initdb/01_schemas.sql on a real server: users, databases, schemas; idempotent; no secrets."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from readmission import db

pytestmark = pytest.mark.postgres

SQL = Path(__file__).resolve().parents[2] / "initdb" / "01_schemas.sql"
PASSWORDS = {
    "AIRFLOW_DB_PASSWORD": "a-secret",
    "MLFLOW_DB_PASSWORD": "m-secret",
    "MLOPS_DB_PASSWORD": "d-secret",
}


def _psql(server, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(server.bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(SQL),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def initialised(postgres_server):
    for _ in range(2):  # the second run must change nothing and fail on nothing
        result = _psql(postgres_server, PASSWORDS)
        assert result.returncode == 0, result.stderr
    return postgres_server


def test_creates_users_and_their_databases(initialised):
    with sa.create_engine(initialised.url()).connect() as conn:
        owners = dict(
            conn.execute(
                sa.text(
                    "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
                    "WHERE datname IN ('airflow', 'mlflow', 'mlops')"
                )
            ).all()
        )
    assert owners == {"airflow": "airflow", "mlflow": "mlflow", "mlops": "mlops"}


def test_data_database_has_the_raw_and_clean_schemas_owned_by_mlops(initialised):
    with sa.create_engine(initialised.url("mlops")).connect() as conn:
        schemas = dict(
            conn.execute(
                sa.text(
                    "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace "
                    "WHERE nspname IN ('raw_data', 'clean_data', 'serving')"
                )
            ).all()
        )
    assert schemas == {"raw_data": "mlops", "clean_data": "mlops", "serving": "mlops"}


def test_the_mlops_user_can_create_the_pipeline_tables(initialised):
    url = f"postgresql+psycopg://mlops@127.0.0.1:{initialised.port}/mlops"
    engine = db.make_engine(url)
    db.create_tables(engine)
    owned = "SELECT schemaname || '.' || tablename FROM pg_tables WHERE tableowner = 'mlops'"
    with engine.connect() as conn:
        tables = set(conn.scalars(sa.text(owned)))
    assert {
        "raw_data.diabetes",
        "raw_data.batches",
        "raw_data.quarantine",
        "clean_data.diabetes",
        "clean_data.runs",
    } <= tables
    engine.dispose()


def test_passwords_come_from_the_environment_only(postgres_server):
    assert not re.search(r"PASSWORD\s+'", SQL.read_text(), re.IGNORECASE)  # no literal
    result = _psql(postgres_server, {"AIRFLOW_DB_PASSWORD": "x", "MLFLOW_DB_PASSWORD": "y"})
    assert result.returncode == 3
    assert "MLOPS_DB_PASSWORD is not set" in result.stdout + result.stderr
