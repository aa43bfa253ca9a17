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


# (id, path, body, headers, status, field, reason): `field` None when the answer is a single
# message (413), else the field a problem must name, with a reason containing `reason`.
CASES = [
    # wrong types
    ("int-as-string", "/predict", _json({"num_medications": "12"}), JSON, 422,
     "num_medications", "valid integer"),
    ("int-as-list", "/predict", _json({"num_medications": [12]}), JSON, 422,
     "num_medications", "integer"),
    ("category-as-object", "/predict", _json({"race": {"name": "Asian"}}), JSON, 422,
     "race", "must be a string"),
    ("code-as-float", "/predict", _json({"admission_type_id": 1.5}), JSON, 422,
     "admission_type_id", "fractional"),
    ("id-as-bool", "/predict", _json({**EXAMPLE, "encounter_id": False}), JSON, 422,
     "encounter_id", "not a boolean"),
    ("wrong-case-category", "/predict", _json({"race": "caucasian"}), JSON, 422,
     "race", "must be one of"),
    ("padded-category", "/predict", _json({"gender": " Female "}), JSON, 422,
     "gender", "must be one of"),
    ("lower-case-diagnosis", "/predict", _json({"diag_1": "v57"}), JSON, 422,
     "diag_1", "ICD-9-CM"),
    ("diagnosis-out-of-range", "/predict", _json({"diag_2": "V99"}), JSON, 422,
     "diag_2", "ICD-9-CM"),
    ("batch-not-a-list", "/predict/batch", _json({"encounters": "many"}), JSON, 422,
     "encounters", "valid list"),
    ("batch-null", "/predict/batch", _json({"encounters": None}), JSON, 422,
     "encounters", "valid list"),
    ("batch-item-array", "/predict/batch", _json({"encounters": [[1, 2]]}), JSON, 422,
     "encounters.0", "must be a JSON object"),
    ("batch-extra-key", "/predict/batch", _json({"encounters": [{}], "limit": 5}), JSON, 422,
     "limit", "unknown field"),
    # huge strings and bodies
    ("3-mb-string", "/predict", _json({"diag_1": "4" * 3 * MB}), JSON, 422,
     "diag_1", "at most 64"),
    ("1-mb-unknown-key", "/predict", _json({"k" * MB: 1}), JSON, 422,
     "kkkkkkkkkk", "unknown field"),
    ("body-over-limit-declared", "/predict", b"{" + b" " * 5 * MB + b"}", JSON, 413,
     None, "larger than"),
    # deep nesting: must not crash the parser nor the process
    ("nested-100k-body", "/predict", _nested(100_000), JSON, 422, "body", "nested too deeply"),
    ("nested-100k-field", "/predict", b'{"race": ' + _nested(100_000) + b"}", JSON, 422,
     "body", "nested too deeply"),
    ("nested-100k-objects", "/predict", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, JSON, 422,
     "body", "nested too deeply"),
    ("nested-300-field", "/predict", b'{"race": ' + _nested(300) + b"}", JSON, 422,
     "race", "must be a string"),
    # unicode
    ("rtl-override", "/predict", _json({"race": "\u202eCaucasian"}), JSON, 422,
     "race", "must be one of"),
    ("emoji", "/predict", _json({"race": "\U0001f984"}), JSON, 422, "race", "must be one of"),
    ("emoji-key", "/predict", _json({"\U0001f984": 1}), JSON, 422, "\U0001f984",
     "unknown field"),
    ("nul-in-value", "/predict", _json({"race": "Cauc\u0000asian"}), JSON, 422,
     "race", "must be one of"),
    ("nul-in-key", "/predict", _json({"race\u0000": "Asian"}), JSON, 422, "race\u0000",
     "unknown field"),
    ("lone-surrogate", "/predict", b'{"race": "\\ud800"}', JSON, 422,
     "race", "valid Unicode"),
    ("lone-surrogate-key", "/predict", b'{"\\udfff": 1}', JSON, 422, "body", "valid Unicode"),
    ("invalid-utf8", "/predict", b'{"race": "\xff\xfe"}', JSON, 422, "body", "not UTF-8"),
    ("utf16-body", "/predict", '{"race": "Asian"}'.encode("utf-16"), JSON, 422,
     "body", "not UTF-8"),
    ("latin1-body", "/predict", '{"race": "Caucasian", "payer_code": "é"}'.encode("latin-1"),
     JSON, 422, "body", "not UTF-8"),
    # NaN and the infinities
    ("infinity", "/predict", b'{"num_medications": Infinity}', JSON, 422,
     "num_medications", "finite number"),
    ("minus-infinity", "/predict", b'{"number_inpatient": -Infinity}', JSON, 422,
     "number_inpatient", "finite number"),
    ("1e309", "/predict", b'{"time_in_hospital": 1e309}', JSON, 422,
     "time_in_hospital", "finite number"),
    ("nan-in-category", "/predict", b'{"race": NaN}', JSON, 422, "race", "must be a string"),
    ("nan-in-batch", "/predict/batch", b'{"encounters": [{"num_procedures": NaN}]}', JSON, 422,
     "encounters.0.num_procedures", "finite number"),
    # negative and absurd counts
    ("negative-count", "/predict", _json({"number_emergency": -1}), JSON, 422,
     "number_emergency", "greater than or equal to 0"),
    ("absurd-count", "/predict", _json({"number_inpatient": 10**30}), JSON, 422,
     "number_inpatient", "less than or equal to"),
    ("id-over-2-53", "/predict", _json({**EXAMPLE, "patient_nbr": 2**64}), JSON, 422,
     "patient_nbr", "less than or equal to"),
    ("negative-id", "/predict", _json({**EXAMPLE, "encounter_id": -5}), JSON, 422,
     "encounter_id", "greater than or equal to 0"),
    # batches over the limit
    ("batch-100k-empty", "/predict/batch", _json({"encounters": [{}] * 100_000}), JSON, 422,
     "encounters", "at most 1000"),
    ("batch-empty", "/predict/batch", _json({"encounters": []}), JSON, 422,
     "encounters", "at least 1"),
    # duplicated keys: refused, whichever value would be valid
    ("duplicated-key", "/predict", b'{"race": "Martian", "race": "Asian"}', JSON, 422,
     "body", "'race' appears twice"),
    ("duplicated-key-valid-both", "/predict", b'{"age": "[70-80)", "age": "[70-80)"}', JSON,
     422, "body", "'age' appears twice"),
    ("duplicated-key-in-batch", "/predict/batch",
     b'{"encounters": [{"gender": "Male", "gender": "Female"}]}', JSON, 422,
     "body", "'gender' appears twice"),
    ("duplicated-spellings", "/predict", _json({"A1Cresult": ">8", "a1cresult": "Norm"}), JSON,
     422, "a1cresult", "unknown field"),
    # content types and encodings
    ("no-content-type", "/predict", _json({"race": "Asian"}), {}, 422,
     "body", "Content-Type: application/json"),
    ("form", "/predict", b"race=Asian", {"content-type": "application/x-www-form-urlencoded"},
     422, "body", "Content-Type: application/json"),
    ("multipart", "/predict",
     b'--x\r\nContent-Disposition: form-data; name="race"\r\n\r\nAsian\r\n--x--\r\n',
     {"content-type": "multipart/form-data; boundary=x"}, 422,
     "body", "Content-Type: application/json"),
    ("xml", "/predict", b"<race>Asian</race>", {"content-type": "application/xml"}, 422,
     "body", "Content-Type: application/json"),
    ("gzip-encoded", "/predict", gzip.compress(_json(EXAMPLE)),
     {**JSON, "content-encoding": "gzip"}, 422, "body", "Content-Encoding gzip"),
    ("gzip-bomb-encoded", "/predict", gzip.compress(b"{" + b" " * 50 * MB + b"}"),
     {**JSON, "content-encoding": "gzip"}, 422, "body", "Content-Encoding gzip"),
    # empty, null and non-object bodies
    ("null-body", "/predict", b"null", JSON, 422, "body", "a JSON object is required"),
    ("string-body", "/predict", b'"Caucasian"', JSON, 422, "body", "must be a JSON object"),
    ("number-body", "/predict", b"42", JSON, 422, "body", "must be a JSON object"),
    ("array-of-objects", "/predict", _json([EXAMPLE]), JSON, 422,
     "body", "must be a JSON object"),
    ("batch-as-array", "/predict/batch", _json([EXAMPLE]), JSON, 422,
     "body", "must be a JSON object"),
    ("whitespace-body", "/predict", b"   \n ", JSON, 422, "body", "invalid JSON"),
    ("truncated-json", "/predict", _json(EXAMPLE)[:-20], JSON, 422, "body", "invalid JSON"),
    ("trailing-garbage", "/predict", _json(EXAMPLE) + b"}", JSON, 422, "body", "invalid JSON"),
]  # fmt: skip


@pytest.fixture(scope="module")
def memory(world):
    """The serving process's resident memory before the corpus (the API runs in this one)."""
    process = psutil.Process()
    world.client.post("/predict", json=EXAMPLE)  # warm
    return process, process.memory_info().rss


@pytest.mark.parametrize(("path", "body", "headers", "status", "field", "reason"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])  # fmt: skip
def test_a_hostile_request_is_a_4xx_naming_the_problem(world, memory, path, body, headers,
                                                        status, field, reason):  # fmt: skip
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
    limit = world.settings.max_body_bytes

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
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000000\r\n\r\n{}")  # fmt: skip
        head = sock.recv(65_536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "larger than" in head
    assert world.client.post("/predict", json=EXAMPLE).status_code == 200


def test_a_body_just_under_the_limit_is_read(world):
    """The limit is the documented one, not lower: a valid batch near it is scored."""
    records = [EXAMPLE] * 1_000  # ~1.6 MB, under API_MAX_BODY_BYTES (4 MB)
    body = _json({"encounters": records})
    assert len(body) < world.settings.max_body_bytes
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
