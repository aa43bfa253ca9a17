"""Expectations on the real UCI file (`make test` finds or downloads it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from readmission import dataset, pipeline, schema
from readmission.settings import DIABETES_CSV_SHA256, Settings
from tests.support.tools import require_real_csv

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def csv() -> Path:
    return require_real_csv()


@pytest.fixture(scope="module")
def frame(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, keep_default_na=False, na_values=["?"], low_memory=False)


def test_file_is_the_verified_uci_original(csv):
    assert dataset.sha256_of(csv) == DIABETES_CSV_SHA256


def test_shape_columns_and_identifiers(frame):
    assert frame.shape == (101_766, 50)
    assert tuple(frame.columns) == schema.COLUMN_NAMES
    assert frame["encounter_id"].is_unique
    assert frame["patient_nbr"].nunique() == 71_518


def test_target_counts_match_the_data_readme(frame):
    assert frame["readmitted"].value_counts().to_dict() == {
        "NO": 54_864,
        ">30": 35_545,
        "<30": 11_357,
    }


def test_none_is_a_category_of_the_lab_results_not_a_missing_value(frame):
    assert (frame["max_glu_serum"] == "None").sum() == 96_420
    assert (frame["A1Cresult"] == "None").sum() == 84_748


def test_only_the_expired_dispositions_are_never_readmitted(frame):
    """The premise of the estimator's rule: death rules out a readmission, hospice does not."""
    outcome = (
        frame.groupby("discharge_disposition_id")["readmitted"].value_counts().unstack(fill_value=0)
    )
    expired = outcome.reindex(sorted(schema.EXPIRED_DISPOSITIONS), fill_value=0)  # 21: absent
    assert expired[["<30", ">30"]].to_numpy().sum() == 0
    assert expired.to_numpy().sum() == 1_652
    hospice = outcome.loc[[13, 14]]
    assert hospice.to_numpy().sum() == 771
    assert hospice[["<30", ">30"]].to_numpy().sum() == 86
    assert hospice["<30"].sum() == 43


def test_a_request_requires_exactly_what_the_file_never_lacks_without_a_default(frame):
    """A field is required when every real encounter records it and its absence has no
    documented meaning (absent lab results: not taken; absent drugs: not prescribed)."""
    with_default = {"max_glu_serum", "a1cresult", *(schema.to_key(d) for d in schema.MEDICATIONS)}
    complete = [name for name in frame.columns if frame[name].notna().all()]
    never_missing = {schema.BY_NAME[name].key for name in complete}
    features = {c.key for c in schema.FEATURES}
    assert (never_missing & features) - with_default == schema.REQUIRED_IN_REQUEST


def test_every_category_in_the_file_is_in_the_schema(frame):
    for column in schema.COLUMNS:
        if column.kind in (schema.Kind.CATEGORY, schema.Kind.TARGET):
            seen = set(frame[column.name].dropna().unique())
            assert seen <= set(column.categories), (column.name, seen - set(column.categories))
        elif column.kind is schema.Kind.CODE:
            assert set(frame[column.name].unique()) <= set(column.codes), column.name
        elif column.kind is schema.Kind.COUNT:
            assert frame[column.name].between(column.minimum, column.maximum).all(), column.name


@pytest.mark.postgres
def test_the_whole_file_loads_into_postgres_split_by_patient(csv, postgres_url):
    settings = Settings(DIABETES_CSV=csv, DATA_DATABASE_URL=postgres_url)
    batches = pipeline.plan_raw_load(settings=settings)
    assert batches == list(range(7))  # 101,766 rows in 15,000-row batches
    reports = [pipeline.load_raw_batch(b, settings=settings) for b in batches]
    assert sum(r["rows_inserted"] for r in reports) == 101_766
    assert sum(r["rows_quarantined"] for r in reports) == 0
    cleaned = pipeline.clean_new_rows(settings=settings)
    assert cleaned["rows_cleaned"] == 101_766
    assert cleaned["invalid_values"] == {}
    facts = pipeline.store_summary(settings)
    assert facts["patients"] == 71_518
    for split, share in {"train": 0.6, "valid": 0.2, "test": 0.2}.items():
        assert abs(facts["raw_rows"][split] / 101_766 - share) < 0.01, facts["raw_rows"]
