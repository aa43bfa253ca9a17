"""
### Retraining triggers: request a training run when drift or a performance drop lasts

Runs every `RETRAIN_CHECK_MINUTES` (30 unless set).

1. **check** measures two conditions of the Production version and records them in
   `serving.retraining_checks`: input drift (the PSI of each feature over the version's
   last `API_DRIFT_WINDOW` served predictions, from the prediction log, above
   `API_DRIFT_PSI_THRESHOLD`) and the realized performance drop (its realized `<30`
   ROC-AUC over the recent window model_performance_pipeline wrote, below its test figure
   by more than `PERFORMANCE_DROP_MARGIN` over `PERFORMANCE_MIN_OUTCOMES` outcomes): the
   InputDrift and RealizedPerformanceDrop alerts' rules. It decides whether a condition
   has been past, check after check and on renewed evidence, for
   `RETRAIN_SUSTAINED_HOURS`.
2. **request** (skipped when nothing is requested) records the request in
   `serving.retraining_requests` and updates the Asset `retraining_request.diabetes`
   with the reason, which starts model_training_pipeline; its MLflow runs and the version
   it registers carry the reason (tag `training.reason`). No request within
   `RETRAIN_MIN_INTERVAL_HOURS` of the last training run (whatever started it) or request;
   none at all with `RETRAIN_ENABLED=false`.

`python -m readmission retraining` shows what a check would decide now, without recording.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from readmission.names import RETRAIN_DAG
from readmission.ops.orchestration import DEFAULT_ARGS, RETRAIN_REQUEST, START_DATE, TAGS


def _check_interval() -> timedelta:
    """RETRAIN_CHECK_MINUTES, read as the settings read it."""
    from readmission.settings import RetrainingSettings

    return timedelta(minutes=RetrainingSettings.model_validate(dict(os.environ)).check_minutes)


@dag(
    dag_id=RETRAIN_DAG,
    schedule=_check_interval(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "monitoring", "modeling"],
    doc_md=__doc__,
)
def retraining_trigger_pipeline():
    @task
    def check() -> dict:
        from readmission import pipeline

        decision = pipeline.check_retraining()
        for condition in decision["conditions"]:
            print(f"{condition['condition']}: {condition['detail']}")
        print(f"{'request' if decision['request'] else 'no request'}: {decision['reason']}")
        return decision

    @task(outlets=[RETRAIN_REQUEST])
    def request(decision: dict) -> str:
        from readmission import pipeline

        if not decision["request"]:
            raise AirflowSkipException(decision["reason"])
        context = get_current_context()
        reason = pipeline.request_retraining(decision, run_id=context["run_id"])
        context["outlet_events"][RETRAIN_REQUEST].extra = {
            "reason": reason,
            "model_version": decision["model_version"],
        }
        return reason

    request(check())


retraining_trigger_pipeline()
