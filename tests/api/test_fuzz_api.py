"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis 4).

Schemathesis reads `/openapi.json` from the API running over real HTTP with a trained
model, generates valid and invalid requests for every documented operation, sends them and
runs its checks on each answer: no 5xx, the status code documented, the content type and the
body matching the documented schema, invalid data refused and valid data accepted. On top we
check that no answer carries a stack trace and that each comes back in a sane time. A counter
proves how many cases ran: at least 1,000 across the operations, every one of them reached.

The two protocol operations that carry rows by position (MLflow's /invocations, whose
`dataframe_split` rows and objects of columns list values in column order, and the Open
Inference Protocol's /infer, one tensor per column) cannot have a JSON Schema that ties a
value to its column or asks every column for as many values: a body the schema allows may
still be refused (400, naming the field). For them alone the check that every schema-valid
body is accepted is off; every other check holds, invalid bodies refused included.
"""

from __future__ import annotations

import collections
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.specs.openapi.checks import positive_data_acceptance

from readmission.api import create_app
from readmission.settings import Settings

pytestmark = pytest.mark.slow

# Hypothesis keeps caches in ./.hypothesis: not in the repository (tests write to tmp only)
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="readmission-hypothesis-"))

RAN: collections.Counter[str] = collections.Counter()
SLOWEST: dict[str, float] = {}
# Per operation. The bodyless GETs exhaust their few distinct cases early; the two predict
# routes carry the bulk (each batch case scores up to a few dozen encounters).
MAX_EXAMPLES = 200
MIN_CASES = 1_000
SANE_SECONDS = 5.0  # a 2-core machine shared with other jobs; a healthy answer takes ms
LEAKS = ("Traceback", 'File "', "/work/", "site-packages", '.py", line')


# The schema is the app's own, built at collection time and fuzzed over HTTP against the
# served app (`base_url`); a test below checks that the served /openapi.json is this very one.
# (schemathesis.pytest.from_fixture, the lazy loader, fails under pytest 9.2: it sets
# `Function._nodeid`, which pytest no longer has.)
SPEC = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(SPEC)
# /invocations also reads text/csv: the generated strings are sent as they are
schemathesis.serializer.alias("text/csv", "text/plain")
#: Rows by position (see above): a schema-valid body may be refused.
POSITIONAL = {
    "POST /invocations",
    "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
}


def test_the_fuzzed_schema_is_the_one_served(world):
    assert world.client.get("/openapi.json").json() == SPEC


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
def test_every_documented_operation_holds_its_contract(case, world):
    label = f"{case.method} {case.path}"
    excluded = [positive_data_acceptance] if label in POSITIONAL else []
    response = case.call_and_validate(base_url=world.url, timeout=30, excluded_checks=excluded)
    RAN[label] += 1
    SLOWEST[label] = max(SLOWEST.get(label, 0.0), response.elapsed)
    assert response.status_code < 500, response.text[:500]
    assert response.elapsed < SANE_SECONDS, (label, response.elapsed)
    text = response.content.decode("utf-8", errors="replace")
    assert not any(leak in text for leak in LEAKS), text[:500]


def test_at_least_a_thousand_cases_ran_across_every_operation():
    """Runs after the fuzzing above (same module, file order)."""
    print(f"\nschemathesis cases: {sum(RAN.values()):,}")
    for label, count in sorted(RAN.items()):
        print(f"  {label:<50} {count:>5} cases, slowest {SLOWEST[label] * 1000:.0f} ms")
    documented = {
        f"{method.upper()} {path}" for path, ops in SPEC["paths"].items() for method in ops
    }
    assert {"POST /predict", "POST /invocations", "POST /v2/models/{name}/infer"} <= documented
    # (RAN also holds the undocumented methods schemathesis tries on each path)
    assert documented <= set(RAN), sorted(documented - set(RAN))
    assert sum(RAN.values()) >= MIN_CASES, dict(RAN)
