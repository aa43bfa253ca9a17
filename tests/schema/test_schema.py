"""The schema is the one place the 50 columns are defined."""

from __future__ import annotations

import pytest

from readmission import schema


def test_schema_has_the_50_uci_columns_in_file_order():
    assert len(schema.COLUMNS) == 50
    assert schema.COLUMN_NAMES[:3] == ("encounter_id", "patient_nbr", "race")
    assert schema.COLUMN_NAMES[-3:] == ("change", "diabetesMed", "readmitted")
    assert len(set(schema.COLUMN_KEYS)) == 50


def test_identifiers_and_target_are_never_features():
    features = {c.key for c in schema.FEATURES}
    assert schema.IDENTIFIERS == ("encounter_id", "patient_nbr")
    assert features.isdisjoint({*schema.IDENTIFIERS, schema.TARGET})
    assert len(features) == 47


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("A1Cresult", "a1cresult"),
        ("diabetesMed", "diabetesmed"),
        ("glyburide-metformin", "glyburide_metformin"),
        ("encounter_id", "encounter_id"),
    ],
)
def test_keys_are_snake_case_of_the_uci_names(name, key):
    assert schema.BY_NAME[name].key == key


def test_aliases_accept_the_original_clients_spellings():
    aliases = schema.key_aliases()
    for spelling in (
        "A1Cresult",
        "a1cresult",
        "diabetesMed",
        "diabetesmed",
        "glyburide-metformin",
        "glyburide_metformin",
    ):
        assert aliases[spelling] in schema.BY_KEY


def test_lab_results_keep_none_as_a_category():
    assert "None" in schema.BY_NAME["max_glu_serum"].categories
    assert "None" in schema.BY_NAME["A1Cresult"].categories


def test_every_medication_has_the_four_dose_levels():
    for drug in schema.MEDICATIONS:
        assert schema.BY_NAME[drug].categories == ("No", "Steady", "Up", "Down")


def test_counts_have_ranges_that_hold_their_typical_value():
    for column in schema.columns_of(schema.Kind.COUNT):
        assert column.minimum is not None
        assert column.maximum is not None
        assert column.minimum <= column.typical <= column.maximum


def test_codes_come_with_their_labels_and_expired_codes_exist():
    dispositions = schema.BY_NAME["discharge_disposition_id"].codes
    assert dispositions[11] == "Expired"
    assert set(dispositions) >= schema.EXPIRED_DISPOSITIONS
    assert all("Expired" in dispositions[code] for code in schema.EXPIRED_DISPOSITIONS)
    assert not {13, 14} & schema.EXPIRED_DISPOSITIONS  # hospice is not death


def test_header_check_names_missing_unknown_and_duplicated_columns():
    header = [n for n in schema.COLUMN_NAMES if n not in ("race", "A1Cresult")]
    header += ["shoe_size", "gender"]
    with pytest.raises(schema.SchemaError) as caught:
        schema.check_header(header)
    message = str(caught.value)
    assert "missing columns: race, A1Cresult" in message
    assert "unknown columns: shoe_size" in message
    assert "duplicated columns: gender" in message


def test_header_check_accepts_the_uci_header_in_any_order():
    schema.check_header(list(reversed(schema.COLUMN_NAMES)))


def test_request_records_are_rows_of_the_file_as_a_client_sends_them():
    from readmission.schema import request_records

    row = {"encounter_id": "12", "time_in_hospital": "3", "weight": "?", "readmitted": "NO"}
    row |= {"num_lab_procedures": "", "race": "Caucasian"}
    (record,) = request_records([row])
    assert record == {
        "encounter_id": 12,
        "time_in_hospital": 3,
        "weight": "?",
        "num_lab_procedures": "",
        "race": "Caucasian",
    }
    assert row["encounter_id"] == "12"  # the rows given are left as they were
