"""Retraining triggers: a training run requested when drift or a performance drop lasts.

`retraining_trigger_pipeline` checks two conditions of the Production version every
`RETRAIN_CHECK_MINUTES` and records each check in `serving.retraining_checks`:

- **drift**: the population stability index of each input feature over the version's last
  `API_DRIFT_WINDOW` served predictions (the prediction log's inputs, cleaned and binned as
  the API does), against the training reference the version carries
  (`drift_reference.json`); past when a feature's PSI is above `API_DRIFT_PSI_THRESHOLD`,
  the InputDrift alert's threshold. Fewer than `API_DRIFT_MIN_ROWS` predictions: not past.
- **performance**: the version's realized `<30` ROC-AUC over its recent window
  (`serving.model_performance`, written by model_performance_pipeline), past when below the
  version's test figure by more than `PERFORMANCE_DROP_MARGIN` over at least
  `PERFORMANCE_MIN_OUTCOMES` outcomes, the RealizedPerformanceDrop alert's rule.

A condition is sustained when it has been past for `RETRAIN_SUSTAINED_HOURS`: every check
since some moment that long ago found it past for the same version (a check that finds it
not past, a new Production version, or a pause of more than two check intervals between
checks starts the count again), and its evidence was renewed over that time (the newest
prediction of the drift window, or the last outcome the realized figures count, is that
much newer than at the first of those checks), so that old evidence looked at again and
again, a burst of odd requests then quiet traffic, never adds up to a lasting condition.
A sustained condition requests a training run (the `retraining_request` Asset, which
schedules model_training_pipeline, with the reason in the event), unless `RETRAIN_ENABLED`
is off or a training run started, or a request was made, within
`RETRAIN_MIN_INTERVAL_HOURS`: the guard against retraining in a loop while a condition
persists. The training run records
the reason on its MLflow runs and on the version it registers (tag `training.reason`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from readmission import db
from readmission.names import HAND_REASON, MODEL_NAME, RETRAIN_DAG

log = logging.getLogger(__name__)

DRIFT, PERFORMANCE = "drift", "performance"
CONDITIONS = (DRIFT, PERFORMANCE)
#: How many drifted features a reason names.
SHOWN_FEATURES = 3
#: The asset events that start a training run: the retraining request and new clean data.
REQUEST_ASSET, CLEAN_ASSET = "retraining_request.diabetes", "clean_data.diabetes"


@dataclass(frozen=True)
class Check:
    """One condition of one Production version, as found at one check."""

    condition: str
    model_version: str
    past: bool
    value: float | None
    threshold: float | None
    detail: str
    #: when the evidence is from: the newest prediction of the drift window, the last
    #: outcome of the realized window
    evidence_at: datetime | None = None


@dataclass(frozen=True)
class Streak:
    """An unbroken run of checks that found a condition past for one version."""

    since: datetime
    evidence_from: datetime | None
    evidence_to: datetime | None

    def lasted(self, now: datetime) -> timedelta:
        """How long the condition has been past: since the run's first check, and no longer
        than its evidence was renewed."""
        checked = now - self.since
        if self.evidence_from is None or self.evidence_to is None:
            return checked
        return min(checked, self.evidence_to - self.evidence_from)


@dataclass
class Decision:
    """What a check found and whether it requests a training run, with the reason."""

    checked_at: str
    model_version: str | None
    request: bool
    reason: str
    conditions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _utc(moment: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns them naive)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- the conditions --------------------------------------------------------------------


def served_inputs(conn: Connection, version: str, rows: int) -> list[dict]:
    """The inputs of the last `rows` predictions `version` served (the challenger's shadow
    answers left out), oldest first."""
    return [record for _, record in _served(conn, version, rows)]


def _served(conn: Connection, version: str, rows: int) -> list[tuple[datetime, dict]]:
    table = db.predictions
    query = (
        sa.select(table.c.predicted_at, table.c.inputs)
        .where(
            table.c.model_name == MODEL_NAME,
            table.c.model_version == version,
            sa.or_(table.c.role.is_(None), table.c.role == "served"),
        )
        .order_by(table.c.id.desc())
        .limit(rows)
    )
    found = conn.execute(query).all()
    return [(_utc(at), json.loads(text)) for at, text in reversed(found)]


def drift_scores(profile: Mapping[str, Any], records: list[dict]) -> dict[str, float]:
    """PSI per feature of `records` (encounters as a client sends them) against `profile`,
    binned as the API's drift window bins what it scores."""
    from readmission.cleaning import clean
    from readmission.drift import DriftMonitor

    if not records:
        return {}
    monitor = DriftMonitor(dict(profile), window=len(records), min_rows=1)
    monitor.observe(clean(pd.DataFrame.from_records(records)))
    return monitor.scores()


def drift_check(
    conn: Connection,
    version: str,
    profile: Mapping[str, Any] | None,
    window: int,
    min_rows: int,
    threshold: float,
) -> Check:
    """Input drift of the version's last `window` served predictions."""
    if profile is None:
        detail = f"v{version} carries no drift reference (trained before drift was watched)"
        return Check(DRIFT, version, False, None, threshold, detail)
    served = _served(conn, version, window)
    records = [record for _, record in served]
    if len(records) < min_rows:
        detail = f"{len(records)} predictions served by v{version}, {min_rows} needed"
        return Check(DRIFT, version, False, None, threshold, detail)
    scores = drift_scores(profile, records)
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    drifted = [(name, value) for name, value in ranked if value > threshold]
    shown = drifted[:SHOWN_FEATURES] or ranked[:1]
    named = ", ".join(f"{name} {value:.2f}" for name, value in shown)
    more = f" and {len(drifted) - len(shown)} more" if len(drifted) > len(shown) else ""
    if drifted:
        detail = (
            f"input drift: PSI {named}{more} above {threshold:g} over the last "
            f"{len(records):,} predictions of v{version}"
        )
    else:
        detail = (
            f"no feature's PSI above {threshold:g} (largest {named}) over the last "
            f"{len(records):,} predictions of v{version}"
        )
    largest = ranked[0][1] if ranked else None
    newest = max(at for at, _ in served)
    return Check(DRIFT, version, bool(drifted), largest, threshold, detail, newest)


def performance_check(conn: Connection, version: str, margin: float, min_outcomes: int) -> Check:
    """The version's realized <30 ROC-AUC over its recent window against its test figure."""
    from readmission.performance import RECENT

    table = db.model_performance
    row = (
        conn.execute(
            sa.select(table)
            .where(
                table.c.model_name == MODEL_NAME,
                table.c.model_version == version,
                table.c.window_kind == RECENT,
            )
            .order_by(table.c.period_end.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    if row is None:
        detail = f"no realized performance of v{version} yet (model_performance_pipeline)"
        return Check(PERFORMANCE, version, False, None, None, detail)
    realized, test = row["realized_roc_auc_lt30"], row["test_roc_auc_lt30"]
    floor = None if test is None else test - margin
    if row["outcomes"] < min_outcomes or realized is None or floor is None:
        missing = "its test figure is unknown" if floor is None else f"{min_outcomes} needed"
        detail = f"{row['outcomes']} outcomes known of v{version}'s predictions, {missing}"
        return Check(PERFORMANCE, version, False, realized, floor, detail, _utc(row["period_end"]))
    past = realized < floor
    relation = "below" if past else "not below"
    detail = (
        f"realized <30 ROC-AUC {realized:.3f} over {row['outcomes']:,} outcomes of "
        f"v{version}, {relation} its test figure {test:.3f} minus {margin:g}"
    )
    return Check(PERFORMANCE, version, past, realized, floor, detail, _utc(row["period_end"]))


# --- the record ------------------------------------------------------------------------


def record(conn: Connection, checks: Iterable[Check], at: datetime) -> None:
    """Store one check's findings (a rerun at the same moment replaces them)."""
    table = db.retraining_checks
    for found in checks:
        conn.execute(
            sa.delete(table).where(table.c.checked_at == at, table.c.condition == found.condition)
        )
        conn.execute(
            sa.insert(table).values(
                checked_at=at,
                condition=found.condition,
                model_version=found.model_version,
                past=found.past,
                value=found.value,
                threshold=found.threshold,
                detail=found.detail,
                evidence_at=found.evidence_at,
            )
        )


#: The checks of a condition read back to find where its run began (at 30 min a check,
#: more than a year).
MAX_STREAK_CHECKS = 20_000


def streak(
    conn: Connection,
    condition: str,
    version: str,
    max_gap: timedelta,
    pending: tuple[datetime, Check] | None = None,
) -> Streak | None:
    """The run of checks finding `condition` past for `version` that ends with the last one
    recorded (or with `pending`, a check not recorded, at its time); None when that last
    one found it not past. Checks more than `max_gap` apart break the run."""
    table = db.retraining_checks
    rows = conn.execute(
        sa.select(table.c.checked_at, table.c.model_version, table.c.past, table.c.evidence_at)
        .where(table.c.condition == condition)
        .order_by(table.c.checked_at.desc())
        .limit(MAX_STREAK_CHECKS)
    ).all()
    checks = [
        (_utc(at), found_version, past, _utc(evidence))
        for at, found_version, past, evidence in rows
    ]
    if pending is not None:
        at, found = pending
        checks.insert(0, (at, found.model_version, found.past, found.evidence_at))
    run: list[tuple[datetime, datetime | None]] = []
    later: datetime | None = None
    for at, seen, past, evidence in checks:
        if not past or seen != version or (later is not None and later - at > max_gap):
            break
        run.append((at, evidence))
        later = at
    if not run:
        return None
    evidence = [e for _, e in run if e is not None]
    return Streak(run[-1][0], min(evidence, default=None), max(evidence, default=None))


def latest_checks(conn: Connection) -> list[dict[str, Any]]:
    """The findings of the last check recorded, one per condition."""
    table = db.retraining_checks
    last = sa.select(sa.func.max(table.c.checked_at)).scalar_subquery()
    rows = conn.execute(
        sa.select(table).where(table.c.checked_at == last).order_by(table.c.condition)
    )
    return [{**row, "checked_at": _utc(row["checked_at"]).isoformat()} for row in rows.mappings()]


def last_request(conn: Connection) -> datetime | None:
    """When retraining was last requested."""
    table = db.retraining_requests
    return _utc(conn.execute(sa.select(sa.func.max(table.c.requested_at))).scalar())


def record_request(conn: Connection, run_id: str, decision: Mapping[str, Any]) -> None:
    """Store a request made by the trigger DAG's run `run_id` (a retried task, once)."""
    table = db.retraining_requests
    conn.execute(sa.delete(table).where(table.c.orchestrator_run_id == run_id))
    conn.execute(
        sa.insert(table).values(
            orchestrator_run_id=run_id,
            requested_at=datetime.fromisoformat(decision["checked_at"]),
            model_version=decision["model_version"],
            reason=decision["reason"],
        )
    )


def requests(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest requests, newest first."""
    table = db.retraining_requests
    rows = conn.execute(sa.select(table).order_by(table.c.requested_at.desc()).limit(limit))
    return [
        {**row, "requested_at": _utc(row["requested_at"]).isoformat()} for row in rows.mappings()
    ]


# --- the decision ----------------------------------------------------------------------


def decide(
    checks: list[Check],
    streaks: Mapping[str, Streak | None],
    now: datetime,
    *,
    enabled: bool,
    sustained_hours: float,
    min_interval_hours: float,
    last_training: datetime | None,
    last_requested: datetime | None,
) -> Decision:
    """Request a training run when a condition has been past for `sustained_hours` (its
    streak's `lasted`) and no training started, nor a request was made, within
    `min_interval_hours`."""
    version = checks[0].model_version if checks else None
    needed = timedelta(hours=sustained_hours)
    conditions, sustained = [], []
    waiting = []
    for found in checks:
        run = streaks.get(found.condition) if found.past else None
        lasted = run.lasted(now) if run is not None else None
        entry = {
            **asdict(found),
            "evidence_at": found.evidence_at.isoformat() if found.evidence_at else None,
            "past_since": run.since.isoformat() if run else None,
            "past_for_hours": None if lasted is None else lasted.total_seconds() / 3600,
            "sustained": lasted is not None and lasted >= needed,
        }
        conditions.append(entry)
        if entry["sustained"]:
            sustained.append(f"{found.detail}, for {_hours(lasted)} (since {_stamp(run.since)})")
        elif lasted is not None:
            waiting.append(
                f"{found.condition} past for {_hours(lasted)} of the {_hours(needed)} needed"
            )
    at = now.isoformat()
    if not sustained:
        reason = "; ".join(waiting) or "no condition past its threshold"
        return Decision(at, version, False, reason, conditions)
    reason = f"{RETRAIN_DAG}: " + "; ".join(sustained)
    if not enabled:
        return Decision(at, version, False, f"RETRAIN_ENABLED is off, else: {reason}", conditions)
    latest = max((t for t in (last_training, last_requested) if t is not None), default=None)
    allowed = latest + timedelta(hours=min_interval_hours) if latest is not None else None
    if allowed is not None and now < allowed:
        what = "request" if latest == last_requested else "training run"
        guard = (
            f"guard: the last {what} was at {_stamp(latest)}, the next request may come from "
            f"{_stamp(allowed)} (RETRAIN_MIN_INTERVAL_HOURS={min_interval_hours:g})"
        )
        return Decision(at, version, False, f"{guard}; sustained: {reason}", conditions)
    return Decision(at, version, True, reason, conditions)


def no_model(now: datetime) -> Decision:
    return Decision(now.isoformat(), None, False, "no Production model: nothing to watch")


def training_reason(given: str | None, events: list[tuple[str, Mapping[str, Any]]]) -> str:
    """Why a training run started: the reason given with a run by hand, else what its
    triggering asset events say (a retraining request's reason, new clean data)."""
    if given and given.strip():
        return given.strip()
    reasons: list[str] = []  # the requests first, then the data, whatever the events' order
    for asset, extra in events:
        if asset == REQUEST_ASSET:
            reasons.append(str((extra or {}).get("reason") or "retraining requested"))
    if any(asset == CLEAN_ASSET for asset, _ in events):
        reasons.append("new clean data")
    return "; ".join(dict.fromkeys(reasons)) or HAND_REASON
