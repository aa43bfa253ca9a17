"""A model card per registered version: what the model is for, what it was trained on, how
well it does and for whom, why it was (not) promoted, and what it cannot know.

Built from three things every version has: the run's assessment (`assessment.py`, also
carried by the model as `assessment_`), the data lineage of its snapshot (`lineage_`,
`data.json`) and the registry's description of the version (metrics and decision tags).
Training logs it to the version's run (`model_card.md`, `model_card.json`) once the
promotion is decided; the API builds the same card for the version it serves
(`GET /model/card`).
"""

from __future__ import annotations

from typing import Any

INTENDED_USE = (
    "Prioritising follow-up after discharge: the <30 risk orders discharged diabetic "
    "patients so that a care manager calls those most likely to be readmitted within 30 "
    "days first. It supports a clinician's judgement; it is not for denying, delaying or "
    "rationing care, not a diagnosis, and not validated outside the population below."
)
DATA_SOURCE = (
    "UCI 'Diabetes 130-US hospitals for years 1999-2008': inpatient encounters of diabetic "
    "patients (1 to 14 days, with lab tests and medication) at 130 US hospitals and "
    "integrated delivery networks, 1999-2008. Split by patient (all encounters of a "
    "patient in one split): train to fit, valid to choose, test only to report."
)
LIMITATIONS = (
    "Data from 1999-2008 in US hospitals: practice, coding (ICD-9, not ICD-10) and "
    "populations have changed since; check calibration on local, recent outcomes before use.",
    "Encounters that ended in death (discharge dispositions 11, 19, 20 and 21) cannot be "
    "readmitted: they are predicted NO with certainty and left out of fitting. Discharge to "
    "hospice (13, 14) is not death and is scored like any other encounter.",
    "Some features are missing for most encounters (weight ~97 %, payer code ~40 %, medical "
    "specialty ~49 %, A1C result not measured ~83 %, max glucose serum not measured ~95 %): "
    "the model learnt from "
    "their absence as much as from their values.",
    "Readmissions to other hospitals than the one of the encounter are not in the data: "
    "the outcome is undercounted.",
    "A patient's history counts only the encounters in this data set before this one.",
    "Subgroups of fewer patients than the report's minimum are pooled: figures for small "
    "groups (some races, the youngest ages) are not shown one by one.",
)


def _value(figure: Any) -> Any:
    return figure["value"] if isinstance(figure, dict) and "value" in figure else figure


def _decision(tags: dict[str, str]) -> dict[str, Any]:
    keys = (
        "promotion_decision",
        "decision_reason",
        "champion_version",
        "decided_at",
        "promoted_at",
        "promotion_reason",
        "restored_at",
        "restore_reason",
        "rolled_back_at",
        "rollback_reason",
        "rolled_back_to",
    )
    decision = {key: tags[key] for key in keys if key in tags}
    gate = {key[len("subgroup_") :]: v for key, v in tags.items() if key.startswith("subgroup_")}
    if gate:
        decision["subgroup_gate"] = gate
    return decision


def build(
    assessed: dict | None,
    lineage: dict | None,
    described: dict,
    history: list[dict] | None = None,
) -> dict[str, Any]:
    """The card as JSON: `assessed` (the version's assessment), `lineage` (its data),
    `described` (`Registry.describe` of the version) and `history` (the production alias'
    moves, `Registry.history`: the card keeps those into and out of this version)."""
    tags = described.get("tags") or {}
    version = str(described.get("version"))
    metrics = described.get("metrics") or {}
    lineage = lineage or {}
    card: dict[str, Any] = {
        "model": {
            "name": described.get("name"),
            "version": described.get("version"),
            "family": tags.get("family"),
            "run_id": described.get("run_id"),
            "stage": described.get("stage"),
            "aliases": described.get("aliases", []),
        },
        "intended_use": INTENDED_USE,
        "data": {
            "source": DATA_SOURCE,
            "years": "1999-2008",
            "sites": "130 US hospitals and integrated delivery networks",
            "split": "by patient",
            "snapshot": (lineage.get("snapshot") or {}).get("id") or tags.get("data.snapshot"),
            "encounters": lineage.get("rows", {}),
            "patients": lineage.get("patients", {}),
        },
        "metrics": metrics,
        "decision": _decision(tags),
        "production_history": [
            move
            for move in history or []
            if version in (str(move.get("to_version")), str(move.get("from_version")))
        ],
        "limitations": list(LIMITATIONS),
    }
    if assessed:
        card["target"] = assessed["target"]
        card["intervals"] = assessed["bootstrap"]
        card["calibration"] = {"ece_bins": assessed["ece_bins"], **assessed["calibration"]}
        card["operating_points"] = assessed["operating_points"]
        card["subgroups"] = assessed["subgroups"]
        card["high_tier"] = assessed["high_tier"]
        card["recalibration"] = assessed.get("recalibration")
    else:
        card["assessment_missing"] = (
            "this version was trained before models carried their assessment: retrain for "
            "calibration, operating points and subgroups"
        )
    return card


def _with_interval(figure: dict | None, digits: int = 3) -> str:
    if not figure or figure.get("value") is None:
        return "n/a"
    low, high = figure.get("ci95") or (None, None)
    text = f"{figure['value']:.{digits}f}"
    return text if low is None else f"{text} ({low:.{digits}f}-{high:.{digits}f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def markdown(card: dict[str, Any]) -> str:
    """The card for people (Markdown)."""
    model = card["model"]
    lines = [
        f"# Model card: {model['name']} v{model['version']} ({model.get('family') or '?'})",
        "",
        f"Run `{model.get('run_id')}`; stage {model.get('stage')}; "
        f"aliases {', '.join(model.get('aliases') or []) or 'none'}.",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Data",
        "",
        card["data"]["source"],
        "",
    ]
    data = card["data"]
    if data["encounters"]:
        lines += _table(
            ["split", "encounters", "patients"],
            [
                [split, f"{n:,}", f"{data['patients'].get(split, 0):,}"]
                for split, n in data["encounters"].items()
            ],
        )
        lines.append("")
    lines.append(f"Snapshot `{data.get('snapshot')}`.")
    lines += ["", "## Metrics", ""]
    wanted = ("macro_f1", "roc_auc_lt30", "log_loss", "accuracy", "recall_lt30")
    rows = [
        [
            name,
            *(f"{card['metrics'].get(f'{s}_{name}', float('nan')):.4f}" for s in ("valid", "test")),
        ]
        for name in wanted
    ]
    lines += _table(["metric", "valid", "test"], rows)
    if "calibration" in card:
        intervals = card["intervals"]
        lines += [
            "",
            f"Intervals: 95 % over {intervals['resamples']} bootstrap resamples of "
            f"{intervals['unit']}s (test split).",
            "",
            f"## Calibration of the {card['target']} risk",
            "",
        ]
        lines += _table(
            [
                "split",
                "Brier",
                f"ECE ({card['calibration']['ece_bins']} equal-mass bins)",
                "slope",
                "intercept",
            ],
            [
                [
                    split,
                    f"{c['brier']:.4f}",
                    f"{c['ece']:.4f}",
                    f"{c['slope']:.3f}",
                    f"{c['intercept']:.3f}",
                ]
                for split, c in card["calibration"].items()
                if split in ("valid", "test")
            ],
        )
        recalibration = card.get("recalibration")
        if recalibration:
            before, after = recalibration["whole_train"], recalibration["recalibrated"]
            lines += [
                "",
                f"Recalibration {'used' if recalibration['used'] else 'not used'}: on valid, "
                f"log-loss {before['valid_log_loss']:.4f} without, {after['valid_log_loss']:.4f} "
                f"with; ECE {before['valid_ece_lt30']:.4f} without, "
                f"{after['valid_ece_lt30']:.4f} with (fitted on "
                f"{recalibration['held_out_patients']:,} held-out train patients).",
            ]
        lines += ["", "## Operating points (threshold chosen on valid, figures on test)", ""]
        lines += _table(
            [
                "flag top",
                "risk threshold",
                "flagged",
                "sensitivity",
                "PPV",
                "number needed to evaluate",
            ],
            [
                [
                    f"{p['top_percent']:g} %",
                    f"{p['threshold']:.4f}",
                    f"{p['flagged']['value']:,.0f}",
                    _with_interval(p["sensitivity"]),
                    _with_interval(p["ppv"]),
                    _with_interval(p["number_needed_to_evaluate"], 1),
                ]
                for p in card["operating_points"]
            ],
        )
        high = card["high_tier"]
        lines += [
            "",
            "## Subgroups (test; sensitivity and PPV at the high tier: "
            f"top {high['top_percent']:g} %, risk >= {high['threshold']:.4f})",
            "",
        ]
        lines += _table(
            [
                "attribute",
                "group",
                "patients",
                "ROC-AUC",
                "sensitivity",
                "PPV",
                "observed - predicted",
            ],
            [
                [
                    r["attribute"],
                    r["group"],
                    f"{r['patients']:,}",
                    _with_interval(r["roc_auc"]),
                    _with_interval(r["sensitivity"]),
                    _with_interval(r["ppv"]),
                    _with_interval(r["calibration_in_the_large"]),
                ]
                for r in card["subgroups"]
            ],
        )
    else:
        lines += ["", card["assessment_missing"]]
    decision = card["decision"]
    lines += ["", "## Promotion decision", ""]
    if decision:
        lines.append(
            f"{decision.get('promotion_decision', 'undecided')}: "
            f"{decision.get('decision_reason') or decision.get('promotion_reason') or ''}"
        )
        gate = decision.get("subgroup_gate")
        if gate:
            lines.append("")
            lines.append(
                f"Subgroup gate: {gate.get('reason')} (tolerance {gate.get('tolerance')})."
            )
    else:
        lines.append("No promotion decided yet.")
    moves = card.get("production_history") or []
    if moves:
        lines += ["", "## In production (moves of the production alias, newest first)", ""]
        lines += _table(
            ["when", "action", "from", "to", "reason", "by"],
            [
                [
                    m["at"],
                    m["action"],
                    f"v{m['from_version']}" if m.get("from_version") else "none",
                    f"v{m['to_version']}",
                    m["reason"],
                    m["by"],
                ]
                for m in moves
            ],
        )
    lines += ["", "## Known limitations", "", *(f"- {item}" for item in card["limitations"]), ""]
    return "\n".join(lines)
