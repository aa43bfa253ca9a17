"""Faults injected into the pipeline's real processes.

- The CLI's raw load and cleaning run (`python -m readmission load-raw` / `clean`, real
  subprocesses against a real PostgreSQL) are killed with SIGKILL once some rows are in,
  then run again: every row of the file is stored exactly once and the control tables
  agree with the rows.
- Two trainers promote at the same time against one MLflow server (`mlflow server`
  subprocess): exactly one Production model at the end, and it is the best candidate.
- Candidates trained at once log the same split datasets at the same moment against that
  server: every run gets its three inputs, none fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import dataset, db, pipeline, registry, synthetic, training
from readmission.registry import Registry
from readmission.settings import Settings, get_settings
from tests.support.processes import PROJECT_ROOT
from tests.support.served import build_store

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROWS = 12_000
BATCH = 150  # small batches: the kill lands among many committed transactions


#: The race below is about the lock: the subgroup gate, which on 1,500 synthetic rows would
#: decide on noise (pooled groups of a few dozen patients), is opened wide.
OPEN_SUBGROUP_GATE = {"DECISION_SUBGROUP_TOLERANCE": 0.99}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return synthetic.write_csv(
        synthetic.encounters(ROWS, seed=11), tmp_path_factory.mktemp("source") / "encounters.csv.gz"
    )


def cli_env(csv: Path, database_url: str, state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "DIABETES_CSV": str(csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(csv),
        "DATA_DATABASE_URL": database_url,
        "READMISSION_STATE_DIR": str(state),
        "RAW_BATCH_SIZE": str(BATCH),
        "RAW_LOAD_WORKERS": "2",
    }


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(table))


def kill_when(
    command: str, env: dict[str, str], engine: sa.Engine, table: sa.Table, log: Path
) -> int:
    """Run `python -m readmission <command>`; SIGKILL it as soon as `table` has rows.
    Returns the rows found right after the kill."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "readmission", command],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while count(engine, table) == 0:
                assert process.poll() is None, f"{command} ended first:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{command} stored nothing in 120 s"
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(30)
    assert process.returncode == -signal.SIGKILL
    return count(engine, table)


def run_to_end(command: str, env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "readmission", command],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def file_ids(csv: Path) -> list[int]:
    return sorted(pd.read_csv(csv, usecols=["encounter_id"])["encounter_id"].tolist())


def test_a_raw_load_killed_mid_run_and_run_again_stores_every_row_once(
    source, postgres_url, tmp_path
):
    engine = db.make_engine(postgres_url)
    db.create_tables(engine)
    env = cli_env(source, postgres_url, tmp_path / "state")
    stored = kill_when("load-raw", env, engine, db.raw_encounters, tmp_path / "load.log")
    assert 0 < stored < ROWS, f"the kill did not land mid-run ({stored} of {ROWS} rows)"
    run_to_end("load-raw", env)

    raw, batches = db.raw_encounters, db.raw_batches
    with engine.connect() as conn:
        ids = sorted(conn.scalars(sa.select(raw.c.encounter_id)))
        per_batch = dict(
            conn.execute(sa.select(raw.c.batch_id, sa.func.count()).group_by(raw.c.batch_id)).all()
        )
        control = pd.read_sql(sa.select(batches), conn).set_index("batch_id").sort_index()
        quarantined = conn.scalar(sa.select(sa.func.count()).select_from(db.raw_quarantine))
    engine.dispose()
    assert ids == file_ids(source), "a row is missing or stored twice"
    assert quarantined == 0
    expected_batches = -(-ROWS // BATCH)
    assert list(control.index) == list(range(expected_batches))
    assert control["rows_read"].sum() == ROWS
    assert (control["rows_already_present"] == 0).all()
    # each batch's control row describes exactly the rows stored under it
    assert control["rows_inserted"].to_dict() == per_batch


def test_a_cleaning_run_killed_mid_run_and_run_again_cleans_every_row_once(
    source, postgres_url, tmp_path
):
    settings = Settings(
        DIABETES_CSV=source,
        DIABETES_CSV_SHA256=dataset.sha256_of(source),
        DATA_DATABASE_URL=postgres_url,
        READMISSION_STATE_DIR=tmp_path / "state",
        RAW_BATCH_SIZE=5_000,
    )
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    engine = db.make_engine(postgres_url)
    env = cli_env(source, postgres_url, tmp_path / "state")  # cleans BATCH rows a transaction
    cleaned = kill_when("clean", env, engine, db.clean_encounters, tmp_path / "clean.log")
    assert 0 < cleaned < ROWS, f"the kill did not land mid-run ({cleaned} of {ROWS} rows)"
    run_to_end("clean", env)

    clean = db.clean_encounters
    with engine.connect() as conn:
        ids = sorted(conn.scalars(sa.select(clean.c.encounter_id)))
        raw_ids = sorted(conn.scalars(sa.select(db.raw_encounters.c.encounter_id)))
        recorded = conn.scalar(sa.select(sa.func.sum(db.clean_runs.c.rows_cleaned)))
    engine.dispose()
    assert raw_ids == file_ids(source)
    assert ids == raw_ids, "a row is missing from clean_data or cleaned twice"
    assert recorded == ROWS  # the run log counts each committed chunk once


# --- two trainers promoting at once ---------------------------------------------------------

RACER = """
import json, sys, time
from pathlib import Path

from readmission import pipeline, training

candidates, delay, go = json.loads(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
scored = training.score


def slow_score(*args, **kwargs):
    # widens the window between reading the champion and moving the alias, where two
    # unsynchronized trainers would both decide against the same champion
    value = scored(*args, **kwargs)
    time.sleep(delay)
    return value


training.score = slow_score
while not go.exists():
    time.sleep(0.01)
print(json.dumps(pipeline.promote_best(candidates), default=str))
"""


@pytest.fixture(scope="module")
def candidates(tmp_path_factory, tracking_server) -> tuple[Settings, list[dict]]:
    """A synthetic store and one logged candidate per family, worst first."""
    settings = build_store(
        tmp_path_factory.mktemp("store"), tracking_server.url, rows=1_500, **OPEN_SUBGROUP_GATE
    )
    get_settings.cache_clear()
    logged = [
        pipeline.train_candidate(family, "quick", settings=settings)
        for family in pipeline.model_families()
    ]
    logged.sort(key=lambda c: c[registry.PRIMARY_METRIC])
    scores = [c[registry.PRIMARY_METRIC] for c in logged]
    assert len(set(scores)) == len(scores), f"candidates tie, no order to check: {scores}"
    return settings, logged


def race(settings: Settings, racers: list[tuple[dict, float]], work: Path) -> list[dict]:
    """Start one promoting process per (candidate, delay) and release them together."""
    go = work / "go"
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "DATA_DATABASE_URL": settings.database_url,
        "MLFLOW_TRACKING_URI": settings.mlflow.tracking_uri,
        "READMISSION_STATE_DIR": str(settings.store.state_dir),
        **{name: str(value) for name, value in OPEN_SUBGROUP_GATE.items()},
    }
    command = [sys.executable, "-c", RACER]
    processes = [
        subprocess.Popen(
            [*command, json.dumps([candidate]), str(delay), str(go)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for candidate, delay in racers
    ]
    time.sleep(8)  # both imported and waiting at the barrier (imports take seconds)
    go.touch()
    decisions = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
        decisions.append(json.loads(out.strip().splitlines()[-1]))
    return decisions


def production_versions(model_registry: Registry) -> list[str]:
    return [v["version"] for v in model_registry.list_versions() if v["stage"] == "Production"]


def test_two_trainers_promoting_at_once_leave_exactly_one_production_model_the_best(
    candidates, tmp_path, model_registry
):
    settings, logged = candidates
    worst, middle, best = logged[0], logged[-2], logged[-1]  # of one per family, worst first
    first = pipeline.promote_best([worst], settings=settings)
    assert first["promoted"]
    # the better racer decides fast, the worse one slowly: without the lock both decide
    # against the worst champion and the slower, worse one would move the alias last
    decisions = race(settings, [(best, 0.2), (middle, 3.0)], tmp_path)
    by_run = {d["run_id"]: d for d in decisions}
    best_version = by_run[best["run_id"]]["version"]
    champion = model_registry.champion()
    assert champion.version == best_version, f"v{champion.version} serves, not the best"
    assert production_versions(model_registry) == [best_version], (
        "not exactly one Production version"
    )
    # the decisions were taken one after the other: the second saw the first's result
    against_first = [d for d in decisions if d["champion_version"] == first["version"]]
    assert len(against_first) == 1, "both trainers decided against the same champion"
    earlier = against_first[0]
    (later,) = [d for d in decisions if d is not earlier]
    assert earlier["promoted"]  # both candidates beat the worst one
    assert later["champion_version"] == earlier["version"]
    assert later["promoted"] == (later["run_id"] == best["run_id"])


HOLDER = """
import sys, time
from readmission import db

with db.promotion_lock(db.make_engine(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_promotion_lock_excludes_a_second_holder_and_dies_with_its_holder(store_url):
    """The lock behind the race above, on both stores: a second trainer waits while one
    holds it, and a trainer killed while holding it (SIGKILL) does not leave it held."""
    engine = db.make_engine(store_url)
    db.create_tables(engine)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store_url],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError), db.promotion_lock(engine, timeout=1.0):
            pass
    finally:
        holder.kill()
        holder.wait(30)
    started = time.monotonic()
    with db.promotion_lock(engine, timeout=10.0):
        waited = time.monotonic() - started
    assert waited < 5
    engine.dispose()


def test_candidates_logging_the_same_datasets_at_once_all_succeed(tracking_server):
    """MLflow's store looks for a dataset, then inserts it: of candidates logging the same
    new split at the same moment, all but one used to lose the insert (a unique-key error,
    HTTP 400; an Airflow retry of a training task in CI). Four runs at once, ten rounds,
    a new dataset each round."""
    import mlflow
    import mlflow.data

    experiment = Registry(tracking_server.url).ensure_experiment()
    failures: list[str] = []
    runs: list[str] = []

    def candidate(datasets: dict, start: threading.Barrier) -> None:
        with mlflow.start_run(experiment_id=experiment) as run:  # the active run is per thread
            runs.append(run.info.run_id)
            start.wait()
            try:
                training.log_split_datasets(datasets)
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    for round_ in range(10):
        frame = synthetic.encounters(50, seed=100 + round_)
        datasets = {
            split: mlflow.data.from_pandas(frame.assign(split=split), name=f"clean_data.{split}")
            for split in ("train", "valid", "test")
        }
        start = threading.Barrier(4)
        threads = [threading.Thread(target=candidate, args=(datasets, start)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    client = mlflow.MlflowClient()
    for run_id in runs:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        contexts = sorted(tag.value for i in inputs for tag in i.tags)
        assert contexts == ["testing", "training", "validation"], run_id
