"""The protocols clients already speak, over HTTP against the served model: MLflow's scoring
server (`POST /invocations`, each of its four JSON formats and CSV, and MLflow's own client)
and the Open Inference Protocol (KServe V2). Each answers what /predict/batch answers, and
refuses what /predict refuses, in the protocol's error shape."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from readmission import schema
from readmission.api.schemas import EXAMPLE
from readmission.registry import MODEL_NAME
from tests.support.served import client_records

pytestmark = pytest.mark.slow
CLASSES = ["<30", ">30", "NO"]  # the model's classes_, scikit-learn's sorted order


def _records(n: int, seed: int = 11) -> list[dict]:
    """Synthetic encounters as a client sends them, one patient each (no shared history)."""
    return client_records(n, seed, first_patient=2 * 10**9)


@pytest.fixture(scope="module")
def batch(world) -> tuple[list[dict], list[dict]]:
    """Encounters and what /predict/batch answers for them."""
    records = _records(12)
    answer = world.client.post("/predict/batch", json={"encounters": records})
    assert answer.status_code == 200, answer.text
    return records, answer.json()["predictions"]


def _columns(records: list[dict]) -> dict[str, list]:
    return {name: [r[name] for r in records] for name in records[0]}


def _split(records: list[dict]) -> dict:
    frame = pd.DataFrame(records)
    return {"columns": list(frame.columns), "data": [list(r.values()) for r in records]}


# --- MLflow's scoring server ------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        "dataframe_split",
        "dataframe_records",
        "instances",
        "instances-columns",
        "inputs",
        "inputs-columns",
    ],
)
def test_every_mlflow_format_answers_what_predict_batch_answers(world, batch, shape):
    records, expected = batch
    name, _, layout = shape.partition("-")
    if name == "dataframe_split":
        data = _split(records)
    else:
        data = _columns(records) if layout == "columns" else records
    answer = world.client.post("/invocations", json={name: data})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["predictions"] == [e["prediction"] for e in expected]
    assert body["model"] == {"name": MODEL_NAME, "version": "1", "alias": "production"}

    probabilities = world.client.post(
        "/invocations", json={name: data, "params": {"predict_fn": "predict_proba"}}
    )
    assert probabilities.status_code == 200, probabilities.text
    rows = probabilities.json()["predictions"]
    assert rows == [[e["probabilities"][c] for c in CLASSES] for e in expected]


def test_mlflows_own_client_and_its_pandas_frames_are_answered(world, batch):
    """`ScoringServerClient` is what MLflow's tooling uses to talk to `mlflow models serve`:
    it pings /ping, then sends a frame as dataframe_split (NaN for a missing number)."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    records, expected = batch[0], list(batch[1])
    frame = pd.DataFrame(records)
    frame.loc[0, "encounter_id"] = None  # a float column with NaN, as pandas has it
    frame.loc[1, "race"] = None
    host, port = world.url.removeprefix("http://").rsplit(":", 1)
    client = ScoringServerClient(host, port)
    client.wait_server_ready(timeout=10)
    answer = client.invoke(frame)
    labels = answer.get_predictions()[0].tolist()
    del labels[1], expected[1]  # without its race, encounter 1 may be scored differently
    assert labels == [e["prediction"] for e in expected]
    probabilities = client.invoke(frame, params={"predict_fn": "predict_proba"})
    rows = probabilities.get_predictions(predictions_format="ndarray")
    assert rows.shape == (len(records), 3)
    assert rows.sum(axis=1) == pytest.approx([1.0] * len(records), abs=1e-5)


def test_the_serving_input_mlflow_writes_for_an_input_example_is_answered(world, batch):
    """MLflow stores `serving_input_example.json` with every logged model: the same body,
    from the same helper, is a request this API answers."""
    from mlflow.models.utils import convert_input_example_to_serving_input

    records, expected = batch
    body = convert_input_example_to_serving_input(pd.DataFrame(records[:3]))
    answer = world.client.post(
        "/invocations", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [e["prediction"] for e in expected[:3]]


def test_csv_as_pandas_writes_it_is_answered(world, batch):
    records, expected = batch
    frame = pd.DataFrame(records)
    frame.loc[0, "encounter_id"] = None  # written as 10471.0 ... and an empty cell
    for with_index in (False, True):
        answer = world.client.post(
            "/invocations",
            content=frame.to_csv(index=with_index),
            headers={"content-type": "text/csv"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [e["prediction"] for e in expected]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (
            {"dataframe_records": [{**EXAMPLE, "race": "Martian"}]},
            "dataframe_records.0.race",
            "must be one of",
        ),
        ({"dataframe_records": [{**EXAMPLE, "age": None}]}, "dataframe_records.0.age", "required"),
        (
            {"inputs": {"gender": ["Female", "Male"], "age": ["[70-80)"]}},
            "inputs",
            "one value per row",
        ),
        (
            {"dataframe_split": {"columns": ["race"], "data": [["Asian", "x"]]}},
            "dataframe_split.data.0",
            "2 values for 1 columns",
        ),
        ({"instances": [EXAMPLE], "inputs": [EXAMPLE]}, "body", "exactly one of"),
        ({"records": [EXAMPLE]}, "body", "exactly one of"),
        ({"dataframe_records": []}, "dataframe_records", "at least 1"),
        (
            {"dataframe_records": [EXAMPLE], "params": {"predict_fn": "explain"}},
            "params.predict_fn",
            "predict_proba",
        ),
    ],
)
def test_mlflow_refusals_name_the_field_in_mlflows_error_shape(world, body, field, reason):
    answer = world.client.post("/invocations", json=body)
    assert answer.status_code == 400, answer.text
    refused = answer.json()
    assert refused["error_code"] == "BAD_REQUEST"
    assert any(p["field"] == field and reason in p["reason"] for p in refused["detail"]), refused
    assert field in refused["message"]


def test_a_split_frame_names_the_column_of_a_bad_value(world):
    frame = pd.DataFrame([EXAMPLE, {**EXAMPLE, "num_lab_procedures": 999}])
    split = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    answer = world.client.post("/invocations", json={"dataframe_split": split})
    assert answer.status_code == 400
    fields = [p["field"] for p in answer.json()["detail"]]
    assert fields == ["dataframe_split.data.1.num_lab_procedures"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json; charset=latin-1", "application/parquet"]
)
def test_content_types_mlflow_refuses_are_415(world, content_type):
    answer = world.client.post(
        "/invocations", content=b'{"dataframe_records": []}', headers={"content-type": content_type}
    )
    assert answer.status_code == 415, answer.text
    assert answer.json()["error_code"] == "BAD_REQUEST"


def test_the_mlflow_batch_limit_is_the_apis(world):
    limit = world.settings.api.max_batch
    too_many = world.client.post(
        "/invocations", json={"dataframe_records": [EXAMPLE] * (limit + 1)}
    )
    assert too_many.status_code == 400
    assert str(limit) in too_many.json()["message"]
    columns = _columns([EXAMPLE] * (limit + 1))
    assert world.client.post("/invocations", json={"inputs": columns}).status_code == 400


def test_nan_is_a_missing_value_and_infinity_is_refused(world):
    """pandas writes a missing number as NaN (not JSON, but what json.dumps writes)."""

    def post(value: float | None):
        body = json.dumps({"dataframe_records": [{**EXAMPLE, "num_procedures": value}]})
        headers = {"content-type": "application/json"}
        return world.client.post("/invocations", content=body, headers=headers)

    assert post(float("nan")).json() == post(None).json()
    infinite = post(float("inf"))
    assert infinite.status_code == 400
    assert infinite.json()["detail"][0]["field"] == "dataframe_records.0.num_procedures"


# --- the Open Inference Protocol (KServe V2) ----------------------------------------------

INFER = f"/v2/models/{MODEL_NAME}/infer"


def _tensors(records: list[dict], nested: bool = False) -> list[dict]:
    """One tensor per column, as clients build them from a frame: INT64 for integers,
    FP64 for a numeric column with gaps (NaN), BYTES for text."""
    inputs = []
    for name, values in _columns(records).items():
        numeric = [v for v in values if v is not None]
        if all(isinstance(v, int) for v in numeric) and len(numeric) == len(values):
            datatype = "INT64"
        elif all(isinstance(v, int | float) for v in numeric) and numeric:
            datatype, values = "FP64", [float("nan") if v is None else float(v) for v in values]
        else:
            datatype = "BYTES"
        shape = [len(values), 1] if nested else [len(values)]
        data = [[v] for v in values] if nested else values
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": data})
    return inputs


def test_v2_inference_answers_what_predict_batch_answers(world, batch):
    records, expected = batch
    answer = world.client.post(INFER, json={"id": "42", "inputs": _tensors(records)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL_NAME, "1", "42")
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["predict", "predict_proba"]
    n = len(records)
    assert outputs["predict"] == {
        "name": "predict",
        "shape": [n],
        "datatype": "BYTES",
        "data": [e["prediction"] for e in expected],
    }
    proba = outputs["predict_proba"]
    assert (proba["shape"], proba["datatype"]) == ([n, 3], "FP64")
    assert proba["data"] == [e["probabilities"][c] for e in expected for c in CLASSES]


def test_v2_accepts_n_by_1_tensors_float_integers_with_gaps_and_picks_outputs(world, batch):
    records, expected = batch
    records = [
        {**r, "encounter_id": None if i == 0 else r["encounter_id"]} for i, r in enumerate(records)
    ]
    inputs = _tensors(records, nested=True)
    assert {i["name"]: i["datatype"] for i in inputs}["encounter_id"] == "FP64"
    body = {"inputs": inputs, "outputs": [{"name": "predict_proba"}]}
    answer = world.client.post(  # NaN: not JSON, but what json.dumps writes for pandas' gaps
        f"/v2/models/{MODEL_NAME}/versions/1/infer",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    [proba] = answer.json()["outputs"]
    assert proba["name"] == "predict_proba"
    assert proba["data"] == [e["probabilities"][c] for e in expected for c in CLASSES]
    assert answer.json()["id"]  # a new one when the request has none


def test_v2_health_and_metadata(world):
    client = world.client
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{MODEL_NAME}/ready").json() == {
        "name": MODEL_NAME,
        "ready": True,
    }
    assert client.get(f"/v2/models/{MODEL_NAME}/versions/1/ready").status_code == 200
    server = client.get("/v2").json()
    assert server["name"]
    assert server["version"]
    assert server["extensions"] == []
    metadata = client.get(f"/v2/models/{MODEL_NAME}").json()
    assert metadata == client.get(f"/v2/models/{MODEL_NAME}/versions/1").json()
    assert (metadata["name"], metadata["versions"], metadata["platform"]) == (
        MODEL_NAME,
        ["1"],
        "sklearn",
    )
    inputs = {i["name"]: i for i in metadata["inputs"]}
    assert set(inputs) == {c.name for c in schema.COLUMNS if c.name != "readmitted"}
    assert inputs["num_medications"]["datatype"] == "INT64"
    assert inputs["A1Cresult"]["datatype"] == "BYTES"
    required = {name for name, i in inputs.items() if i["parameters"]["required"]}
    assert required == {schema.BY_KEY[k].name for k in schema.REQUIRED_IN_REQUEST}
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("predict", "BYTES", [-1]),
        ("predict_proba", "FP64", [-1, 3]),
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/resnet50",
        "/v2/models/resnet50/ready",
        f"/v2/models/{MODEL_NAME}/versions/7",
        f"/v2/models/{MODEL_NAME}/versions/7/ready",
    ],
)
def test_v2_a_model_or_version_not_served_is_404_in_the_protocols_shape(world, path):
    answer = world.client.get(path)
    assert answer.status_code == 404, answer.text
    assert "not served" in answer.json()["error"]
    infer_path = f"{path.removesuffix('/ready')}/infer"
    infer = world.client.post(infer_path, json={"inputs": _tensors([EXAMPLE])})
    assert infer.status_code == 404, infer.text
    assert "not served" in infer.json()["error"]


def _one(name: str, values: list, datatype: str = "BYTES", shape: list | None = None) -> dict:
    return {"name": name, "shape": shape or [len(values)], "datatype": datatype, "data": values}


def _replaced(inputs: list[dict], *tensors: dict) -> list[dict]:
    names = {t["name"] for t in tensors}
    return [i for i in inputs if i["name"] not in names] + list(tensors)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            lambda t: _replaced(t, _one("race", ["Asian", "Martian"])),
            "inputs.race.data.1",
            "must be one of",
        ),
        (
            lambda t: _replaced(t, _one("gender", ["Female", None])),
            "inputs.gender.data.1",
            "required",
        ),
        (lambda t: [i for i in t if i["name"] != "age"], "inputs", "age"),
        (
            lambda t: _replaced(t, _one("num_medications", [3, 4], "BYTES")),
            "inputs.48.datatype",
            "integer column",
        ),
        (
            lambda t: _replaced(t, _one("num_medications", [3.5, 4], "FP64")),
            "inputs.num_medications.data.0",
            "fractional",
        ),
        (
            lambda t: _replaced(t, _one("num_medications", ["3", 4], "INT64")),
            "inputs.48.data.0",
            "numbers or null",
        ),
        (lambda t: _replaced(t, _one("race", ["Asian"])), "inputs", "one value per row"),
        (
            lambda t: _replaced(t, _one("race", ["Asian", "Asian"], shape=[2, 2])),
            "inputs.48.shape",
            "[n, 1]",
        ),
        (
            lambda t: _replaced(t, _one("race", ["Asian", "Asian"], shape=[3])),
            "inputs.48.data",
            "2 values for the shape [3]",
        ),
        (lambda t: [*t, _one("shoe_size", [43, 44], "INT64")], "inputs.49.name", "unknown input"),
        (lambda t: [*t, _one("readmitted", ["NO", "NO"])], "inputs.49.name", "unknown input"),
    ],
)
def test_v2_refusals_name_the_input_and_row(world, change, field, reason):
    inputs = change(_tensors([EXAMPLE, EXAMPLE]))
    answer = world.client.post(INFER, json={"inputs": inputs})
    assert answer.status_code == 400, answer.text
    refused = answer.json()
    assert any(p["field"] == field and reason in p["reason"] for p in refused["detail"]), refused
    assert field in refused["error"]


def test_v2_unknown_outputs_and_envelopes_are_refused(world):
    inputs = _tensors([EXAMPLE])
    for body, field in [
        ({"inputs": inputs, "outputs": [{"name": "explain"}]}, "outputs.0.name"),
        ({"inputs": inputs, "id": 42}, "id"),
        ({"inputs": inputs, "extra": 1}, "extra"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [{**inputs[0], "datatype": "FLOAT"}]}, "inputs.0.datatype"),
    ]:
        answer = world.client.post(INFER, json=body)
        assert answer.status_code == 400, answer.text
        assert [p["field"] for p in answer.json()["detail"]][:1] == [field], answer.text


def test_the_v2_batch_limit_is_the_apis(world):
    limit = world.settings.api.max_batch
    answer = world.client.post(INFER, json={"inputs": _tensors([EXAMPLE] * (limit + 1))})
    assert answer.status_code == 400
    assert f"at most {limit:,}" in answer.json()["error"]
    assert world.client.post(INFER, json={"inputs": _tensors([EXAMPLE] * limit)}).status_code == 200


def test_v2_requests_as_triton_and_mlserver_clients_build_them(world, batch):
    """Checked by hand against tritonclient.http 2.73 (`binary_data=False`) and MLServer
    1.7's PandasCodec, which this project does not depend on: tritonclient sends no JSON
    Content-Type, and asks for outputs with parameters; MLServer marks the request and each
    input with a `content_type`, and shapes every column [n, 1]."""
    records, expected = batch
    inputs = [
        {**tensor, "parameters": {"content_type": "str" if tensor["datatype"] == "BYTES" else "np"}}
        for tensor in _tensors(records, nested=True)
    ]
    outputs = [{"name": "predict", "parameters": {"binary_data": False}}]
    body = {"inputs": inputs, "parameters": {"content_type": "pd"}, "outputs": outputs}
    answer = world.client.post(INFER, content=json.dumps(body).encode())
    assert "content-type" not in answer.request.headers
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [e["prediction"] for e in expected]


def test_v2_binary_tensors_are_refused_with_how_to_send_json(world):
    answer = world.client.post(
        INFER,
        content=b'{"inputs": []}\x00\x01',
        headers={"Inference-Header-Content-Length": "14"},
    )
    assert answer.status_code == 400
    assert "binary_data=False" in answer.json()["error"]


def test_the_docs_protocol_curl_examples_are_answered(world):
    """Every `curl -X POST .../invocations` and `.../v2/...` example of the README and docs/
    is a request the API answers."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = "".join(p.read_text() for p in (root / "README.md", *sorted(root.glob("docs/*.md"))))
    pattern = (
        r"curl -s -X POST http://127\.0\.0\.1:8989(/invocations|/v2/\S+)\s*(?:\\\s*)?"
        r"(?:-H 'Content-Type: application/json' \\\s*)?-d '(\{.*?\})'"
    )
    examples = re.findall(pattern, text, flags=re.S)
    assert sum(path == "/invocations" for path, _ in examples) >= 2, examples
    assert sum(path.startswith("/v2/") for path, _ in examples) >= 1, examples
    for path, body in examples:
        answer = world.client.post(path, json=json.loads(body))
        assert answer.status_code == 200, (path, answer.text)
