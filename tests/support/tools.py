"""The programs and the data file some tests need, where `make test` puts them.

`make test` first runs scripts/test-prerequisites (the Debian packages: PostgreSQL's
server, Chromium, Prometheus, kubectl) and `python -m readmission locate` (the UCI file):
a test that needs one of them fails, saying how to get it, rather than being skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from readmission import dataset

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_CSV = PROJECT_ROOT.parent / "shared" / "data" / "diabetic_data.csv.gz"


def require(program: str | Path, package: str) -> str:
    """The path of `program` (a name looked up on PATH, or an absolute path); fails the
    calling test with the command that installs it when it is missing."""
    path = Path(program)
    found = str(path) if path.is_absolute() and path.is_file() else shutil.which(str(program))
    if not found:
        pytest.fail(
            f"{program} is missing: `make test` installs the Debian package {package} when run "
            f"as root (scripts/test-prerequisites); otherwise: sudo apt-get install {package}",
            pytrace=False,
        )
    return found


def real_csv() -> Path | None:
    """The real UCI file when this machine has it: DIABETES_CSV, else ../shared, else data/
    (where `make test` downloads it when none is found)."""
    if env := os.environ.get("DIABETES_CSV"):
        return Path(env) if Path(env).is_file() else None
    local = [PROJECT_ROOT / "data" / name for name in dataset.FILE_NAMES]
    return next((path for path in (SHARED_CSV, *local) if path.is_file()), None)


def require_real_csv() -> Path:
    """The real UCI file; fails the calling test, saying where it is looked for, without it."""
    found = real_csv()
    if found is None:
        pytest.fail(
            "the real UCI file is missing: `make test` finds or downloads it (python -m "
            "readmission locate, into data/); or set DIABETES_CSV to diabetic_data.csv(.gz)",
            pytrace=False,
        )
    return found
