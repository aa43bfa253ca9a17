"""A patient's earlier encounters: the history figures a request is scored with.

History is defined once, as training defines it (`features.add_history`): the patient's
encounters that came before this one, by `encounter_id`, outcomes included. At prediction
time they are the patient's encounters stored in `clean_data`, plus those sent in the same
request, each counted once:

- with an `encounter_id`, the encounters with a lower id (never the encounter itself, nor
  a later one: re-scoring a stored encounter does not see its own outcome);
- without one, the request is a new encounter, after every stored or identified one;
- without a `patient_nbr`, there is no history (the figures count as none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmission import db, schema
from readmission.features import HISTORY

#: looked_up: the patient's stored encounters were read; no_patient: the request names no
#: patient; unavailable: the store could not be read, the figures count as none; disabled:
#: API_PATIENT_HISTORY is off.
HistoryStatus = Literal["looked_up", "no_patient", "unavailable", "disabled"]
_COLUMNS = (schema.ENCOUNTER_ID, schema.TARGET, "number_inpatient", "number_emergency")


@dataclass(frozen=True)
class History:
    """The history figures of one encounter, how many earlier encounters they count, and
    whether they could be looked up."""

    figures: dict[str, float]
    earlier_encounters: int
    status: HistoryStatus

    @classmethod
    def none(cls, status: HistoryStatus) -> History:
        return cls(dict.fromkeys(HISTORY, 0.0), 0, status)


def lookup(engine: Engine, records: list[dict]) -> list[History]:
    """The history of each record (dicts keyed by column key, as the API validated them).

    Plain rows and dicts, no data frame: a request holds a few encounters, and this runs
    on the request path."""
    patients = sorted(
        {r[schema.PATIENT_ID] for r in records if r.get(schema.PATIENT_ID) is not None}
    )
    if not patients:
        return [History.none("no_patient") for _ in records]
    table = db.clean_encounters
    query = sa.select(table.c.patient_nbr, *(table.c[c] for c in _COLUMNS)).where(
        table.c.patient_nbr.in_(patients)
    )
    known: dict[int, dict[int, tuple]] = {}  # patient -> encounter id -> row
    with engine.connect() as conn:
        for patient, *row in conn.execute(query):
            known.setdefault(patient, {})[row[0]] = tuple(row)
    for record in records:  # encounters sent together are known too, once each
        patient, encounter = record.get(schema.PATIENT_ID), record.get(schema.ENCOUNTER_ID)
        if patient is not None and encounter is not None:
            known.setdefault(patient, {}).setdefault(
                encounter, tuple(record.get(c) for c in _COLUMNS)
            )
    return [_history(record, known) for record in records]


def _history(record: dict, known: dict[int, dict[int, tuple]]) -> History:
    patient = record.get(schema.PATIENT_ID)
    if patient is None:
        return History.none("no_patient")
    before = record.get(schema.ENCOUNTER_ID)
    rows = [
        row
        for encounter, row in known.get(patient, {}).items()
        if before is None or encounter < before
    ]
    figures = {
        "prior_encounters": float(len(rows)),
        "prior_readmitted_lt30": float(sum(row[1] == "<30" for row in rows)),
        "prior_readmitted_gt30": float(sum(row[1] == ">30" for row in rows)),
        "prior_inpatient_total": float(sum(row[2] or 0 for row in rows)),
        "prior_emergency_total": float(sum(row[3] or 0 for row in rows)),
    }
    return History(figures, len(rows), "looked_up")
