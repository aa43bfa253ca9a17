"""Settings come from the environment, with embedded-mode defaults."""

from __future__ import annotations

import re
from pathlib import Path

from readmission.settings import VARIABLES, Settings, get_settings

ENV_FILE = Path(__file__).resolve().parents[2] / ".env"


def test_defaults_are_the_embedded_mode(tmp_path, monkeypatch):
    monkeypatch.delenv("READMISSION_STATE_DIR")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.store.state_dir == tmp_path / ".local"
    assert settings.database_url == f"sqlite:///{tmp_path / '.local' / 'data' / 'main.db'}"
    assert settings.raw.batch_size == 15_000
    assert settings.dataset.csv is None


def test_environment_overrides_every_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DATABASE_URL", "postgresql+psycopg://u@db:5432/mlops")
    monkeypatch.setenv("RAW_BATCH_SIZE", "500")
    monkeypatch.setenv("DIABETES_CSV", str(tmp_path / "x.csv.gz"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    settings = get_settings()
    assert settings.database_url == "postgresql+psycopg://u@db:5432/mlops"
    assert settings.raw.batch_size == 500
    assert settings.dataset.csv == tmp_path / "x.csv.gz"
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"


def test_relative_paths_are_resolved(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIABETES_CSV", "data/file.csv")
    assert get_settings().dataset.csv == tmp_path / "data" / "file.csv"


def test_every_setting_is_documented_in_the_env_file():
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_FILE.read_text(), re.MULTILINE))
    assert set(VARIABLES) <= listed, f"not in .env: {sorted(set(VARIABLES) - listed)}"
