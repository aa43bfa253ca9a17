"""
### Modeling: train candidates, track them in MLflow, promote the best if it beats Production

Runs when `clean_data_pipeline` added rows (Asset `clean_data.diabetes`), or by hand.

1. **check_data** makes sure every split has clean rows and lists the model families.
2. **train_candidate** (one mapped task per family: logistic regression, random forest,
   histogram gradient boosting) tunes the family on the train split, tunes its decision
   rule on valid, measures valid and test, and logs one MLflow run (params, metrics,
   confusion matrices, data lineage, the model with its signature).
3. **promote** registers the best candidate by valid macro-F1 and gives it the
   `production` alias and stage only if it beats the current Production model re-scored
   on the same valid split; the decision and both scores are logged on the version.

Param `profile`: `full` (the bounded search) or `quick` (one small configuration per
family, for a smoke run). Retrying a task is safe: candidates are new runs, and promotion
registers a run once and never promotes an equal or worse model.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from readmission.orchestration import CLEAN_DATA, DEFAULT_ARGS, START_DATE, TAGS


@dag(
    dag_id="model_training_pipeline",
    schedule=[CLEAN_DATA],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "modeling", "mlflow"],
    doc_md=__doc__,
    params={
        "profile": Param(
            "full",
            enum=["full", "quick"],
            title="Search profile",
            description="full: a few configurations per family; quick: one small each.",
        )
    },
)
def model_training_pipeline():
    @task
    def check_data() -> list[str]:
        from readmission import pipeline

        facts = pipeline.store_summary()
        empty = [split for split, rows in facts["clean_rows"].items() if rows == 0]
        if empty:
            raise ValueError(f"no clean rows in {empty}: run the raw and clean DAGs first")
        return pipeline.model_families()

    @task
    def train_candidate(family: str) -> dict:
        from readmission import pipeline

        context = get_current_context()
        return pipeline.train_candidate(
            family, profile=context["params"]["profile"], run_id=context["run_id"]
        )

    @task
    def promote(candidates: list[dict]) -> dict:
        from readmission import pipeline

        return pipeline.promote_best(list(candidates), run_id=get_current_context()["run_id"])

    promote(train_candidate.expand(family=check_data()))


model_training_pipeline()
