"""`make replay`: the closed loop once, in the local mode.

In a state folder of its own (`<state>/replay`, emptied first; the store is SQLite there
whatever DATA_DATABASE_URL says), the local stack starts and loads every batch of the data
file but the last (`--holdout-batches`), which is cleaned and trained on as `make run`
does (TRAINING_PROFILE, `quick` unless set). The held-out batch's encounters are then served
through the API without their outcome, as a hospital would send discharges, and logged.
Their outcomes arrive as a later batch: the raw load and the cleaning run, the
`clean_data` Asset starts `model_performance_pipeline`, and the replay prints, for the
served version, the realized figures on those encounters against those estimated from
the probabilities (before outcomes) against the version's test figures. Retraining and
batch scoring on the new batch are left out (their DAGs are paused for it). Last,
retraining_trigger_pipeline checks drift and the performance drop once: what it found is
printed, and if it requests retraining (a condition sustained RETRAIN_SUSTAINED_HOURS,
never on a first check unless that is 0), the training run the request starts is followed
and its recorded reason printed. The stack stops at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

from readmission import dataset, ingest, performance, pipeline, schema
from readmission.names import (
    CLEAN_DAG,
    PERFORMANCE_DAG,
    RAW_DAG,
    REASON_TAG,
    RETRAIN_DAG,
    SCORING_DAG,
    TRAIN_DAG,
)
from readmission.ops.localstack import (
    LocalStackError,
    Stages,
    Terminated,
    _follow,
    _next_run,
    _wait,
    format_model,
    running_stack,
    stack_settings,
    stop_on_terminate,
)
from readmission.settings import Settings, get_settings

#: The replay's state folder, under the configured one.
REPLAY_FOLDER = "replay"


def replay_settings(settings: Settings) -> Settings:
    """The replay's own state folder and embedded store; the quick search unless the
    environment asks for another."""
    state = settings.store.state_dir / REPLAY_FOLDER
    return settings.updated(
        READMISSION_STATE_DIR=str(state),
        DATA_DATABASE_URL=f"sqlite:///{state / 'data' / 'main.db'}",
        TRAINING_PROFILE=os.environ.get("TRAINING_PROFILE", "quick"),
    )


def held_out_encounters(path: Path, first_row: int) -> list[dict]:
    """The file's rows from `first_row` on, as a client sends them: UCI names and values
    ('?' for missing), integers as integers, without the outcome."""
    frame = pd.read_csv(dataset.open_text(path), dtype=str, keep_default_na=False)
    return schema.request_records(frame.iloc[first_row:].to_dict("records"))


def serve(api_url: str, encounters: list[dict], max_batch: int) -> str:
    """POST the encounters to /predict/batch, `max_batch` at a time; the version that
    answered (one, as nothing is promoted meanwhile)."""
    versions = set()
    with httpx.Client(base_url=api_url, timeout=300) as client:
        for start in range(0, len(encounters), max_batch):
            chunk = encounters[start : start + max_batch]
            answer = client.post("/predict/batch", json={"encounters": chunk})
            if answer.status_code != 200:
                raise LocalStackError(
                    f"POST /predict/batch answered {answer.status_code}: {answer.text[:500]}"
                )
            versions.add(answer.json()["model"]["version"])
    if len(versions) != 1:
        raise LocalStackError(f"the held-out encounters were served by versions {versions}")
    return versions.pop()


def retrain(client, settings: Settings, log: Path) -> None:
    """One run of retraining_trigger_pipeline, its findings printed; the training run it
    requests, if any, followed (training unpaused for it) and its reason printed."""
    client.unpause(TRAIN_DAG)
    checked = _follow(client, RETRAIN_DAG, client.trigger(RETRAIN_DAG, {}), log, timeout=600)
    print(format_checks(pipeline.retraining_checks(settings)), flush=True)
    decision = client.returned(RETRAIN_DAG, checked["dag_run_id"], "check")
    said = "retraining requested" if decision["request"] else "no retraining requested"
    print(f"{said}: {decision['reason']}", flush=True)
    requested = _next_run(client, TRAIN_DAG, checked, "request", log)
    if requested is None:
        return
    _follow(client, TRAIN_DAG, requested, log, timeout=3600)
    runs = pipeline.model_registry(settings).training_runs(requested)
    reasons = sorted({run.data.tags.get(REASON_TAG, "none") for run in runs})
    print(f"{TRAIN_DAG} trained {len(runs)} candidates, recorded reason: {'; '.join(reasons)}")
    print(format_model(pipeline.production_model(settings)), flush=True)


def format_checks(checks: list[dict]) -> str:
    """What a check of the retraining triggers found."""
    if not checks:
        return "retraining check: no Production model to watch"
    lines = [f"retraining check of v{checks[0]['model_version']}:"]
    for found in checks:
        state = "past its threshold" if found["past"] else "ok"
        lines.append(f"  {found['condition']:<12} {state}: {found['detail']}")
    return "\n".join(lines)


def _logged(settings: Settings, version: str) -> int:
    import sqlalchemy as sa

    from readmission import db

    table = db.predictions
    query = sa.select(sa.func.count()).where(table.c.model_version == version)
    with pipeline.engine(settings).connect() as conn:
        return conn.scalar(query)


def format_comparison(row: dict) -> str:
    """One version's recent window: each figure realized, estimated and on test."""
    line = performance.summary_line(row)
    titles = {
        "roc_auc_lt30": "<30 ROC-AUC",
        "macro_f1": "macro-F1",
        "brier_lt30": "<30 Brier score",
        "sensitivity_high": "high-tier sensitivity",
        "ppv_high": "high-tier PPV",
    }
    cell = performance.format_figure
    lines = [
        f"v{line['version']} on {line['predictions']:,} held-out encounters served, "
        f"{line['outcomes']:,} with their outcome now:",
        f"  {'':<22}{'realized':>10}{'estimated':>11}{'test':>8}",
    ]
    for name, title in titles.items():
        figure = line[name]
        lines.append(
            f"  {title:<22}{cell(figure['realized']):>10}{cell(figure['estimated']):>11}"
            f"{cell(figure['test']):>8}"
        )
    lines.append(
        "  (estimated: from the calibrated probabilities alone, what was known before the "
        "outcomes arrived)"
    )
    return "\n".join(lines)


def main(holdout_batches: int = 1) -> int:
    stop_on_terminate()
    base = get_settings()
    try:
        source = dataset.locate(base)
    except dataset.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = replay_settings(base)
    batches = ingest.batch_count(source, settings.raw.batch_size)
    if not 0 < holdout_batches < batches:
        print(
            f"error: the file makes {batches} batches of {settings.raw.batch_size:,} rows: hold "
            f"out at least 1 and fewer than {batches}",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(settings.store.state_dir, ignore_errors=True)
    print(
        f"replay in {settings.store.state_dir}: batches 0-{batches - holdout_batches - 1} "
        f"loaded and trained on ({settings.training.profile} search), the last "
        f"{holdout_batches} served and then loaded with their outcomes",
        flush=True,
    )
    pipeline.engine(settings)  # create the stores before the services race to
    stages = Stages()
    try:
        with running_stack(settings, stages) as (stack, client, log, _process):
            settings = stack_settings(settings)
            with stages.timed("first batches"):
                raw_run = client.trigger(RAW_DAG, {"batches": batches - holdout_batches})
                raw = _follow(client, RAW_DAG, raw_run, log, timeout=900)
                clean = _follow(
                    client, CLEAN_DAG, _next_run(client, CLEAN_DAG, raw, "publish", log), log, 900
                )
            with stages.timed("training"):
                trained = _next_run(client, TRAIN_DAG, clean, "clean", log)
                _follow(client, TRAIN_DAG, trained, log, timeout=3600)
            for dag_id in (TRAIN_DAG, SCORING_DAG):  # the outcomes batch only measures here
                client.unpause(dag_id, paused=True)
            httpx.post(f"{stack.api_url}/model/reload", timeout=120)
            described = pipeline.production_model(settings)
            print(format_model(described), flush=True)
            with stages.timed("serving"):
                first_row = (batches - holdout_batches) * settings.raw.batch_size
                encounters = held_out_encounters(source.path, first_row)
                started = time.monotonic()
                version = serve(stack.api_url, encounters, settings.api.max_batch)
                print(
                    f"served {len(encounters):,} held-out encounters with v{version} in "
                    f"{time.monotonic() - started:.1f} s",
                    flush=True,
                )
                _wait(
                    "the prediction log to hold them",
                    lambda: _logged(settings, version) >= len(encounters),
                    120,
                    interval=0.5,
                    log=log,
                )
            with stages.timed("outcomes"):
                raw_run = client.trigger(RAW_DAG, {"batches": 0})
                raw = _follow(client, RAW_DAG, raw_run, log, timeout=900)
                clean = _follow(
                    client, CLEAN_DAG, _next_run(client, CLEAN_DAG, raw, "publish", log), log, 900
                )
                measured = _next_run(client, PERFORMANCE_DAG, clean, "clean", log)
                _follow(client, PERFORMANCE_DAG, measured, log, timeout=900)
            recent = [
                r
                for r in pipeline.performance_report(settings)
                if r["window_kind"] == performance.RECENT and r["model_version"] == version
            ]
            if not recent:
                raise LocalStackError(f"{PERFORMANCE_DAG} wrote nothing for v{version}")
            print(format_comparison(recent[0]), flush=True)
            with stages.timed("retraining check"):
                retrain(client, settings, log)
            stages.report()
            return 0
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except Terminated as exc:
        print(f"\n{exc}: stopping ...", flush=True)
        return 128 + exc.signum
