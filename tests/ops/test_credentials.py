"""The credentials check: well-known defaults never pass, development values only with the
flag, and the command says which key and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from readmission.ops import credentials
from tests.support.envfile import project_env

ROOT = Path(__file__).resolve().parents[2]
STRONG = "q7Vx-2mLp_9RtZ4k"


def _env(**overrides: str) -> dict[str, str]:
    env = {key: f"{STRONG}-{i}" for i, key in enumerate(credentials.SECRET_KEYS)}
    env.update(
        POSTGRES_USER="postgres",
        MINIO_ROOT_USER="minio-admin",
        GF_SECURITY_ADMIN_USER="admin",
        AIRFLOW_ADMIN_USER="admin",
    )
    env.update(overrides)
    return env


def test_strong_credentials_pass():
    assert credentials.problems(_env()) == []
    assert credentials.main(_env()) == 0


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("GF_SECURITY_ADMIN_PASSWORD", "admin", "well-known"),
        ("MINIO_ROOT_PASSWORD", "minioadmin", "well-known"),
        ("POSTGRES_PASSWORD", "Postgres", "well-known"),
        ("AIRFLOW_ADMIN_PASSWORD", "", "not set"),
        ("MINIO_ROOT_PASSWORD", "minio-admin", "user name"),
    ],
)
def test_well_known_values_are_refused_even_with_the_development_flag(key, value, reason, capsys):
    env = _env(**{key: value}, READMISSION_DEV_CREDENTIALS="true")
    refused = credentials.refused(env)
    assert [(p.key, reason in p.reason) for p in refused] == [(key, True)]
    assert credentials.main(env) == 2
    assert f"error: {key}:" in capsys.readouterr().err


def test_a_missing_key_is_refused():
    env = _env()
    del env["JUPYTER_TOKEN"]
    assert [str(p) for p in credentials.refused(env)] == ["JUPYTER_TOKEN: not set"]


@pytest.mark.parametrize("value", ["dev-grafana-change-me", "short-pw"])
def test_development_values_pass_only_with_the_flag(value):
    env = _env(GF_SECURITY_ADMIN_PASSWORD=value)
    assert [p.key for p in credentials.refused(env)] == ["GF_SECURITY_ADMIN_PASSWORD"]
    env["READMISSION_DEV_CREDENTIALS"] = "true"
    assert credentials.refused(env) == []
    assert credentials.main(env) == 0


def test_the_committed_env_file_is_development_only():
    """.env's values are development ones: refused without the flag, accepted with it."""
    env = project_env()
    assert env.get("READMISSION_DEV_CREDENTIALS") == "true"
    assert credentials.refused(env) == []
    production = {**env, "READMISSION_DEV_CREDENTIALS": "false"}
    assert {p.key for p in credentials.refused(production)} == set(credentials.SECRET_KEYS)


def test_the_command_exits_2_naming_the_keys():
    well_known, too_short = min(credentials.WELL_KNOWN), STRONG[: credentials.MIN_LENGTH - 1]
    weak = _env(GF_SECURITY_ADMIN_PASSWORD=well_known, MINIO_ROOT_PASSWORD=too_short)
    env = {**os.environ, **weak}
    env.pop("READMISSION_DEV_CREDENTIALS", None)
    done = subprocess.run(
        [sys.executable, "-m", "readmission", "check-credentials"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done
    assert "GF_SECURITY_ADMIN_PASSWORD: a well-known default password" in done.stderr
    assert "MINIO_ROOT_PASSWORD: shorter than 12 characters" in done.stderr
    only = subprocess.run(
        [sys.executable, "-m", "readmission", "check-credentials", "--key", "JUPYTER_TOKEN"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert only.returncode == 0, only
