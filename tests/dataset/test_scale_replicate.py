"""bench/scale.py's larger data sets: the file k times over, every copy new encounters of
new patients, read by the platform as it reads the original."""

from __future__ import annotations

import pandas as pd

from bench.scale import ID_OFFSET, replicate
from readmission import dataset, synthetic


def test_each_copy_is_new_encounters_of_new_patients_with_the_same_values(tmp_path):
    original = synthetic.write_csv(synthetic.encounters(200, seed=5), tmp_path / "one.csv")
    source = original.read_bytes()
    bigger = tmp_path / "three.csv"
    bigger.write_bytes(replicate(source, 3))
    one, three = pd.read_csv(original, dtype=str), pd.read_csv(bigger, dtype=str)
    assert list(three.columns) == list(one.columns)
    assert len(three) == 3 * len(one)
    assert three["encounter_id"].is_unique
    for k in range(3):
        copy = three.iloc[k * len(one) : (k + 1) * len(one)].reset_index(drop=True)
        for key in ("encounter_id", "patient_nbr"):
            shifted = one[key].astype("int64") + k * ID_OFFSET
            assert (copy[key].astype("int64") == shifted).all()
        rest = [c for c in one.columns if c not in ("encounter_id", "patient_nbr")]
        pd.testing.assert_frame_equal(copy[rest], one[rest])
    patients = three["patient_nbr"].astype("int64") // ID_OFFSET
    assert set(patients) == {0, 1, 2}  # no patient shared between copies
    # one record per line still: the fast path of the raw load reads it
    assert dataset.verify(bigger, dataset.sha256_of(bigger)).plain


def test_the_file_keeps_its_own_line_ends():
    crlf = b"encounter_id,patient_nbr,race\r\n1,2,A\r\n3,4,B\r\n"
    assert replicate(crlf, 2) == crlf + b"1000000001,1000000002,A\r\n1000000003,1000000004,B\r\n"
