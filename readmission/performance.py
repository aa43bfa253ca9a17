"""How the served models do on real patients: realized performance once outcomes arrive,
and the performance expected before they do.

A served prediction's truth arrives weeks later, when the encounter's `readmitted` comes in
with a later data batch and is cleaned into `clean_data`. `measure` joins every logged
prediction (`serving.predictions`, by `encounter_id`) to its outcome where there is one, and
writes per model version and window, into `serving.model_performance`:

- realized figures over the predictions whose outcome is known: macro-F1 of the served
  class, ROC-AUC and Brier score of the `<30` risk, and sensitivity and PPV of the high tier
  (the version's own high-tier threshold, as the API flagged with it);
- estimated figures over every prediction of the window, outcome known or not, from the
  calibrated probabilities alone (confidence-based performance estimation, NannyML's CBPE:
  a prediction of class k with probability p counts p of a true positive and 1 - p of a
  false positive; `tests/performance` checks these lines against NannyML's own). They say
  what to expect while outcomes are pending and, set beside the realized ones when outcomes
  arrive, whether the probabilities still deserve trust;
- the version's test figures, for comparison (and the `RealizedPerformanceDrop` alert).

Windows: each day predictions were served (UTC), and `recent`: each version's
`PERFORMANCE_WINDOW_DAYS` of predictions up to its last one whose outcome is known (its
last one while none has), what the API exports as gauges: a `<30` outcome is known a month
after discharge at best, so the newest predictions never have one yet.
A prediction logged twice for one encounter and version (a retried request) counts once,
its first answer being what the care team saw. Predictions without an `encounter_id`
cannot be joined and are left out. Every run recomputes the windows from the log and
replaces the table's rows in one transaction: running it again changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from readmission import db
from readmission.names import PERFORMANCE_FIGURES
from readmission.schema import ENCOUNTER_ID, READMITTED_CLASSES

if TYPE_CHECKING:
    from readmission.registry import Registry

log = logging.getLogger(__name__)

LT30 = "<30"
#: The figures measured, realized and estimated alike.
FIGURES = PERFORMANCE_FIGURES
#: The window kinds: one a day, and the recent days of each version.
DAY, RECENT = "day", "recent"
_PROBABILITIES = {"NO": "probability_no", ">30": "probability_gt30", "<30": "probability_lt30"}


@dataclass(frozen=True)
class Reference:
    """What a version was expected to do: its test figures and its high-tier threshold."""

    high_threshold: float | None = None
    test_macro_f1: float | None = None
    test_roc_auc_lt30: float | None = None


def registry_reference(
    registry: Registry, high_top_percent: float, medium_top_percent: float
) -> Callable[[str], Reference]:
    """A version's Reference as the registry has it: test figures from its run, the
    high-tier threshold from its assessment (`assessment.json`) and the tier settings, as
    the API derived it. What cannot be read stays None (a version deleted since, or trained
    before models were assessed)."""

    def reference(version: str) -> Reference:
        import mlflow
        from mlflow.exceptions import MlflowException

        from readmission.assessment import RiskTiers

        try:
            described = registry.describe(registry.entry(version))
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise  # the registry is down: the task fails and is retried
            log.warning("v%s is not in the registry, measured without figures: %s", version, exc)
            return Reference()
        threshold = None
        try:
            uri = f"runs:/{described['run_id']}/assessment.json"
            with registry.activate():
                assessed = mlflow.artifacts.load_dict(uri)
            threshold = RiskTiers.of(assessed, high_top_percent, medium_top_percent).high_threshold
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("v%s has no assessment, measured without its high tier: %s", version, exc)
        except (OSError, KeyError) as exc:
            log.warning("v%s has no assessment, measured without its high tier: %s", version, exc)
        metrics = described["metrics"]
        return Reference(threshold, metrics.get("test_macro_f1"), metrics.get("test_roc_auc_lt30"))

    return reference


# --- the figures -------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def expected_roc_auc(risk: np.ndarray) -> float | None:
    """The ROC-AUC expected of calibrated risks: each row a positive with weight `risk` and
    a negative with weight 1 - risk, the ROC curve of those expected counts (NannyML's
    `estimate_roc_auc` with the calibrated risk as the score). None without both weights."""
    risk = np.sort(np.asarray(risk, dtype=float))[::-1]
    positives = np.concatenate([[0.0], np.cumsum(risk)])
    negatives = np.concatenate([[0.0], np.cumsum(1.0 - risk)])
    if positives[-1] <= 0 or negatives[-1] <= 0:
        return None
    tpr, fpr = positives / positives[-1], negatives / negatives[-1]
    return _finite(np.trapezoid(tpr, fpr))


def expected_macro_f1(predicted: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro-F1 expected of the served classes given calibrated probabilities (columns in
    READMITTED_CLASSES order): per class, one against the rest, expected TP = the summed
    probability of the class where it was predicted, FP = the rest of those rows, FN = its
    probability where it was not (NannyML's `estimate_f1` per class, then the mean)."""
    if len(predicted) == 0:
        return None
    scores = []
    for column, label in enumerate(READMITTED_CLASSES):
        chosen = predicted == label
        p = probabilities[:, column]
        tp, fp, fn = p[chosen].sum(), (1 - p[chosen]).sum(), p[~chosen].sum()
        denominator = tp + 0.5 * (fp + fn)
        scores.append(tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def estimated(frame: pd.DataFrame, high_threshold: float | None) -> dict[str, float | None]:
    """The figures expected of a window's predictions from their probabilities alone."""
    risk = frame["probability_lt30"].to_numpy(dtype=float)
    figures: dict[str, float | None] = dict.fromkeys(FIGURES)
    if len(frame) == 0:
        return figures
    probabilities = frame[list(_PROBABILITIES.values())].to_numpy(dtype=float)
    figures["macro_f1"] = expected_macro_f1(frame["prediction"].to_numpy(), probabilities)
    figures["roc_auc_lt30"] = expected_roc_auc(risk)
    figures["brier_lt30"] = float(np.mean(risk * (1 - risk)))
    if high_threshold is not None:
        flagged = risk >= high_threshold
        expected_positives = risk.sum()
        if expected_positives > 0:
            figures["sensitivity_high"] = float(risk[flagged].sum() / expected_positives)
        if flagged.any():
            figures["ppv_high"] = float(risk[flagged].mean())
    return figures


def realized(frame: pd.DataFrame, high_threshold: float | None) -> dict[str, float | None]:
    """The figures measured on a window's predictions whose outcome is known."""
    from sklearn.metrics import f1_score, roc_auc_score

    known = frame[frame["readmitted"].notna()]
    figures: dict[str, float | None] = dict.fromkeys(FIGURES)
    if known.empty:
        return figures
    truth = known["readmitted"].to_numpy(dtype=object)
    predicted = known["prediction"].to_numpy(dtype=object)
    risk = known["probability_lt30"].to_numpy(dtype=float)
    positive = truth == LT30
    figures["macro_f1"] = float(f1_score(truth, predicted, average="macro", zero_division=0))
    if 0 < positive.sum() < len(positive):
        figures["roc_auc_lt30"] = float(roc_auc_score(positive, risk))
    figures["brier_lt30"] = float(np.mean((risk - positive) ** 2))
    if high_threshold is not None:
        flagged = risk >= high_threshold
        if positive.any():
            figures["sensitivity_high"] = float((flagged & positive).sum() / positive.sum())
        if flagged.any():
            figures["ppv_high"] = float((flagged & positive).sum() / flagged.sum())
    return figures


# --- the log and its outcomes ------------------------------------------------------------


def served_outcomes(conn: sa.Connection) -> pd.DataFrame:
    """Every logged prediction that names its encounter, once per encounter and version
    (the first), with the encounter's outcome when `clean_data` has it (else missing)."""
    predictions, clean = db.predictions, db.clean_encounters
    query = (
        sa.select(
            predictions.c.id,
            predictions.c.predicted_at,
            predictions.c.model_name,
            predictions.c.model_version,
            predictions.c.encounter_id,
            predictions.c.prediction,
            *(predictions.c[name] for name in _PROBABILITIES.values()),
            clean.c.readmitted,
        )
        .select_from(
            predictions.outerjoin(clean, clean.c[ENCOUNTER_ID] == predictions.c.encounter_id)
        )
        .where(predictions.c.encounter_id.is_not(None))
        .order_by(predictions.c.id)
    )
    frame = pd.DataFrame(conn.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=[c.name for c in query.selected_columns])
    frame["predicted_at"] = pd.to_datetime(frame["predicted_at"], utc=True)
    frame = frame.drop_duplicates(["model_name", "model_version", "encounter_id"], keep="first")
    return frame.reset_index(drop=True)


def windows(
    frame: pd.DataFrame, window_days: int
) -> Iterator[tuple[str, str, str, datetime, datetime, pd.DataFrame]]:
    """(model name, version, kind, start, end, rows) of every window: one a day each version
    served, and its `recent` days: up to the day of its last prediction with a known
    outcome (its last prediction while none has one)."""
    for (name, version), rows in frame.groupby(["model_name", "model_version"], sort=True):
        days = rows["predicted_at"].dt.floor("D")
        for day, served in rows.groupby(days, sort=True):
            start = day.to_pydatetime()
            yield name, version, DAY, start, start + timedelta(days=1), served
        # ending with the last prediction whose outcome is known: a <30 outcome is known a
        # month after discharge at best, so the newest predictions never have one yet
        known = rows.loc[rows["readmitted"].notna(), "predicted_at"]
        last = known.max() if len(known) else rows["predicted_at"].max()
        end = last.floor("D") + pd.Timedelta(days=1)
        start = end - pd.Timedelta(days=window_days)
        recent = rows[(rows["predicted_at"] >= start) & (rows["predicted_at"] < end)]
        yield name, version, RECENT, start.to_pydatetime(), end.to_pydatetime(), recent


def measure_frame(
    frame: pd.DataFrame,
    reference: Callable[[str], Reference],
    window_days: int,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The table's rows for a joined log (`served_outcomes`); `reference(version)` gives a
    version's test figures and high-tier threshold."""
    now = now or datetime.now(UTC)
    references: dict[str, Reference] = {}
    rows = []
    for name, version, kind, start, end, served in windows(frame, window_days):
        if version not in references:
            references[version] = reference(version)
        expected = references[version]
        row: dict[str, Any] = {
            "model_name": name,
            "model_version": version,
            "window_kind": kind,
            "period_start": start,
            "period_end": end,
            "predictions": len(served),
            "outcomes": int(served["readmitted"].notna().sum()),
            "high_threshold": expected.high_threshold,
            "test_macro_f1": expected.test_macro_f1,
            "test_roc_auc_lt30": expected.test_roc_auc_lt30,
            "computed_at": now,
        }
        for source, figures in (
            ("realized", realized(served, expected.high_threshold)),
            ("estimated", estimated(served, expected.high_threshold)),
        ):
            row.update({f"{source}_{key}": value for key, value in figures.items()})
        rows.append(row)
    return rows


def measure(
    engine: Engine, reference: Callable[[str], Reference], window_days: int
) -> dict[str, Any]:
    """Join the log to its outcomes, compute every window, replace the table's rows (one
    transaction); what was written, in numbers."""
    with engine.connect() as conn:
        frame = served_outcomes(conn)
    rows = measure_frame(frame, reference, window_days)
    with engine.begin() as conn:
        conn.execute(db.model_performance.delete())
        if rows:
            conn.execute(db.model_performance.insert(), rows)
    summary = {
        "predictions": len(frame),
        "outcomes": int(frame["readmitted"].notna().sum()) if len(frame) else 0,
        "versions": sorted({r["model_version"] for r in rows}, key=_version_order),
        "windows": len(rows),
    }
    log.info("model performance measured: %s", summary)
    return summary


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def recent(engine: Engine) -> list[dict[str, Any]]:
    """The `recent` window of every version, as the table holds it (what the API exports)."""
    table = db.model_performance
    query = sa.select(table).where(table.c.window_kind == RECENT).order_by(table.c.model_version)
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def report(engine: Engine) -> list[dict[str, Any]]:
    """Every window of the table, versions then windows in time order, `recent` last."""
    table = db.model_performance
    query = sa.select(table).order_by(
        table.c.model_name, table.c.model_version, table.c.window_kind, table.c.period_start
    )
    with engine.connect() as conn:
        found = [dict(row) for row in conn.execute(query).mappings()]
    found.sort(key=lambda r: (_version_order(r["model_version"]), r["window_kind"] == RECENT))
    return found


def summary_line(row: dict[str, Any]) -> dict[str, Any]:
    """A window in a few JSON-able fields: version, period, counts, and each figure's
    realized, estimated and test values (None where unknown)."""
    line: dict[str, Any] = {
        "version": row["model_version"],
        "window": row["window_kind"],
        "from": row["period_start"].date().isoformat(),
        "to": row["period_end"].date().isoformat(),
        "predictions": row["predictions"],
        "outcomes": row["outcomes"],
    }
    for name in FIGURES:
        line[name] = {
            "realized": row.get(f"realized_{name}"),
            "estimated": row.get(f"estimated_{name}"),
            "test": row.get(f"test_{name}"),
        }
    return line


def format_figure(value: float | None) -> str:
    """A figure for people: three decimals, `-` when unknown."""
    return "-" if value is None else f"{value:.3f}"


def format_report(rows: list[dict[str, Any]]) -> str:
    """Windows as a table for people: one line per version and window, each figure as
    realized / estimated (/ test where the version has one)."""
    if not rows:
        return "No served prediction with an encounter_id is logged yet."
    header = ["version", "window", "from", "to", "predictions", "outcomes", *FIGURES]
    lines = [header]
    for row in rows:
        line = summary_line(row)
        cells = [
            f"v{line['version']}",
            line["window"],
            line["from"],
            line["to"],
            f"{line['predictions']:,}",
            f"{line['outcomes']:,}",
        ]
        for name in FIGURES:
            figure = line[name]
            text = f"{format_figure(figure['realized'])} / {format_figure(figure['estimated'])}"
            if figure["test"] is not None:
                text += f" / {format_figure(figure['test'])}"
            cells.append(text)
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    ]
    return "\n".join(
        [*text, "", "Figures: realized / estimated (from the probabilities) / test split."]
    )
