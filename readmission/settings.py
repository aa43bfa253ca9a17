"""Settings of every service, read from the environment, in groups.

Each group is one concern with one prefix for its variables (`API_`, `LOCAL_`, `RAW_`,
`TRAINING_`, `MLFLOW_`, `DIABETES_`, `PERFORMANCE_`, `RETRAIN_`,
`LOG_`), except for the few names the original project's
deployments already use (`READMISSION_STATE_DIR`, `READMISSION_DATA_DIR`,
`DATA_DATABASE_URL`, `SPLIT_SALT`). Every field has an embedded-mode default (SQLite files
and a local MLflow under a state folder); `.env` lists every variable with the value the
Docker Compose deployment uses. Nothing happens at import time: call `get_settings()`.

    settings = get_settings()
    settings.api.port, settings.raw.batch_size, settings.database_url
    settings.updated(API_PREDICTION_LOG=False)  # a copy, changes named as in the environment
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from readmission.names import Profile

#: The UCI archive of data set 296 (a zip holding `diabetic_data.csv`).
UCI_ARCHIVE_URL = (
    "https://archive.ics.uci.edu/static/public/296/"
    "diabetes+130-us+hospitals+for+years+1999-2008.zip"
)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]
#: sha256 of the uncompressed `diabetic_data.csv` (see ../shared/data/README.md).
DIABETES_CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"


def _prefixed(prefix: str) -> ConfigDict:
    """A group whose fields are read from PREFIX + FIELD in upper case (API_PORT)."""
    return ConfigDict(
        frozen=True,
        populate_by_name=True,
        extra="ignore",
        alias_generator=lambda name: prefix + name.upper(),
    )


def _absolute(value: Path | None) -> Path | None:
    return value.expanduser().resolve() if value is not None else None


def _url(default: str) -> Callable[[Any], str]:
    """A URL without surrounding blanks or a trailing slash; blank means the default."""

    def check(value: Any) -> str:
        text = str(value or "").strip()
        return (text or default).rstrip("/")

    return check


class StoreSettings(BaseModel):
    """Where the platform keeps its state."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    state_dir: Path = Field(
        default_factory=lambda: Path.cwd() / ".local",
        alias="READMISSION_STATE_DIR",
        description="Folder for the embedded mode's SQLite files, MLflow store and Airflow home.",
    )
    database_url: str | None = Field(
        default=None,
        alias="DATA_DATABASE_URL",
        description=(
            "SQLAlchemy URL of the store holding the raw_data and clean_data schemas. "
            "Unset: SQLite files in state_dir (schemas attached as databases)."
        ),
    )

    _absolute_state_dir = field_validator("state_dir")(_absolute)

    @property
    def url(self) -> str:
        """The data store URL, defaulting to the embedded SQLite store."""
        return self.database_url or f"sqlite:///{self.state_dir / 'data' / 'main.db'}"


class DatasetSettings(BaseModel):
    """Where the UCI file comes from."""

    model_config = _prefixed("DIABETES_")

    csv: Path | None = Field(
        default=None, description="Path of the UCI file (.csv or .csv.gz); looked for first."
    )
    data_dir: Path = Field(
        default_factory=lambda: Path.cwd() / "data",
        alias="READMISSION_DATA_DIR",
        description="Folder searched for diabetic_data.csv(.gz) and where a download is saved.",
    )
    url: str = Field(
        default=UCI_ARCHIVE_URL,
        alias="DIABETES_DATASET_URL",
        description="Where the official archive is downloaded from when no file is found.",
    )
    csv_sha256: str = Field(
        default=DIABETES_CSV_SHA256, description="Expected sha256 of the uncompressed CSV."
    )

    _absolute_paths = field_validator("csv", "data_dir")(_absolute)


class RawSettings(BaseModel):
    """How the file is cut into batches and split by patient; both fixed by a store's first
    load."""

    model_config = _prefixed("RAW_")

    batch_size: int = Field(
        default=15_000, gt=0, description="Rows per raw-load batch (the original project's)."
    )
    load_workers: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Batches written at once by the CLI's raw load on PostgreSQL.",
    )
    split_salt: str = Field(
        default="diabetes-130-v1",
        alias="SPLIT_SALT",
        description=(
            "Salt of the patient hash behind train/valid/test; fixed by a store's first "
            "load (another salt is refused: a patient would land in two splits)."
        ),
    )


class TrainingSettings(BaseModel):
    """The candidates' search."""

    model_config = _prefixed("TRAINING_")

    profile: Profile = Field(
        default="full",
        description="Search of the training candidates: full, or quick (one small config each).",
    )
    seed: int = Field(default=0, description="Seed of every random choice.")
    max_tree_nodes: int = Field(
        default=100_000,
        gt=0,
        description=(
            "Serving budget of a candidate: a configuration of more tree nodes is kept only "
            "when none fits (walking and explaining a model cost in proportion to them)."
        ),
    )


class MlflowSettings(BaseModel):
    """The MLflow tracking server and registry."""

    model_config = _prefixed("MLFLOW_")

    tracking_uri: str = Field(default="http://127.0.0.1:5000", description="MLflow server.")
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="The MLflow UI as a browser reaches it (Streamlit's registry link).",
    )

    _url = field_validator("ui_url", mode="before")(_url("http://127.0.0.1:5000"))


class LocalSettings(BaseModel):
    """Ports of the embedded local mode's services (listening on 127.0.0.1 only)."""

    model_config = _prefixed("LOCAL_")

    airflow_port: int = Field(default=8080, description="The Airflow UI.")
    mlflow_port: int = Field(default=5000, description="The MLflow server.")
    streamlit_port: int = Field(default=8501, description="The Streamlit app.")
    prometheus_port: int = Field(default=9090, description="Prometheus, when installed.")


class ApiSettings(BaseModel):
    """The inference API (app/, readmission/api) and how its clients reach it."""

    model_config = _prefixed("API_")

    host: str = Field(
        default="127.0.0.1", description="Interface the API listens on (0.0.0.0 in a container)."
    )
    port: int = Field(default=8989, description="API port.")
    url: str = Field(
        default="http://127.0.0.1:8989",
        description="Where clients (Streamlit, Locust) reach the API.",
    )
    timeout_seconds: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="How long Streamlit waits for it."
    )
    model_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the API asks the registry whether a new model was promoted.",
    )
    max_batch: int = Field(
        default=1_000, gt=0, description="Most encounters one /predict/batch call may carry."
    )
    max_body_bytes: int = Field(
        default=4_000_000, gt=0, description="Largest request body the API reads (413 beyond)."
    )
    predict_queue_rows: int = Field(
        default=10_000,
        gt=0,
        description="Encounters that may wait to be scored; beyond, a 503 with Retry-After.",
    )
    patient_history: bool = Field(
        default=True,
        description="Look up a patient's earlier encounters (by patient_nbr) in clean_data.",
    )
    prediction_log: bool = Field(
        default=True,
        description="Write every prediction to serving.predictions (queued, in batches).",
    )
    prediction_log_queue: int = Field(
        default=50_000,
        gt=0,
        description="Predictions kept in memory while the database is unreachable.",
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0, gt=0, description="Longest a logged prediction waits before it is written."
    )
    drift_window: int = Field(
        default=1_000,
        gt=0,
        description="Recent encounters compared with the training reference for drift.",
    )
    drift_min_rows: int = Field(
        default=200, gt=0, description="Encounters the drift window needs before it is scored."
    )
    drift_psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="PSI above which a feature counts as drifted (exported for the alert).",
    )
    registry_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Timeout of each call the API makes to the MLflow registry."
    )
    access_log: bool = Field(
        default=False,
        description="Log one line per request (uvicorn's access log), through LOG_FORMAT.",
    )
    shadow: bool = Field(
        default=False,
        description="Also score every request with the `challenger` version, after the answer "
        "is sent; both answers are logged (GET /model/shadow compares them).",
    )

    _url = field_validator("url", mode="before")(_url("http://127.0.0.1:8989"))


class DecisionSettings(BaseModel):
    """What a care team acts on: the risk tiers, and how subgroups weigh in promotion."""

    model_config = _prefixed("DECISION_")

    high_top_percent: float = Field(
        default=10,
        gt=0,
        lt=100,
        description="The high risk tier: the top k % of discharges by <30 risk (threshold "
        "from the model's valid split).",
    )
    medium_top_percent: float = Field(
        default=30,
        gt=0,
        lt=100,
        description="The medium tier ends where the top k % ends (above it: low).",
    )
    bootstrap_resamples: int = Field(
        default=200,
        ge=20,
        description="Patient resamples behind each 95 % interval of the model's figures.",
    )
    min_group_patients: int = Field(
        default=200,
        ge=1,
        description="Subgroups of fewer test patients are reported pooled (and so judged "
        "pooled by the promotion gate).",
    )
    recalibration: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: each candidate is also fitted without 15 % of the train split's "
        "patients and recalibrated on them, and served so if that is better calibrated on "
        "valid; off: never (one fit less per candidate).",
    )
    subgroup_tolerance: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="A better challenger is not promoted when its widest sensitivity gap "
        "between groups exceeds the champion's by more, or a group's <30 ROC-AUC falls by more.",
    )

    @model_validator(mode="after")
    def _tiers_in_order(self) -> DecisionSettings:
        if self.high_top_percent >= self.medium_top_percent:
            raise ValueError(
                "DECISION_HIGH_TOP_PERCENT must be below DECISION_MEDIUM_TOP_PERCENT "
                f"({self.high_top_percent} >= {self.medium_top_percent})"
            )
        return self


class PerformanceSettings(BaseModel):
    """Realized and estimated performance of the served predictions (readmission/performance.py)
    and the alert on it."""

    model_config = _prefixed("PERFORMANCE_")

    window_days: int = Field(
        default=28,
        ge=1,
        description="The recent window of each version (what the API exports): its last days "
        "of predictions.",
    )
    drop_margin: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="RealizedPerformanceDrop fires when a version's realized <30 ROC-AUC is "
        "below its test figure by more than this.",
    )
    min_outcomes: int = Field(
        default=200,
        ge=1,
        description="... over at least this many predictions with a known outcome.",
    )
    refresh_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often the API reads the figures it exports.",
    )


class RetrainingSettings(BaseModel):
    """When retraining_trigger_pipeline starts a training run on its own
    (readmission/retraining.py): input drift (API_DRIFT_*) or a realized performance drop
    (PERFORMANCE_DROP_MARGIN, PERFORMANCE_MIN_OUTCOMES) sustained long enough, at most once
    an interval."""

    model_config = _prefixed("RETRAIN_")

    enabled: bool = Field(
        default=True,
        description="Request a training run when a condition is sustained (false: the checks "
        "are still recorded, nothing is requested).",
    )
    check_minutes: float = Field(
        default=30.0,
        gt=0,
        description="How often retraining_trigger_pipeline checks (its schedule, read when "
        "Airflow parses the DAG).",
    )
    sustained_hours: float = Field(
        default=24.0,
        ge=0,
        description="How long drift or the performance drop must last, check after check, "
        "before retraining is requested.",
    )
    min_interval_hours: float = Field(
        default=168.0,
        ge=0,
        description="No request within this long of the last training run (whatever started "
        "it) or the last request.",
    )


class LoggingSettings(BaseModel):
    """How the API, the CLI and the DAG tasks log (readmission/logs.py)."""

    model_config = _prefixed("LOG_")

    level: LogLevel = Field(
        default="INFO",
        description="Lowest level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL.",
    )
    format: LogFormat = Field(
        default="text",
        description="text (time, level, logger: message) or json (one object a line, for "
        "containers).",
    )

    @field_validator("level", "format", mode="before")
    @classmethod
    def _case(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip()
        return value.upper() if info.field_name == "level" else value.lower()


#: The groups, by the attribute of `Settings` that holds each.
GROUPS: Mapping[str, type[BaseModel]] = {
    "store": StoreSettings,
    "dataset": DatasetSettings,
    "raw": RawSettings,
    "training": TrainingSettings,
    "mlflow": MlflowSettings,
    "local": LocalSettings,
    "api": ApiSettings,
    "decision": DecisionSettings,
    "performance": PerformanceSettings,
    "retraining": RetrainingSettings,
    "logging": LoggingSettings,
}


def _variable(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    if field.alias:
        return field.alias
    generator = model.model_config.get("alias_generator")
    return generator(name) if generator else name.upper()


#: Every variable, mapped to (group, field).
VARIABLES: Mapping[str, tuple[str, str]] = {
    _variable(model, name, field): (group, name)
    for group, model in GROUPS.items()
    for name, field in model.model_fields.items()
}


class _Environment(PydanticBaseSettingsSource):
    """The groups' variables found in the process environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # noqa: ARG002
        return None, field_name, False  # everything is read in __call__

    def __call__(self) -> dict[str, Any]:
        return {name: os.environ[name] for name in VARIABLES if name in os.environ}


class Settings(BaseSettings):
    """Every setting, in groups; variables may also be given by name (`Settings(API_PORT=1)`)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    store: StoreSettings = Field(default_factory=StoreSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    raw: RawSettings = Field(default_factory=RawSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    performance: PerformanceSettings = Field(default_factory=PerformanceSettings)
    retraining: RetrainingSettings = Field(default_factory=RetrainingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        **_others: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords first, then the groups' variables in the environment (no .env file:
        Compose and Kubernetes put its values in the environment)."""
        return init_settings, _Environment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _route_variables(cls, data: Any) -> Any:
        """Variables given by name (from the environment or as keywords) go to their group;
        a keyword wins over the environment."""
        if not isinstance(data, dict):
            return data
        routed: dict[str, Any] = {}
        for key, value in data.items():
            if key in GROUPS:
                group = value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value
                routed.setdefault(key, {}).update(group)
        for key, value in data.items():
            if key in VARIABLES:
                routed.setdefault(VARIABLES[key][0], {})[key] = value
        return routed

    @property
    def database_url(self) -> str:
        """The data store URL, defaulting to the embedded SQLite store."""
        return self.store.url

    def updated(self, **variables: Any) -> Settings:
        """A copy with some settings changed, each named as in the environment."""
        unknown = sorted(set(variables) - set(VARIABLES))
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        current = {group: getattr(self, group).model_dump(by_alias=True) for group in GROUPS}
        return type(self).model_validate({**current, **variables})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return Settings()
