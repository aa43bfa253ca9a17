"""Unit tests of the Streamlit app's pure logic (`streamlit/ui_logic.py`): no browser,
no network."""

from __future__ import annotations

import gzip

import httpx
import pandas as pd
import pytest
import ui_logic
from ui_logic import (
    MISSING_CHOICE,
    ApiError,
    CsvError,
    FormError,
    ModelRef,
    Prediction,
)

from readmission import schema, synthetic


def typical_values() -> dict[str, object]:
    """What the form holds before anyone touches it."""
    values: dict[str, object] = {}
    for column in schema.FEATURES:
        if column.kind in (schema.Kind.CATEGORY, schema.Kind.CODE):
            values[column.name] = ui_logic.default_choice(column)
        else:
            values[column.name] = column.typical
    return values


# --- settings ---------------------------------------------------------------------------------


def test_settings_default_to_the_local_services() -> None:
    settings = ui_logic.load_settings({})
    assert settings.api_url == "http://127.0.0.1:8989"
    assert settings.mlflow_ui_url == "http://127.0.0.1:5000"
    assert settings.timeout_seconds == ui_logic.DEFAULT_TIMEOUT_SECONDS


def test_settings_come_from_the_environment() -> None:
    settings = ui_logic.load_settings(
        {
            "API_URL": "http://fast-api:8989/",
            "MLFLOW_UI_URL": " http://mlflow:5000 ",
            "API_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert settings == ui_logic.UiSettings("http://fast-api:8989", "http://mlflow:5000", 2.5)


@pytest.mark.parametrize("timeout", ["soon", "0", "-1", "nan"])
def test_settings_refuse_a_timeout_that_is_not_a_positive_number(timeout: str) -> None:
    with pytest.raises(ValueError, match="API_TIMEOUT_SECONDS"):
        ui_logic.load_settings({"API_TIMEOUT_SECONDS": timeout})


def test_mlflow_link_points_at_the_registered_model() -> None:
    url = ui_logic.mlflow_model_url("http://127.0.0.1:5000/")
    assert url == "http://127.0.0.1:5000/#/models/diabetes-readmission"


# --- the form ---------------------------------------------------------------------------------


def test_the_form_shows_every_feature_column_exactly_once() -> None:
    shown = [name for _, names in ui_logic.FORM_SECTIONS for name in names]
    shown += ui_logic.MEDICATION_COLUMNS
    assert sorted(shown) == sorted(c.name for c in schema.FEATURES)
    assert len(shown) == len(set(shown))
    assert set(ui_logic.LABELS) <= set(schema.COLUMN_NAMES)


def test_code_choices_show_code_and_label_and_parse_back_to_ints() -> None:
    column = schema.BY_NAME["admission_type_id"]
    options = ui_logic.choices(column)
    assert options[0] == "1 - Emergency"
    assert len(options) == len(column.codes)
    assert [ui_logic.parse_code_choice(o) for o in options] == list(column.codes)
    long_label = ui_logic.format_code(30, schema.DISCHARGE_DISPOSITIONS[30])
    assert ui_logic.parse_code_choice(long_label) == 30


@pytest.mark.parametrize(
    ("choice", "code"),
    [(MISSING_CHOICE, None), (None, None), (7, 7), ("12", 12), (" 3 - Elective", 3)],
)
def test_parse_code_choice(choice: object, code: int | None) -> None:
    assert ui_logic.parse_code_choice(choice) == code


@pytest.mark.parametrize("choice", ["Emergency", "- 3", True, "3.5 - x"])
def test_parse_code_choice_refuses_what_is_not_a_code(choice: object) -> None:
    with pytest.raises(ValueError, match="not a code"):
        ui_logic.parse_code_choice(choice)


def test_only_columns_the_file_leaves_missing_offer_the_missing_choice() -> None:
    offering = {
        c.name
        for c in schema.FEATURES
        if c.kind in (schema.Kind.CATEGORY, schema.Kind.CODE)
        and MISSING_CHOICE in ui_logic.choices(c)
    }
    assert offering == {"race", "weight", "payer_code", "medical_specialty"}
    assert ui_logic.choices(schema.BY_NAME["A1Cresult"]) == ["None", "Norm", ">7", ">8"]


def test_defaults_are_the_typical_patient() -> None:
    for column in schema.FEATURES:
        if column.kind in (schema.Kind.CATEGORY, schema.Kind.CODE):
            assert ui_logic.default_choice(column) in ui_logic.choices(column)
    assert ui_logic.default_choice(schema.BY_NAME["admission_source_id"]) == "7 - Emergency Room"


def test_the_request_of_a_typical_patient_uses_uci_names_and_json_types() -> None:
    body = ui_logic.build_request(typical_values())
    assert list(body) == [c.name for c in schema.FEATURES]
    assert body["admission_type_id"] == 1
    assert body["discharge_disposition_id"] == 1
    assert body["admission_source_id"] == 7
    assert body["time_in_hospital"] == 3
    assert body["glyburide-metformin"] == "No"
    assert body["A1Cresult"] == "None"  # a category ("not measured"), not a missing value
    assert body["diag_1"] == "428"
    assert schema.PATIENT_ID not in body
    assert all(type(body[c.name]) is int for c in schema.FEATURES if c.is_integer)


def test_missing_choices_and_blank_codes_become_null() -> None:
    values = typical_values() | {"race": MISSING_CHOICE, "diag_3": "  ", "weight": None}
    values.pop("payer_code")
    body = ui_logic.build_request(values)
    assert body["race"] is None
    assert body["diag_3"] is None
    assert body["weight"] is None
    assert body["payer_code"] is None


def test_the_encounter_id_is_sent_when_given_so_only_earlier_encounters_count() -> None:
    body = ui_logic.build_request(typical_values(), 8222157, 2278392)
    assert (body["patient_nbr"], body["encounter_id"]) == (8222157, 2278392)
    assert "encounter_id" not in ui_logic.build_request(typical_values(), 8222157, None)
    with pytest.raises(FormError, match="encounter_id must not be negative"):
        ui_logic.build_request(typical_values(), 8222157, -1)


def test_the_history_the_api_used_is_described() -> None:
    described = ui_logic.describe_history
    assert described({"status": "looked_up", "earlier_encounters": 2}) == (
        "History: 2 earlier encounters of this patient were counted."
    )
    assert "1 earlier encounter of" in described({"status": "looked_up", "earlier_encounters": 1})
    assert "unavailable" in described({"status": "unavailable", "earlier_encounters": 0})
    assert "no patient number" in described({"status": "no_patient", "earlier_encounters": 0})
    assert described(None) == ""


def test_the_patient_number_is_sent_when_given() -> None:
    assert ui_logic.build_request(typical_values(), 8222157)["patient_nbr"] == 8222157
    assert ui_logic.build_request(typical_values(), "55629189")["patient_nbr"] == 55629189
    assert ui_logic.build_request(typical_values(), 12.0)["patient_nbr"] == 12
    assert "patient_nbr" not in ui_logic.build_request(typical_values(), "")


@pytest.mark.parametrize(
    ("values", "patient", "message"),
    [
        ({"time_in_hospital": "three"}, None, "time_in_hospital must be a whole number"),
        ({"num_procedures": 1.5}, None, "num_procedures must be a whole number"),
        ({"admission_type_id": "Emergency"}, None, "admission_type_id: not a code"),
        ({}, "abc", "patient_nbr must be a whole number"),
        ({}, -4, "patient_nbr must not be negative"),
    ],
)
def test_values_a_request_cannot_carry_name_their_field(
    values: dict[str, object], patient: object, message: str
) -> None:
    with pytest.raises(FormError, match=message):
        ui_logic.build_request(typical_values() | values, patient)


# --- answers ----------------------------------------------------------------------------------

ANSWER = {
    "prediction": "<30",
    "probabilities": {"NO": 0.51, ">30": 0.33, "<30": 0.16},
    "readmission_30d_risk": 0.16,
    "model": {"name": "diabetes-readmission", "version": "3", "alias": "production"},
}


def test_a_prediction_answer_is_parsed() -> None:
    result = ui_logic.parse_prediction(ANSWER)
    assert result.prediction.predicted_class == "<30"
    assert result.prediction.readmission_30d_risk == pytest.approx(0.16)
    assert result.model == ModelRef("diabetes-readmission", "3", "production")
    assert result.model.describe() == "diabetes-readmission v3 (production)"
    assert ui_logic.describe_class("<30") == "Readmitted within 30 days (<30)"


def test_probabilities_are_charted_in_class_order() -> None:
    frame = ui_logic.probability_frame({"<30": 0.2, "NO": 0.5, ">30": 0.3})
    assert frame["class"].tolist() == ["NO", ">30", "<30"]
    assert frame["probability"].tolist() == [0.5, 0.3, 0.2]


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {**ANSWER, "model": None},
        {k: v for k, v in ANSWER.items() if k != "prediction"},
        {**ANSWER, "probabilities": {"NO": "high"}},
    ],
)
def test_an_answer_off_the_contract_is_an_api_error(answer: object) -> None:
    with pytest.raises(ApiError) as caught:
        ui_logic.parse_prediction(answer)
    assert caught.value.kind == "bad_response"
    assert "POST /predict" in str(caught.value)


def test_a_batch_answer_must_have_one_prediction_per_encounter() -> None:
    item = {k: ANSWER[k] for k in ("prediction", "probabilities", "readmission_30d_risk")}
    payload = {"predictions": [item, item], "model": ANSWER["model"]}
    predictions, model = ui_logic.parse_batch(payload, 2)
    assert len(predictions) == 2
    assert model.version == "3"
    with pytest.raises(ApiError, match="2 predictions for 3 encounters"):
        ui_logic.parse_batch(payload, 3)


# --- failures ---------------------------------------------------------------------------------

URL = "http://127.0.0.1:8989"


def test_connection_refused_says_the_api_cannot_be_reached() -> None:
    error = ui_logic.error_from_exception(httpx.ConnectError("[Errno 111] refused"), URL, 10)
    assert error.kind == "unreachable"
    assert error.severity == "error"
    assert f"Cannot reach the inference API at {URL}" in str(error)
    assert "API_URL" in str(error)


def test_a_timeout_says_how_long_it_waited() -> None:
    error = ui_logic.error_from_exception(httpx.ReadTimeout("timed out"), URL, 2.5)
    assert error.kind == "timeout"
    assert "did not answer within 2.5 s" in str(error)


def test_another_network_failure_is_named() -> None:
    error = ui_logic.error_from_exception(httpx.RemoteProtocolError("peer closed"), URL, 10)
    assert error.kind == "network"
    assert "peer closed" in str(error)


def test_a_422_lists_every_refused_field_with_its_input() -> None:
    body = {
        "detail": [
            {"field": "num_lab_procedures", "reason": "must be <= 300", "input": 999},
            {"field": "race", "reason": "not one of Caucasian, ...", "input": "Martian"},
        ]
    }
    error = ui_logic.error_from_response(422, body, "POST /predict")
    assert error.kind == "invalid"
    assert error.problems == (
        "num_lab_procedures: must be <= 300 (got 999)",
        "race: not one of Caucasian, ... (got Martian)",
    )
    assert str(error).splitlines() == [
        "The API refused the values (2 problems):",
        "- num_lab_procedures: must be <= 300 (got 999)",
        "- race: not one of Caucasian, ... (got Martian)",
    ]


def test_a_batch_422_names_the_row_of_the_file() -> None:
    body = {
        "detail": [
            {"field": "encounters.3.num_lab_procedures", "reason": "must be <= 300", "input": 999},
            {"field": "encounters", "reason": "at most 1000"},
        ]
    }
    error = ui_logic.error_from_response(422, body, "POST /predict/batch", row_offset=1000)
    assert error.problems == (
        "row 1004, num_lab_procedures: must be <= 300 (got 999)",
        "encounters: at most 1000",
    )


def test_a_422_in_fastapis_default_shape_is_readable_too() -> None:
    body = {
        "detail": [
            {
                "loc": ["body", "time_in_hospital"],
                "msg": "Input should be a valid integer",
                "type": "int_parsing",
                "input": "three",
            }
        ]
    }
    error = ui_logic.error_from_response(422, body, "POST /predict")
    assert error.problems == ("time_in_hospital: Input should be a valid integer (got three)",)


def test_no_model_yet_is_a_warning_carrying_the_apis_advice() -> None:
    detail = "no model loaded: train one with `make run` or `python -m readmission train`"
    error = ui_logic.error_from_response(503, {"detail": detail}, "POST /predict")
    assert error.kind == "unavailable"
    assert error.severity == "warning"
    assert str(error) == f"The inference API is not ready: {detail}"


@pytest.mark.parametrize(
    ("status", "body", "kind", "text"),
    [
        (
            413,
            {"detail": "request body larger than 4000000 bytes"},
            "too_large",
            "The request is too large for the API (request body larger than 4000000 bytes)",
        ),
        (404, {"detail": "Not Found"}, "refused", "Does API_URL point at the inference API?"),
        (
            405,
            {"detail": "Method Not Allowed"},
            "refused",
            "The API refused GET /model (HTTP 405): Method Not Allowed",
        ),
        (
            500,
            {"detail": "internal error"},
            "server",
            "The inference API failed on GET /model (HTTP 500): internal error",
        ),
        (502, "<html>Bad Gateway</html>", "server", "(HTTP 502): <html>Bad Gateway</html>"),
        (500, None, "server", "(HTTP 500): no details given"),
    ],
)
def test_other_http_errors_are_readable(status: int, body: object, kind: str, text: str) -> None:
    error = ui_logic.error_from_response(status, body, "GET /model")
    assert error.kind == kind
    assert error.status_code == status
    assert text in str(error)
    assert error.severity == "error"


# --- CSV batches ------------------------------------------------------------------------------


def uci_csv(rows: int = 5, seed: int = 1) -> bytes:
    """A CSV as the UCI file writes it (CRLF, `?` for missing, the target included)."""
    return synthetic.encounters(rows, seed=seed).to_csv(index=False, lineterminator="\r\n").encode()


def test_a_uci_csv_is_read_as_text_keeping_question_marks_and_none() -> None:
    frame = ui_logic.read_encounters(uci_csv(200))
    assert len(frame) == 200
    assert list(frame.columns) == list(schema.COLUMN_NAMES)
    assert (frame == "?").any().any()
    assert "None" in set(frame["max_glu_serum"])
    assert ui_logic.ignored_columns(frame) == ["readmitted"]


def test_a_gzip_csv_is_read_too() -> None:
    assert len(ui_logic.read_encounters(gzip.compress(uci_csv(3)))) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b" \n", "The file is empty"),
        (b"race,age\n", "a header but no rows"),
        (b"race,age\n\xff\xfe,\x00\n", "not UTF-8"),
        (b'race,age\n"Caucasian,[70-80)\n', "cannot be read as CSV"),
        (b"race,age\nCaucasian,[70-80),x,y\n", "cannot be read as CSV"),
        (b"name,score\nann,3\n", "No column of the file is a UCI column"),
        (b"\x1f\x8bnot gzip", "gzip"),
    ],
)
def test_a_file_that_cannot_be_sent_gives_a_readable_reason(data: bytes, message: str) -> None:
    with pytest.raises(CsvError, match=message):
        ui_logic.read_encounters(data)


def test_encounters_are_keyed_by_uci_names_with_json_types() -> None:
    csv = (
        b"encounter_id,patient_nbr,race,admission_type_id,num_lab_procedures,diag_1,"
        b"glyburide_metformin,A1Cresult,readmitted,note\n"
        b"12,34,?,3,41.0,250.83,Steady,None,NO,hello\n"
        b"13,35,Caucasian,,many,?,No,>7,<30,\n"
    )
    encounters = ui_logic.to_encounters(ui_logic.read_encounters(csv))
    assert encounters == [
        {
            "encounter_id": 12,
            "patient_nbr": 34,
            "race": None,
            "admission_type_id": 3,
            "num_lab_procedures": 41,
            "diag_1": "250.83",
            "glyburide-metformin": "Steady",
            "A1Cresult": "None",
        },
        {
            "encounter_id": 13,
            "patient_nbr": 35,
            "race": "Caucasian",
            "admission_type_id": None,
            "num_lab_procedures": "many",
            "diag_1": None,
            "glyburide-metformin": "No",
            "A1Cresult": ">7",
        },
    ]


def test_chunks_hold_at_most_1000_rows_and_cover_every_row() -> None:
    assert list(ui_logic.chunk_bounds(2_500)) == [(0, 1000), (1000, 2000), (2000, 2500)]
    assert list(ui_logic.chunk_bounds(1_000)) == [(0, 1000)]
    assert list(ui_logic.chunk_bounds(1)) == [(0, 1)]
    assert list(ui_logic.chunk_bounds(0)) == []
    assert list(ui_logic.chunk_bounds(5, size=2)) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="between 1 and 1000"):
        list(ui_logic.chunk_bounds(5, size=1001))


def test_the_download_is_the_same_csv_with_the_predictions_added() -> None:
    data = uci_csv(7)
    frame = ui_logic.read_encounters(data)
    model = ModelRef("diabetes-readmission", "3")
    rows = [
        ui_logic.prediction_row(Prediction(c, {"NO": 0.5, ">30": 0.3, "<30": 0.2}, 0.2), model)
        for c in ["NO", ">30", "<30", "NO", "NO", "<30", ">30"]
    ]
    output = ui_logic.to_csv_bytes(ui_logic.add_predictions(frame, rows))

    back = pd.read_csv(pd.io.common.BytesIO(output), dtype=str, keep_default_na=False)
    original = pd.read_csv(pd.io.common.BytesIO(data), dtype=str, keep_default_na=False)
    assert list(back.columns) == [
        *schema.COLUMN_NAMES,
        "prediction",
        "probability_NO",
        "probability_>30",
        "probability_<30",
        "model_version",
    ]
    pd.testing.assert_frame_equal(back[list(schema.COLUMN_NAMES)], original)
    assert back["prediction"].tolist() == ["NO", ">30", "<30", "NO", "NO", "<30", ">30"]
    assert back["probability_<30"].astype(float).tolist() == [0.2] * 7
    assert set(back["model_version"]) == {"3"}

    again = ui_logic.add_predictions(ui_logic.read_encounters(output), rows)
    assert list(again.columns) == list(back.columns)  # replaced, not duplicated
    assert "prediction" in ui_logic.ignored_columns(again)


def test_predictions_must_match_the_rows() -> None:
    frame = ui_logic.read_encounters(uci_csv(3))
    with pytest.raises(ValueError, match="2 predictions for 3 rows"):
        ui_logic.add_predictions(frame, [{}, {}])


# --- the registry -----------------------------------------------------------------------------


def test_the_registry_table_flags_production_and_the_served_version() -> None:
    from tests.ui.conftest import VERSIONS

    versions = [
        *VERSIONS,
        {
            "version": "4",
            "stage": None,
            "aliases": [],
            "tags": {},
            "metrics": {"valid_macro_f1": None},
        },
    ]
    table = ui_logic.registry_table(versions, served_version="3")
    assert table["version"].tolist() == ["3", "2", "1", "4"]
    assert table["production"].tolist() == [True, False, False, False]
    assert table["served"].tolist() == [True, False, False, False]
    assert table["valid macro-F1"].tolist()[:3] == [0.48, 0.47, 0.46]
    assert pd.isna(table["valid macro-F1"].iloc[3])
    assert table["test ROC-AUC <30"].iloc[0] == 0.686
    promoted = table["promoted at"].tolist()
    assert promoted[0] == "2026-11-23T10:05:00Z"
    assert pd.isna(promoted[1])
    assert promoted[2] == "2026-11-21T10:05:00Z"
    assert table["decision"].tolist()[:3] == ["promoted", "rejected", "promoted"]
    assert table["stage"].tolist() == ["Production", "Archived", "Archived", "None"]
    assert table["aliases"].iloc[0] == "production"


def test_an_alias_alone_marks_production_once_stages_are_gone() -> None:
    assert ui_logic.is_production({"stage": None, "aliases": ["production"]})
    assert not ui_logic.is_production({"stage": "Archived", "aliases": []})


def test_an_empty_registry_is_an_empty_table() -> None:
    assert ui_logic.registry_table([]).empty


def test_the_served_model_in_one_line() -> None:
    from tests.ui.conftest import VERSIONS

    assert ui_logic.describe_served(VERSIONS[0]) == (
        "diabetes-readmission v3 (hist_gradient_boosting), stage Production, aliases production"
    )


def test_an_unreachable_registry_behind_the_served_model_is_a_warning() -> None:
    status = {"reachable": False, "checked_at": "2026-11-23T11:00:00Z", "message": "refused"}
    warning = ui_logic.registry_warning({"version": "3", "registry": status})
    assert warning is not None
    assert "cannot reach the model registry (checked at 2026-11-23T11:00:00Z): refused" in warning
    assert "keeps serving v3" in warning
    assert ui_logic.registry_warning({"version": "3", "registry": {"reachable": True}}) is None
    assert ui_logic.registry_warning({"version": "3"}) is None


def test_factors_are_tabled_raising_first_with_missing_values_named() -> None:
    from ui_logic import describe_explanation, factor_frame

    from tests.ui.conftest import EXPLANATION

    table = factor_frame(EXPLANATION)
    assert table["contribution"].tolist() == [0.41, 0.2, -0.01]
    assert table["value"].tolist() == ["2", "Emergency Room", "missing"]
    assert factor_frame(None).empty
    assert "log-odds" in describe_explanation(EXPLANATION)
    assert "expired" in describe_explanation({**EXPLANATION, "note": "the encounter expired"})
    assert describe_explanation(None) == ""


def test_global_importance_is_tabled_most_important_first_and_checked() -> None:
    from ui_logic import ApiError, importance_frame

    from tests.ui.conftest import IMPORTANCE

    table = importance_frame(IMPORTANCE, top=2)
    assert table["feature"].tolist() == ["number_inpatient", "discharge_disposition_id_code"]
    with pytest.raises(ApiError, match="no list of features"):
        importance_frame({"features": None})
