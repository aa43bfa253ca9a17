"""readmission/card.py: the model card from an assessment, a lineage and a registry entry."""

from __future__ import annotations

import json

from readmission import card
from tests.support.assessments import synthetic_assessment


def _assessed() -> dict:
    return synthetic_assessment(4_000, rows_per_patient=2, resamples=50)


DESCRIBED = {
    "name": "diabetes-readmission",
    "version": "4",
    "run_id": "abc123",
    "stage": "Production",
    "aliases": ["production"],
    "tags": {
        "family": "hist_gradient_boosting",
        "promotion_decision": "promoted",
        "decision_reason": "valid_macro_f1 0.4810 vs champion v3 0.4790",
        "champion_version": "3",
        "subgroup_passed": "True",
        "subgroup_reason": "subgroups within tolerance",
        "subgroup_tolerance": "0.05",
    },
    "metrics": {"valid_macro_f1": 0.481, "test_macro_f1": 0.475, "test_roc_auc_lt30": 0.685},
}
LINEAGE = {
    "snapshot": {"id": "0123456789abcdef"},
    "rows": {"train": 61_000, "valid": 20_000, "test": 20_000},
    "patients": {"train": 42_000, "valid": 14_000, "test": 14_000},
}


def test_the_card_holds_every_section_and_is_json():
    built = card.build(_assessed(), LINEAGE, DESCRIBED)
    assert json.loads(json.dumps(built)) == built
    assert built["model"] == {
        "name": "diabetes-readmission",
        "version": "4",
        "family": "hist_gradient_boosting",
        "run_id": "abc123",
        "stage": "Production",
        "aliases": ["production"],
    }
    assert "not for denying" in built["intended_use"]
    assert built["data"]["years"] == "1999-2008"
    assert built["data"]["encounters"]["test"] == 20_000
    assert built["data"]["snapshot"] == "0123456789abcdef"
    assert [p["top_percent"] for p in built["operating_points"]] == [5, 10, 20, 30]
    assert built["decision"]["subgroup_gate"]["reason"] == "subgroups within tolerance"
    assert any("weight" in item for item in built["limitations"])
    assert any("1999-2008" in item for item in built["limitations"])


def test_the_markdown_card_shows_the_tables_with_intervals():
    text = card.markdown(card.build(_assessed(), LINEAGE, DESCRIBED))
    for heading in (
        "# Model card: diabetes-readmission v4 (hist_gradient_boosting)",
        "## Intended use",
        "## Data",
        "## Metrics",
        "## Calibration of the <30 risk",
        "## Operating points",
        "## Subgroups",
        "## Promotion decision",
        "## Known limitations",
    ):
        assert heading in text, heading
    assert "| train | 61,000 | 42,000 |" in text
    assert "| macro_f1 | 0.4810 | 0.4750 |" in text
    assert "promoted: valid_macro_f1 0.4810 vs champion v3 0.4790" in text
    # an interval after each operating point's sensitivity: "0.123 (0.101-0.145)"
    row = next(line for line in text.splitlines() if line.startswith("| 10 % |"))
    assert row.count("(") >= 3, row
    assert "| gender | Female |" in text


def test_a_version_without_an_assessment_says_so():
    built = card.build(None, None, DESCRIBED)
    assert "retrain" in built["assessment_missing"]
    assert "operating_points" not in built
    assert "retrain" in card.markdown(built)


def _move(number: int, action: str, before: str | None, after: str) -> dict:
    return {
        "number": number,
        "at": f"2026-11-2{number}T10:00:00+00:00",
        "alias": "production",
        "action": action,
        "from_version": before,
        "to_version": after,
        "reason": f"reason {number}",
        "by": "cli",
    }


def test_the_card_keeps_the_moves_into_and_out_of_its_version():
    history = [
        _move(4, "promote", "3", "5"),  # not about v4
        _move(3, "rollback", "4", "3"),
        _move(2, "promote", "3", "4"),
        _move(1, "promote", None, "3"),  # not about v4
    ]
    described = {**DESCRIBED, "tags": {**DESCRIBED["tags"], "rollback_reason": "reason 3"}}
    built = card.build(_assessed(), LINEAGE, described, history)
    assert [m["number"] for m in built["production_history"]] == [3, 2]
    assert built["decision"]["rollback_reason"] == "reason 3"
    text = card.markdown(built)
    assert "## In production" in text
    assert "| 2026-11-23T10:00:00+00:00 | rollback | v4 | v3 | reason 3 | cli |" in text
    assert "| promote | none |" not in text
    assert card.build(None, None, DESCRIBED)["production_history"] == []
    assert "## In production" not in card.markdown(card.build(None, None, DESCRIBED))
