"""Batch scoring: every clean encounter scored by the Production model, for a care team's
daily list.

`score_new` scores the encounters of `clean_data` that the current Production version has
not scored yet (a newly promoted version scores them all again, under its own number), with
the patient's history as training computes it, and writes one row per encounter and
version into `serving.batch_scores`: the class, the three probabilities, the `<30` risk,
the risk tier (the version's operating points and the DECISION_* settings, as the API's
`/predict` gives it) and the factors that raise the risk most (the same explanation as
`/predict?explain=true`). Rows already scored are skipped: running it again inserts
nothing. `care_list` reads the current version's scores back, highest risk first, for the
CSV export.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmission import db, explain, schema
from readmission.assessment import RiskTiers
from readmission.features import add_history
from readmission.registry import MODEL_NAME, Registry
from readmission.training import MODEL_INPUTS

log = logging.getLogger(__name__)

#: Encounters scored (and explained) at once: bounds the memory of one step.
CHUNK_ROWS = 10_000
#: The raising factors kept per encounter.
TOP_FACTORS = 3
#: The columns of the CSV export, in order.
CARE_LIST_COLUMNS = (
    "encounter_id",
    "patient_nbr",
    "risk_tier",
    "readmission_30d_risk",
    "prediction",
    "top_factors",
    "model_version",
    "scored_at",
)


@dataclass(frozen=True)
class Scored:
    """What a scoring run did."""

    model_version: str | None
    scored: int
    already_scored: int
    explained: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "scored": self.scored,
            "already_scored": self.already_scored,
            "explained": self.explained,
        }


def _pending(conn: sa.Connection, version: str) -> tuple[int, int]:
    """(clean encounters, those `version` has scored), counted in the store."""
    clean, scores = db.clean_encounters, db.batch_scores
    total = conn.scalar(sa.select(sa.func.count()).select_from(clean))
    done = conn.scalar(
        sa.select(sa.func.count())
        .select_from(scores)
        .where(scores.c.model_name == MODEL_NAME, scores.c.model_version == version)
    )
    return int(total), int(done)


def _unscored(conn: sa.Connection, version: str) -> pd.DataFrame:
    """Every clean encounter, history added over all of them, flagged `scored` when
    `version` has scored it."""
    clean = pd.read_sql(sa.select(db.clean_encounters), conn)
    done = pd.read_sql(
        sa.select(db.batch_scores.c.encounter_id).where(
            db.batch_scores.c.model_name == MODEL_NAME,
            db.batch_scores.c.model_version == version,
        ),
        conn,
    )
    clean = add_history(clean)
    clean["scored"] = clean[schema.ENCOUNTER_ID].isin(done["encounter_id"])
    return clean


def _factors(explanation: explain.Explanation) -> str:
    return json.dumps(
        [
            {"feature": f.feature, "value": f.value, "contribution": round(f.contribution, 4)}
            for f in explanation.raising[:TOP_FACTORS]
        ]
    )


def score_frame(
    model: Any, frame: pd.DataFrame, tiers: RiskTiers | None, explainer: explain.Explainer | None
) -> pd.DataFrame:
    """The batch_scores columns (but the model's name, version and time) of cleaned
    encounters with their history."""
    inputs = frame[list(MODEL_INPUTS)]
    probabilities = model.predict_proba(inputs)
    classes = [str(c) for c in model.classes_]
    predicted = model.predict(inputs)
    risk = probabilities[:, classes.index("<30")]
    out = pd.DataFrame(
        {
            "encounter_id": frame[schema.ENCOUNTER_ID].to_numpy(),
            "patient_nbr": frame[schema.PATIENT_ID].to_numpy(),
            "prediction": np.asarray(predicted, dtype=object).astype(str),
            "probability_no": probabilities[:, classes.index("NO")],
            "probability_gt30": probabilities[:, classes.index(">30")],
            "probability_lt30": risk,
            "risk_tier": [tiers.tier(r) for r in risk] if tiers else None,
        }
    )
    if explainer is not None:
        out["top_factors"] = [_factors(e) for e in explainer.explain(inputs, top=TOP_FACTORS)]
    else:
        out["top_factors"] = None
    return out


def score_new(
    engine: Engine,
    registry: Registry,
    high_top_percent: float,
    medium_top_percent: float,
    explain_factors: bool = True,
) -> Scored:
    """Score what the Production version has not scored yet; nothing without a Production
    version."""
    loaded = registry.load_champion()
    if loaded is None:
        log.warning("no Production model: nothing scored")
        return Scored(None, 0, 0, False)
    model, entry = loaded
    version = str(entry.version)
    assessed = getattr(model, "assessment_", None)
    tiers = RiskTiers.of(assessed, high_top_percent, medium_top_percent) if assessed else None
    explainer = None
    if explain_factors:
        try:
            explainer = explain.build(model)
        except explain.ExplainerUnavailableError as exc:
            log.warning("v%s cannot be explained, scored without factors: %s", version, exc)
    with engine.connect() as conn:
        total, done = _pending(conn, version)
        if total == done:  # every encounter scored: no need to read them
            log.info("v%s has scored all %s clean encounters", version, total)
            return Scored(version, 0, done, explainer is not None)
        clean = _unscored(conn, version)
    pending = clean[~clean["scored"]].reset_index(drop=True)
    scored = 0
    for start in range(0, len(pending), CHUNK_ROWS):
        chunk = score_frame(model, pending.iloc[start : start + CHUNK_ROWS], tiers, explainer)
        chunk.insert(0, "model_version", version)
        chunk.insert(0, "model_name", MODEL_NAME)
        chunk["scored_at"] = datetime.now(UTC)
        with engine.begin() as conn:
            scored += db.insert_new(conn, db.batch_scores, chunk)
        log.info("scored %s of %s encounters with v%s", start + len(chunk), len(pending), version)
    result = Scored(version, scored, int(clean["scored"].sum()), explainer is not None)
    log.info("batch scoring: %s", result.to_dict())
    return result


def care_list(
    engine: Engine, version: str, tier: str | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """`version`'s scores, highest risk first: a tier only, or scored since a time."""
    table = db.batch_scores
    query = sa.select(
        table.c.encounter_id,
        table.c.patient_nbr,
        table.c.risk_tier,
        table.c.probability_lt30.label("readmission_30d_risk"),
        table.c.prediction,
        table.c.top_factors,
        table.c.model_version,
        table.c.scored_at,
    ).where(table.c.model_name == MODEL_NAME, table.c.model_version == version)
    if tier is not None:
        query = query.where(table.c.risk_tier == tier)
    if since is not None:
        query = query.where(table.c.scored_at >= since)
    query = query.order_by(table.c.probability_lt30.desc(), table.c.encounter_id)
    with engine.connect() as conn:
        found = pd.read_sql(query, conn)
    return found[list(CARE_LIST_COLUMNS)]
