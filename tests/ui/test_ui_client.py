"""The app's HTTP client (`streamlit/ui_client.py`): each endpoint against the stub API,
and every kind of failure turned into an ApiError."""

from __future__ import annotations

import httpx
import pytest
from ui_client import ApiClient
from ui_logic import ApiError, UiSettings

from tests.ui.conftest import StubApi


def client_for(url: str, timeout: float = 5.0) -> ApiClient:
    return ApiClient(UiSettings(api_url=url, timeout_seconds=timeout))


def test_each_endpoint_answers_as_the_contract_says(stub_api: StubApi) -> None:
    client = client_for(stub_api.url)
    assert client.ready().version == "3"
    result = client.predict({"race": "Caucasian"})
    assert (result.prediction.predicted_class, result.model.version) == ("<30", "3")
    predictions, model = client.predict_batch([{"race": None}] * 4)
    assert [p.predicted_class for p in predictions] == ["NO", ">30", "<30", "NO"]
    assert model.alias == "production"
    assert client.model()["version"] == "3"
    assert [v["version"] for v in client.model_versions()] == ["3", "2", "1"]


def test_nothing_listening_is_unreachable(api_down: str) -> None:
    with pytest.raises(ApiError) as caught:
        client_for(api_down).model()
    assert caught.value.kind == "unreachable"


def test_a_slow_answer_is_a_timeout(stub_api: StubApi) -> None:
    stub_api.mode, stub_api.slow_seconds = "slow", 1.0
    with pytest.raises(ApiError) as caught:
        client_for(stub_api.url, timeout=0.2).predict({})
    assert caught.value.kind == "timeout"


@pytest.mark.parametrize(
    ("mode", "kind", "status"),
    [("invalid", "invalid", 422), ("no_model", "unavailable", 503), ("broken", "server", 500)],
)
def test_error_answers_keep_their_status_and_kind(
    stub_api: StubApi, mode: str, kind: str, status: int
) -> None:
    stub_api.mode = mode
    with pytest.raises(ApiError) as caught:
        client_for(stub_api.url).predict({})
    assert (caught.value.kind, caught.value.status_code) == (kind, status)


def test_a_refused_batch_names_rows_of_the_file(stub_api: StubApi) -> None:
    encounters = [{"num_lab_procedures": 10}, {"num_lab_procedures": 301}]
    with pytest.raises(ApiError) as caught:
        client_for(stub_api.url).predict_batch(encounters, row_offset=2_000)
    assert caught.value.problems == ("row 2002, num_lab_procedures: must be <= 300 (got 301)",)


def mocked(handler) -> ApiClient:
    return ApiClient(UiSettings(), transport=httpx.MockTransport(handler))


def test_an_answer_that_is_not_json_is_reported() -> None:
    client = mocked(lambda _request: httpx.Response(200, text="<html>MLflow</html>"))
    with pytest.raises(ApiError, match=r"not JSON .*Does API_URL point at the inference API"):
        client.model()


def test_an_error_page_that_is_not_json_keeps_its_text() -> None:
    client = mocked(lambda _request: httpx.Response(502, text="Bad Gateway"))
    with pytest.raises(ApiError, match=r"HTTP 502\): Bad Gateway"):
        client.model()


def test_a_version_list_off_the_contract_is_reported() -> None:
    client = mocked(lambda _request: httpx.Response(200, json={"versions": "3"}))
    with pytest.raises(ApiError, match="without a list"):
        client.model_versions()
