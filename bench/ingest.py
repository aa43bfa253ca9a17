"""Raw load speed: our path against what the original project did and against the floor.

Loads the full UCI file (101,766 rows) into `raw_data.diabetes` of a fresh database on a
throwaway PostgreSQL server (default durability: fsync on), in the same run, by:

  to_sql        pandas read_csv + to_sql(chunksize=15000): the original project's way
  copy_rows     pandas read_csv + one psycopg COPY of the same rows: the floor
  ours          readmission's path: verify the file (sha256), plan batches, per batch
                validate + split + COPY (straight in, or into staging + INSERT ..
                ON CONFLICT DO NOTHING when a key is already stored) + quarantine +
                control row, one transaction per batch, two batches at once
                (RAW_LOAD_WORKERS=2, as Airflow's mapped tasks run)
  ours_1_conn   the same, one batch at a time
  copy_bytes    reference only: COPY of the file's bytes into 50 text columns (no parse,
                no types, no split); how fast PostgreSQL itself takes the data

Every method loads the same 50 columns plus split, batch_id and source_row into the same
table definition. Prints the median of --repeat runs and the ratios the issue targets:
ours >= 10x faster than to_sql, and ours >= 0.5x the speed of copy_rows.

    python bench/ingest.py [--repeat 5] [--csv PATH]
"""

from __future__ import annotations

import argparse
import gzip
import io
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from readmission import dataset, db, ingest, pipeline, schema
from readmission.settings import Settings
from tests.support.pgserver import running_server
from tests.support.tools import real_csv

SALT = "diabetes-130-v1"
TYPES = {c.name: ("int64" if c.is_integer else str) for c in schema.COLUMNS}


def _frame_with_lineage(path: Path) -> pd.DataFrame:
    """The file as the baselines load it: typed, renamed to keys, split marked."""
    frame = pd.read_csv(path, dtype=TYPES, keep_default_na=False, low_memory=False)
    frame.columns = [schema.BY_NAME[name].key for name in frame.columns]
    return frame.assign(
        split=ingest.assign_split(frame["patient_nbr"].to_numpy(), SALT),
        batch_id=np.arange(len(frame)) // 15_000,
        source_row=np.arange(len(frame)),
    )


def load_to_sql(url: str, path: Path) -> None:
    engine = sa.create_engine(url)
    frame = _frame_with_lineage(path)
    frame.to_sql(
        "diabetes", engine, schema="raw_data", if_exists="append", index=False, chunksize=15_000
    )
    engine.dispose()


def load_copy_rows(url: str, path: Path) -> None:
    engine = sa.create_engine(url)
    frame = _frame_with_lineage(path)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY raw_data.diabetes ({columns}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(buffer.getvalue())
    engine.dispose()


def load_ours(url: str, path: Path, workers: int = 2) -> None:
    dataset.clear_cache()  # every run reads and verifies the file from disk
    settings = Settings(DIABETES_CSV=path, DATA_DATABASE_URL=url, RAW_LOAD_WORKERS=workers)
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.engine(settings).dispose()


def load_ours_serial(url: str, path: Path) -> None:
    load_ours(url, path, workers=1)


def load_copy_bytes(url: str, path: Path) -> None:
    engine = sa.create_engine(url)
    columns = ", ".join(f'"{c.key}" text' for c in schema.COLUMNS)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE raw_data.file_bytes ({columns})"))
        cursor = conn.connection.driver_connection.cursor()
        opener = gzip.open if path.suffix == ".gz" else open
        statement = "COPY raw_data.file_bytes FROM STDIN (FORMAT csv, HEADER)"
        with cursor.copy(statement) as copy, opener(path, "rb") as stream:
            while block := stream.read(1 << 20):
                copy.write(block)
    engine.dispose()


METHODS = {
    "to_sql": (load_to_sql, "raw_data.diabetes"),
    "copy_rows": (load_copy_rows, "raw_data.diabetes"),
    "ours": (load_ours, "raw_data.diabetes"),
    "ours_1_conn": (load_ours_serial, "raw_data.diabetes"),
    "copy_bytes": (load_copy_bytes, "raw_data.file_bytes"),
}


def run_once(server, method: str, path: Path) -> float:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = server.url(name)
    try:
        setup = db.make_engine(url)
        db.create_tables(setup)  # every method starts from the same empty tables
        setup.dispose()
        load, table = METHODS[method]
        started = time.perf_counter()
        load(url, path)
        elapsed = time.perf_counter() - started
        check = sa.create_engine(url)
        with check.connect() as conn:
            rows = conn.scalar(sa.text(f"SELECT count(*) FROM {table}"))
        check.dispose()
        if rows != 101_766:
            raise SystemExit(f"{method} loaded {rows} rows, expected 101,766")
        return elapsed
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    path = args.csv or real_csv()
    if path is None:
        print("the real UCI file is needed: set DIABETES_CSV or pass --csv", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    with running_server(durable=True) as server:
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits all
            for method in METHODS:
                times[method].append(run_once(server, method, path))
    median = {m: statistics.median(t) for m, t in times.items()}
    print(
        f"raw load of {path.name}: 101,766 rows, median of {args.repeat} runs, PostgreSQL "
        f"{server.bin_dir.parent.name} (fsync on)\n"
    )
    print(f"{'method':<13}{'seconds':>9}{'rows/s':>11}{'vs to_sql':>11}{'vs copy_rows':>14}")
    for method, seconds in median.items():
        versus_to_sql, versus_floor = median["to_sql"] / seconds, median["copy_rows"] / seconds
        print(
            f"{method:<13}{seconds:>9.2f}{101_766 / seconds:>11,.0f}"
            f"{versus_to_sql:>10.1f}x{versus_floor:>13.2f}x"
        )
    speedup = median["to_sql"] / median["ours"]
    floor = median["copy_rows"] / median["ours"]
    print(
        f"\nours vs to_sql:    {speedup:5.1f}x faster   (target >= 10x)   "
        f"{'met' if speedup >= 10 else 'MISSED'}"
    )
    print(
        f"ours vs copy_rows: {floor:5.2f}x the speed (target >= 0.5x)  "
        f"{'met' if floor >= 0.5 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
