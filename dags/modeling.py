"""
### Modeling: train candidates, track them in MLflow, promote the best if it beats Production

Runs when `clean_data_pipeline` added rows (Asset `clean_data.diabetes`), when
`retraining_trigger_pipeline` requests it (Asset `retraining_request.diabetes`: drift or a
performance drop that lasted), or by hand. Why it runs is recorded on its MLflow runs and on
the version it registers (tag `training.reason`): the request's reason, new clean data, or
the `reason` given with a run by hand.

1. **pin_data** pins the snapshot of `clean_data` the run works on (the batches cleaned
   now, their row count and checksums) and lists the model families. Rows cleaned while
   the run goes on (a second raw load) wait for the next run.
2. **first_model**, when no model is served yet (a fresh platform) and the search is not
   the quick one: the quick LightGBM, trained on every core and promoted as this run's
   stand-in, so that the API serves a model a minute or two after the data is clean
   instead of after the whole search. It is one more candidate for **promote**, which
   judges it on its score alone.
3. **train_candidate** (one mapped task per family: logistic regression, random forest,
   histogram gradient boosting, LightGBM; side by side, the worker's cores shared between
   them) tunes the family on the snapshot's train split, tunes its decision rule on valid,
   measures valid and test, and logs one MLflow run (params, metrics, confusion matrices,
   data lineage with the snapshot, the model with its signature).
4. **promote** registers the best candidate by valid macro-F1 and gives it the
   `production` alias and stage only if it beats the current Production model re-scored
   on the same snapshot's valid split; the decision and both scores are logged on the
   version.

Param `profile`: `default` (the workers' `TRAINING_PROFILE` setting, `full` unless set),
`full` (the bounded search) or `quick` (one small configuration per family, for a smoke
run). A run started by the Asset has no conf, so `TRAINING_PROFILE` decides it. Retrying a
task is safe: candidates are new runs, and promotion registers a run once, completes a
promotion interrupted half-way, and never promotes an equal or worse model.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from readmission.names import DEFAULT_PROFILE, PROFILES, TRAIN_DAG
from readmission.ops.orchestration import (
    CLEAN_DATA,
    DEFAULT_ARGS,
    RETRAIN_REQUEST,
    START_DATE,
    TAGS,
)


@dag(
    dag_id=TRAIN_DAG,
    schedule=CLEAN_DATA | RETRAIN_REQUEST,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=[*TAGS, "modeling", "mlflow"],
    doc_md=__doc__,
    params={
        "profile": Param(
            DEFAULT_PROFILE,
            enum=[DEFAULT_PROFILE, *PROFILES],
            title="Search profile",
            description="default: the TRAINING_PROFILE setting (full unless set); full: a few "
            "configurations per family; quick: one small each.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            title="Reason",
            description="Why this run is started by hand (recorded on its MLflow runs and "
            "the version it registers).",
        ),
    },
)
def model_training_pipeline():
    @task
    def pin_data() -> list[dict]:
        """One set of arguments per family, all on the snapshot pinned now, with why the
        run started."""
        from readmission import pipeline, retraining

        context = get_current_context()
        events = [
            (asset.name, event.extra)
            for asset, found in (context.get("triggering_asset_events") or {}).items()
            for event in found
        ]
        reason = retraining.training_reason(context["params"].get("reason"), events)
        print(f"training because: {reason}")
        snapshot = pipeline.pin_data()
        families = pipeline.model_families()
        threads = pipeline.candidate_threads(len(families))  # the candidates run side by side
        return [
            {"family": family, "snapshot": snapshot, "reason": reason, "threads": threads}
            for family in families
        ]

    @task
    def first_model(pinned: list[dict]) -> dict:
        """A stand-in served while the search goes on, if nothing is served yet."""
        from readmission import pipeline

        context = get_current_context()
        profile, run_id = context["params"]["profile"], context["run_id"]
        snapshot, reason = pinned[0]["snapshot"], pinned[0]["reason"]
        found = pipeline.serve_stand_in(snapshot, profile, run_id=run_id, reason=reason)
        print(found["decision"] if found["candidate"] else f"no stand-in: {found['why']}")
        return found

    @task
    def train_candidate(family: str, snapshot: dict, reason: str, threads: int) -> dict:
        from readmission import pipeline

        context = get_current_context()
        profile, run_id = context["params"]["profile"], context["run_id"]
        return pipeline.train_candidate(
            family, profile, run_id=run_id, snapshot=snapshot, reason=reason, threads=threads
        )

    @task
    def promote(candidates: list[dict], pinned: list[dict], stand_in: dict) -> dict:
        from readmission import pipeline

        run_id = get_current_context()["run_id"]
        snapshot, reason = pinned[0]["snapshot"], pinned[0]["reason"]
        found = [*candidates, *([stand_in["candidate"]] if stand_in["candidate"] else [])]
        return pipeline.promote_best(found, run_id=run_id, snapshot=snapshot, reason=reason)

    pinned = pin_data()
    stand_in = first_model(pinned)
    candidates = train_candidate.expand_kwargs(pinned)
    stand_in >> candidates  # the stand-in has the cores to itself: served sooner
    promote(candidates, pinned, stand_in)


model_training_pipeline()
