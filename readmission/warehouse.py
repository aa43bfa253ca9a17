"""`raw_data` -> `clean_data`, incrementally, and what the store holds.

The watermark is the primary key itself: a raw row is pending exactly when no clean row
has its `encounter_id` (an anti-join on two primary keys). Unlike a timestamp or a
control table that a run may forget to update (the original project dropped its
control table on every run), this cannot skip or repeat a row, whatever order batches
arrive in and wherever a previous run was interrupted. Each raw batch's pending rows are
cleaned and committed in one transaction with their row in `clean_data.runs`, so a batch
is either wholly clean or not at all (what training pins its snapshot on).

A rebuild (a full refresh asked for, or rows made by another version of the cleaning
rules, `cleaning.RULES_VERSION`) runs in one transaction: readers see the old table until
the new one is complete, and a rebuild that fails leaves the old one as it was.
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
from readmission.cleaning import CLEAN_COLUMNS, RULES_VERSION, clean_with_report
from readmission.names import SPLITS

log = logging.getLogger(__name__)

LINEAGE = ("split", "batch_id", "source_row")


@dataclass
class CleanRunReport:
    """What one cleaning run did."""

    rows_cleaned: int = 0
    chunks: int = 0
    invalid_values: Counter = field(default_factory=Counter)
    rebuilt: str | None = None  # why every row was cleaned again, if it was

    def to_dict(self) -> dict:
        out = asdict(self)
        out["invalid_values"] = dict(self.invalid_values)
        return out


def _not_cleaned():
    raw, clean = db.raw_encounters, db.clean_encounters
    return ~sa.select(sa.literal(1)).where(clean.c.encounter_id == raw.c.encounter_id).exists()


def pending_batches(conn: Connection) -> list[int]:
    """The batches (by id) holding raw rows without a clean row yet: one search of the
    whole raw table."""
    raw = db.raw_encounters
    query = sa.select(raw.c.batch_id).where(_not_cleaned()).distinct().order_by(raw.c.batch_id)
    return list(conn.scalars(query))


def pending_rows(conn: Connection, batch_id: int) -> pd.DataFrame:
    """The raw rows of `batch_id` without a clean row yet, in file order (read through the
    batch's index: the cost of the batch, not of the table)."""
    raw = db.raw_encounters
    query = (
        sa.select(*(raw.c[key] for key in (*schema.COLUMN_KEYS, *LINEAGE)))
        .where(raw.c.batch_id == batch_id, _not_cleaned())
        .order_by(raw.c.source_row)
    )
    return pd.read_sql(query, conn)


def clean_pending(
    engine: Engine, run_id: str | None = None, full_refresh: bool = False
) -> CleanRunReport:
    """Clean every raw row not cleaned yet, one batch per transaction; or rebuild the whole
    table in one transaction when `full_refresh` is asked for or the rules changed.

    The batches to clean are found once a pass (`pending_batches`); rows a raw load adds
    meanwhile are found by the next pass, which finds nothing when nothing was added."""
    report = CleanRunReport()
    reason = "full refresh requested" if full_refresh else stale_reason(engine)
    if reason:
        log.warning("rebuilding clean_data from raw_data in one transaction: %s", reason)
        report.rebuilt = reason
        with engine.begin() as conn:
            _empty_clean_table(conn)
            for batch_id in pending_batches(conn):
                _clean_batch(conn, batch_id, run_id, report)
            _record_rules(conn)
        return report
    while True:
        with engine.connect() as conn:
            batches = pending_batches(conn)
        if not batches:
            return report
        for batch_id in batches:
            with engine.begin() as conn:
                if _clean_batch(conn, batch_id, run_id, report):
                    _record_rules(conn)


def stale_reason(engine: Engine) -> str | None:
    """Why the clean table cannot simply be added to (another layout or rules), or None."""
    inspector = sa.inspect(engine)
    table = db.clean_encounters
    stored = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
    expected = {c.name for c in table.columns}
    if stored != expected:
        changes = sorted(stored ^ expected)
        return f"the clean table's columns differ from this version's ({', '.join(changes)})"
    with engine.connect() as conn:
        version = conn.scalar(sa.select(db.clean_rules.c.version))
        if version is None:
            has_rows = conn.scalar(sa.select(sa.literal(1)).select_from(table).limit(1))
            return "rows cleaned before the rules had a version" if has_rows else None
    if version != RULES_VERSION:
        return f"cleaning rules changed (version {version} -> {RULES_VERSION})"
    return None


def _empty_clean_table(conn: Connection) -> None:
    """Delete every clean row, or re-create the table when its layout is an older one."""
    table = db.clean_encounters
    stored = {c["name"] for c in sa.inspect(conn).get_columns(table.name, schema=table.schema)}
    if stored != {c.name for c in table.columns}:
        table.drop(conn)
        table.create(conn)
    else:
        conn.execute(sa.delete(table))


def _record_rules(conn: Connection) -> None:
    current = conn.scalar(sa.select(db.clean_rules.c.version))
    if current != RULES_VERSION:
        conn.execute(sa.delete(db.clean_rules))
        conn.execute(
            sa.insert(db.clean_rules).values(version=RULES_VERSION, applied_at=datetime.now(UTC))
        )


def _clean_batch(
    conn: Connection, batch_id: int, run_id: str | None, report: CleanRunReport
) -> bool:
    """Clean the pending rows of `batch_id` on `conn`; False when it has none (a concurrent
    run cleaned them)."""
    started = datetime.now(UTC)
    raw = pending_rows(conn, batch_id)
    if raw.empty:
        return False
    columns = [c.key for c in CLEAN_COLUMNS]
    cleaned, chunk_report = clean_with_report(raw)
    invalid = {k: v for k, v in chunk_report.to_dict()["invalid"].items() if v}
    runs = db.clean_runs
    chunk_id = conn.execute(
        sa.insert(runs).values(
            run_id=run_id,
            rows_cleaned=0,
            invalid_values=json.dumps(invalid, sort_keys=True),
            started_at=started,
            finished_at=started,
        )
    ).inserted_primary_key[0]
    rows = cleaned[[*columns, *LINEAGE]].assign(chunk_id=chunk_id)
    inserted = db.insert_new(conn, db.clean_encounters, rows)
    if inserted == 0:  # cannot happen for pending rows; never loop forever on it
        raise RuntimeError("cleaning made no progress: pending rows were not inserted")
    conn.execute(
        sa.update(runs)
        .where(runs.c.id == chunk_id)
        .values(rows_cleaned=inserted, finished_at=datetime.now(UTC))
    )
    report.rows_cleaned += inserted
    report.chunks += 1
    report.invalid_values.update(invalid)
    log.info(
        "cleaned %d rows of batch %d (%s)",
        inserted,
        int(raw["batch_id"].iloc[0]),
        chunk_report.summary(),
    )
    return True


def summary(engine: Engine) -> dict:
    """Rows per split in raw and clean, batches loaded, rows quarantined, rows pending."""
    raw, clean = db.raw_encounters, db.clean_encounters
    with engine.connect() as conn:

        def per_split(table: sa.Table) -> dict[str, int]:
            counts = dict(
                conn.execute(
                    sa.select(table.c.split, sa.func.count()).group_by(table.c.split)
                ).all()
            )
            return {split: int(counts.get(split, 0)) for split in SPLITS}

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
    for split in SPLITS:
        lines.append(f"{split:<8}{facts['raw_rows'][split]:>12,}{facts['clean_rows'][split]:>12,}")
    lines.append(f"{'total':<8}{facts['raw_total']:>12,}{facts['clean_total']:>12,}")
    batches = facts["batches_loaded"]
    lines.append(
        f"batches loaded: {len(batches)} {batches}; patients: {facts['patients']:,}; "
        f"quarantined rows: {facts['rows_quarantined']:,}; "
        f"pending clean: {facts['pending_clean']:,}"
    )
    return "\n".join(lines)
