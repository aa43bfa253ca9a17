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
PERFORMANCE_DAG = "model_performance_pipeline"
SCORING_DAG = "batch_scoring_pipeline"
RETRAIN_DAG = "retraining_trigger_pipeline"

# --- data -------------------------------------------------------------------------------------
Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)

# --- training ---------------------------------------------------------------------------------
Family = Literal["logistic_regression", "random_forest", "hist_gradient_boosting", "lightgbm"]
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
#: A candidate not promoted, scored beside the served model when the API shadows it.
CHALLENGER_ALIAS = "challenger"
PRODUCTION_STAGE = "Production"
ARCHIVED_STAGE = "Archived"
#: The tag of training runs and versions that says why the training started.
REASON_TAG = "training.reason"
#: ... when nothing else says it (the CLI, a DAG run by hand without a reason).
HAND_REASON = "started by hand"
#: The tag of a version served while the training run that made it searched: its value is
#: that run's id (see `pipeline.serve_stand_in`).
STAND_IN_TAG = "training.stand_in_for"
#: The family and profile of a stand-in: the quick LightGBM, the best quick candidate.
STAND_IN_FAMILY: Family = "lightgbm"
#: The score that decides promotions (justified in `readmission.training`).
PRIMARY_METRIC = "valid_macro_f1"

# --- realized and estimated performance (readmission/performance.py) -----------------------
#: The figures measured on served predictions: realized once outcomes arrive, estimated before.
PERFORMANCE_FIGURES = ("macro_f1", "roc_auc_lt30", "brier_lt30", "sensitivity_high", "ppv_high")

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
#: Each version's recent figures: `source` realized, estimated or test; `metric` one of
#: PERFORMANCE_FIGURES (test: macro_f1 and roc_auc_lt30).
MODEL_PERFORMANCE = "api_model_performance"
#: The recent window's predictions and, of those, outcomes known (`kind`), per version.
MODEL_PERFORMANCE_ROWS = "api_model_performance_rows"
#: The RealizedPerformanceDrop alert's margin and minimum outcomes (API settings).
PERFORMANCE_MARGIN = "api_performance_drop_margin"
PERFORMANCE_MIN_OUTCOMES = "api_performance_min_outcomes"
#: The process collector's (the original dashboard's memory and CPU panels).
RESIDENT_MEMORY = "process_resident_memory_bytes"
CPU_SECONDS = "process_cpu_seconds_total"
