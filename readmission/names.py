"""The names the whole platform shares, each defined once: DAG ids, splits, model families,
training profiles, the registry's names and the API's metric names.

Only the standard library is imported: the DAG files, Streamlit, Locust and the monitoring
code read it without loading the heavy modules.
"""

from __future__ import annotations

from typing import Literal, get_args

# --- Airflow: the original project's DAG ids ---------------------------------------------
RAW_DAG = "raw_data_initial_batch_load"
CLEAN_DAG = "clean_data_pipeline"
TRAIN_DAG = "model_training_pipeline"

# --- data -------------------------------------------------------------------------------------
Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)

# --- training ---------------------------------------------------------------------------------
Family = Literal["logistic_regression", "random_forest", "hist_gradient_boosting"]
FAMILIES: tuple[Family, ...] = get_args(Family)
#: full: a few configurations per family; quick: one small one each (tests, smoke runs).
Profile = Literal["full", "quick"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
#: The training DAG's `profile` value that defers to the TRAINING_PROFILE setting.
DEFAULT_PROFILE = "default"

# --- the MLflow registry ----------------------------------------------------------------------
EXPERIMENT_NAME = "diabetes-readmission"
MODEL_NAME = "diabetes-readmission"
PRODUCTION_ALIAS = "production"
PRODUCTION_STAGE = "Production"
ARCHIVED_STAGE = "Archived"
#: The score that decides promotions (justified in `readmission.training`).
PRIMARY_METRIC = "valid_macro_f1"

# --- the API's Prometheus metrics (`<service>_<what>_<unit>`) ---------------------------------
#: Requests by route (`handler`), method and status (prometheus-fastapi-instrumentator).
HTTP_REQUESTS = "api_http_requests_total"
#: Their latency, a histogram (`_bucket`, `_sum`, `_count`) by route.
HTTP_DURATION = "api_http_request_duration_seconds"
PREDICTIONS = "api_predictions_total"
MODEL_INFO = "api_model_info"
MODEL_VERSION = "api_model_version"
MODEL_LOADED_AT = "api_model_loaded_timestamp_seconds"
MODEL_RELOADS = "api_model_reloads_total"
BATCH_ROWS = "api_predict_batch_rows"
LOG_WRITE_FAILURES = "api_prediction_log_write_failures_total"
LOG_DROPPED = "api_prediction_log_dropped_rows_total"
LOG_WRITTEN = "api_prediction_log_written_rows_total"
LOG_QUEUE = "api_prediction_log_queue_rows"
HISTORY_FAILURES = "api_history_lookup_failures_total"
WITHOUT_HISTORY = "api_predictions_without_history_total"
PREDICT_FAILURES = "api_predict_failures_total"
QUEUE_FULL = "api_predict_queue_full_total"
QUEUE_ROWS = "api_predict_queue_rows"
DRIFT_PSI = "api_feature_drift_psi"
DRIFT_THRESHOLD = "api_drift_psi_threshold"
DRIFT_ROWS = "api_drift_window_rows"
#: The process collector's (the original dashboard's memory and CPU panels).
RESIDENT_MEMORY = "process_resident_memory_bytes"
CPU_SECONDS = "process_cpu_seconds_total"
