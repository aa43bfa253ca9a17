"""A patient's earlier encounters, looked up in clean_data when a request names the patient.

The model was trained with `features.HISTORY` computed from each patient's earlier
encounters in the data; at prediction time the same figures come from the encounters
of that `patient_nbr` stored in `clean_data` (earlier than the request's `encounter_id`
when it gives one). No patient, no history: the figures count as none.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmission import db, schema
from readmission.features import HISTORY

_COLUMNS = (schema.PATIENT_ID, schema.ENCOUNTER_ID, schema.TARGET, "number_inpatient",
            "number_emergency")  # fmt: skip


def lookup(engine: Engine, records: list[dict]) -> list[dict[str, float]]:
    """The history figures of each record (zeros where the patient is unknown).

    Plain rows and dicts, no data frame: a request holds a few encounters, and this runs
    on the request path."""
    patients = sorted({r[schema.PATIENT_ID] for r in records
                       if r.get(schema.PATIENT_ID) is not None})  # fmt: skip
    if not patients:
        return [dict.fromkeys(HISTORY, 0.0) for _ in records]
    table = db.clean_encounters
    query = sa.select(*(table.c[c] for c in _COLUMNS)).where(table.c.patient_nbr.in_(patients))
    earlier: dict[int, list] = {}
    with engine.connect() as conn:
        for row in conn.execute(query):
            earlier.setdefault(row[0], []).append(row)
    figures = []
    for record in records:
        before = record.get(schema.ENCOUNTER_ID)
        rows = [row for row in earlier.get(record.get(schema.PATIENT_ID), ())
                if before is None or row[1] < before]  # fmt: skip
        figures.append({
            "prior_encounters": float(len(rows)),
            "prior_readmitted_lt30": float(sum(row[2] == "<30" for row in rows)),
            "prior_readmitted_gt30": float(sum(row[2] == ">30" for row in rows)),
            "prior_inpatient_total": float(sum(row[3] or 0 for row in rows)),
            "prior_emergency_total": float(sum(row[4] or 0 for row in rows)),
        })  # fmt: skip
    return figures
