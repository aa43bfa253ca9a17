"""
### Model performance: served predictions joined to the outcomes that arrived since

Runs when `clean_data_pipeline` added rows (Asset `clean_data.diabetes`): a later batch
brings the `readmitted` of encounters the API has served. Or by hand, for the estimates
of predictions whose outcomes are still pending.

1. **measure** joins every logged prediction (`serving.predictions`, once per encounter
   and model version) to its outcome in `clean_data`, and writes per version, for each day
   predictions were served and for the version's last `PERFORMANCE_WINDOW_DAYS`, into
   `serving.model_performance`: realized macro-F1, `<30` ROC-AUC, Brier score, high-tier
   sensitivity and PPV on the predictions whose outcome is known; the same figures
   estimated from the calibrated probabilities of every prediction (confidence-based
   estimation); the version's test figures beside them.
2. **report** prints each version's recent window: realized, estimated and test.

The API exports the recent windows as gauges (`api_model_performance`), which the
`RealizedPerformanceDrop` alert watches. Retrying or rerunning is safe: every run
recomputes the windows from the log and replaces the table's rows in one transaction.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from readmission.names import PERFORMANCE_DAG
from readmission.ops.orchestration import CLEAN_DATA, DEFAULT_ARGS, START_DATE, TAGS


@dag(
    dag_id=PERFORMANCE_DAG,
    schedule=[CLEAN_DATA],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "monitoring", "serving"],
    doc_md=__doc__,
)
def model_performance_pipeline():
    @task
    def measure() -> dict:
        from readmission import pipeline

        return pipeline.measure_performance()

    @task
    def report(measured: dict) -> list[dict]:
        """What `measure` wrote (its counts in `measured`): each version's recent window."""
        from readmission import performance, pipeline

        print(f"measured: {measured}")
        recent = [r for r in pipeline.performance_report() if r["window_kind"] == "recent"]
        print(performance.format_report(recent))
        return [performance.summary_line(r) for r in recent]

    report(measure())


model_performance_pipeline()
