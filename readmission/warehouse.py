"""`raw_data` -> `clean_data`, incrementally, and what the store holds.

The watermark is the primary key itself: a raw row is pending exactly when no clean row
has its `encounter_id` (an anti-join on two primary keys). Unlike a timestamp or a
control table that a run may forget to update (the original project dropped its
control table on every run), this cannot skip or repeat a row, whatever order batches
arrive in and wherever a previous run was interrupted. Each chunk is cleaned and
committed in one transaction with its row in `clean_data.runs`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission import db, schema
from readmission.cleaning import CLEAN_COLUMNS, clean_with_report

log = logging.getLogger(__name__)

LINEAGE = ("split", "batch_id", "source_row")


@dataclass
class CleanRunReport:
    """What one cleaning run did."""

    rows_cleaned: int = 0
    chunks: int = 0
    invalid_values: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["invalid_values"] = dict(self.invalid_values)
        return out


def pending_rows(conn: Connection, limit: int) -> pd.DataFrame:
    """Up to `limit` raw rows that have no clean row yet, in file order."""
    raw, clean = db.raw_encounters, db.clean_encounters
    cleaned = sa.select(sa.literal(1)).where(clean.c.encounter_id == raw.c.encounter_id)
    query = (
        sa.select(*(raw.c[key] for key in (*schema.COLUMN_KEYS, *LINEAGE)))
        .where(~cleaned.exists())
        .order_by(raw.c.batch_id, raw.c.source_row)
        .limit(limit)
    )
    return pd.read_sql(query, conn)


def clean_pending(
    engine: Engine, chunk_size: int = 15_000, run_id: str | None = None
) -> CleanRunReport:
    """Clean every raw row not cleaned yet, `chunk_size` rows per transaction."""
    report = CleanRunReport()
    columns = [c.key for c in CLEAN_COLUMNS]
    while True:
        started = datetime.now(UTC)
        with engine.begin() as conn:
            raw = pending_rows(conn, chunk_size)
            if raw.empty:
                break
            cleaned, chunk_report = clean_with_report(raw)
            inserted = db.insert_new(conn, db.clean_encounters, cleaned[[*columns, *LINEAGE]])
            if inserted == 0:  # cannot happen for pending rows; never loop forever on it
                raise RuntimeError("cleaning made no progress: pending rows were not inserted")
            invalid = {k: v for k, v in chunk_report.to_dict()["invalid"].items() if v}
            db.insert_new(
                conn,
                db.clean_runs,
                pd.DataFrame([{
                    "run_id": run_id,
                    "rows_cleaned": inserted,
                    "invalid_values": json.dumps(invalid, sort_keys=True),
                    "started_at": started,
                    "finished_at": datetime.now(UTC),
                }]),
            )  # fmt: skip
        report.rows_cleaned += inserted
        report.chunks += 1
        report.invalid_values.update(invalid)
        log.info("cleaned %d rows (%s)", inserted, chunk_report.summary())
    return report


def reset_clean(engine: Engine) -> int:
    """Delete every clean row (for a full rebuild after the cleaning rules change)."""
    with engine.begin() as conn:
        return conn.execute(sa.delete(db.clean_encounters)).rowcount


def summary(engine: Engine) -> dict:
    """Rows per split in raw and clean, batches loaded, rows quarantined, rows pending."""
    raw, clean = db.raw_encounters, db.clean_encounters
    with engine.connect() as conn:

        def per_split(table: sa.Table) -> dict[str, int]:
            counts = dict(conn.execute(
                sa.select(table.c.split, sa.func.count()).group_by(table.c.split)
            ).all())  # fmt: skip
            return {split: int(counts.get(split, 0)) for split in db.SPLITS}

        raw_rows, clean_rows = per_split(raw), per_split(clean)
        batches = list(conn.scalars(sa.select(db.raw_batches.c.batch_id).order_by("batch_id")))
        quarantined = conn.scalar(sa.select(sa.func.count()).select_from(db.raw_quarantine))
        patients = conn.scalar(sa.select(sa.func.count(sa.distinct(raw.c.patient_nbr))))
    return {
        "raw_rows": raw_rows,
        "raw_total": sum(raw_rows.values()),
        "patients": int(patients or 0),
        "batches_loaded": batches,
        "rows_quarantined": int(quarantined or 0),
        "clean_rows": clean_rows,
        "clean_total": sum(clean_rows.values()),
        "pending_clean": sum(raw_rows.values()) - sum(clean_rows.values()),
    }


def format_summary(facts: dict) -> str:
    """A small table for people."""
    lines = [f"{'split':<8}{'raw rows':>12}{'clean rows':>12}"]
    for split in db.SPLITS:
        lines.append(f"{split:<8}{facts['raw_rows'][split]:>12,}{facts['clean_rows'][split]:>12,}")
    lines.append(f"{'total':<8}{facts['raw_total']:>12,}{facts['clean_total']:>12,}")
    batches = facts["batches_loaded"]
    lines.append(
        f"batches loaded: {len(batches)} {batches}; patients: {facts['patients']:,}; "
        f"quarantined rows: {facts['rows_quarantined']:,}; "
        f"pending clean: {facts['pending_clean']:,}"
    )
    return "\n".join(lines)
