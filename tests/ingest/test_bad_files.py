"""Bad data files for the raw load, on SQLite and on a real PostgreSQL.

The story of every case: the good file is partly loaded (3 of its 7 batches) and cleaned;
then a bad copy takes its place and the load runs on; then the good file is back and the
load runs again. Each bad copy must give a clear error (DatasetError or SchemaError naming
the file and what is wrong) or quarantined rows (with their row number and the reason); the
rows stored before must be untouched; and the next good run must complete, leaving every
encounter of the good file stored exactly once.

The first defence is the file's sha256: under the expected hash every bad copy is refused
before a byte is loaded. The deeper checks are exercised with the bad copy's own hash
trusted (DIABETES_CSV_SHA256 set to it), as when an operator deliberately loads another
version of the file. Cases already covered elsewhere (a renamed column, one unparseable value
per column, a latin-1 value in `dataset.verify`, a plain-text .csv.gz in `sha256_of`) are
taken further here through the whole load.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import dataset, db, pipeline
from readmission.schema import SchemaError

BATCH = 150  # the sample's 1,000 rows make 7 batches
LOADED = 3  # batches stored before the bad copy arrives: rows 0-449
BAD_ROW = 505  # a data row (0-based) of batch 3, the first the bad copy feeds


def _lines(good: Path) -> list[bytes]:
    return dataset.content(good).split(b"\r\n")  # header, 1,000 rows, ""


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _edit_row(good: Path, out: Path, edit: Callable[[bytes], bytes]) -> Path:
    lines = _lines(good)
    lines[BAD_ROW + 1] = edit(lines[BAD_ROW + 1])
    return _write(out, b"\r\n".join(lines))


def no_header(good, out):
    return _write(out, b"\r\n".join(_lines(good)[1:]))


def header_with_a_duplicated_column(good, out):
    lines = _lines(good)
    lines[0] = lines[0].replace(b"gender", b"race", 1)
    return _write(out, b"\r\n".join(lines))


def truncated_mid_line(good, out):
    data = b"\r\n".join(_lines(good))
    start = data.index(_lines(good)[BAD_ROW + 1])
    return _write(out, data[: start + 40])  # the file ends 40 bytes into row 505


def truncated_mid_gzip_stream(good, out):
    packed = gzip.compress(dataset.content(good))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(packed[: len(packed) // 2])
    return out


def latin1_value(good, out):
    return _edit_row(
        good,
        out,
        lambda line: (
            line.replace(b"Caucasian", "Caucásian".encode("latin-1"), 1)
            .replace(b",Male,", b",M\xe4le,", 1)
            .replace(b",Female,", b",F\xe9male,", 1)
        ),
    )


def utf16_file(good, out):
    return _write(out, dataset.content(good).decode("utf-8").encode("utf-16"))


def extra_fields(good, out):
    return _edit_row(good, out, lambda line: line + b",one,too,many")


def too_few_fields(good, out):
    return _edit_row(good, out, lambda line: line.rsplit(b",", 2)[0])


def nul_byte(good, out):
    return _edit_row(good, out, lambda line: line.replace(b",", b",\x00", 1))


def not_gzip(good, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(dataset.content(good))  # plain CSV under a .csv.gz name
    return out


def empty_file(good, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    return out


def empty_gzip(good, out):
    return _write(out, b"")


# (maker, file name, outcome): an exception type and a message pattern, or "quarantine"
# and the reason of the one quarantined row (BAD_ROW).
CASES = [
    (no_header, "diabetic_data.csv", SchemaError, r"the header row is missing"),
    (
        header_with_a_duplicated_column,
        "diabetic_data.csv",
        SchemaError,
        r"missing columns: gender; duplicated columns: race",
    ),
    (truncated_mid_line, "diabetic_data.csv", "quarantine", r"expected 50 fields, found \d+"),
    (
        truncated_mid_gzip_stream,
        "diabetic_data.csv.gz",
        dataset.DatasetError,
        r"cannot be read \(Compressed file ended before the end-of-stream marker",
    ),
    (latin1_value, "diabetic_data.csv", dataset.DatasetError, r"is not UTF-8 text"),
    (utf16_file, "diabetic_data.csv", dataset.DatasetError, r"is not UTF-8 text"),
    (extra_fields, "diabetic_data.csv.gz", "quarantine", r"expected 50 fields, found 53"),
    (too_few_fields, "diabetic_data.csv", "quarantine", r"expected 50 fields, found 48"),
    (nul_byte, "diabetic_data.csv", "quarantine", r"NUL"),
    (not_gzip, "diabetic_data.csv.gz", dataset.DatasetError, r"cannot be read \(Not a gzip"),
    (empty_file, "diabetic_data.csv", dataset.DatasetError, r"is empty"),
    (empty_gzip, "diabetic_data.csv.gz", dataset.DatasetError, r"is empty"),
]


def _frame(url: str, table: sa.Table) -> pd.DataFrame:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql(sa.select(table), conn)
    finally:
        engine.dispose()
    return frame


def _stored(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """raw and clean rows, in a comparable order, without load-time bookkeeping."""
    raw = _frame(url, db.raw_encounters).sort_values("encounter_id", ignore_index=True)
    clean = _frame(url, db.clean_encounters).sort_values("encounter_id", ignore_index=True)
    return raw, clean.drop(columns=[c for c in clean.columns if c.endswith("_at")])


def _run(settings, limit: int | None = None) -> None:
    """What the DAGs do: plan, load the planned batches, clean what is new."""
    pending = pipeline.plan_raw_load(limit, settings=settings)
    pipeline.load_raw_batches(pending, settings=settings)
    pipeline.clean_new_rows(settings=settings)


@pytest.mark.parametrize(
    ("make", "name", "outcome", "pattern"), CASES, ids=[case[0].__name__ for case in CASES]
)
def test_a_bad_file_is_refused_or_quarantined_and_nothing_stored_is_lost(
    tmp_path, settings_for, sample_csv, sample_frame, store_url, make, name, outcome, pattern
):
    good = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=BATCH)
    _run(good, limit=LOADED)
    before_raw, before_clean = _stored(store_url)
    assert len(before_raw) == len(before_clean) == LOADED * BATCH

    dataset.clear_cache()
    bad_path = make(sample_csv, tmp_path / "bad" / name)
    # 1. under the expected hash the bad copy is refused before anything is read
    expected_hash = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=BATCH).dataset.csv_sha256
    with pytest.raises(dataset.DatasetError) as refused:
        _run(good.updated(DIABETES_CSV=bad_path))
    assert str(bad_path) in str(refused.value)
    assert expected_hash in str(refused.value) or "cannot be read" in str(refused.value)

    # 2. with its own hash trusted, the deeper checks speak
    if outcome == "quarantine":
        # another version of the file: its batches 0-2 are read again (rows already stored,
        # skipped), then batch 3, which holds the bad row
        _run(settings_for(bad_path, store_url, RAW_BATCH_SIZE=BATCH), limit=LOADED + 1)
        quarantine = _frame(store_url, db.raw_quarantine)
        assert quarantine["source_row"].tolist() == [BAD_ROW], quarantine
        assert re.search(pattern, quarantine["reason"].iloc[0]), quarantine["reason"].iloc[0]
    else:
        with pytest.raises(outcome, match=pattern) as caught:
            _run(settings_for(bad_path, store_url, RAW_BATCH_SIZE=BATCH), limit=LOADED + 1)
        assert str(bad_path) in str(caught.value)  # says where

    # 3. nothing stored before is lost or altered
    after_raw, after_clean = _stored(store_url)
    kept = after_raw["encounter_id"].isin(before_raw["encounter_id"])
    pd.testing.assert_frame_equal(after_raw[kept].reset_index(drop=True), before_raw)
    kept = after_clean["encounter_id"].isin(before_clean["encounter_id"])
    pd.testing.assert_frame_equal(after_clean[kept].reset_index(drop=True), before_clean)

    # 4. the good file is back: the next run completes and every encounter is stored once
    dataset.clear_cache()
    _run(good)
    raw, clean = _stored(store_url)
    expected = sorted(sample_frame["encounter_id"].astype(int))
    assert raw["encounter_id"].tolist() == expected
    assert clean["encounter_id"].tolist() == expected
    assert pipeline.plan_raw_load(settings=good) == []
    # a row quarantined from the bad copy, since loaded from the good file, is not counted
    assert _frame(store_url, db.raw_quarantine).empty
    assert pipeline.store_summary(good)["rows_quarantined"] == 0
