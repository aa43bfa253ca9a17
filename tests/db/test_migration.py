"""A store made by an earlier version gets the columns added since (SQLite and PostgreSQL),
keeping its rows."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from readmission import db


def test_the_prediction_logs_role_column_is_added_to_an_existing_table(store_url):
    engine = db.make_engine(store_url)
    old = sa.MetaData()
    kept = [
        sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
        for c in db.predictions.columns
        if c.name != "role"
    ]
    earlier = sa.Table("predictions", old, *kept, schema=db.SERVING_SCHEMA)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {db.SERVING_SCHEMA}"))
        old.create_all(conn)
        conn.execute(
            earlier.insert(),
            [
                {
                    "predicted_at": pd.Timestamp("2026-11-01T10:00:00Z"),
                    "model_name": "diabetes-readmission",
                    "model_version": "1",
                    "encounter_id": 7,
                    "prediction": "NO",
                    "probability_no": 0.6,
                    "probability_gt30": 0.3,
                    "probability_lt30": 0.1,
                    "inputs": "{}",
                }
            ],
        )
    columns = {c["name"] for c in sa.inspect(engine).get_columns("predictions", db.SERVING_SCHEMA)}
    assert "role" not in columns

    db.create_tables(engine)
    db.create_tables(engine)  # and again: nothing left to add

    columns = {c["name"] for c in sa.inspect(engine).get_columns("predictions", db.SERVING_SCHEMA)}
    assert "role" in columns
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.predictions.c.encounter_id, db.predictions.c.role)).all()
    assert [tuple(r) for r in rows] == [(7, None)]
    engine.dispose()
