"""An assessment as training makes one (`readmission.assessment.assess`), of synthetic risks:
for tests of what shows it (the model card, the Streamlit pages) without training a model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from readmission import assessment


def synthetic_assessment(n: int, rows_per_patient: int, resamples: int) -> dict[str, Any]:
    """`n` valid and `n` test rows with calibrated risks (base rate ~11 %), two races,
    genders and age bands, `rows_per_patient` encounters a patient, seeded."""
    rng = np.random.default_rng(0)
    risk = {s: 1 / (1 + np.exp(-rng.normal(-2.2, 0.8, n))) for s in ("valid", "test")}
    y = {s: rng.random(n) < risk[s] for s in risk}
    frame = pd.DataFrame(
        {
            "race": rng.choice(["Caucasian", "AfricanAmerican"], n),
            "gender": rng.choice(["Female", "Male"], n),
            "age": rng.choice(["[60-70)", "[70-80)"], n),
        }
    )
    patients = np.arange(n) // rows_per_patient
    return assessment.assess(risk, y, frame, patients, resamples=resamples)
