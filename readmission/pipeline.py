"""The pipeline's steps as plain functions: what each Airflow task and CLI command calls.

Each step reads the settings, opens the store (creating missing tables) and returns a
small JSON-able dict, so Airflow's XCom carries ids and counts, never data frames.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from sqlalchemy.engine import Engine

from readmission import dataset, db, ingest, warehouse
from readmission.names import (
    DEFAULT_PROFILE,
    FAMILIES,
    HAND_REASON,
    REASON_TAG,
    SPLITS,
    STAND_IN_FAMILY,
)
from readmission.settings import Settings, get_settings

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    engine = db.make_engine(url)
    db.create_tables(engine)
    return engine


def engine(settings: Settings | None = None) -> Engine:
    """The data store's engine, with every table created (once per process)."""
    return _engine_for((settings or get_settings()).database_url)


def plan_raw_load(limit: int | None = None, settings: Settings | None = None) -> list[int]:
    """Batch ids still to load: all of them, or the next `limit` (> 0)."""
    settings = settings or get_settings()
    source = dataset.locate(settings)
    pending = ingest.plan_batches(
        engine(settings), source, settings.raw.batch_size, settings.raw.split_salt, limit or None
    )
    log.info("source %s (sha256 %s): pending batches %s", source.path, source.sha256, pending)
    return pending


def load_raw_batch(
    batch_id: int, run_id: str | None = None, settings: Settings | None = None
) -> dict:
    """Load one batch of the file into raw_data (idempotent)."""
    settings = settings or get_settings()
    source = dataset.locate(settings, download=False)
    report = ingest.load_batch(
        engine(settings), source, batch_id, settings.raw.batch_size, settings.raw.split_salt, run_id
    )
    return report.to_dict()


def load_raw_batches(
    batch_ids: list[int], run_id: str | None = None, settings: Settings | None = None
) -> list[dict]:
    """Load several batches in one pass over the file (the CLI's path)."""
    settings = settings or get_settings()
    source = dataset.locate(settings, download=False)
    reports = ingest.load_batches(
        engine(settings),
        source,
        batch_ids,
        settings.raw.batch_size,
        settings.raw.split_salt,
        run_id,
        workers=settings.raw.load_workers,
    )
    return [report.to_dict() for report in reports]


def clean_new_rows(
    run_id: str | None = None, full_refresh: bool = False, settings: Settings | None = None
) -> dict:
    """Clean every raw row not cleaned yet; all rows again, in one transaction, if
    `full_refresh` or the cleaning rules changed since the table was made."""
    report = warehouse.clean_pending(engine(settings), run_id=run_id, full_refresh=full_refresh)
    return report.to_dict()


def store_summary(settings: Settings | None = None) -> dict:
    """What raw_data and clean_data hold."""
    return warehouse.summary(engine(settings))


def model_registry(settings: Settings | None = None):
    """The MLflow registry of the settings, its experiment created if missing."""
    from readmission.registry import Registry

    registry = Registry.from_settings(settings or get_settings())
    registry.ensure_experiment()
    return registry


def model_families() -> list[str]:
    """The model families trained as candidates."""
    return list(FAMILIES)


def _profile(profile: str | None, settings: Settings) -> str:
    return settings.training.profile if profile in (None, DEFAULT_PROFILE) else profile


def pin_data(settings: Settings | None = None) -> dict:
    """Pin the clean rows a training run works on (see `training.Snapshot`); refuses to
    start when a split has no rows."""
    from readmission import training

    snapshot = training.pin_snapshot(engine(settings))
    empty = [split for split in SPLITS if not snapshot.rows_by_split.get(split)]
    if empty:
        raise ValueError(f"no clean rows in {empty}: run the raw and clean DAGs first")
    log.info("training on snapshot %s: %s", snapshot.id, snapshot.to_dict())
    return snapshot.to_dict()


def candidate_threads(side_by_side: int) -> int:
    """Threads for each of `side_by_side` candidates fitted at once: this machine's cores
    shared between them, at least one each. More threads than cores make the boosting
    libraries' OpenMP threads spin against each other: four candidates of two threads
    each on two cores took more than twice as long as one thread each."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, side_by_side))


def _training_data(settings: Settings, snapshot: dict | None):
    from readmission import training

    pinned = training.Snapshot.from_dict(snapshot) if snapshot else None
    return training.load_training_data(engine(settings), pinned)


def train_candidate(
    family: str,
    profile: str | None = None,
    run_id: str | None = None,
    settings: Settings | None = None,
    snapshot: dict | None = None,
    reason: str = HAND_REASON,
    threads: int | None = None,
) -> dict:
    """Tune and fit one family on the pinned snapshot of the clean data (now, if none), on
    at most `threads` threads (None: as many as each library takes; see
    `candidate_threads`); log it as an MLflow run tagged with why the training started.
    `profile` None or "default": the TRAINING_PROFILE setting."""
    from readmission import training

    settings = settings or get_settings()
    profile = _profile(profile, settings)
    registry = model_registry(settings)
    data = _training_data(settings, snapshot)
    candidate = training.fit_candidate(
        family,
        data,
        profile,
        seed=settings.training.seed,
        decision=settings.decision,
        max_nodes=settings.training.max_tree_nodes,
        threads=threads,
    )
    tags = {"orchestrator_run_id": run_id or "cli", "profile": profile, REASON_TAG: reason}
    logged = training.log_candidate(candidate, data, tags, registry)
    return {
        **logged,
        "test_macro_f1": candidate.metrics["test_macro_f1"],
        "test_roc_auc_lt30": candidate.metrics.get("test_roc_auc_lt30"),
    }


def promote_best(
    candidates: list[dict],
    run_id: str | None = None,
    settings: Settings | None = None,
    snapshot: dict | None = None,
    reason: str = HAND_REASON,
    stand_in: bool = False,
) -> dict:
    """Register the best candidate and promote it if it beats the Production model, both
    scored on the candidates' snapshot; under the store's promotion lock, so concurrent
    training runs cannot both promote. The version keeps why the training started; a
    `stand_in` is tagged as the run's (see `serve_stand_in`)."""
    from readmission import training

    settings = settings or get_settings()
    registry = model_registry(settings)
    if snapshot is None:  # the candidates' own (all must share it)
        snapshot = _snapshot_of(candidates, registry)
    data = _training_data(settings, snapshot)
    return training.promote_best(
        candidates,
        data,
        {"orchestrator_run_id": run_id or "cli", REASON_TAG: reason},
        registry,
        lock=db.promotion_lock(engine(settings)),
        decision=settings.decision,
        stand_in=stand_in,
    )


def serve_stand_in(
    snapshot: dict,
    profile: str | None = None,
    run_id: str | None = None,
    settings: Settings | None = None,
    reason: str = HAND_REASON,
) -> dict:
    """A first model served within a minute or two while a training run's full search goes
    on, when nothing is served yet: the quick LightGBM (`STAND_IN_FAMILY`) on every core,
    registered and promoted as the run's stand-in. The run's promote step then judges it
    with the other candidates (`training.promote_best`), so the best of them is served at
    the end, as without it.

    Returns the stand-in's candidate and promotion decision, or why there is none: a model
    is served already, or the run's own search is the quick one."""
    settings = settings or get_settings()
    if _profile(profile, settings) == "quick":
        return {"candidate": None, "why": "the quick search is as quick as a stand-in"}
    current = model_registry(settings).champion()
    if current is not None:
        return {"candidate": None, "why": f"v{current.version} is served meanwhile"}
    candidate = train_candidate(
        STAND_IN_FAMILY,
        "quick",
        run_id=run_id,
        settings=settings,
        snapshot=snapshot,
        reason=reason,
        threads=candidate_threads(1),
    )
    decision = promote_best(
        [candidate],
        run_id=run_id,
        settings=settings,
        snapshot=snapshot,
        reason=reason,
        stand_in=True,
    )
    return {"candidate": candidate, "decision": decision}


def _snapshot_of(candidates: list[dict], registry) -> dict:
    import mlflow

    ids = {c.get("snapshot") for c in candidates}
    if len(ids) != 1 or None in ids:
        raise ValueError(f"candidates of several or unknown snapshots: {sorted(map(str, ids))}")
    with registry.activate():
        lineage = mlflow.artifacts.load_dict(f"runs:/{candidates[0]['run_id']}/data.json")
    return lineage["snapshot"]


def train_and_promote(
    families: list[str] | None = None,
    profile: str | None = None,
    settings: Settings | None = None,
    reason: str = HAND_REASON,
) -> dict:
    """Every step of model_training_pipeline in this process (the CLI's `train`): pin the
    data, train each family on it, promote the best."""
    snapshot = pin_data(settings)
    candidates = [
        train_candidate(f, profile, settings=settings, snapshot=snapshot, reason=reason)
        for f in families or model_families()
    ]
    decision = promote_best(candidates, settings=settings, snapshot=snapshot, reason=reason)
    return {"snapshot": snapshot, "candidates": candidates, "decision": decision}


def rollback(
    to: str | None = None, *, reason: str, by: str = "cli", settings: Settings | None = None
) -> dict:
    """Serve an earlier version again (`Registry.rollback`), under the promotion lock so a
    training run deciding at the same moment cannot interleave; the move as recorded."""
    settings = settings or get_settings()
    registry = model_registry(settings)
    with db.promotion_lock(engine(settings)):
        return registry.rollback(to, reason=reason, by=by).to_dict()


def promote(
    version: str, *, reason: str, by: str = "cli", settings: Settings | None = None
) -> list[dict]:
    """Serve `version` by hand (`Registry.promote`), under the promotion lock; the moves
    of the production alias after it."""
    settings = settings or get_settings()
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a promotion by hand needs a reason (--reason TEXT)")
    registry = model_registry(settings)
    with db.promotion_lock(engine(settings)):
        registry.promote(str(version), reason=reason, by=by)
    return [move.to_dict() for move in registry.history()]


def model_history(settings: Settings | None = None) -> list[dict]:
    """Every recorded move of the production alias, newest first."""
    return [move.to_dict() for move in model_registry(settings).history()]


def measure_performance(settings: Settings | None = None) -> dict:
    """model_performance_pipeline's work: join the logged predictions to the outcomes
    cleaned since, and write realized and estimated figures per version and window."""
    from readmission import performance

    settings = settings or get_settings()
    decision = settings.decision
    reference = performance.registry_reference(
        model_registry(settings), decision.high_top_percent, decision.medium_top_percent
    )
    return performance.measure(engine(settings), reference, settings.performance.window_days)


def performance_report(settings: Settings | None = None) -> list[dict]:
    """Every window `measure_performance` wrote, versions then time."""
    from readmission import performance

    return performance.report(engine(settings or get_settings()))


def score_batch(settings: Settings | None = None, explain_factors: bool = True) -> dict:
    """batch_scoring_pipeline's work: the clean encounters the Production version has not
    scored yet, scored into serving.batch_scores."""
    from readmission import scoring

    settings = settings or get_settings()
    decision = settings.decision
    return scoring.score_new(
        engine(settings),
        model_registry(settings),
        decision.high_top_percent,
        decision.medium_top_percent,
        explain_factors,
    ).to_dict()


def care_list(tier: str | None = None, settings: Settings | None = None):
    """The Production version's batch scores, highest risk first (a frame)."""
    from readmission import scoring

    settings = settings or get_settings()
    current = model_registry(settings).champion()
    if current is None:
        raise ValueError("no Production model yet: nothing is scored")
    return scoring.care_list(engine(settings), str(current.version), tier)


def production_model(settings: Settings | None = None) -> dict | None:
    """What the registry serves: the Production version with its metrics, or None."""
    registry = model_registry(settings)
    current = registry.champion()
    return registry.describe(current) if current else None


def check_retraining(
    settings: Settings | None = None, record: bool = True, now: datetime | None = None
) -> dict:
    """retraining_trigger_pipeline's check: the Production version's drift and realized
    performance, recorded (unless `record` is false: the CLI's look), and whether they call
    for a training run now (`readmission.retraining`)."""
    from readmission import retraining

    settings = settings or get_settings()
    now = now.astimezone(UTC) if now else datetime.now(UTC)
    registry = model_registry(settings)
    champion = registry.champion()
    if champion is None:
        return retraining.no_model(now).to_dict()
    version = str(champion.version)
    profile = registry.run_document(champion, "drift_reference.json")
    api, watched = settings.api, settings.performance
    store = engine(settings)
    with store.begin() as conn:
        checks = [
            retraining.drift_check(
                conn,
                version,
                profile,
                api.drift_window,
                api.drift_min_rows,
                api.drift_psi_threshold,
            ),
            retraining.performance_check(conn, version, watched.drop_margin, watched.min_outcomes),
        ]
        gap = timedelta(minutes=2 * settings.retraining.check_minutes)
        if record:
            retraining.record(conn, checks, now)
        streaks = {  # unrecorded: as if this check were the last one
            found.condition: retraining.streak(
                conn, found.condition, version, gap, None if record else (now, found)
            )
            for found in checks
        }
        last_requested = retraining.last_request(conn)
    policy = settings.retraining
    decision = retraining.decide(
        checks,
        streaks,
        now,
        enabled=policy.enabled,
        sustained_hours=policy.sustained_hours,
        min_interval_hours=policy.min_interval_hours,
        last_training=registry.last_training_started(),
        last_requested=last_requested,
    )
    said = "requested" if decision.request else "not requested"
    log.info("retraining %s: %s", said, decision.reason)
    return decision.to_dict()


def request_retraining(decision: dict, run_id: str, settings: Settings | None = None) -> str:
    """Record the training run a check requested (by the trigger DAG's run `run_id`); the
    reason the training run will carry."""
    from readmission import retraining

    with engine(settings or get_settings()).begin() as conn:
        retraining.record_request(conn, run_id, decision)
    return decision["reason"]


def retraining_checks(settings: Settings | None = None) -> list[dict]:
    """What the last check of retraining_trigger_pipeline found, per condition."""
    from readmission import retraining

    with engine(settings or get_settings()).connect() as conn:
        return retraining.latest_checks(conn)


def retraining_requests(settings: Settings | None = None) -> list[dict]:
    """The latest retraining requests, newest first."""
    from readmission import retraining

    with engine(settings or get_settings()).connect() as conn:
        return retraining.requests(conn)
