"""Behaviour of `readmission.cleaning`: one test (or parametrized test) per rule, then the
frame contract (columns, dtypes, aliases, pass-through, index, input untouched)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmission import cleaning, schema
from readmission.cleaning import (
    CLEAN_COLUMNS,
    CLEAN_KEYS,
    ICD9_CHAPTERS,
    ICD9_GROUPS,
    clean,
    clean_records,
    clean_with_report,
    icd9_chapter,
    map_icd9_chapters,
)
from tests.support.tools import require_real_csv

TEXT_KEYS = [
    c.key
    for c in schema.COLUMNS
    if c.kind in (schema.Kind.CATEGORY, schema.Kind.DIAGNOSIS, schema.Kind.TARGET)
] + list(cleaning.DIAGNOSIS_GROUPS.values())
NUMBER_KEYS = [c.key for c in schema.COLUMNS if c.kind in (schema.Kind.COUNT, schema.Kind.CODE)]
MEDICATION_NAMES = list(schema.MEDICATIONS)


def raw_row(**values: object) -> dict[str, object]:
    """A valid encounter as the raw file spells it (UCI names, text values), overridden."""
    row: dict[str, object] = {
        c.name: "" if c.typical is None else str(c.typical) for c in schema.COLUMNS
    }
    row.update(encounter_id="2278392", patient_nbr="8222157", readmitted="NO")
    row.update(values)
    return row


def clean_one(**values: object) -> tuple[pd.Series, cleaning.CleaningReport]:
    """Clean one raw row, overridden by `values`; the cleaned row and the report."""
    frame, report = clean_with_report(pd.DataFrame([raw_row(**values)]))
    return frame.iloc[0], report


def messy_frame() -> pd.DataFrame:
    """Rows that exercise every rule at once, with mixed value types per column."""
    return pd.DataFrame(
        [
            raw_row(),
            raw_row(
                encounter_id=12,
                race=" caucasian ",
                gender="Unknown/Invalid",
                age="?",
                A1Cresult=None,
                metformin="steady",
                insulin="bogus",
                admission_type_id="6",
                discharge_disposition_id=11,
                time_in_hospital="3.0",
                num_lab_procedures="abc",
                diag_1="250.",
                diag_2=" v57 ",
                diag_3="XYZ",
                readmitted="<30",
            ),
            raw_row(
                encounter_id=np.nan,
                patient_nbr=pd.NA,
                race=pd.NA,
                max_glu_serum="none",
                admission_source_id=99,
                num_medications=-1,
                diag_1=428,
                readmitted="maybe",
                payer_code="",
            ),
        ],
        index=[10, 20, 30],
    )


def assert_no_none(frame: pd.DataFrame) -> None:
    """JSON nulls must reach scikit-learn as NaN: no None object in any text column."""
    for key in TEXT_KEYS:
        assert not any(value is None for value in frame[key].tolist()), key


# --- the frame contract ---------------------------------------------------------------


def test_clean_columns_are_identifiers_then_schema_order_then_derived() -> None:
    keys = [c.key for c in CLEAN_COLUMNS]
    assert keys[:2] == ["encounter_id", "patient_nbr"]
    assert keys[2:50] == [c.key for c in schema.COLUMNS if c.kind is not schema.Kind.IDENTIFIER]
    assert keys[50:] == [
        "diag_1_group",
        "diag_2_group",
        "diag_3_group",
        "age_years",
        "expired",
    ]
    assert tuple(keys) == CLEAN_KEYS


def test_clean_columns_have_sql_types_by_kind() -> None:
    sql_types = {c.key: c.sql_type for c in CLEAN_COLUMNS}
    expected = {
        schema.Kind.IDENTIFIER: "bigint",
        schema.Kind.COUNT: "integer",
        schema.Kind.CODE: "integer",
        schema.Kind.CATEGORY: "text",
        schema.Kind.DIAGNOSIS: "text",
        schema.Kind.TARGET: "text",
    }
    for column in schema.COLUMNS:
        assert sql_types[column.key] == expected[column.kind], column.key
    assert sql_types["diag_1_group"] == "text"
    assert sql_types["age_years"] == "double"
    assert sql_types["expired"] == "boolean"
    assert all(c.description for c in CLEAN_COLUMNS)


@pytest.mark.parametrize("rows", [0, 1, 3, 50])
def test_output_has_the_clean_columns_and_dtypes(rows: int) -> None:
    frame = pd.DataFrame([raw_row() for _ in range(rows)], columns=list(schema.COLUMN_NAMES))
    cleaned = clean(frame)
    assert tuple(cleaned.columns) == CLEAN_KEYS
    for key in ("encounter_id", "patient_nbr"):
        assert cleaned[key].dtype == "Int64"
    for key in [*NUMBER_KEYS, "age_years"]:
        assert cleaned[key].dtype == np.float64, key
    for key in TEXT_KEYS:
        assert cleaned[key].dtype == "str", key
    assert cleaned["expired"].dtype == bool


def test_input_frame_is_not_modified() -> None:
    frame = messy_frame().assign(split="train")
    before = frame.copy(deep=True)
    clean(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_index_is_preserved() -> None:
    frame = messy_frame()
    frame.index = pd.Index(["a", "b", "b"], name="row")
    assert clean(frame).index.equals(frame.index)


def test_pass_through_columns_follow_the_clean_ones_unchanged() -> None:
    frame = messy_frame().assign(split=["train", "valid", "test"], batch_id=[1, 1, 2])
    cleaned = clean(frame)
    assert list(cleaned.columns) == [*CLEAN_KEYS, "split", "batch_id"]
    pd.testing.assert_series_equal(cleaned["split"], frame["split"])
    pd.testing.assert_series_equal(cleaned["batch_id"], frame["batch_id"])


def test_derived_columns_in_the_input_are_recomputed_not_passed_through() -> None:
    frame = messy_frame().assign(age_years=999.0, diag_1_group="bogus", expired=True)
    cleaned = clean(frame)
    assert tuple(cleaned.columns) == CLEAN_KEYS
    pd.testing.assert_frame_equal(cleaned, clean(messy_frame()))


def test_absent_schema_columns_are_added_as_missing() -> None:
    cleaned, report = clean_with_report(pd.DataFrame({"race": ["Asian"]}))
    row = cleaned.iloc[0]
    assert tuple(cleaned.columns) == CLEAN_KEYS
    assert row["race"] == "Asian"
    assert pd.isna(row["encounter_id"])
    assert np.isnan(row["num_lab_procedures"])
    assert pd.isna(row["diag_1"])
    assert row["metformin"] == "No"
    assert row["a1cresult"] == "None"
    assert report.invalid == {}


@pytest.mark.parametrize(
    ("spellings", "value"),
    [
        (("A1Cresult", "a1cresult"), ">7"),
        (("diabetesMed", "diabetesmed"), "Yes"),
        (("glyburide-metformin", "glyburide_metformin"), "Up"),
    ],
)
def test_every_alias_of_a_column_gives_the_same_result(
    spellings: tuple[str, ...], value: str
) -> None:
    results = [clean(pd.DataFrame({spelling: [value, "?"]})) for spelling in spellings]
    for result in results[1:]:
        pd.testing.assert_frame_equal(result, results[0])
    assert results[0][schema.to_key(spellings[0])].iloc[0] == value


def test_two_spellings_of_one_column_are_refused() -> None:
    with pytest.raises(schema.SchemaError, match="a1cresult"):
        clean(pd.DataFrame({"A1Cresult": [">7"], "a1cresult": [">8"]}))


def test_a_one_row_frame_is_cleaned() -> None:
    row, report = clean_one()
    assert row["race"] == "Caucasian"
    assert row["encounter_id"] == 2278392
    assert row["time_in_hospital"] == 3.0
    assert row["diag_1_group"] == "circulatory"
    assert row["age_years"] == 75.0
    assert report.rows == 1
    assert report.invalid == {}


def test_an_api_request_with_missing_fields_and_json_nulls_is_cleaned() -> None:
    requests = [
        {"race": "Caucasian", "gender": "Female", "age": "[50-60)", "A1Cresult": None},
        {"race": None, "time_in_hospital": 4, "diag_1": None, "diabetesMed": "Yes"},
    ]
    cleaned, report = clean_with_report(pd.DataFrame(requests))
    assert tuple(cleaned.columns) == CLEAN_KEYS
    assert cleaned["a1cresult"].tolist() == ["None", "None"]
    assert np.isnan(cleaned.loc[0, "time_in_hospital"])
    assert cleaned.loc[1, "time_in_hospital"] == 4.0
    assert pd.isna(cleaned.loc[1, "race"])
    assert pd.isna(cleaned.loc[1, "diag_1"])
    assert cleaned["metformin"].tolist() == ["No", "No"]
    assert_no_none(cleaned)
    assert report.invalid == {}


def test_few_and_many_rows_are_cleaned_alike() -> None:
    """Up to `_FEW_ROWS` rows each value is parsed; beyond, distinct values are."""
    few = messy_frame()
    many = pd.concat([few] * 5, ignore_index=True)
    assert len(few) <= cleaning.rules._FEW_ROWS < len(many)
    few_clean, few_report = clean_with_report(few)
    many_clean, many_report = clean_with_report(many)
    expected = pd.concat([few_clean] * 5, ignore_index=True)
    pd.testing.assert_frame_equal(many_clean, expected)
    assert many_report.invalid == {key: 5 * n for key, n in few_report.invalid.items()}


def assert_columns_equal_frame(columns: dict[str, np.ndarray], frame: pd.DataFrame) -> None:
    """Clean columns as arrays hold what the cleaned frame holds, column by column."""
    assert list(columns) == list(frame.columns)
    for key in frame.columns:
        expected = frame[key].to_numpy(dtype=object)
        got = np.asarray(columns[key], dtype=object)
        assert len(got) == len(expected), key
        for want, have in zip(expected, got, strict=True):
            if pd.isna(want):
                assert pd.isna(have), (key, want, have)
            else:
                assert want == have, (key, want, have)
                assert type(want) is type(have), (key, want, have)
    assert not any(v is None for key in TEXT_KEYS for v in columns[key]), "None in text"


@pytest.mark.parametrize("rows", [1, 3, 20])
def test_records_are_cleaned_as_their_frame_is(rows: int) -> None:
    """The API's path without pandas: every rule, every messy value, extra columns."""
    records = (messy_frame().to_dict("records") * 7)[:rows]
    records[0]["extra_field"] = "kept"
    expected = clean(pd.DataFrame.from_records(records))
    assert_columns_equal_frame(clean_records(records), expected)


def test_api_records_with_missing_fields_are_cleaned_as_their_frame_is() -> None:
    records = [
        {"race": "Caucasian", "gender": "Female", "age": "[50-60)", "A1Cresult": None},
        {"race": None, "time_in_hospital": 4, "diag_1": None, "diabetesMed": "Yes"},
        {"num_medications": 13.0, "admission_type_id": 1, "diag_2": 250.01},
    ]
    expected = clean(pd.DataFrame.from_records(records))
    assert_columns_equal_frame(clean_records(records), expected)


def test_two_spellings_of_one_column_in_records_are_refused() -> None:
    with pytest.raises(schema.SchemaError, match="both"):
        clean_records([{"A1Cresult": "None"}, {"a1cresult": "Norm"}])


def test_real_records_are_cleaned_as_their_frame_is() -> None:
    raw = pd.read_csv(require_real_csv(), dtype=str, keep_default_na=False, nrows=3_000)
    records = raw.to_dict("records")
    for start in range(0, len(records), 32):
        part = records[start : start + 32]
        assert_columns_equal_frame(clean_records(part), clean(pd.DataFrame.from_records(part)))


# --- rule 1: missing markers ----------------------------------------------------------


@pytest.mark.parametrize("marker", ["?", "", "   ", None, np.nan, pd.NA, float("nan")])
@pytest.mark.parametrize("rows", [1, 20])
def test_missing_markers_become_nan_in_every_kind_of_column(marker: object, rows: int) -> None:
    columns = ["race", "weight", "payer_code", "num_procedures", "admission_type_id"]
    columns += ["diag_2", "readmitted", "encounter_id"]
    frame = pd.DataFrame([raw_row(**dict.fromkeys(columns, marker))] * rows)
    cleaned, report = clean_with_report(frame)
    for key in ["race", "weight", "payer_code", "diag_2", "diag_2_group", "readmitted"]:
        assert cleaned[key].isna().all(), key
        assert all(isinstance(v, float) and np.isnan(v) for v in cleaned[key].tolist()), key
    for key in ["num_procedures", "admission_type_id"]:
        assert np.isnan(cleaned[key].to_numpy()).all(), key
    assert cleaned["encounter_id"].isna().all()
    assert_no_none(cleaned)
    assert report.invalid == {}


def test_surrounding_whitespace_is_stripped() -> None:
    row, report = clean_one(race="  Asian ", num_procedures=" 2 ", diag_1=" 428 ")
    assert (row["race"], row["num_procedures"], row["diag_1"]) == ("Asian", 2.0, "428")
    assert report.invalid == {}


# --- rules 2-5 and 9: categories ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("metformin", "steady", "Steady"),
        ("insulin", "UP", "Up"),
        ("race", " caucasian ", "Caucasian"),
        ("race", "African American", "AfricanAmerican"),
        ("change", "CH", "Ch"),
        ("diabetesMed", " no ", "No"),
        ("age", "[70 - 80)", "[70-80)"),
        ("weight", ">200", ">200"),
        ("A1Cresult", "none", "None"),
        ("max_glu_serum", ">300", ">300"),
        ("medical_specialty", "internalmedicine", "InternalMedicine"),
        ("payer_code", "mc", "MC"),
    ],
)
def test_categories_match_ignoring_case_and_whitespace(name: str, raw: str, expected: str) -> None:
    row, report = clean_one(**{name: raw})
    assert row[schema.to_key(name)] == expected
    assert report.invalid == {}


@pytest.mark.parametrize(
    ("name", "raw"),
    [("race", "Martian"), ("age", "[70-85)"), ("payer_code", 7), ("change", True)],
)
def test_an_unknown_category_becomes_nan_and_is_counted(name: str, raw: object) -> None:
    row, report = clean_one(**{name: raw})
    assert pd.isna(row[name])
    assert report.invalid == {name: 1}


@pytest.mark.parametrize("name", ["max_glu_serum", "A1Cresult"])
@pytest.mark.parametrize(
    ("raw", "expected_invalid"), [("None", 0), ("NONE", 0), ("?", 0), (None, 0), ("high", 1)]
)
def test_lab_results_default_to_none_meaning_test_not_taken(
    name: str, raw: object, expected_invalid: int
) -> None:
    row, report = clean_one(**{name: raw})
    assert row[schema.to_key(name)] == "None"
    assert report.invalid.get(schema.to_key(name), 0) == expected_invalid


@pytest.mark.parametrize(("raw", "expected_invalid"), [(None, 0), ("?", 0), ("twice", 1)])
def test_medications_default_to_no(raw: object, expected_invalid: int) -> None:
    row, report = clean_one(**dict.fromkeys(MEDICATION_NAMES, raw))
    assert all(row[schema.to_key(drug)] == "No" for drug in MEDICATION_NAMES)
    assert sum(report.invalid.values()) == expected_invalid * len(MEDICATION_NAMES)


@pytest.mark.parametrize("raw", ["Unknown/Invalid", "unknown/invalid"])
def test_gender_unknown_invalid_becomes_nan_as_a_documented_unknown(raw: str) -> None:
    row, report = clean_one(gender=raw)
    assert pd.isna(row["gender"])
    assert report.unknown == {"gender": 1}
    assert report.invalid == {}


@pytest.mark.parametrize(
    ("raw", "expected", "expected_invalid"),
    [
        ("NO", "NO", 0),
        ("no", "NO", 0),
        (" >30 ", ">30", 0),
        ("<30", "<30", 0),
        (None, np.nan, 0),
        ("?", np.nan, 0),
        ("yes", np.nan, 1),
        (0, np.nan, 1),
    ],
)
def test_readmitted_is_one_of_three_classes(
    raw: object, expected: object, expected_invalid: int
) -> None:
    row, report = clean_one(readmitted=raw)
    if isinstance(expected, str):
        assert row["readmitted"] == expected
    else:
        assert pd.isna(row["readmitted"])
    assert report.invalid.get("readmitted", 0) == expected_invalid


# --- rule 6: codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected", "flag"),
    [
        ("admission_type_id", "1", 1.0, None),
        ("admission_type_id", 3, 3.0, None),
        ("admission_type_id", "2.0", 2.0, None),
        ("admission_type_id", "5", np.nan, "unknown"),  # Not Available
        ("admission_type_id", "6", np.nan, "unknown"),  # NULL
        ("admission_type_id", 8, np.nan, "unknown"),  # Not Mapped
        ("discharge_disposition_id", "18", np.nan, "unknown"),
        ("discharge_disposition_id", "26", np.nan, "unknown"),  # Unknown/Invalid
        ("admission_source_id", "17", np.nan, "unknown"),
        ("admission_source_id", "16", np.nan, "invalid"),  # not in IDs_mapping.csv
        ("admission_type_id", 99, np.nan, "invalid"),
        ("admission_type_id", "abc", np.nan, "invalid"),
        ("admission_type_id", 1.5, np.nan, "invalid"),
        ("admission_type_id", True, np.nan, "invalid"),
    ],
)
def test_codes_meaning_unknown_or_not_in_the_mapping_become_nan(
    name: str, raw: object, expected: float, flag: str | None
) -> None:
    row, report = clean_one(**{name: raw})
    assert row[name] == expected or (np.isnan(expected) and np.isnan(row[name]))
    assert report.unknown.get(name, 0) == (flag == "unknown")
    assert report.invalid.get(name, 0) == (flag == "invalid")


# --- rules 7 and 8: counts and identifiers --------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("3", 3.0), ("3.0", 3.0), (3, 3.0), (3.0, 3.0), (np.int64(14), 14.0), ("1", 1.0)],
)
def test_counts_accept_integral_numbers_and_text(raw: object, expected: float) -> None:
    row, report = clean_one(time_in_hospital=raw)
    assert row["time_in_hospital"] == expected
    assert report.invalid == {}


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("time_in_hospital", "3.5"),
        ("time_in_hospital", "abc"),
        ("time_in_hospital", "0"),  # below the minimum of 1 day
        ("time_in_hospital", 15),  # above the maximum of 14 days
        ("time_in_hospital", True),  # a boolean is not a count
        ("time_in_hospital", "inf"),
        ("num_procedures", "-1"),
        ("number_diagnoses", 17),
        ("num_lab_procedures", "1e2"),
    ],
)
def test_invalid_counts_become_nan_and_are_counted(name: str, raw: object) -> None:
    row, report = clean_one(**{name: raw})
    assert np.isnan(row[name])
    assert report.invalid == {name: 1}


def test_booleans_are_not_counts_in_boolean_or_mixed_columns() -> None:
    rows = 20
    bools = pd.DataFrame({"num_procedures": [True, False] * (rows // 2)})
    mixed = pd.DataFrame({"num_procedures": pd.Series([1, True] * (rows // 2), dtype=object)})
    bools_clean, bools_report = clean_with_report(bools)
    mixed_clean, mixed_report = clean_with_report(mixed)
    assert bools_clean["num_procedures"].isna().all()
    assert bools_report.invalid == {"num_procedures": rows}
    mixed_values = mixed_clean["num_procedures"].to_numpy()
    assert mixed_values[0] == 1.0
    assert np.isnan(mixed_values[1])
    assert mixed_report.invalid == {"num_procedures": rows // 2}


@pytest.mark.parametrize(
    ("raw", "expected"), [("2278392", 2278392), (2278392, 2278392), ("12.0", 12), (12.0, 12)]
)
def test_identifiers_become_nullable_integers(raw: object, expected: int) -> None:
    row, report = clean_one(encounter_id=raw)
    assert row["encounter_id"] == expected
    assert report.invalid == {}


@pytest.mark.parametrize("raw", ["abc", "12.5", 12.5, True, "1" * 20])
def test_unparseable_identifiers_become_na_and_are_counted(raw: object) -> None:
    cleaned, report = clean_with_report(pd.DataFrame([raw_row(patient_nbr=raw)]))
    assert cleaned["patient_nbr"].dtype == "Int64"
    assert cleaned["patient_nbr"].isna().all()
    assert report.invalid == {"patient_nbr": 1}


# --- rule 10: ICD-9 diagnoses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "group"),
    [
        ("250.83", "250.83", "diabetes"),
        ("250.0", "250.0", "diabetes"),
        ("250", "250", "diabetes"),
        ("250.", "250", "diabetes"),
        ("249", "249", "endocrine_metabolic"),
        ("276", "276", "endocrine_metabolic"),
        ("428", "428", "circulatory"),
        (428, "428", "circulatory"),
        (428.0, "428", "circulatory"),
        (250.83, "250.83", "diabetes"),
        ("38", "038", "infectious"),  # the file drops leading zeros: 038
        ("8", "008", "infectious"),
        ("08", "008", "infectious"),
        ("038", "038", "infectious"),
        ("70.1", "070.1", "infectious"),
        (38.0, "038", "infectious"),
        (" v57 ", "V57", "supplementary"),
        ("V01", "V01", "supplementary"),
        ("V91", "V91", "supplementary"),
        ("e909", "E909", "external_causes"),
        ("E800", "E800", "external_causes"),
        ("E849.7", "E849.7", "external_causes"),
        ("999", "999", "injury_poisoning"),
    ],
)
def test_diagnoses_are_normalised_and_grouped_by_chapter(
    raw: object, code: str, group: str
) -> None:
    row, report = clean_one(diag_1=raw)
    assert (row["diag_1"], row["diag_1_group"]) == (code, group)
    assert report.invalid == {}


@pytest.mark.parametrize(("written", "padded"), [("38", "038"), ("8", "008"), ("79.1", "079.1")])
def test_both_spellings_of_a_code_give_the_same_model_inputs(written: str, padded: str) -> None:
    from readmission.features import EncounterFeatures

    frame = pd.DataFrame([raw_row(diag_1=written), raw_row(diag_1=padded)])
    inputs = EncounterFeatures().fit(clean(frame)).transform(clean(frame))
    assert inputs.iloc[0].equals(inputs.iloc[1])
    assert inputs["diag_1_category"].iloc[0] == padded.split(".")[0]


@pytest.mark.parametrize(
    "raw", ["ABC", "0", "000", "1000", "250.123", "V00", "V92", "E799", "E1000", "4 28", True]
)
def test_codes_that_are_not_icd9_become_nan_and_are_counted(raw: object) -> None:
    row, report = clean_one(diag_3=raw)
    assert pd.isna(row["diag_3"])
    assert pd.isna(row["diag_3_group"])
    assert report.invalid == {"diag_3": 1}


@pytest.mark.parametrize("chapter", ICD9_CHAPTERS, ids=lambda chapter: chapter.group)
def test_each_chapter_holds_its_first_and_last_code(chapter: cleaning.Icd9Chapter) -> None:
    width = 2 if chapter.prefix == "V" else 3
    for number in (chapter.first, chapter.last):
        code = f"{chapter.prefix}{number:0{width}d}"
        assert icd9_chapter(code) == chapter.group, code
        assert icd9_chapter(code + ".9") == chapter.group, code


def test_the_chapters_cover_every_icd9_code_once_besides_diabetes() -> None:
    numeric = [icd9_chapter(str(number)) for number in range(1, 1000)]
    assert None not in numeric
    assert [number for number, group in enumerate(numeric, 1) if group == "diabetes"] == [250]
    assert sorted(set(ICD9_GROUPS)) == sorted(ICD9_GROUPS)
    assert len(ICD9_GROUPS) == 20


@pytest.mark.parametrize("raw", [None, "?", "", "XYZ"])
def test_the_scalar_chapter_of_a_missing_or_invalid_code_is_none(raw: str | None) -> None:
    assert icd9_chapter(raw) is None  # type: ignore[arg-type]


def test_chapters_of_a_column_are_mapped_vectorised() -> None:
    codes = pd.Series(["250.1", None, "V57", "bad", "410"] * 3, index=range(5, 20), name="d")
    groups = map_icd9_chapters(codes)
    assert groups.index.equals(codes.index)
    assert groups.dtype == "str"
    assert groups.iloc[[0, 2, 4]].tolist() == ["diabetes", "supplementary", "circulatory"]
    assert groups.iloc[[1, 3]].isna().all()


# --- rules 11 and 12: derived columns -------------------------------------------------


@pytest.mark.parametrize(
    ("age", "years"), [*((b, int(b[1:].split("-")[0]) + 5.0) for b in schema.AGE_BRACKETS)]
)
def test_age_years_is_the_midpoint_of_the_bracket(age: str, years: float) -> None:
    row, _ = clean_one(age=age)
    assert row["age_years"] == years


@pytest.mark.parametrize("age", ["?", None, "[70-85)"])
def test_age_years_is_nan_when_the_age_is_missing_or_invalid(age: object) -> None:
    row, _ = clean_one(age=age)
    assert np.isnan(row["age_years"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *((str(code), True) for code in (11, 19, 20, 21)),
        (11, True),
        ("13", False),  # hospice / home: 86 of the file's 771 hospice encounters came back
        (14, False),  # hospice / medical facility
        ("1", False),
        ("18", False),  # NULL: unknown, not expired
        ("99", False),
        (None, False),
    ],
)
def test_expired_flags_the_dispositions_after_which_no_readmission_can_happen(
    raw: object, expected: bool
) -> None:
    row, _ = clean_one(discharge_disposition_id=raw)
    assert bool(row["expired"]) is expected


# --- rule 13: idempotence -------------------------------------------------------------


@pytest.mark.parametrize("copies", [1, 5])
def test_cleaning_twice_changes_nothing(copies: int) -> None:
    frame = pd.concat([messy_frame()] * copies).assign(split="train")
    once = clean(frame)
    twice, report = clean_with_report(once)
    pd.testing.assert_frame_equal(twice, once)
    assert report.invalid == {}
    assert report.unknown == {}


# --- the report -----------------------------------------------------------------------


def test_the_report_counts_invalid_values_and_documented_unknowns_per_column() -> None:
    _, report = clean_with_report(messy_frame())
    assert report.rows == 3
    assert report.invalid == {
        "admission_source_id": 1,
        "num_lab_procedures": 1,
        "num_medications": 1,
        "diag_3": 1,
        "insulin": 1,
        "readmitted": 1,
    }
    assert report.unknown == {"gender": 1, "admission_type_id": 1}
    assert report.invalid_total == sum(report.invalid.values())
    assert report.to_dict() == {
        "rows": 3,
        "invalid": dict(report.invalid),
        "unknown": dict(report.unknown),
    }
    summary = report.summary()
    assert summary.startswith("cleaned 3 rows: 6 invalid values")
    assert "num_lab_procedures 1" in summary
    assert "2 documented unknowns" in summary


def test_the_report_of_clean_data_says_so() -> None:
    _, report = clean_with_report(pd.DataFrame([raw_row()]))
    assert report.summary() == "cleaned 1 row: no invalid values"


# --- the real file --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_the_real_file_is_cleaned_with_only_documented_unknowns() -> None:
    raw = pd.read_csv(require_real_csv(), dtype=str, keep_default_na=False)
    cleaned, report = clean_with_report(raw)

    assert report.rows == len(cleaned) == 101_766
    assert report.invalid == {}, report.summary()
    assert report.unknown == {
        "gender": 3,
        "admission_type_id": 10_396,
        "discharge_disposition_id": 4_680,
        "admission_source_id": 7_067,
    }
    for key, group in cleaning.DIAGNOSIS_GROUPS.items():
        assert cleaned[group].notna().eq(cleaned[key].notna()).all(), key
        assert cleaned[key].isna().sum() == (raw[key] == "?").sum(), key
    diabetes_share = (cleaned["diag_1_group"] == "diabetes").mean()
    assert 0.05 < diabetes_share < 0.15
    assert cleaned["readmitted"].value_counts().to_dict() == {
        "NO": 54_864,
        ">30": 35_545,
        "<30": 11_357,
    }
    assert cleaned["a1cresult"].eq("None").sum() == 84_748
    assert cleaned["max_glu_serum"].eq("None").sum() == 96_420
    assert cleaned["expired"].sum() == 1_652  # codes 11, 19, 20, 21; hospice is not death
    assert_no_none(cleaned)
