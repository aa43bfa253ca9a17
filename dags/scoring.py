"""
### Batch scoring: the clean encounters scored by the Production model

Runs when `clean_data_pipeline` added rows (Asset `clean_data.diabetes`), or by hand (after
a promotion: a new Production version scores every encounter again, under its number).

1. **score** scores the encounters of `clean_data` the Production version has not scored
   yet, with the patient's history as training computes it, into `serving.batch_scores`:
   class, probabilities, `<30` risk, risk tier (the version's operating points and the
   `DECISION_*` settings, as `/predict` answers) and the three factors raising the risk
   most. Without a Production model it scores nothing.
2. **report** prints how many encounters each tier holds.

`python -m readmission care-list --tier high --out list.csv` exports a care team's list.
Retrying or rerunning is safe: an encounter already scored by the version is skipped.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from readmission.names import SCORING_DAG
from readmission.ops.orchestration import CLEAN_DATA, DEFAULT_ARGS, START_DATE, TAGS


@dag(
    dag_id=SCORING_DAG,
    schedule=[CLEAN_DATA],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "serving", "batch"],
    doc_md=__doc__,
)
def batch_scoring_pipeline():
    @task
    def score() -> dict:
        from readmission import pipeline

        return pipeline.score_batch()

    @task
    def report(scored: dict) -> dict:
        """How many of the version's encounters each tier holds."""
        from readmission import pipeline

        print(f"scored: {scored}")
        if scored["model_version"] is None:
            return {}
        tiers = pipeline.care_list()["risk_tier"].fillna("none").value_counts()
        counts = {str(tier): int(n) for tier, n in tiers.items()}
        print(f"v{scored['model_version']}: encounters by risk tier {counts}")
        return counts

    report(score())


batch_scoring_pipeline()
