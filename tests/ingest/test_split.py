"""The train/valid/test split: by patient, stable, close to 60/20/20."""

from __future__ import annotations

import numpy as np
import pandas as pd

from readmission.ingest import SPLIT_FRACTIONS, assign_split


def test_every_encounter_of_a_patient_lands_in_one_split():
    rng = np.random.default_rng(0)
    patients = rng.integers(1, 50_000, size=200_000)
    frame = pd.DataFrame({"patient": patients, "split": assign_split(patients, "salt")})
    assert (frame.groupby("patient")["split"].nunique() == 1).all()


def test_split_is_stable_across_batches_orders_and_calls():
    patients = np.arange(1, 10_001)
    whole = assign_split(patients, "salt")
    shuffled = np.random.default_rng(1).permutation(len(patients))
    in_batches = np.concatenate(
        [assign_split(patients[i : i + 1500], "salt") for i in range(0, len(patients), 1500)]
    )
    assert (whole == in_batches).all()
    assert (whole[shuffled] == assign_split(patients[shuffled], "salt")).all()


def test_split_values_are_pinned_so_a_change_of_algorithm_is_noticed():
    # Changing the hash reshuffles the split of every stored row: it must be deliberate.
    patients = np.array([8222157, 55629189, 86047875, 82442376, 42519267, 82637451])
    assert list(assign_split(patients, "diabetes-130-v1")) == [
        "train",
        "train",
        "test",
        "train",
        "valid",
        "train",
    ]
    counts = pd.Series(assign_split(np.arange(100_000), "diabetes-130-v1")).value_counts()
    assert counts.to_dict() == {"train": 59731, "valid": 20244, "test": 20025}


def test_split_is_close_to_60_20_20():
    patients = np.arange(1, 71_519)  # as many patients as the real file
    shares = pd.Series(assign_split(patients, "salt")).value_counts(normalize=True)
    for split, target in SPLIT_FRACTIONS.items():
        assert abs(shares[split] - target) < 0.01, (split, shares[split])


def test_the_salt_reshuffles_patients():
    patients = np.arange(1, 20_001)
    same = (assign_split(patients, "a") == assign_split(patients, "b")).mean()
    # independent 60/20/20 assignments agree on 0.6^2 + 0.2^2 + 0.2^2 = 44 % of patients
    assert 0.40 < same < 0.48


def test_nearby_patient_numbers_are_not_correlated():
    patients = np.arange(1_000_000, 1_003_000)
    splits = assign_split(patients, "salt")
    runs = (splits[1:] != splits[:-1]).sum()
    # independent draws change split about 1 - 0.44 = 56 % of the time
    assert 0.50 < runs / (len(splits) - 1) < 0.62
