"""CSV -> `raw_data`: batches of 15,000 rows, each row marked train/valid/test.

A batch is a fixed slice of the file (batch k holds data rows k*15,000 to
(k+1)*15,000 - 1), so its identity does not depend on when or how often it is loaded.
Each batch is written in one transaction together with its row in `raw_data.batches`:
a run killed half-way leaves whole batches or nothing, and the next run loads what is
missing. Rows whose `encounter_id` is already stored are skipped, so nothing is ever
duplicated. Rows that cannot be stored (a text where a number belongs, a wrong number
of fields) go to `raw_data.quarantine` with the reason and do not stop the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmission import db, schema
from readmission.dataset import Batch, Source, count_rows, read_batch, read_header

log = logging.getLogger(__name__)

#: Target share of patients per split; every encounter of a patient shares one split.
SPLIT_FRACTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}

_INT_LIMITS = {sa.BigInteger: 2**63 - 1, sa.Integer: 2**31 - 1}
_MISSING_NUMBER = ("", schema.MISSING_MARKER)


def assign_split(patient_nbr: np.ndarray | pd.Series, salt: str) -> np.ndarray:
    """Split of each patient: a salted 64-bit hash of `patient_nbr` mapped to [0, 1).

    The hash (splitmix64's finaliser) depends on nothing but the patient number and the
    salt, so a patient lands in the same split in every batch, run and machine, and the
    shares converge to 60/20/20 as patients accumulate.
    """
    salt_key = np.uint64(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little"))
    x = np.asarray(patient_nbr, dtype=np.int64).astype(np.uint64) ^ salt_key
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    unit = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    train, valid = SPLIT_FRACTIONS["train"], SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["valid"]
    return np.select([unit < train, unit < valid], ["train", "valid"], "test")


@dataclass(frozen=True)
class BatchReport:
    """What loading one batch did."""

    batch_id: int
    rows_read: int
    rows_inserted: int
    rows_already_present: int
    rows_quarantined: int
    skipped: bool = False  # the batch was already recorded as loaded

    def to_dict(self) -> dict:
        return asdict(self)


def batch_count(source: Source, batch_size: int) -> int:
    """How many batches the file holds."""
    return math.ceil(count_rows(source.path) / batch_size)


def loaded_batches(engine: Engine) -> set[int]:
    """Batch ids already recorded in `raw_data.batches`."""
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(db.raw_batches.c.batch_id)))


def plan_batches(
    engine: Engine, source: Source, batch_size: int, limit: int | None = None
) -> list[int]:
    """Batches of the file not loaded yet, in file order; at most `limit` if given (> 0)."""
    read_header(source.path)  # refuse a wrong header before anything is written
    done = loaded_batches(engine)
    pending = [b for b in range(batch_count(source, batch_size)) if b not in done]
    return pending[:limit] if limit else pending


def parse_batch(batch: Batch, salt: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text rows -> (rows ready for `raw_data.diabetes`, rows for the quarantine).

    Integer columns must hold integers that fit their SQL type ('' and '?' are stored as
    NULL); `encounter_id` and `patient_nbr` must be present. Text is kept verbatim.
    """
    text = pd.DataFrame(batch.rows, columns=batch.header, dtype=object)
    text.columns = [schema.BY_NAME[name].key for name in batch.header]
    text = text[list(schema.COLUMN_KEYS)]
    reasons = pd.Series("", index=text.index, dtype=object)
    frame = {}
    for column in schema.COLUMNS:
        values = text[column.key]
        if column.is_integer:
            parsed, problem = _parse_integers(values, column)
            reasons = reasons.where(reasons != "", problem)
            frame[column.key] = parsed
        else:
            has_nul = values.str.contains("\x00", regex=False)
            reasons = reasons.where(~has_nul | (reasons != ""), f"{column.name}: NUL character")
            frame[column.key] = values
    good = pd.DataFrame(frame, index=text.index)
    bad = reasons != ""
    good["source_row"] = batch.row_numbers
    good["batch_id"] = batch.batch_id
    quarantine = _quarantine_frame(
        batch.batch_id,
        [batch.row_numbers[i] for i in np.flatnonzero(bad.to_numpy())],
        [batch.rows[i] for i in np.flatnonzero(bad.to_numpy())],
        list(reasons[bad]),
        batch.header,
    )
    malformed = _quarantine_frame(
        batch.batch_id,
        [index for index, _ in batch.malformed],
        [fields for _, fields in batch.malformed],
        [f"expected {len(batch.header)} fields, found {len(f)}" for _, f in batch.malformed],
        batch.header,
    )
    good = good.loc[~bad].copy()
    good["split"] = assign_split(good[schema.PATIENT_ID].to_numpy(), salt)
    good[schema.ENCOUNTER_ID] = good[schema.ENCOUNTER_ID].astype("int64")
    good[schema.PATIENT_ID] = good[schema.PATIENT_ID].astype("int64")
    return good.reset_index(drop=True), pd.concat([quarantine, malformed], ignore_index=True)


def _parse_integers(values: pd.Series, column: schema.Column) -> tuple[pd.Series, pd.Series]:
    """Integers of a text column and, per row, why it failed ('' when it did not)."""
    stripped = values.str.strip()
    missing = stripped.isin(_MISSING_NUMBER)
    well_formed = stripped.str.fullmatch(r"[+-]?\d{1,19}")
    numbers = pd.to_numeric(stripped.where(well_formed & ~missing), errors="coerce")
    limit = _INT_LIMITS[type(db.raw_encounters.c[column.key].type)]
    too_big = numbers.abs() > limit
    problem = pd.Series("", index=values.index, dtype=object)
    if column.kind is schema.Kind.IDENTIFIER:
        problem[missing] = f"{column.name}: missing identifier"
    problem[~missing & ~well_formed] = f"{column.name}: not an integer"
    problem[too_big] = f"{column.name}: integer out of range"
    show = ~missing & (~well_formed | too_big)
    if show.any():  # name the offending value, shortened, so the log is useful
        problem[show] = problem[show] + " (" + stripped[show].str.slice(0, 40) + ")"
    return numbers.where(~too_big).astype("Int64"), problem


def _quarantine_frame(
    batch_id: int, rows: list[int], records: list[list[str]], reasons: list[str],
    header: list[str],
) -> pd.DataFrame:  # fmt: skip
    encounter = header.index(schema.BY_KEY[schema.ENCOUNTER_ID].name)
    return pd.DataFrame(
        {
            "batch_id": pd.Series([batch_id] * len(rows), dtype="int64"),
            "source_row": pd.Series(rows, dtype="int64"),
            "encounter_id": [r[encounter] if len(r) > encounter else None for r in records],
            "reason": reasons,
            "record": [json.dumps(r, ensure_ascii=False) for r in records],
        }
    )


def load_batch(
    engine: Engine, source: Source, batch_id: int, batch_size: int, salt: str,
    run_id: str | None = None,
) -> BatchReport:  # fmt: skip
    """Load one batch into `raw_data` in a single transaction (idempotent)."""
    if batch_id in loaded_batches(engine):
        log.info("batch %d already loaded, nothing to do", batch_id)
        return BatchReport(batch_id, 0, 0, 0, 0, skipped=True)
    started = datetime.now(UTC)
    batch = read_batch(source.path, batch_id, batch_size)
    if batch.size == 0:
        raise ValueError(f"batch {batch_id} is past the end of {source.path}")
    rows, quarantine = parse_batch(batch, salt)
    with engine.begin() as conn:
        inserted = db.insert_new(conn, db.raw_encounters, rows)
        db.insert_new(conn, db.raw_quarantine, quarantine)
        control = {
            "batch_id": batch_id,
            "first_row": batch.first_row,
            "rows_read": batch.size,
            "rows_inserted": inserted,
            "rows_already_present": len(rows) - inserted,
            "rows_quarantined": len(quarantine),
            "source_sha256": source.sha256,
            "run_id": run_id,
            "started_at": started,
            "finished_at": datetime.now(UTC),
        }
        recorded = db.insert_new(conn, db.raw_batches, pd.DataFrame([control]))
    if not recorded:  # a concurrent run loaded it first; our inserts added nothing new
        log.info("batch %d was loaded concurrently by another run", batch_id)
    report = BatchReport(batch_id, batch.size, inserted, len(rows) - inserted, len(quarantine))
    log.info("batch %d: %s", batch_id, report.to_dict())
    for row in quarantine.head(20).itertuples():
        log.warning("quarantined row %d: %s", row.source_row, row.reason)
    return report
