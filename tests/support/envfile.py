"""The project's `.env` as the deployment reads it.

`kompose/secrets_from_env.py` (standard library only) holds the project's reader of
Compose-style env files; tests load that script rather than parse `.env` again.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


@cache
def secrets_script() -> ModuleType:
    """kompose/secrets_from_env.py, loaded as a module."""
    spec = importlib.util.spec_from_file_location(
        "secrets_from_env", ROOT / "kompose" / "secrets_from_env.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_env() -> dict[str, str]:
    """The keys and values of the project's `.env` (references expanded)."""
    return secrets_script().read_env_file(ROOT / ".env")
