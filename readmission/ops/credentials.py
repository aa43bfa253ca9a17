"""Refuse well-known and development credentials outside development.

`.env` ships with development values (`dev-...-change-me`), and the images' upstream
defaults (`admin`/`admin` for Grafana, `minioadmin` for MinIO, ...) are the first ones an
attacker tries. The Compose deployment runs this check in a one-shot service the
credential-bearing services wait for, and `kompose/secrets_from_env.py` runs the same rules
before writing the Kubernetes Secrets:

    python -m readmission check-credentials        (exit 2 naming each bad key)

`READMISSION_DEV_CREDENTIALS=true` (set in the committed `.env`) lets development values
through with a warning; anywhere reachable by others, set it to false and choose real
secrets.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

#: The keys checked: every password, token and key the deployment reads.
SECRET_KEYS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "MLOPS_DB_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "GF_SECURITY_ADMIN_PASSWORD",
    "JUPYTER_TOKEN",
)
USER_KEYS = ("POSTGRES_USER", "MINIO_ROOT_USER", "GF_SECURITY_ADMIN_USER", "AIRFLOW_ADMIN_USER")
DEV_FLAG = "READMISSION_DEV_CREDENTIALS"
MIN_LENGTH = 12
#: Upstream defaults and the first guesses of every scanner (compared case-insensitively).
WELL_KNOWN = frozenset(
    {
        "admin",
        "administrator",
        "airflow",
        "changeit",
        "changeme",
        "default",
        "grafana",
        "jupyter",
        "letmein",
        "minio",
        "minio123",
        "minioadmin",
        "mlflow",
        "password",
        "password1",
        "postgres",
        "qwerty",
        "root",
        "secret",
        "test",
        "toor",
        "123456",
        "12345678",
        "123456789",
    }
)
#: Markers of the development values written in `.env`.
DEV_MARKERS = ("change-me", "changeme", "change_me")


@dataclass(frozen=True)
class Problem:
    key: str
    reason: str
    development: bool  # a development value: allowed with the flag

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


def problems(env: Mapping[str, str], keys: tuple[str, ...] = SECRET_KEYS) -> list[Problem]:
    """What is wrong with each credential of `env` (an empty list when all are fine)."""
    found = []
    users = {env.get(k, "").lower() for k in USER_KEYS} - {""}
    for key in keys:
        value = env.get(key)
        if value is None or value == "":
            found.append(Problem(key, "not set", development=False))
        elif value.lower() in WELL_KNOWN:
            found.append(Problem(key, "a well-known default password", development=False))
        elif value.lower() in users:
            found.append(Problem(key, "the same as a user name", development=False))
        elif any(marker in value.lower() for marker in DEV_MARKERS):
            found.append(Problem(key, "the development value of .env", development=True))
        elif len(value) < MIN_LENGTH:
            found.append(Problem(key, f"shorter than {MIN_LENGTH} characters", development=True))
    return found


def dev_allowed(env: Mapping[str, str]) -> bool:
    return env.get(DEV_FLAG, "").strip().lower() in ("1", "true", "yes")


def refused(env: Mapping[str, str], keys: tuple[str, ...] = SECRET_KEYS) -> list[Problem]:
    """The problems that stop a deployment: all of them, or, with the development flag,
    those that no flag excuses (unset values, well-known defaults, a user's name)."""
    found = problems(env, keys)
    return [p for p in found if not (p.development and dev_allowed(env))]


def main(env: Mapping[str, str] | None = None, keys: tuple[str, ...] = SECRET_KEYS) -> int:
    env = os.environ if env is None else env
    found = problems(env, keys)
    stop = refused(env, keys)
    for problem in found:
        level = "error" if problem in stop else "warning"
        print(f"{level}: {problem}", file=sys.stderr)
    if stop:
        print(
            f"refusing these credentials. Set real values in .env (or the Kubernetes Secrets); "
            f"development values pass only with {DEV_FLAG}=true.",
            file=sys.stderr,
        )
        return 2
    if found:
        print(f"development credentials accepted ({DEV_FLAG}=true): never expose this deployment")
    else:
        print(f"credentials ok ({len(keys)} checked)")
    return 0
