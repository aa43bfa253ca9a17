"""The data store: engines, table definitions, fast idempotent inserts, and the lock that
serializes promotions.

Two back ends run the same code. PostgreSQL (Docker Compose, Kubernetes) holds the
schemas `raw_data` and `clean_data`; the embedded mode uses SQLite files, one per schema,
ATTACHed under the schema's name so every query is written once. Inserts never
duplicate a row: they skip primary keys already stored (COPY into a staging table then
`INSERT ... ON CONFLICT DO NOTHING` on PostgreSQL, `executemany` on SQLite).
"""

from __future__ import annotations

import contextlib
import csv
import io
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from readmission import schema
from readmission.cleaning import CLEAN_COLUMNS
from readmission.names import PERFORMANCE_FIGURES

RAW_SCHEMA = "raw_data"
CLEAN_SCHEMA = "clean_data"
SERVING_SCHEMA = "serving"
SCHEMAS = (RAW_SCHEMA, CLEAN_SCHEMA, SERVING_SCHEMA)

metadata = sa.MetaData()

_SQL_TYPES: dict[str, type[sa.types.TypeEngine]] = {
    "bigint": sa.BigInteger,
    "integer": sa.Integer,
    "double": sa.Float,
    "text": sa.Text,
    "boolean": sa.Boolean,
}


def _raw_type(column: schema.Column) -> sa.types.TypeEngine:
    if column.kind is schema.Kind.IDENTIFIER:
        return sa.BigInteger()
    return sa.Integer() if column.is_integer else sa.Text()


def _lineage() -> list[sa.Column]:
    """Where a row came from: its split, batch and position in the source file."""
    return [
        sa.Column("split", sa.Text, nullable=False),
        sa.Column("batch_id", sa.Integer, nullable=False),
        sa.Column("source_row", sa.Integer, nullable=False),
    ]


raw_encounters = sa.Table(
    "diabetes",
    metadata,
    *(
        sa.Column(
            c.key,
            _raw_type(c),
            primary_key=c.key == schema.ENCOUNTER_ID,
            nullable=c.key != schema.PATIENT_ID,
        )
        for c in schema.COLUMNS
    ),
    *_lineage(),
    sa.Column(
        "loaded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    ),
    # cleaning reads a batch at a time; rows arrive batch by batch, so PostgreSQL's BRIN
    # index (a summary per block range) finds a batch at almost no cost to the load
    sa.Index("ix_diabetes_batch_id", "batch_id", postgresql_using="brin"),
    schema=RAW_SCHEMA,
    comment="The UCI file as loaded: text values verbatim ('?' kept), one row per encounter.",
)

raw_batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("first_row", sa.Integer, nullable=False),
    sa.Column("rows_read", sa.Integer, nullable=False),
    sa.Column("rows_inserted", sa.Integer, nullable=False),
    sa.Column("rows_already_present", sa.Integer, nullable=False),
    sa.Column("rows_quarantined", sa.Integer, nullable=False),
    sa.Column("source_sha256", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    schema=RAW_SCHEMA,
    comment="One row per loaded batch; written in the same transaction as the batch's rows.",
)

raw_quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source_row", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("encounter_id", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column(
        "quarantined_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    ),
    schema=RAW_SCHEMA,
    comment="Rows of the source file that could not be loaded, with the reason.",
)

clean_encounters = sa.Table(
    "diabetes",
    metadata,
    *(
        sa.Column(
            c.key,
            _SQL_TYPES[c.sql_type](),
            primary_key=c.key == schema.ENCOUNTER_ID,
            comment=c.description,
        )
        for c in CLEAN_COLUMNS
    ),
    *_lineage(),
    sa.Column(
        "chunk_id",
        sa.Integer,
        nullable=False,
        comment="The clean_data.runs row of the transaction that cleaned this row",
    ),
    sa.Column(
        "cleaned_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    ),
    sa.Index("ix_clean_diabetes_split", "split"),
    sa.Index("ix_clean_diabetes_patient", "patient_nbr"),  # the API's history look-up
    schema=CLEAN_SCHEMA,
    comment="Encounters after readmission.cleaning.clean, ready for training.",
)

clean_runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Text),
    sa.Column("rows_cleaned", sa.Integer, nullable=False),
    sa.Column("invalid_values", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    schema=CLEAN_SCHEMA,
    comment="One row per cleaning chunk committed.",
)

clean_rules = sa.Table(
    "rules",
    metadata,
    sa.Column("version", sa.Text, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    schema=CLEAN_SCHEMA,
    comment="The version of readmission.cleaning's rules that made every clean row (one row).",
)


predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("encounter_id", sa.BigInteger),
    sa.Column("patient_nbr", sa.BigInteger),
    sa.Column("prediction", sa.Text, nullable=False),
    sa.Column("probability_no", sa.Float, nullable=False),
    sa.Column("probability_gt30", sa.Float, nullable=False),
    sa.Column("probability_lt30", sa.Float, nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column(
        "role",
        sa.Text,
        comment="served: the answer sent; shadow: the challenger's, scored after it (NULL: "
        "served, logged before roles)",
    ),
    sa.Index("ix_predictions_predicted_at", "predicted_at"),
    schema=SERVING_SCHEMA,
    comment="Every prediction the API served: inputs, output, model version, time.",
)


def _figures(source: str) -> list[sa.Column]:
    return [sa.Column(f"{source}_{name}", sa.Float) for name in PERFORMANCE_FIGURES]


model_performance = sa.Table(
    "model_performance",
    metadata,
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("model_version", sa.Text, primary_key=True),
    sa.Column("window_kind", sa.Text, primary_key=True, comment="day, or recent (last days)"),
    sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("predictions", sa.Integer, nullable=False, comment="Encounters served, once each"),
    sa.Column("outcomes", sa.Integer, nullable=False, comment="Of those, with a known outcome"),
    *_figures("realized"),
    *_figures("estimated"),
    sa.Column("high_threshold", sa.Float, comment="The version's high-tier <30 risk threshold"),
    sa.Column("test_macro_f1", sa.Float),
    sa.Column("test_roc_auc_lt30", sa.Float),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    schema=SERVING_SCHEMA,
    comment="Realized (outcomes joined) and estimated (from the probabilities) performance of "
    "the served predictions, per model version and window (readmission/performance.py).",
)


batch_scores = sa.Table(
    "batch_scores",
    metadata,
    sa.Column("encounter_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("model_name", sa.Text, primary_key=True),
    sa.Column("model_version", sa.Text, primary_key=True),
    sa.Column("patient_nbr", sa.BigInteger),
    sa.Column("prediction", sa.Text, nullable=False),
    sa.Column("probability_no", sa.Float, nullable=False),
    sa.Column("probability_gt30", sa.Float, nullable=False),
    sa.Column("probability_lt30", sa.Float, nullable=False, comment="The <30 risk"),
    sa.Column("risk_tier", sa.Text, comment="high, medium or low (None: no operating points)"),
    sa.Column("top_factors", sa.Text, comment="JSON: the features raising the risk most"),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_batch_scores_version_risk", "model_version", "probability_lt30"),
    schema=SERVING_SCHEMA,
    comment="Clean encounters scored by batch_scoring_pipeline, once per model version.",
)


retraining_checks = sa.Table(
    "retraining_checks",
    metadata,
    sa.Column("checked_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("condition", sa.Text, primary_key=True, comment="drift or performance"),
    sa.Column("model_version", sa.Text, nullable=False, comment="The Production version"),
    sa.Column("past", sa.Boolean, nullable=False, comment="Past its threshold"),
    sa.Column("value", sa.Float, comment="Largest PSI, or realized <30 ROC-AUC"),
    sa.Column("threshold", sa.Float),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column(
        "evidence_at",
        sa.DateTime(timezone=True),
        comment="The newest prediction of the drift window, or the realized window's end",
    ),
    schema=SERVING_SCHEMA,
    comment="Each check of retraining_trigger_pipeline, per condition (readmission/retraining.py).",
)


retraining_requests = sa.Table(
    "retraining_requests",
    metadata,
    sa.Column("orchestrator_run_id", sa.Text, primary_key=True),
    sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    schema=SERVING_SCHEMA,
    comment="Training runs retraining_trigger_pipeline requested, and why.",
)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets one file per schema, attached under its name."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # a server that does not answer fails a connection in seconds, not minutes
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    if not parsed.database or parsed.database == ":memory:":
        raise ValueError("the embedded store needs a SQLite file, not an in-memory database")
    main = Path(parsed.database)
    main.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _attach(dbapi_connection, _record) -> None:
        for name in SCHEMAS:
            dbapi_connection.execute(
                f"ATTACH DATABASE ? AS {name}", (str(main.with_name(f"{name}.db")),)
            )
        for name in ("main", *SCHEMAS):
            # WAL lets the API read while a DAG writes; NORMAL sync is safe with WAL.
            dbapi_connection.execute(f"PRAGMA {name}.journal_mode=WAL")
            dbapi_connection.execute(f"PRAGMA {name}.synchronous=NORMAL")

    return engine


def create_tables(engine: Engine) -> None:
    """Create the schemas (PostgreSQL) and every table that does not exist yet."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for name in SCHEMAS:
                conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {name}"))
        metadata.create_all(conn)
        _add_missing_columns(conn)
        for table in metadata.tables.values():  # indexes added to tables that already exist
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def _add_missing_columns(conn: Connection) -> None:
    """Nullable columns added to tables that already exist (a store made by an earlier
    version): `ALTER TABLE ... ADD COLUMN`, the one change of a table this code makes."""
    inspector = sa.inspect(conn)
    for table in metadata.tables.values():
        present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise RuntimeError(
                    f"{_qualified(table)} lacks the column {column.name}, which cannot be added "
                    "to existing rows: migrate the table by hand"
                )
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(
                sa.text(f"ALTER TABLE {_qualified(table)} ADD COLUMN {column.name} {kind}")
            )


def _qualified(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def _prepare(table: sa.Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Cast each column to what its SQL type expects (floats holding integers -> Int64)."""
    out = {}
    for name in frame.columns:
        values = frame[name]
        sql_type = table.c[name].type
        if isinstance(sql_type, sa.Integer) and values.dtype.kind == "f":
            values = values.round().astype("Int64")
        out[name] = values
    return pd.DataFrame(out, index=frame.index)


def insert_new(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert the rows of `frame` whose primary key is not stored yet; return how many.

    Re-running with the same rows inserts nothing, which makes every load idempotent.
    """
    if frame.empty:
        return 0
    frame = _prepare(table, frame)
    if conn.dialect.name == "postgresql":
        return _copy_insert(conn, table, frame)
    return _executemany_insert(conn, table, frame)


def append_rows(
    conn: Connection, table: sa.Table, columns: tuple[str, ...], rows: list[tuple]
) -> None:
    """Append rows (tuples in `columns` order) with the driver directly: COPY on PostgreSQL,
    executemany on SQLite. For logs written off the request path, where SQLAlchemy's
    per-row processing would hold the GIL long enough to delay requests."""
    if not rows:
        return
    names = _column_list(columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(f"COPY {_qualified(table)} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            cursor.executemany(
                f"INSERT INTO {_qualified(table)} ({names}) VALUES ({marks})",
                [_sqlite_row(row) for row in rows],
            )
    finally:
        cursor.close()


def _sqlite_row(row: tuple) -> tuple:
    """Datetimes in the layout SQLAlchemy's SQLite DateTime reads back (naive UTC)."""
    return tuple(
        value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        if isinstance(value, datetime)
        else value
        for value in row
    )


def _column_list(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _copy_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(_records(frame, utc_offsets=True))
    return copy_insert_csv(conn, table, list(frame.columns), buffer.getvalue())


def copy_insert_csv(
    conn: Connection,
    table: sa.Table,
    columns: list[str],
    payload: str | bytes,
    *,
    direct_first: bool = False,
) -> int:
    """COPY CSV rows into a temporary staging table, then insert the new ones in one statement
    (`INSERT ... SELECT ... ON CONFLICT DO NOTHING`). PostgreSQL only.

    Returns how many rows were inserted; rows whose primary key is already stored are
    skipped. With `direct_first`, the rows are first copied straight into the table inside a
    savepoint, which halves the work when none is stored yet (a batch's first load); if
    any key is already there, PostgreSQL refuses the COPY, the savepoint is rolled back and
    the staging path runs. A value that does not fit its type fails the caller's
    transaction either way, never half a batch.
    """
    names = _column_list(columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        if direct_first:
            cursor.execute("SAVEPOINT copy_direct")
            try:
                with cursor.copy(
                    f"COPY {_qualified(table)} ({names}) FROM STDIN (FORMAT csv)"
                ) as copy:
                    copy.write(payload)
            except psycopg.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT copy_direct")
            else:
                inserted = cursor.rowcount
                cursor.execute("RELEASE SAVEPOINT copy_direct")
                return inserted
        return _stage_and_insert(cursor, table, names, payload)
    finally:
        cursor.close()


def _stage_and_insert(cursor, table: sa.Table, names: str, payload: str | bytes) -> int:
    keys = _column_list(c.name for c in table.primary_key.columns)
    stage = f"stage_{table.schema}_{table.name}"
    cursor.execute(f"DROP TABLE IF EXISTS {stage}")
    cursor.execute(
        f"CREATE TEMP TABLE {stage} AS SELECT {names} FROM {_qualified(table)} WITH NO DATA"
    )
    with cursor.copy(f"COPY {stage} ({names}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(payload)
    cursor.execute(
        f"INSERT INTO {_qualified(table)} ({names}) SELECT {names} FROM {stage} "
        f"ON CONFLICT ({keys}) DO NOTHING"
    )
    inserted = cursor.rowcount
    cursor.execute(f"DROP TABLE {stage}")
    return inserted


def _executemany_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    columns = _column_list(frame.columns)
    marks = ", ".join("?" for _ in frame.columns)
    sql = f"INSERT INTO {_qualified(table)} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(sql, _records(frame))
        return cursor.rowcount
    finally:
        cursor.close()


def _records(frame: pd.DataFrame, utc_offsets: bool = False) -> Iterable[tuple]:
    """Rows as tuples of plain Python values (object arrays hold Python scalars), NaN as None.

    Timestamps become text: with their UTC offset for PostgreSQL's COPY, naive UTC in the
    layout SQLAlchemy's SQLite DateTime reads back otherwise.
    """
    columns = []
    for name in frame.columns:
        series = frame[name]
        if series.dtype.kind == "M":
            series = series.dt.tz_convert("UTC") if series.dt.tz else series.dt.tz_localize("UTC")
            if not utc_offsets:
                series = series.dt.tz_localize(None)
            series = series.dt.strftime("%Y-%m-%d %H:%M:%S.%f" + ("%z" if utc_offsets else ""))
        values = series.astype(object).to_numpy(copy=True)
        values[pd.isna(values)] = None
        columns.append(values)
    return zip(*columns, strict=True)


# --- locks ---------------------------------------------------------------------------------

#: Advisory-lock key of promotions on PostgreSQL (any constant shared by every trainer).
PROMOTION_LOCK_KEY = 0x5EAD_0001
PROMOTION_LOCK_TIMEOUT_SECONDS = 900.0


@contextlib.contextmanager
def promotion_lock(
    engine: Engine, timeout: float = PROMOTION_LOCK_TIMEOUT_SECONDS
) -> Iterator[None]:
    """Hold the platform-wide promotion lock: one trainer at a time reads the champion,
    compares and moves the alias.

    Why a lock in the data store and not in MLflow: the registry's API has no conditional
    update (an alias is set unconditionally, last writer wins), so two trainers that both
    read champion v1 would both promote, and the slower, possibly worse one would stay in
    Production. A lock record kept in the registry (say a registered model used as a
    mutex) would stay held forever by a trainer killed while holding it. Every trainer
    already shares the data store (it reads its training data there), and its locks die
    with their holder: on PostgreSQL a session advisory lock (released when the connection
    closes), on the embedded SQLite store an `flock` on a file beside the database (released
    when the process exits). Trainers with separate data stores are not serialized.
    """
    deadline = time.monotonic() + timeout
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            while not conn.scalar(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": PROMOTION_LOCK_KEY}
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"promotion lock still held after {timeout:.0f} s")
                time.sleep(0.2)
            try:
                yield
            finally:
                conn.scalar(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": PROMOTION_LOCK_KEY})
                conn.commit()
        return
    import fcntl

    path = Path(engine.url.database).with_name("promotion.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    message = f"promotion lock {path} still held after {timeout:.0f} s"
                    raise TimeoutError(message) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
