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
import io
import itertools
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission import db, schema
from readmission.dataset import Batch, Source, iter_batches, read_header

log = logging.getLogger(__name__)

#: Target share of patients per split; every encounter of a patient shares one split.
SPLIT_FRACTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}

# Largest magnitude stored: INTEGER columns are 32-bit; identifiers (BIGINT) stop at 2**53,
# where a float64 (what pandas parses a column with a missing value to) is no longer exact.
_INT_LIMITS = {False: 2**31 - 1, True: 2**53}
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
    return math.ceil(source.rows / batch_size)


def loaded_batches(engine: Engine, source_sha256: str | None = None) -> set[int]:
    """Batch ids already recorded in `raw_data.batches`; with `source_sha256`, only those
    read from that version of the file.

    A batch read from another version (a truncated copy, one whose rows were quarantined)
    is thus read again once the right file is back: its rows already stored are skipped,
    the missing ones added, so no row of the file is lost to an earlier bad copy.
    """
    query = sa.select(db.raw_batches.c.batch_id)
    if source_sha256 is not None:
        query = query.where(db.raw_batches.c.source_sha256 == source_sha256)
    with engine.connect() as conn:
        return set(conn.scalars(query))


class BatchSizeError(ValueError):
    """The store's batches were cut with another RAW_BATCH_SIZE."""


def check_batch_size(engine: Engine, source: Source, batch_size: int) -> None:
    """Refuse a batch size other than the one the store's batches were cut with.

    Batch k is rows k*size to (k+1)*size - 1 of the file: with another size, the ids of
    the batches loaded before would name other rows, and rows would count as loaded that
    never were. Every recorded batch must start at `batch_id * batch_size`, and one read
    from this version of the file must hold `batch_size` rows (fewer only at its end).
    """
    table = db.raw_batches
    with engine.connect() as conn:
        recorded = conn.execute(
            sa.select(table.c.batch_id, table.c.first_row, table.c.rows_read, table.c.source_sha256)
        ).all()
    for batch_id, first_row, rows_read, sha256 in recorded:
        expected_rows = min(batch_size, source.rows - first_row)
        if first_row != batch_id * batch_size or (
            sha256 == source.sha256 and rows_read != expected_rows
        ):
            stored = first_row // batch_id if batch_id else rows_read
            raise BatchSizeError(
                f"raw_data was loaded in batches of {stored:,} rows (batch {batch_id} starts "
                f"at row {first_row:,} and holds {rows_read:,}), not {batch_size:,}: set "
                f"RAW_BATCH_SIZE={stored} to go on loading this store (another size would "
                "name other rows by the same batch ids and skip some)"
            )


class SplitSaltError(ValueError):
    """The store's patients were split with another SPLIT_SALT."""


#: Stored patients whose split is recomputed to check the salt: a different salt gives a
#: patient the same split with probability 0.44 (0.6² + 0.2² + 0.2²), so 256 agreeing by
#: chance has odds of about 1e-91.
SALT_CHECK_PATIENTS = 256


def check_split_salt(engine: Engine, salt: str) -> None:
    """Refuse a salt other than the one the stored patients were split with.

    A row's split is fixed when it is loaded: another salt would reshuffle nothing stored,
    and would put a stored patient's next encounters in another split than the first ones
    (one patient in two splits, a leak between train and test)."""
    raw = db.raw_encounters
    query = sa.select(raw.c.patient_nbr, raw.c.split).distinct().limit(SALT_CHECK_PATIENTS)
    with engine.connect() as conn:
        stored = conn.execute(query).all()
    if not stored:
        return
    patients = np.array([row[0] for row in stored], dtype=np.int64)
    expected = assign_split(patients, salt)
    for (patient, split), computed in zip(stored, expected, strict=True):
        if split != computed:
            raise SplitSaltError(
                f"raw_data's patients were split with another SPLIT_SALT (patient {patient} is "
                f"stored in {split!r}, this salt puts it in {computed!r}): set SPLIT_SALT back "
                "to the value of the first load. A patient keeps the split of their first "
                "stored encounter; to reshuffle, load into an empty store."
            )


def check_store(engine: Engine, source: Source, batch_size: int, salt: str) -> None:
    """Refuse, before anything is written, a load the store was not made for: another
    batch size or another split salt."""
    check_batch_size(engine, source, batch_size)
    check_split_salt(engine, salt)


def plan_batches(
    engine: Engine, source: Source, batch_size: int, salt: str, limit: int | None = None
) -> list[int]:
    """Batches of the file not loaded yet, in file order; at most `limit` if given (> 0)."""
    read_header(source.path)  # refuse a wrong header before anything is written
    check_store(engine, source, batch_size, salt)
    done = loaded_batches(engine, source.sha256)
    pending = [b for b in range(batch_count(source, batch_size)) if b not in done]
    return pending[:limit] if limit else pending


def parse_batch(batch: Batch, salt: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Text rows -> (rows ready for `raw_data.diabetes`, rows for the quarantine).

    Integer columns must hold integers that fit their SQL type ('' and '?' are stored as
    NULL); `encounter_id` and `patient_nbr` must be present; text may not hold NUL
    characters (PostgreSQL cannot store them). Text is otherwise kept verbatim.
    """
    if batch.lines is not None:
        fast = _parse_plain(batch, salt)
        if fast is not None:
            return fast, _empty_quarantine(batch)
        batch = batch.as_records()
    keys = [schema.BY_NAME[name].key for name in batch.header]
    text = pd.DataFrame(batch.rows, columns=keys, dtype=object)[list(schema.COLUMN_KEYS)]
    reasons = np.full(len(text), "", dtype=object)
    for index in _rows_with_nul(batch.rows):
        reasons[index] = "NUL character in a field"
    frame = {}
    for column in schema.COLUMNS:
        values = text[column.key]
        if column.is_integer:
            values, problems = _parse_integers(values, column)
            reasons = np.where(reasons == "", problems, reasons)
        frame[column.key] = values
    good = pd.DataFrame(frame, index=text.index)
    bad = reasons != ""
    good["source_row"] = batch.row_numbers
    good["batch_id"] = batch.batch_id
    bad_rows = np.flatnonzero(bad)
    quarantine = _quarantine_frame(
        batch.batch_id,
        [batch.row_numbers[i] for i in bad_rows],
        [batch.rows[i] for i in bad_rows],
        list(reasons[bad_rows]),
        batch.header,
    )
    malformed = _quarantine_frame(
        batch.batch_id,
        [index for index, _ in batch.malformed],
        [fields for _, fields in batch.malformed],
        [f"expected {len(batch.header)} fields, found {len(f)}" for _, f in batch.malformed],
        batch.header,
    )
    if bad.any():
        good = good.loc[~bad].reset_index(drop=True)
    good[schema.ENCOUNTER_ID] = good[schema.ENCOUNTER_ID].astype("int64")
    good[schema.PATIENT_ID] = good[schema.PATIENT_ID].astype("int64")
    good["split"] = assign_split(good[schema.PATIENT_ID].to_numpy(), salt)
    return good, pd.concat([quarantine, malformed], ignore_index=True)


_TYPES = {c.name: ("int64" if c.is_integer else object) for c in schema.COLUMNS}
_INTEGER_NAMES = [c.name for c in schema.COLUMNS if c.is_integer]
_SPLIT_BYTES = {split: split.encode() for split in SPLIT_FRACTIONS}


def _parse_lines(batch: Batch, names: list[str] | None = None) -> pd.DataFrame | None:
    """A plain batch parsed by pandas' C parser, integers typed and within their SQL range;
    None when any value is not (the record path then decides row by row)."""
    text = b"\n".join([",".join(batch.header).encode(), *batch.lines])
    try:
        frame = pd.read_csv(
            io.BytesIO(text),
            dtype=_TYPES,
            usecols=names,
            keep_default_na=False,
            na_filter=False,
            engine="c",
        )
    except (ValueError, OverflowError, pd.errors.ParserError):
        return None
    for name in _INTEGER_NAMES:
        if name in frame and (frame[name].abs() > _INT_LIMITS[name in schema.IDENTIFIERS]).any():
            return None
    return frame


def _parse_plain(batch: Batch, salt: str) -> pd.DataFrame | None:
    frame = _parse_lines(batch)
    if frame is None:
        return None
    frame = frame.rename(columns=lambda name: schema.BY_NAME[name].key)[list(schema.COLUMN_KEYS)]
    return frame.assign(
        source_row=np.arange(batch.first_row, batch.first_row + len(frame)),
        batch_id=batch.batch_id,
        split=assign_split(frame[schema.PATIENT_ID].to_numpy(), salt),
    )


def _copy_plain(conn: Connection, batch: Batch, salt: str) -> int | None:
    """PostgreSQL's fast path: the batch's own lines, each followed by its split, batch and
    row, go to COPY as they are; Python only checks the integers and hashes the patients."""
    ints = _parse_lines(batch, _INTEGER_NAMES)
    if ints is None:
        return None
    splits = assign_split(ints[schema.PATIENT_ID].to_numpy(), salt)
    payload = b"\n".join(
        [
            b"%b,%b,%d,%d" % (line, _SPLIT_BYTES[split], batch.batch_id, row)
            for row, (line, split) in enumerate(
                zip(batch.lines, splits, strict=True), start=batch.first_row
            )
        ]
    )
    columns = [schema.BY_NAME[name].key for name in batch.header]
    return db.copy_insert_csv(
        conn,
        db.raw_encounters,
        [*columns, "split", "batch_id", "source_row"],
        payload,
        direct_first=True,
    )


def _empty_quarantine(batch: Batch) -> pd.DataFrame:
    return _quarantine_frame(batch.batch_id, [], [], [], batch.header)


def _rows_with_nul(rows: list[list[str]]) -> list[int]:
    """Indices of rows holding a NUL character (one C-speed scan when there is none)."""
    if "\x00" not in "".join(itertools.chain.from_iterable(rows)):
        return []
    return [i for i, row in enumerate(rows) if any("\x00" in field for field in row)]


def _parse_integers(values: pd.Series, column: schema.Column) -> tuple[pd.Series, np.ndarray]:
    """Integers of a text column and, per row, why it failed ('' when it did not)."""
    numbers = pd.to_numeric(values, errors="coerce")
    missing = values.isin(_MISSING_NUMBER).to_numpy()
    unparsed = numbers.isna().to_numpy() & ~missing
    with np.errstate(invalid="ignore"):
        fractional = (numbers % 1 != 0).to_numpy() & ~numbers.isna().to_numpy()
        too_big = (numbers.abs() > _INT_LIMITS[column.key in schema.IDENTIFIERS]).to_numpy()
    problems = np.full(len(values), "", dtype=object)
    if column.kind is schema.Kind.IDENTIFIER:
        problems[missing] = f"{column.name}: missing identifier"
    wrong = unparsed | fractional
    problems[wrong] = f"{column.name}: not an integer"
    problems[too_big & ~wrong] = f"{column.name}: integer out of range"
    shown = wrong | too_big
    if shown.any():  # name the offending value, shortened, so the log is useful
        problems[shown] = [
            f"{p} ({str(v)[:40]})" for p, v in zip(problems[shown], values[shown], strict=True)
        ]
    numbers = numbers.where(~(shown | missing))
    return numbers.astype("Int64"), problems


def _quarantine_frame(
    batch_id: int,
    rows: list[int],
    records: list[list[str]],
    reasons: list[str],
    header: list[str],
) -> pd.DataFrame:
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


def load_batches(
    engine: Engine,
    source: Source,
    batch_ids: list[int],
    batch_size: int,
    salt: str,
    run_id: str | None = None,
    workers: int = 1,
) -> list[BatchReport]:
    """Load batches into `raw_data`, one transaction each, reading the file once.

    With `workers` > 1 (PostgreSQL), that many batches are written at once, each on its own
    connection, as Airflow's mapped tasks do; SQLite has one writer, so it loads one by one.
    """
    check_store(engine, source, batch_size, salt)
    done = loaded_batches(engine, source.sha256)
    reports = {b: BatchReport(b, 0, 0, 0, 0, skipped=True) for b in batch_ids if b in done}
    for batch_id in reports:
        log.info("batch %d already loaded, nothing to do", batch_id)
    todo = [b for b in batch_ids if b not in done]
    batches = iter_batches(source.path, batch_size, todo, plain=source.plain)
    if engine.dialect.name == "sqlite" or workers <= 1:
        for batch in batches:
            reports[batch.batch_id] = _store_batch(engine, source, batch, salt, run_id)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raw-load") as pool:
            futures = [pool.submit(_store_batch, engine, source, b, salt, run_id) for b in batches]
            for future in futures:
                report = future.result()
                reports[report.batch_id] = report
    if missing := [b for b in batch_ids if b not in reports]:
        raise ValueError(f"batches {missing} lie past the end of {source.path}")
    return [reports[b] for b in batch_ids]


def load_batch(
    engine: Engine,
    source: Source,
    batch_id: int,
    batch_size: int,
    salt: str,
    run_id: str | None = None,
) -> BatchReport:
    """Load one batch into `raw_data` in a single transaction (idempotent)."""
    return load_batches(engine, source, [batch_id], batch_size, salt, run_id)[0]


def _forget_other_versions_quarantine(conn: Connection, batch_id: int, sha256: str) -> None:
    batches = db.raw_batches
    other_version = sa.select(sa.literal(1)).where(
        batches.c.batch_id == batch_id, batches.c.source_sha256 != sha256
    )
    if conn.scalar(other_version) is not None:
        conn.execute(sa.delete(db.raw_quarantine).where(db.raw_quarantine.c.batch_id == batch_id))


def _store_batch(
    engine: Engine, source: Source, batch: Batch, salt: str, run_id: str | None
) -> BatchReport:
    started = datetime.now(UTC)
    with engine.begin() as conn:
        # rows quarantined by a read of another version of the file: this read decides
        _forget_other_versions_quarantine(conn, batch.batch_id, source.sha256)
        inserted = None
        if batch.lines is not None and conn.dialect.name == "postgresql":
            inserted = _copy_plain(conn, batch, salt)
            stored, quarantine = batch.size, _empty_quarantine(batch)
        if inserted is None:
            rows, quarantine = parse_batch(batch, salt)
            inserted = db.insert_new(conn, db.raw_encounters, rows)
            db.insert_new(conn, db.raw_quarantine, quarantine)
            stored = len(rows)
        control = {
            "batch_id": batch.batch_id,
            "first_row": batch.first_row,
            "rows_read": batch.size,
            "rows_inserted": inserted,
            "rows_already_present": stored - inserted,
            "rows_quarantined": len(quarantine),
            "source_sha256": source.sha256,
            "run_id": run_id,
            "started_at": started,
            "finished_at": datetime.now(UTC),
        }
        # the control row of this batch read from another version of the file, replaced
        conn.execute(
            sa.delete(db.raw_batches).where(
                db.raw_batches.c.batch_id == batch.batch_id,
                db.raw_batches.c.source_sha256 != source.sha256,
            )
        )
        recorded = db.insert_new(conn, db.raw_batches, pd.DataFrame([control]))
    if not recorded:  # a concurrent run loaded it first; our inserts added nothing new
        log.info("batch %d was loaded concurrently by another run", batch.batch_id)
    report = BatchReport(batch.batch_id, batch.size, inserted, stored - inserted, len(quarantine))
    log.info("batch %d: %s", batch.batch_id, report.to_dict())
    for row in quarantine.head(20).itertuples():
        log.warning("quarantined row %d: %s", row.source_row, row.reason)
    return report
