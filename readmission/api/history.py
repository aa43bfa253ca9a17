"""A patient's earlier encounters, looked up in clean_data when a request names the patient.

The model was trained with `features.HISTORY` computed from each patient's earlier
encounters in the data; at prediction time the same figures come from the encounters
of that `patient_nbr` stored in `clean_data` (earlier than the request's `encounter_id`
when it gives one). No patient, no history: the figures count as none.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmission import db, schema
from readmission.features import HISTORY

_COLUMNS = (schema.PATIENT_ID, schema.ENCOUNTER_ID, schema.TARGET, "number_inpatient",
            "number_emergency")  # fmt: skip


def lookup(engine: Engine, records: list[dict]) -> list[dict[str, float]]:
    """The history figures of each record (zeros where the patient is unknown)."""
    empty = dict.fromkeys(HISTORY, 0.0)
    patients = sorted({r[schema.PATIENT_ID] for r in records
                       if r.get(schema.PATIENT_ID) is not None})  # fmt: skip
    if not patients:
        return [dict(empty) for _ in records]
    table = db.clean_encounters
    query = sa.select(*(table.c[c] for c in _COLUMNS)).where(table.c.patient_nbr.in_(patients))
    with engine.connect() as conn:
        earlier = pd.DataFrame(conn.execute(query).all(), columns=list(_COLUMNS))
    by_patient = dict(list(earlier.groupby(schema.PATIENT_ID)))
    figures = []
    for record in records:
        rows = by_patient.get(record.get(schema.PATIENT_ID))
        if rows is None:
            figures.append(dict(empty))
            continue
        if record.get(schema.ENCOUNTER_ID) is not None:
            rows = rows[rows[schema.ENCOUNTER_ID] < record[schema.ENCOUNTER_ID]]
        figures.append({
            "prior_encounters": float(len(rows)),
            "prior_readmitted_lt30": float((rows[schema.TARGET] == "<30").sum()),
            "prior_readmitted_gt30": float((rows[schema.TARGET] == ">30").sum()),
            "prior_inpatient_total": float(rows["number_inpatient"].fillna(0).sum()),
            "prior_emergency_total": float(rows["number_emergency"].fillna(0).sum()),
        })  # fmt: skip
    return figures
