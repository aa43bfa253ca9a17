"""Settings of every service, read from the environment.

Each field has an embedded-mode default (SQLite files and a local MLflow under a state
folder) and is overridden by the variable named in its alias; `.env` lists the values
the Docker Compose deployment uses. Nothing happens at import time: call
`get_settings()`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The UCI archive of data set 296 (a zip holding `diabetic_data.csv`).
UCI_ARCHIVE_URL = (
    "https://archive.ics.uci.edu/static/public/296/"
    "diabetes+130-us+hospitals+for+years+1999-2008.zip"
)
#: sha256 of the uncompressed `diabetic_data.csv` (see ../shared/data/README.md).
DIABETES_CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"


class Settings(BaseSettings):
    """Where the data comes from, where it goes, and how it is cut into batches."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    state_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".local",
        validation_alias="READMISSION_STATE_DIR",
        description="Folder for the embedded mode's SQLite files, MLflow store and Airflow home.",
    )
    diabetes_csv: Path | None = Field(
        default=None,
        validation_alias="DIABETES_CSV",
        description="Path of the UCI file (.csv or .csv.gz); looked for first.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / "data",
        validation_alias="READMISSION_DATA_DIR",
        description="Folder searched for diabetic_data.csv(.gz) and where a download is saved.",
    )
    dataset_url: str = Field(
        default=UCI_ARCHIVE_URL,
        validation_alias="DIABETES_DATASET_URL",
        description="Where the official archive is downloaded from when no file is found.",
    )
    dataset_sha256: str = Field(
        default=DIABETES_CSV_SHA256,
        validation_alias="DIABETES_CSV_SHA256",
        description="Expected sha256 of the uncompressed CSV.",
    )
    data_database_url: str | None = Field(
        default=None,
        validation_alias="DATA_DATABASE_URL",
        description=(
            "SQLAlchemy URL of the store holding the raw_data and clean_data schemas. "
            "Unset: SQLite files in state_dir (schemas attached as databases)."
        ),
    )
    batch_size: int = Field(
        default=15_000,
        gt=0,
        validation_alias="RAW_BATCH_SIZE",
        description="Rows per raw-load batch (the original project's 15,000).",
    )
    raw_load_workers: int = Field(
        default=2,
        ge=1,
        le=16,
        validation_alias="RAW_LOAD_WORKERS",
        description="Batches written at once by the CLI's raw load on PostgreSQL.",
    )
    split_salt: str = Field(
        default="diabetes-130-v1",
        validation_alias="SPLIT_SALT",
        description=(
            "Salt of the patient hash behind train/valid/test; fixed by a store's first "
            "load (another salt is refused: a patient would land in two splits)."
        ),
    )
    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking server.",
    )

    training_profile: Literal["full", "quick"] = Field(
        default="full",
        validation_alias="TRAINING_PROFILE",
        description="Search of the training candidates: full, or quick (one small config each).",
    )
    training_seed: int = Field(
        default=0, validation_alias="TRAINING_SEED", description="Seed of every random choice."
    )
    airflow_port: int = Field(
        default=8080,
        validation_alias="LOCAL_AIRFLOW_PORT",
        description="Port of the local mode's Airflow UI (listening on 127.0.0.1 only).",
    )

    local_mlflow_port: int = Field(
        default=5000,
        validation_alias="LOCAL_MLFLOW_PORT",
        description="Port of the local mode's MLflow server (listening on 127.0.0.1 only).",
    )

    local_streamlit_port: int = Field(
        default=8501,
        validation_alias="LOCAL_STREAMLIT_PORT",
        description="Port of the local mode's Streamlit app (listening on 127.0.0.1 only).",
    )

    local_prometheus_port: int = Field(
        default=9090,
        validation_alias="LOCAL_PROMETHEUS_PORT",
        description="Port of the local mode's Prometheus, when installed (127.0.0.1 only).",
    )

    # --- the inference API (app/, readmission/api)
    api_host: str = Field(
        default="127.0.0.1",
        validation_alias="API_HOST",
        description="Interface the API listens on (0.0.0.0 inside a container).",
    )
    api_port: int = Field(default=8989, validation_alias="API_PORT", description="API port.")
    api_url: str = Field(
        default="http://127.0.0.1:8989",
        validation_alias="API_URL",
        description="Where clients (Streamlit, Locust) reach the API.",
    )
    model_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias="API_MODEL_POLL_SECONDS",
        description="How often the API asks the registry whether a new model was promoted.",
    )
    max_batch: int = Field(
        default=1_000,
        gt=0,
        validation_alias="API_MAX_BATCH",
        description="Most encounters one /predict/batch call may carry.",
    )
    max_body_bytes: int = Field(
        default=4_000_000,
        gt=0,
        validation_alias="API_MAX_BODY_BYTES",
        description="Largest request body the API reads (413 beyond).",
    )
    predict_queue_rows: int = Field(
        default=10_000,
        gt=0,
        validation_alias="API_PREDICT_QUEUE_ROWS",
        description="Encounters that may wait to be scored; beyond, a 503 with Retry-After.",
    )
    patient_history: bool = Field(
        default=True,
        validation_alias="API_PATIENT_HISTORY",
        description="Look up a patient's earlier encounters (by patient_nbr) in clean_data.",
    )
    prediction_log: bool = Field(
        default=True,
        validation_alias="API_PREDICTION_LOG",
        description="Write every prediction to serving.predictions (queued, in batches).",
    )
    prediction_log_queue: int = Field(
        default=50_000,
        gt=0,
        validation_alias="API_PREDICTION_LOG_QUEUE",
        description="Predictions kept in memory while the database is unreachable.",
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        validation_alias="API_PREDICTION_LOG_FLUSH_SECONDS",
        description="Longest a logged prediction waits before it is written.",
    )
    drift_window: int = Field(
        default=1_000,
        gt=0,
        validation_alias="API_DRIFT_WINDOW",
        description="Recent encounters compared with the training reference for drift.",
    )
    drift_min_rows: int = Field(
        default=200,
        gt=0,
        validation_alias="API_DRIFT_MIN_ROWS",
        description="Encounters the drift window needs before it is scored.",
    )
    drift_psi_threshold: float = Field(
        default=0.2,
        gt=0,
        validation_alias="API_DRIFT_PSI_THRESHOLD",
        description="PSI above which a feature counts as drifted (exported for the alert).",
    )
    registry_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias="API_REGISTRY_TIMEOUT_SECONDS",
        description="Timeout of each call the API makes to the MLflow registry.",
    )

    @field_validator("state_dir", "data_dir", "diabetes_csv")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def database_url(self) -> str:
        """The data store URL, defaulting to the embedded SQLite store."""
        if self.data_database_url:
            return self.data_database_url
        return f"sqlite:///{self.state_dir / 'data' / 'main.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return Settings()
