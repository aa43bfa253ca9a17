"""The venv `make venv` builds: what every process it runs pays before its first line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

#: What an Airflow task, the API and every test that starts a process import.
IMPORTS = "import mlflow, sklearn, pandas, fastapi, readmission.pipeline"
LISTED = """
import importlib.util, json, os, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
files = [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
mine = [f for f in files if f.startswith(site) and f.endswith(".py")]
missing = [f for f in mine if not os.path.exists(importlib.util.cache_from_source(f))]
print(json.dumps({"modules": len(mine), "missing": missing[:20], "count": len(missing)}))
"""


def test_installed_packages_come_with_their_bytecode():
    """uv installs without compiling bytecode unless asked; with PYTHONDONTWRITEBYTECODE
    set (as on this machine) no process ever writes it, so every one compiled some 3,000
    modules from source again: 4.7 s of an Airflow training task's 18 s."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    found = subprocess.run(
        [sys.executable, "-c", f"{IMPORTS}\n{LISTED}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    report = json.loads(found.stdout.strip().splitlines()[-1])
    assert report["modules"] > 1_000, report
    assert report["count"] == 0, report
