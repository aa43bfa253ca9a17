"""Raw load and incremental cleaning against real stores: SQLite files and PostgreSQL."""

from __future__ import annotations

import re
import threading

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from readmission import dataset, db, ingest, pipeline, synthetic, warehouse
from readmission.cleaning import RULES_VERSION
from readmission.schema import SchemaError

SALT = "diabetes-130-v1"  # the default split salt
BATCH = 150  # the sample's 1,000 rows make 7 batches, like the real file's 101,766


def _count(url: str, table: sa.Table) -> int:
    with db.make_engine(url).connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(table))


def _frame(url: str, table: sa.Table) -> pd.DataFrame:
    with db.make_engine(url).connect() as conn:
        return pd.read_sql(sa.select(table), conn)


def _load_all(settings, limit=None) -> list[dict]:
    return [
        pipeline.load_raw_batch(b, settings=settings)
        for b in pipeline.plan_raw_load(limit, settings=settings)
    ]


@pytest.fixture
def settings(settings_for, sample_csv, store_url):
    return settings_for(sample_csv, store_url, RAW_BATCH_SIZE=BATCH)


def test_full_load_stores_every_row_once_with_its_patient_split(settings, sample_frame):
    reports = _load_all(settings)
    assert [r["batch_id"] for r in reports] == list(range(7))
    assert sum(r["rows_inserted"] for r in reports) == 1_000
    raw = _frame(settings.database_url, db.raw_encounters)
    assert len(raw) == raw["encounter_id"].nunique() == 1_000
    expected = dict(
        zip(
            sample_frame["encounter_id"].astype(int),
            ingest.assign_split(sample_frame["patient_nbr"].astype(int), SALT),
            strict=True,
        )
    )
    assert (raw["split"] == raw["encounter_id"].map(expected)).all()
    assert (raw.groupby("patient_nbr")["split"].nunique() == 1).all()
    # text is stored verbatim: the raw layer keeps the file's '?'
    assert (raw["weight"] == "?").sum() == (sample_frame["weight"] == "?").sum()
    batches = _frame(settings.database_url, db.raw_batches)
    assert batches["rows_read"].tolist() == [150] * 6 + [100]
    assert (batches["source_sha256"] == dataset.sha256_of(settings.dataset.csv)).all()


def test_postgres_loads_through_copy_and_sqlite_through_executemany(settings, monkeypatch):
    calls: list[str] = []
    for name in ("_copy_insert", "_executemany_insert"):
        original = getattr(db, name)
        monkeypatch.setattr(db, name, lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a))
    _load_all(settings, limit=1)
    expected = (
        "_copy_insert" if settings.database_url.startswith("postgresql") else "_executemany_insert"
    )
    assert set(calls) == {expected}


@pytest.mark.parametrize("size", [200, 1_000, 5_000])
def test_every_batch_size_loads_every_row_once(settings_for, sample_csv, store_url, size):
    settings = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=size)
    reports = _load_all(settings)
    assert len(reports) == -(-1_000 // size)
    assert _count(settings.database_url, db.raw_encounters) == 1_000
    assert _load_all(settings) == []


def test_another_batch_size_is_refused_before_anything_is_written(
    settings_for, sample_csv, store_url
):
    """Batch k is rows k*size to (k+1)*size - 1: with another size, ids loaded before would
    name other rows, and rows would be taken as loaded that never were."""
    first = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=BATCH)
    _load_all(first, limit=2)
    other = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=200)
    message = "raw_data was loaded in batches of 150 rows.*RAW_BATCH_SIZE=150"
    with pytest.raises(ingest.BatchSizeError, match=message):
        pipeline.plan_raw_load(settings=other)
    with pytest.raises(ingest.BatchSizeError, match=message):
        pipeline.load_raw_batch(2, settings=other)
    with pytest.raises(ingest.BatchSizeError, match=message):
        pipeline.load_raw_batches([2, 3], settings=other)
    assert _count(first.database_url, db.raw_encounters) == 2 * BATCH
    _load_all(first)  # the store's own size goes on
    assert _count(first.database_url, db.raw_encounters) == 1_000


def test_another_split_salt_is_refused_so_no_patient_lands_in_two_splits(
    settings_for, sample_csv, store_url
):
    """The split is fixed when a row is loaded: a new salt would reshuffle nothing stored and
    put the stored patients' new encounters in other splits."""
    first = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=BATCH)
    _load_all(first, limit=3)
    other = settings_for(sample_csv, store_url, RAW_BATCH_SIZE=BATCH, SPLIT_SALT="another")
    message = "raw_data's patients were split with another SPLIT_SALT"
    with pytest.raises(ingest.SplitSaltError, match=message):
        pipeline.plan_raw_load(settings=other)
    with pytest.raises(ingest.SplitSaltError, match=message):
        pipeline.load_raw_batch(3, settings=other)
    _load_all(first)
    raw = _frame(first.database_url, db.raw_encounters)
    assert len(raw) == 1_000
    assert (raw.groupby("patient_nbr")["split"].nunique() == 1).all()


def test_running_the_load_again_adds_nothing(settings):
    _load_all(settings)
    assert pipeline.plan_raw_load(settings=settings) == []
    again = pipeline.load_raw_batch(3, settings=settings)
    assert again["skipped"] is True
    assert _count(settings.database_url, db.raw_encounters) == 1_000


def test_rows_already_stored_are_skipped_even_without_the_control_row(settings):
    _load_all(settings)
    with db.make_engine(settings.database_url).begin() as conn:  # lose the control table
        conn.execute(sa.delete(db.raw_batches))
    reports = _load_all(settings)
    assert sum(r["rows_inserted"] for r in reports) == 0
    assert sum(r["rows_already_present"] for r in reports) == 1_000
    assert _count(settings.database_url, db.raw_encounters) == 1_000


def test_next_n_batches_load_in_file_order(settings):
    assert [r["batch_id"] for r in _load_all(settings, limit=2)] == [0, 1]
    assert [r["batch_id"] for r in _load_all(settings, limit=3)] == [2, 3, 4]
    assert pipeline.plan_raw_load(settings=settings) == [5, 6]
    assert _count(settings.database_url, db.raw_encounters) == 5 * BATCH


def test_a_batch_that_fails_half_way_leaves_nothing_and_the_rerun_completes(settings, monkeypatch):
    original = db.insert_new

    def fail_on_batch_2_control_row(conn, table, frame):
        if table is db.raw_batches and frame["batch_id"].iloc[0] == 2:
            raise RuntimeError("killed after the rows, before the control row")
        return original(conn, table, frame)

    monkeypatch.setattr(db, "insert_new", fail_on_batch_2_control_row)
    with pytest.raises(RuntimeError, match="killed"):
        _load_all(settings)
    assert _count(settings.database_url, db.raw_encounters) == 2 * BATCH  # batch 2 rolled back
    monkeypatch.setattr(db, "insert_new", original)
    _load_all(settings)
    raw = _frame(settings.database_url, db.raw_encounters)
    assert len(raw) == raw["encounter_id"].nunique() == 1_000


def test_unparseable_rows_are_quarantined_and_the_rest_loaded(
    tmp_path, settings_for, store_url, sample_frame
):
    frame = sample_frame.copy()
    frame.loc[5, "num_lab_procedures"] = "forty"
    frame.loc[6, "encounter_id"] = "?"
    frame.loc[7, "time_in_hospital"] = "99999999999"
    path = synthetic.write_csv(frame, tmp_path / "bad" / "diabetic_data.csv")
    lines = path.read_text().splitlines(keepends=True)
    lines[10] = lines[10].rstrip("\r\n") + ",one,too,many\r\n"  # data row 9
    path.write_text("".join(lines))
    settings = settings_for(path, store_url, RAW_BATCH_SIZE=BATCH)
    reports = _load_all(settings)
    assert reports[0]["rows_quarantined"] == 4
    assert _count(settings.database_url, db.raw_encounters) == 996
    quarantine = _frame(settings.database_url, db.raw_quarantine).set_index("source_row")
    assert quarantine.loc[5, "reason"] == "num_lab_procedures: not an integer (forty)"
    assert quarantine.loc[6, "reason"] == "encounter_id: missing identifier"
    assert quarantine.loc[7, "reason"].startswith("time_in_hospital: integer out of range")
    assert quarantine.loc[9, "reason"] == "expected 50 fields, found 53"
    with db.make_engine(settings.database_url).begin() as conn:
        conn.execute(sa.delete(db.raw_batches))
    _load_all(settings)  # a repeated run quarantines nothing twice
    assert _count(settings.database_url, db.raw_quarantine) == 4


def test_a_wrong_header_stops_before_anything_is_written(
    tmp_path, settings_for, store_url, sample_frame
):
    path = synthetic.write_csv(
        sample_frame.rename(columns={"race": "ethnicity"}), tmp_path / "bad" / "diabetic_data.csv"
    )
    settings = settings_for(path, store_url, RAW_BATCH_SIZE=BATCH)
    pipeline.engine(settings)  # the store exists, as after earlier runs
    with pytest.raises(SchemaError, match="missing columns: race; unknown columns: ethnicity"):
        pipeline.plan_raw_load(settings=settings)
    assert _count(settings.database_url, db.raw_encounters) == 0
    assert _count(settings.database_url, db.raw_batches) == 0


def test_duplicated_encounters_in_the_file_are_stored_once(
    tmp_path, settings_for, store_url, sample_frame
):
    frame = pd.concat([sample_frame, sample_frame.iloc[[0, 500]]], ignore_index=True)
    path = synthetic.write_csv(frame, tmp_path / "dup" / "diabetic_data.csv")
    settings = settings_for(path, store_url, RAW_BATCH_SIZE=BATCH)
    reports = _load_all(settings)
    assert sum(r["rows_already_present"] for r in reports) == 2
    assert _count(settings.database_url, db.raw_encounters) == 1_000


def test_concurrent_loads_of_the_same_batch_store_it_once(settings):
    pipeline.engine(settings)  # tables first, as the DAG's plan task does
    errors: list[BaseException] = []

    def load() -> None:
        try:
            pipeline.load_raw_batch(0, settings=settings)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _count(settings.database_url, db.raw_encounters) == BATCH
    assert _count(settings.database_url, db.raw_batches) == 1


def test_cleaning_is_incremental(settings):
    _load_all(settings, limit=2)
    first = pipeline.clean_new_rows(settings=settings)
    assert first["rows_cleaned"] == 2 * BATCH
    before = _frame(settings.database_url, db.clean_encounters).set_index("encounter_id")
    _load_all(settings, limit=3)
    second = pipeline.clean_new_rows(settings=settings)
    assert second["rows_cleaned"] == 3 * BATCH
    assert pipeline.clean_new_rows(settings=settings)["rows_cleaned"] == 0
    after = _frame(settings.database_url, db.clean_encounters).set_index("encounter_id")
    assert len(after) == after.index.nunique() == 5 * BATCH
    # rows cleaned by the first run were not touched by the second
    pd.testing.assert_series_equal(after.loc[before.index, "cleaned_at"], before["cleaned_at"])
    runs = _frame(settings.database_url, db.clean_runs)
    assert runs["rows_cleaned"].sum() == 5 * BATCH


def test_cleaning_looks_for_pending_rows_over_the_whole_raw_table_once_not_per_batch(
    settings,
):
    """Each batch's rows are read by batch (indexed); the search of the whole raw table for
    rows without a clean row, an anti-join as long as the table, runs once a pass, not once
    a batch: that made cleaning grow faster than the data (bench/scale.py)."""
    _load_all(settings)
    engine = pipeline.engine(settings)
    whole_table = []

    def count(_conn, _cursor, statement, *_args) -> None:
        one_batch = re.search(r"batch_id = (%\(|\?)", statement)  # a bound batch id
        if "NOT (EXISTS" in statement and not one_batch:
            whole_table.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        report = pipeline.clean_new_rows(settings=settings)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert report["chunks"] == 7
    assert report["rows_cleaned"] == 1_000
    assert len(whole_table) <= 2, whole_table  # one pass finds the work, one finds none
    assert "ix_diabetes_batch_id" in {
        index["name"]
        for index in sa.inspect(engine).get_indexes("diabetes", schema=db.raw_encounters.schema)
    }


def test_clean_rows_keep_the_raw_rows_split_and_batch(settings):
    _load_all(settings)
    pipeline.clean_new_rows(settings=settings)
    raw = _frame(settings.database_url, db.raw_encounters).set_index("encounter_id")
    clean = _frame(settings.database_url, db.clean_encounters).set_index("encounter_id")
    assert (clean["split"] == raw.loc[clean.index, "split"]).all()
    assert (clean["batch_id"] == raw.loc[clean.index, "batch_id"]).all()
    assert clean["weight"].isna().sum() == (raw["weight"] == "?").sum()  # '?' became missing
    assert clean["diag_1_group"].notna().mean() > 0.95


def _kill_cleaning_at_third_chunk(monkeypatch):
    """The cleaning worker dies at its third chunk; returns the real cleaning function."""
    original = warehouse.clean_with_report
    calls = {"n": 0}

    def fail_on_third_chunk(frame):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed")
        return original(frame)

    monkeypatch.setattr(warehouse, "clean_with_report", fail_on_third_chunk)
    return original


def test_an_interrupted_cleaning_run_resumes_where_it_stopped(settings, monkeypatch):
    _load_all(settings)
    original = _kill_cleaning_at_third_chunk(monkeypatch)
    with pytest.raises(RuntimeError, match="worker killed"):
        warehouse.clean_pending(pipeline.engine(settings))
    assert _count(settings.database_url, db.clean_encounters) == 2 * BATCH
    monkeypatch.setattr(warehouse, "clean_with_report", original)
    report = warehouse.clean_pending(pipeline.engine(settings))
    assert report.rows_cleaned == 1_000 - 2 * BATCH
    clean = _frame(settings.database_url, db.clean_encounters)
    assert len(clean) == clean["encounter_id"].nunique() == 1_000


def test_full_refresh_cleans_everything_again(settings):
    _load_all(settings)
    pipeline.clean_new_rows(settings=settings)
    again = pipeline.clean_new_rows(full_refresh=True, settings=settings)
    assert again["rows_cleaned"] == 1_000
    assert _count(settings.database_url, db.clean_encounters) == 1_000


def test_a_full_refresh_is_seen_whole_or_not_at_all(settings, monkeypatch):
    """Readers (the API's history look-up, a training run) never see a half-rebuilt table."""
    _load_all(settings)
    pipeline.clean_new_rows(settings=settings)
    original = warehouse.clean_with_report
    seen: list[int] = []

    def watched(frame):
        seen.append(_count(settings.database_url, db.clean_encounters))  # another connection
        return original(frame)

    monkeypatch.setattr(warehouse, "clean_with_report", watched)
    again = pipeline.clean_new_rows(full_refresh=True, settings=settings)
    assert again["rows_cleaned"] == 1_000
    assert len(seen) == 7  # one chunk per batch
    assert set(seen) == {1_000}
    assert _count(settings.database_url, db.clean_encounters) == 1_000


def test_a_full_refresh_that_fails_half_way_leaves_the_old_rows(settings, monkeypatch):
    _load_all(settings)
    pipeline.clean_new_rows(settings=settings)
    before = _frame(settings.database_url, db.clean_encounters)
    _kill_cleaning_at_third_chunk(monkeypatch)
    with pytest.raises(RuntimeError, match="worker killed"):
        pipeline.clean_new_rows(full_refresh=True, settings=settings)
    after = _frame(settings.database_url, db.clean_encounters)
    pd.testing.assert_frame_equal(after, before)


def test_rows_cleaned_by_earlier_rules_are_all_cleaned_again(settings):
    """A change of the cleaning rules (their version) rebuilds clean_data by itself, in one
    transaction, so that old and new rules never mix in one table."""
    _load_all(settings, limit=3)
    pipeline.clean_new_rows(settings=settings)
    engine = pipeline.engine(settings)
    with engine.begin() as conn:
        conn.execute(sa.update(db.clean_encounters).values(diag_1="stale"))
        conn.execute(sa.update(db.clean_rules).values(version="0"))
    _load_all(settings)
    report = pipeline.clean_new_rows(settings=settings)
    assert report["rows_cleaned"] == 1_000
    assert report["rebuilt"] == f"cleaning rules changed (version 0 -> {RULES_VERSION})"
    clean = _frame(settings.database_url, db.clean_encounters)
    assert len(clean) == 1_000
    assert "stale" not in set(clean["diag_1"].dropna())
    assert pipeline.clean_new_rows(settings=settings)["rows_cleaned"] == 0


def test_a_clean_table_of_an_older_layout_is_rebuilt_in_the_new_one(settings):
    """Before the hospice fix the derived column was `expired_or_hospice`."""
    _load_all(settings)
    pipeline.clean_new_rows(settings=settings)
    engine = pipeline.engine(settings)
    with engine.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE clean_data.diabetes RENAME COLUMN expired TO expired_or_hospice")
        )
        conn.execute(sa.delete(db.clean_rules))  # built before the rules had a version
    report = pipeline.clean_new_rows(settings=settings)
    assert report["rows_cleaned"] == 1_000
    columns = {c["name"] for c in sa.inspect(engine).get_columns("diabetes", "clean_data")}
    assert "expired" in columns
    assert "expired_or_hospice" not in columns
    assert _count(settings.database_url, db.clean_encounters) == 1_000


def test_summary_counts_rows_per_split_and_batches(settings):
    _load_all(settings, limit=4)
    pipeline.clean_new_rows(settings=settings)
    facts = pipeline.store_summary(settings)
    assert facts["raw_total"] == facts["clean_total"] == 600
    assert facts["batches_loaded"] == [0, 1, 2, 3]
    assert facts["pending_clean"] == 0
    assert sum(facts["raw_rows"].values()) == 600
    assert np.isclose(facts["raw_rows"]["train"] / 600, 0.6, atol=0.1)
    assert "batches loaded: 4" in warehouse.format_summary(facts)


def test_a_bad_value_in_a_plain_file_quarantines_only_its_row(
    tmp_path, settings_for, store_url, sample_frame
):
    frame = sample_frame.copy()
    frame.loc[400, "number_inpatient"] = "many"
    path = synthetic.write_csv(frame, tmp_path / "bad" / "diabetic_data.csv.gz")
    settings = settings_for(path, store_url, RAW_BATCH_SIZE=BATCH)
    reports = _load_all(settings)
    assert [r["rows_quarantined"] for r in reports] == [0, 0, 1, 0, 0, 0, 0]
    assert _count(settings.database_url, db.raw_encounters) == 999


@pytest.mark.postgres
def test_postgres_and_sqlite_store_identical_raw_rows(
    settings_for, sample_csv, sqlite_url, postgres_url
):
    tables = []
    for url in (sqlite_url, postgres_url):
        _load_all(settings_for(sample_csv, url, RAW_BATCH_SIZE=BATCH))
        raw = _frame(url, db.raw_encounters).drop(columns="loaded_at")
        tables.append(raw.sort_values("encounter_id").reset_index(drop=True))
    pd.testing.assert_frame_equal(tables[0], tables[1], check_dtype=False)


@pytest.mark.postgres
def test_postgres_copies_a_new_batch_straight_in_and_stages_one_already_stored(
    settings_for, sample_csv, postgres_url, monkeypatch
):
    staged: list[str] = []
    original = db._stage_and_insert

    def spy(cursor, table, names, payload):
        staged.append(table.name)
        return original(cursor, table, names, payload)

    monkeypatch.setattr(db, "_stage_and_insert", spy)
    settings = settings_for(sample_csv, postgres_url, RAW_BATCH_SIZE=BATCH)
    _load_all(settings, limit=2)
    assert "diabetes" not in staged  # first loads: COPY straight into raw_data.diabetes
    with db.make_engine(postgres_url).begin() as conn:
        conn.execute(sa.delete(db.raw_batches))
    reports = _load_all(settings, limit=2)
    assert staged.count("diabetes") == 2  # the COPY met stored keys: staging + upsert
    assert [r["rows_inserted"] for r in reports] == [0, 0]
    assert _count(postgres_url, db.raw_encounters) == 2 * BATCH
