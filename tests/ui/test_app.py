"""The Streamlit app run by `streamlit.testing.v1.AppTest` against the stub API (real
HTTP): every page renders, the form predicts, the CSV comes back with predictions, and a
failing API is a readable message, never an exception."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from readmission import synthetic
from tests.ui.conftest import APP_PATH, NO_MODEL, UNEXPLAINABLE, StubApi

PAGES = ("views/predict.py", "views/batch.py", "views/decision.py", "views/registry.py")


def open_page(page: str = PAGES[0]) -> AppTest:
    """The app run once, on `page`."""
    app = AppTest.from_file(APP_PATH, default_timeout=30).run()
    if page != PAGES[0]:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def submit_form(app: AppTest) -> AppTest:
    app.button(key="predict_submit").click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def messages(app: AppTest) -> str:
    """Every error and warning shown, as one text."""
    return "\n".join(m.value for m in [*app.error, *app.warning])


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(stub_api: StubApi, page: str) -> None:
    app = open_page(page)
    assert not app.error
    assert app.title[0].value


def test_the_form_starts_from_a_typical_patient(stub_api: StubApi) -> None:
    app = open_page()
    assert app.selectbox(key="form_age").value == "[70-80)"
    assert app.selectbox(key="form_admission_source_id").value == "7 - Emergency Room"
    assert app.number_input(key="form_num_lab_procedures").value == 44
    assert app.text_input(key="form_diag_1").value == "428"
    assert app.selectbox(key="form_insulin").value == "No"
    assert app.number_input(key="form_patient_nbr").value is None
    assert app.number_input(key="form_encounter_id").value is None


def test_submitting_the_form_shows_the_class_the_risk_and_the_model_version(
    stub_api: StubApi,
) -> None:
    app = open_page()
    app.number_input(key="form_time_in_hospital").set_value(5)
    app.selectbox(key="form_admission_type_id").set_value("3 - Elective")
    app.selectbox(key="form_race").set_value("(missing / unknown)")
    app.text_input(key="form_diag_2").set_value("250.83")
    app.selectbox(key="form_insulin").set_value("Up")
    app.number_input(key="form_patient_nbr").set_value(8222157)
    app.number_input(key="form_encounter_id").set_value(2278392)
    submit_form(app)

    metrics = {m.label: m.value for m in app.metric}
    assert any(m.value == "### :red[Readmitted within 30 days (<30)]" for m in app.markdown)
    assert metrics["30-day readmission risk"] == "16.0%"
    assert metrics["Model version"] == "v3"
    assert any("diabetes-readmission v3 (production)" in c.value for c in app.caption)
    assert not app.error

    (body,) = stub_api.predict_bodies
    assert body["time_in_hospital"] == 5
    assert body["admission_type_id"] == 3
    assert body["race"] is None
    assert body["diag_2"] == "250.83"
    assert body["insulin"] == "Up"
    assert body["patient_nbr"] == 8222157
    assert body["encounter_id"] == 2278392
    assert any("earlier encounter" in c.value for c in app.caption)
    assert body["A1Cresult"] == "None"


def test_the_prediction_shows_the_patients_top_factors_and_the_global_importance(
    stub_api: StubApi,
) -> None:
    app = submit_form(open_page())
    assert stub_api.predict_queries == ["explain=true"]
    assert any(s.value == "Why this patient" for s in app.subheader)
    factors = app.dataframe[0].value
    assert factors["feature"].tolist() == [
        "number_inpatient",
        "admission_source_id_code",
        "race",
    ]
    assert factors["value"].tolist() == ["2", "Emergency Room", "missing"]
    assert factors["direction"].tolist() == ["raises the risk"] * 2 + ["lowers the risk"]
    assert any("from the average patient's -2.200" in c.value for c in app.caption)
    assert any("over 2,000 encounters of the validation split" in c.value for c in app.caption)
    assert len(app.get("vega_lite_chart")) == 3  # probabilities, factors, importance
    assert stub_api.calls("/model/importance") == 1
    assert not app.error


def test_a_model_that_cannot_be_explained_still_predicts_and_says_why(stub_api: StubApi) -> None:
    stub_api.mode = "unexplainable"
    app = submit_form(open_page())
    assert stub_api.predict_queries == ["explain=true", ""]
    assert {m.label: m.value for m in app.metric}["30-day readmission risk"] == "16.0%"
    assert UNEXPLAINABLE in app.info[0].value
    assert any("Global importance unavailable" in c.value for c in app.caption)
    assert not any(s.value == "Why this patient" for s in app.subheader)
    assert not app.error


def test_the_prediction_stays_on_the_page_after_another_interaction(stub_api: StubApi) -> None:
    app = submit_form(open_page())
    app.number_input(key="form_num_procedures").set_value(2).run()
    assert {m.label: m.value for m in app.metric}["Model version"] == "v3"
    assert len(stub_api.predict_bodies) == 1


def test_an_api_that_is_down_shows_a_readable_error(api_down: str) -> None:
    app = submit_form(open_page())
    assert f"Cannot reach the inference API at {api_down}" in messages(app)
    assert not app.metric


def test_an_api_without_a_model_shows_a_warning(stub_api: StubApi) -> None:
    stub_api.mode = "no_model"
    app = submit_form(open_page())
    assert app.warning[0].value == f"The inference API is not ready: {NO_MODEL}"
    assert not app.error


def test_refused_values_are_listed(stub_api: StubApi) -> None:
    stub_api.mode = "invalid"
    app = submit_form(open_page())
    assert "num_lab_procedures: must be <= 300 (got 999)" in messages(app)


def test_a_slow_api_times_out_with_a_message(
    stub_api: StubApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TIMEOUT_SECONDS", "0.3")
    stub_api.mode = "slow"
    stub_api.slow_seconds = 1.0
    app = submit_form(open_page())
    assert "did not answer within 0.3 s" in messages(app)


def upload(app: AppTest, data: bytes, name: str = "encounters.csv") -> AppTest:
    app.file_uploader(key="batch_upload").set_value((name, data, "text/csv")).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def csv_of(rows: int) -> bytes:
    return synthetic.encounters(rows, seed=3).to_csv(index=False).encode()


def test_a_csv_is_predicted_in_chunks_and_offered_with_predictions(stub_api: StubApi) -> None:
    app = upload(open_page("views/batch.py"), csv_of(2_500))
    assert any("2,500 rows, 50 columns" in m.value for m in app.markdown)
    app.button(key="batch_predict").click().run()
    assert not app.exception
    assert not app.error

    assert stub_api.batch_sizes == [1_000, 1_000, 500]
    assert "2,500 encounters predicted by model version 3" in app.success[0].value
    download = app.get("download_button")[0]
    assert download.proto.label == "Download the CSV with predictions"
    previews = [pd.DataFrame(d.value) for d in app.dataframe]
    assert "probability_<30" in previews[-1].columns


def test_a_file_that_is_not_a_csv_of_encounters_is_explained(stub_api: StubApi) -> None:
    app = upload(open_page("views/batch.py"), b"name,score\nann,3\n", "scores.csv")
    assert "scores.csv: No column of the file is a UCI column" in app.error[0].value
    app = upload(open_page("views/batch.py"), b"race,age\n", "header.csv")
    assert "a header but no rows" in app.error[0].value
    assert stub_api.batch_sizes == []


def test_a_refused_batch_names_the_row_and_offers_no_download(stub_api: StubApi) -> None:
    frame = synthetic.encounters(1_200, seed=3)
    frame.loc[1_004, "num_lab_procedures"] = "999"
    app = upload(open_page("views/batch.py"), frame.to_csv(index=False).encode())
    app.button(key="batch_predict").click().run()
    assert not app.exception
    assert "row 1005, num_lab_procedures: must be <= 300 (got 999)" in messages(app)
    assert not app.get("download_button")
    assert stub_api.batch_sizes == [1_000, 200]


def test_a_batch_without_a_model_is_a_warning(stub_api: StubApi) -> None:
    stub_api.mode = "no_model"
    app = upload(open_page("views/batch.py"), csv_of(3))
    app.button(key="batch_predict").click().run()
    assert not app.exception
    assert "The inference API is not ready" in app.warning[0].value


def test_the_registry_lists_versions_with_scores_and_links_to_mlflow(stub_api: StubApi) -> None:
    app = open_page("views/registry.py")
    assert not app.error
    assert any("diabetes-readmission v3 (hist_gradient_boosting)" in m.value for m in app.markdown)
    assert {m.label: m.value for m in app.metric}["valid macro-F1"] == "0.480"
    table = app.dataframe[0].value
    assert table["version"].tolist() == ["3", "2", "1"]
    assert table["production"].tolist() == [True, False, False]
    assert table["decision"].tolist() == ["promoted", "rejected", "promoted"]
    link = app.get("link_button")[0]
    assert link.proto.url == "http://mlflow.test:5000/#/models/diabetes-readmission"


def test_the_registry_page_shows_every_promotion_and_rollback(stub_api: StubApi) -> None:
    app = open_page("views/registry.py")
    assert not app.error
    history = app.dataframe[1].value
    assert history.columns.tolist() == ["when", "action", "from", "to", "reason", "by"]
    assert history["action"].tolist() == ["promote", "rollback", "promote"]
    assert history[["from", "to"]].values.tolist() == [["v1", "v3"], ["v2", "v1"], ["none", "v1"]]
    assert history["reason"][1] == "odd tiers on ward 4"
    assert any("readmission rollback" in c.value for c in app.caption)


def test_the_registry_page_warns_when_the_api_lost_the_registry(stub_api: StubApi) -> None:
    stub_api.mode = "registry_down"
    app = open_page("views/registry.py")
    assert "cannot reach the model registry" in app.warning[0].value
    assert app.dataframe


def test_the_registry_page_explains_an_unreachable_registry(stub_api: StubApi) -> None:
    stub_api.mode = "no_model"
    app = open_page("views/registry.py")
    text = messages(app)
    assert NO_MODEL in text
    assert "model registry unreachable: connection refused" in text
    assert not app.dataframe


def test_the_registry_page_with_the_api_down(api_down: str) -> None:
    app = open_page("views/registry.py")
    assert "Cannot reach the inference API" in app.error[0].value


def test_the_registry_answers_are_reused_for_a_while_and_refresh_asks_again(
    stub_api: StubApi,
) -> None:
    app = open_page("views/registry.py")
    app.run()  # another render within REGISTRY_TTL_SECONDS: the answers are reused
    assert not app.exception
    assert (stub_api.calls("/model"), stub_api.calls("/model/versions")) == (1, 1)
    assert app.dataframe[0].value["version"].tolist() == ["3", "2", "1"]

    app.button(key="registry_refresh").click().run()
    assert (stub_api.calls("/model"), stub_api.calls("/model/versions")) == (2, 2)


def test_a_failed_registry_call_is_asked_again_at_the_next_render(stub_api: StubApi) -> None:
    stub_api.mode = "no_model"
    app = open_page("views/registry.py")
    app.run()
    assert stub_api.calls("/model/versions") == 2
    stub_api.mode = "ok"
    app.run()
    assert stub_api.calls("/model/versions") == 3
    assert app.dataframe


def test_every_page_and_render_uses_one_client_and_its_kept_alive_connection(
    stub_api: StubApi,
) -> None:
    app = open_page("views/registry.py")
    app.button(key="registry_refresh").click().run()
    app.switch_page("views/predict.py").run()
    submit_form(app)
    paths = [path for path, _port in stub_api.requests]
    assert (paths.count("/model"), paths.count("/predict")) == (2, 1), paths
    assert len({port for _path, port in stub_api.requests}) == 1, stub_api.requests


def test_the_prediction_shows_its_risk_tier_and_where_it_starts(stub_api: StubApi) -> None:
    app = submit_form(open_page())
    shown = "\n".join(m.value for m in app.markdown)
    assert "Risk tier: medium (risk from 14.0% to below 21.0%" in shown


def test_the_decision_page_shows_the_operating_points_calibration_and_card(
    stub_api: StubApi,
) -> None:
    app = open_page("views/decision.py")
    assert not app.error
    assert not app.warning
    table = app.dataframe[0].value
    assert list(table["flag top"]) == ["5 %", "10 %", "20 %", "30 %"]
    # each figure with its interval: "12.3% (10.1%-14.5%)"
    assert all("(" in cell and "-" in cell for cell in table["sensitivity"])
    titles = [m.label for m in app.metric]
    assert "Brier score (test)" in titles
    text = "\n".join(m.value for m in app.markdown)
    assert "# Model card: diabetes-readmission v3" in text
    assert "## Operating points" in text
    assert (stub_api.calls("/model/operating-points"), stub_api.calls("/model/card")) == (1, 1)


def test_the_decision_page_without_a_model_is_a_warning(stub_api: StubApi) -> None:
    stub_api.mode = "no_model"
    app = open_page("views/decision.py")
    assert "no model loaded" in messages(app)
