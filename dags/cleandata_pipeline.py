"""
### Clean data: `raw_data` -> `clean_data`, only the rows not cleaned yet

Runs when `raw_data_initial_batch_load` inserted rows (Asset `raw_data.diabetes`), or by
hand. **clean** applies `readmission.cleaning.clean` (the same function the API applies
to a request) to every raw row without a clean row, 15,000 per transaction, and logs
the invalid values it set to missing. It updates the `clean_data.diabetes` Asset when
rows were added, which starts `model_training_pipeline`. **report** prints what both
schemas hold.

Param `full_refresh`: clean every raw row again, in one transaction (readers see the old
rows until it commits). A change of the cleaning rules (`cleaning.RULES_VERSION`) does
this by itself.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from readmission.names import CLEAN_DAG
from readmission.ops.orchestration import CLEAN_DATA, DEFAULT_ARGS, RAW_DATA, START_DATE, TAGS


@dag(
    dag_id=CLEAN_DAG,
    schedule=[RAW_DATA],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "clean_data"],
    doc_md=__doc__,
    params={
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Clean every raw row again, in one transaction (readers see the "
            "old rows until it commits).",
        )
    },
)
def clean_data_pipeline():
    @task(outlets=[CLEAN_DATA])
    def clean() -> dict:
        from readmission import pipeline

        context = get_current_context()
        report = pipeline.clean_new_rows(
            run_id=context["run_id"], full_refresh=context["params"]["full_refresh"]
        )
        if report["rows_cleaned"] == 0:
            raise AirflowSkipException("no raw rows waiting: clean_data unchanged")
        return report

    @task(trigger_rule="none_failed")
    def report() -> dict:
        from readmission import pipeline, warehouse

        facts = pipeline.store_summary()
        print(warehouse.format_summary(facts))
        return facts

    clean() >> report()


clean_data_pipeline()
