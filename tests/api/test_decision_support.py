"""Decision support over HTTP: the risk tier of each answer, the operating points, the model
card of the served version."""

from __future__ import annotations

import pytest

from readmission.api.schemas import EXAMPLE
from tests.support.served import client_records

pytestmark = pytest.mark.slow


def test_each_answer_has_its_risk_tier_from_the_served_operating_points(world):
    points = world.client.get("/model/operating-points")
    assert points.status_code == 200, points.text
    body = points.json()
    tiers = body["tiers"]
    assert tiers["high"]["top_percent"] == 10
    assert tiers["medium"]["top_percent"] == 30
    high, medium = tiers["high"]["threshold"], tiers["medium"]["threshold"]
    assert high > medium > 0
    # the tiers are the table's 10 % and 30 % operating points
    by_k = {p["top_percent"]: p for p in body["operating_points"]}
    assert by_k[10]["threshold"] == pytest.approx(high)
    assert by_k[30]["threshold"] == pytest.approx(medium)

    records = client_records(300, seed=21, first_patient=3 * 10**9)
    answers = world.client.post("/predict/batch", json={"encounters": records}).json()
    seen = set()
    for answer in answers["predictions"]:
        risk = answer["readmission_30d_risk"]
        expected = "high" if risk >= high else "medium" if risk >= medium else "low"
        assert answer["risk_tier"] == expected
        assert answer["risk_tier_starts"] == {"high": high, "medium": medium, "low": 0.0}
        seen.add(expected)
    assert seen == {"high", "medium", "low"}
    single = world.client.post("/predict", json=EXAMPLE).json()
    assert single["risk_tier"] in {"high", "medium", "low"}


def test_operating_points_have_intervals_around_each_figure(world):
    body = world.client.get("/model/operating-points").json()
    assert [p["top_percent"] for p in body["operating_points"]] == [5, 10, 20, 30]
    assert body["intervals"]["unit"] == "patient"
    for point in body["operating_points"]:
        for name in ("sensitivity", "ppv"):
            low, high = point[name]["ci95"]
            assert low <= point[name]["value"] <= high
        assert point["number_needed_to_evaluate"]["value"] == pytest.approx(
            1 / point["ppv"]["value"]
        )
    assert set(body["calibration"]) == {"valid", "test"}
    assert 0 <= body["calibration"]["test"]["ece"] < 1


def test_the_model_card_of_the_served_version(world):
    card = world.client.get("/model/card")
    assert card.status_code == 200, card.text
    body = card.json()
    version = world.client.get("/model").json()["version"]
    assert body["model"]["version"] == version
    assert "not for denying" in body["intended_use"]
    assert body["decision"]["promotion_decision"] == "promoted"
    assert [p["top_percent"] for p in body["operating_points"]] == [5, 10, 20, 30]
    assert body["data"]["encounters"]["test"] > 0
    text = world.client.get("/model/card", params={"format": "markdown"})
    assert text.headers["content-type"].startswith("text/markdown")
    assert f"# Model card: diabetes-readmission v{version}" in text.text
    assert "## Known limitations" in text.text


def test_an_unknown_card_format_is_422_naming_the_parameter(world):
    answer = world.client.get("/model/card", params={"format": "pdf"})
    assert answer.status_code == 422
    assert "format" in answer.text
