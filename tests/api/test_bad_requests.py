"""A corpus of hand-written hostile requests against the API over HTTP, with a trained model.

tests/api/test_api.py covers the plain refusals (a bad value per kind of field, an empty
body, text/plain, one NaN, a batch of 1,001, a body whose Content-Length is over the limit);
this table covers the rest: wrong types, megabyte strings and keys, bodies streamed past the
limit, 100,000 levels of nesting, unicode (RTL, emoji, NUL, lone surrogates), NaN and the
infinities, absurd counts, duplicated keys, content types and encodings, null and non-object
bodies. Each must be a 4xx whose body names the field and the reason, with no stack trace or
internal path, and a valid request right after must be answered 200. At the end the process
is alive and its resident memory has not run away.

Decisions the table records:
- Duplicated keys are refused (422 `invalid JSON: the key 'race' appears twice`): JSON
  parsers disagree on which value wins, so a gateway that checked the first could pass the
  last.
- Category values are exact (`Caucasian`, not `caucasian`), as the OpenAPI enum says; only
  `null`, `"?"` and `""` mean missing.
- A compressed body (Content-Encoding: gzip) is refused, not inflated; a body must be UTF-8
  (RFC 8259), where Python's parser would guess UTF-16 from a BOM.
- NaN, Infinity and 1e309 parse (Python's JSON accepts them) and are refused by the field.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time

import psutil
import pytest

from readmission.api.schemas import EXAMPLE

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
LEAKS = ("Traceback", 'File "', "/work/", "site-packages", ".py", "readmission.")
MB = 1_000_000
RSS_GROWTH_LIMIT = 300 * MB  # megabyte bodies are parsed: transient, never kept


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def case(
    name: str,
    body: bytes,
    expected: str,
    *,
    path: str = "/predict",
    status: int = 422,
    headers: dict | None = None,
):
    """One hostile request: `expected` is "field | reason", a problem naming that field (or a
    field below it) with a reason containing that text; for a 413, the message's text."""
    field, _, reason = expected.rpartition(" | ")
    return pytest.param(
        path, body, JSON if headers is None else headers, status, field or None, reason, id=name
    )


CASES = [
    # wrong types
    case("int-as-string", _json({"num_medications": "12"}), "num_medications | valid integer"),
    case("int-as-list", _json({"num_medications": [12]}), "num_medications | integer"),
    case("category-as-object", _json({"race": {"name": "Asian"}}), "race | must be a string"),
    case("code-as-float", _json({"admission_type_id": 1.5}), "admission_type_id | fractional"),
    case("id-as-bool", _json({**EXAMPLE, "encounter_id": False}), "encounter_id | not a boolean"),
    case("wrong-case-category", _json({"race": "caucasian"}), "race | must be one of"),
    case("padded-category", _json({"gender": " Female "}), "gender | must be one of"),
    case("lower-case-diagnosis", _json({"diag_1": "v57"}), "diag_1 | ICD-9-CM"),
    case("diagnosis-out-of-range", _json({"diag_2": "V99"}), "diag_2 | ICD-9-CM"),
    case(
        "batch-not-a-list",
        _json({"encounters": "many"}),
        "encounters | valid list",
        path="/predict/batch",
    ),
    case(
        "batch-null", _json({"encounters": None}), "encounters | valid list", path="/predict/batch"
    ),
    case(
        "batch-item-array",
        _json({"encounters": [[1, 2]]}),
        "encounters.0 | must be a JSON object",
        path="/predict/batch",
    ),
    case(
        "batch-extra-key",
        _json({"encounters": [{}], "limit": 5}),
        "limit | unknown field",
        path="/predict/batch",
    ),
    # huge strings and bodies
    case("3-mb-string", _json({"diag_1": "4" * 3 * MB}), "diag_1 | at most 64"),
    case("1-mb-unknown-key", _json({"k" * MB: 1}), "kkkkkkkkkk | unknown field"),
    case("body-over-limit-declared", b"{" + b" " * 5 * MB + b"}", "larger than", status=413),
    # deep nesting: must not crash the parser nor the process
    case("nested-100k-body", _nested(100_000), "body | nested too deeply"),
    case("nested-100k-field", b'{"race": ' + _nested(100_000) + b"}", "body | nested too deeply"),
    case(
        "nested-100k-objects",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "body | nested too deeply",
    ),
    case("nested-300-field", b'{"race": ' + _nested(300) + b"}", "race | must be a string"),
    # unicode
    case("rtl-override", _json({"race": "\u202eCaucasian"}), "race | must be one of"),
    case("emoji", _json({"race": "\U0001f984"}), "race | must be one of"),
    case("emoji-key", _json({"\U0001f984": 1}), "\U0001f984 | unknown field"),
    case("nul-in-value", _json({"race": "Cauc\u0000asian"}), "race | must be one of"),
    case("nul-in-key", _json({"race\u0000": "Asian"}), "race\u0000 | unknown field"),
    case("lone-surrogate", b'{"race": "\\ud800"}', "race | valid Unicode"),
    case("lone-surrogate-key", b'{"\\udfff": 1}', "body | valid Unicode"),
    case("invalid-utf8", b'{"race": "\xff\xfe"}', "body | not UTF-8"),
    case("utf16-body", '{"race": "Asian"}'.encode("utf-16"), "body | not UTF-8"),
    case(
        "latin1-body",
        '{"race": "Caucasian", "payer_code": "é"}'.encode("latin-1"),
        "body | not UTF-8",
    ),
    # NaN and the infinities
    case("infinity", b'{"num_medications": Infinity}', "num_medications | finite number"),
    case("minus-infinity", b'{"number_inpatient": -Infinity}', "number_inpatient | finite number"),
    case("1e309", b'{"time_in_hospital": 1e309}', "time_in_hospital | finite number"),
    case("nan-in-category", b'{"race": NaN}', "race | must be a string"),
    case(
        "nan-in-batch",
        b'{"encounters": [{"num_procedures": NaN}]}',
        "encounters.0.num_procedures | finite number",
        path="/predict/batch",
    ),
    # negative and absurd counts
    case(
        "negative-count",
        _json({"number_emergency": -1}),
        "number_emergency | greater than or equal to 0",
    ),
    case(
        "absurd-count",
        _json({"number_inpatient": 10**30}),
        "number_inpatient | less than or equal to",
    ),
    case(
        "id-over-2-53",
        _json({**EXAMPLE, "patient_nbr": 2**64}),
        "patient_nbr | less than or equal to",
    ),
    case(
        "negative-id",
        _json({**EXAMPLE, "encounter_id": -5}),
        "encounter_id | greater than or equal to 0",
    ),
    # batches over the limit
    case(
        "batch-100k-empty",
        _json({"encounters": [{}] * 100_000}),
        "encounters | at most 1000",
        path="/predict/batch",
    ),
    case(
        "batch-empty", _json({"encounters": []}), "encounters | at least 1", path="/predict/batch"
    ),
    # duplicated keys: refused, whichever value would be valid
    case("duplicated-key", b'{"race": "Martian", "race": "Asian"}', "body | 'race' appears twice"),
    case(
        "duplicated-key-valid-both",
        b'{"age": "[70-80)", "age": "[70-80)"}',
        "body | 'age' appears twice",
    ),
    case(
        "duplicated-key-in-batch",
        b'{"encounters": [{"gender": "Male", "gender": "Female"}]}',
        "body | 'gender' appears twice",
        path="/predict/batch",
    ),
    case(
        "duplicated-spellings",
        _json({"A1Cresult": ">8", "a1cresult": "Norm"}),
        "a1cresult | unknown field",
    ),
    # content types and encodings
    case(
        "no-content-type",
        _json({"race": "Asian"}),
        "body | Content-Type: application/json",
        headers={},
    ),
    case(
        "form",
        b"race=Asian",
        "body | Content-Type: application/json",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    case(
        "multipart",
        b'--x\r\nContent-Disposition: form-data; name="race"\r\n\r\nAsian\r\n--x--\r\n',
        "body | Content-Type: application/json",
        headers={"content-type": "multipart/form-data; boundary=x"},
    ),
    case(
        "xml",
        b"<race>Asian</race>",
        "body | Content-Type: application/json",
        headers={"content-type": "application/xml"},
    ),
    case(
        "gzip-encoded",
        gzip.compress(_json(EXAMPLE)),
        "body | Content-Encoding gzip",
        headers={**JSON, "content-encoding": "gzip"},
    ),
    case(
        "gzip-bomb-encoded",
        gzip.compress(b"{" + b" " * 50 * MB + b"}"),
        "body | Content-Encoding gzip",
        headers={**JSON, "content-encoding": "gzip"},
    ),
    # empty, null and non-object bodies
    case("null-body", b"null", "body | a JSON object is required"),
    case("string-body", b'"Caucasian"', "body | must be a JSON object"),
    case("number-body", b"42", "body | must be a JSON object"),
    case("array-of-objects", _json([EXAMPLE]), "body | must be a JSON object"),
    case("batch-as-array", _json([EXAMPLE]), "body | must be a JSON object", path="/predict/batch"),
    case("whitespace-body", b"   \n ", "body | invalid JSON"),
    case("truncated-json", _json(EXAMPLE)[:-20], "body | invalid JSON"),
    case("trailing-garbage", _json(EXAMPLE) + b"}", "body | invalid JSON"),
]


@pytest.fixture(scope="module")
def memory(world):
    """The serving process's resident memory before the corpus (the API runs in this one)."""
    process = psutil.Process()
    world.client.post("/predict", json=EXAMPLE)  # warm
    return process, process.memory_info().rss


@pytest.mark.parametrize(("path", "body", "headers", "status", "field", "reason"), CASES)
def test_a_hostile_request_is_a_4xx_naming_the_problem(
    world, memory, path, body, headers, status, field, reason
):
    answer = world.client.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text[:500]
    assert len(answer.content) < 5_000  # nothing is echoed in full
    text = answer.text
    assert not any(leak in text for leak in LEAKS), text
    detail = answer.json()["detail"]
    if field is None:
        assert reason in detail
    else:
        assert any(p["field"].startswith(field) and reason in p["reason"] for p in detail), detail
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200


def test_a_body_streamed_past_the_limit_without_a_length_is_413(world):
    """Chunked: no Content-Length to refuse on, the limit is counted as the body arrives."""
    limit = world.settings.api.max_body_bytes

    def chunks():
        yield b'{"race": "'
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536
        yield b'"}'

    answer = world.client.post("/predict", content=chunks(), headers=JSON)
    assert answer.status_code == 413, answer.text[:300]
    assert f"larger than {limit:,} bytes" in answer.json()["detail"]
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200


def test_a_content_length_of_a_terabyte_is_413_before_reading(world):
    """A raw socket, since HTTP clients refuse to send a length they do not honour."""
    with socket.create_connection(("127.0.0.1", world.server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n{}"
        )
        head = sock.recv(65_536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "larger than" in head
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200


def test_a_body_just_under_the_limit_is_read(world):
    """The limit is the documented one, not lower: a valid batch near it is scored."""
    records = [EXAMPLE] * 1_000  # ~1.6 MB, under API_MAX_BODY_BYTES (4 MB)
    body = _json({"encounters": records})
    assert len(body) < world.settings.api.max_body_bytes
    answer = world.client.post("/predict/batch", content=body, headers=JSON)
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()["predictions"]) == 1_000


def test_an_internal_error_is_a_500_without_a_trace(world):
    """A model that breaks while predicting (its error names a file path): the client gets a
    generic 500, the trace goes to the log only, and the service goes on."""
    import dataclasses

    class BrokenModel:
        classes_ = ("<30", ">30", "NO")

        def predict_proba(self, frame):
            raise RuntimeError(f"broken model: cannot read {__file__}")

    store = world.server.server.config.app.state.services.store
    serving = store.current
    store.current = dataclasses.replace(serving, model=BrokenModel())
    # one keep-alive connection: the 500 must not close it under the client's next request
    connection = http.client.HTTPConnection("127.0.0.1", world.server.port, timeout=30)
    body, headers = _json(EXAMPLE), JSON
    try:
        connection.request("POST", "/predict", body=body, headers=headers)
        answer = connection.getresponse()
        status, text = answer.status, answer.read().decode()
    finally:
        store.current = serving
    assert status == 500
    assert json.loads(text) == {"detail": "internal error; it has been logged"}
    assert not any(leak in text for leak in LEAKS)
    time.sleep(0.2)  # were the server to close the connection, it would have by now
    connection.request("POST", "/predict", body=body, headers=headers)
    assert connection.getresponse().status == 200
    connection.close()
    assert 'handler="/predict",method="POST",status="500"' in world.client.get("/metrics").text


def test_the_process_is_alive_and_its_memory_did_not_run_away(world, memory):
    """Runs last in this module: after the corpus above (megabyte strings, 100k-deep nesting,
    100k-item batches) the server thread is alive, healthy, and kept no garbage."""
    process, before = memory
    assert world.server.thread.is_alive()
    assert threading.active_count() > 1
    assert world.client.get("/health").json() == {"status": "ok"}
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200
    growth = process.memory_info().rss - before
    print(
        f"\nresident memory: {before / MB:.0f} MB before the corpus, growth {growth / MB:+.0f} MB"
    )
    assert growth < RSS_GROWTH_LIMIT
