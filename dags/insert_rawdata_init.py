"""
### Raw data: load the UCI file into `raw_data`, 15,000 rows per batch

1. **plan** finds and verifies the file (`DIABETES_CSV`, `data/`, else the UCI download),
   checks its header and lists the batches not loaded yet.
2. **load_batch** (one mapped task per batch) writes the batch's rows with their
   train/valid/test mark (by patient) and its row in `raw_data.batches`, in one
   transaction. Rows already stored are skipped; unparseable rows go to
   `raw_data.quarantine`.
3. **publish** updates the `raw_data.diabetes` Asset when rows were inserted, which
   starts `clean_data_pipeline`.

Param `batches`: 0 loads all remaining batches (the original behaviour); N > 0 loads
the next N, to simulate data arriving over time. Re-running never duplicates a row.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from readmission.names import RAW_DAG
from readmission.ops.orchestration import DEFAULT_ARGS, RAW_DATA, START_DATE, TAGS


@dag(
    dag_id=RAW_DAG,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "raw_data"],
    doc_md=__doc__,
    params={
        "batches": Param(
            0,
            type="integer",
            minimum=0,
            title="Batches to load",
            description="0 = all remaining batches; N = only the next N batches.",
        )
    },
)
def raw_data_initial_batch_load():
    @task
    def plan() -> list[int]:
        from readmission import pipeline

        return pipeline.plan_raw_load(limit=get_current_context()["params"]["batches"])

    @task(max_active_tis_per_dagrun=2)
    def load_batch(batch_id: int) -> dict:
        from readmission import pipeline

        return pipeline.load_raw_batch(batch_id, run_id=get_current_context()["run_id"])

    @task(outlets=[RAW_DATA])
    def publish(reports: list[dict]) -> dict:
        from readmission import pipeline, warehouse

        inserted = sum(r["rows_inserted"] for r in reports)
        facts = pipeline.store_summary()
        print(warehouse.format_summary(facts))
        if inserted == 0:
            raise AirflowSkipException("no new rows: raw_data unchanged, cleaning not triggered")
        return {"rows_inserted": inserted, "batches": [r["batch_id"] for r in reports]}

    publish(load_batch.expand(batch_id=plan()))


raw_data_initial_batch_load()
