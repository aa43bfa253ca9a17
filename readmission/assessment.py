"""What a care team needs to act on a `<30` risk: calibration, operating points, subgroups.

All figures are of the `<30` risk (readmission within 30 days), the one a care manager acts
on, computed for one model on the patient-grouped splits:

- **Calibration** (`calibration`): Brier score, expected calibration error over equal-mass
  bins (`ECE_BINS`), calibration slope and intercept (a logistic recalibration of the
  outcome on the risk's log-odds: slope 1 and intercept 0 when calibrated; the intercept is
  calibration-in-the-large, fitted with the slope held at 1), and the reliability diagram.
- **Operating points** (`operating_points`): "flag the top k % of discharges". The risk
  threshold is chosen on the valid split (its (100 - k)th percentile); sensitivity, PPV,
  the flagged count and the number needed to evaluate (1 / PPV: discharges a care manager
  calls per readmission found) are measured on test.
- **Subgroups** (`subgroups`): ROC-AUC, sensitivity and PPV at the high tier's threshold,
  and calibration-in-the-large, by race, gender and age band; a group of fewer than
  `MIN_GROUP_PATIENTS` patients is reported pooled with the other small ones.

Every interval is a 95 % percentile interval from a bootstrap that resamples patients (a
patient's encounters go together, as the splits are drawn), computed for all resamples at
once from per-row weights (a row's weight: how often its patient was drawn).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

LT30 = "<30"
#: "Flag the top k % of discharges".
TOP_PERCENTS: tuple[int, ...] = (5, 10, 20, 30)
#: Equal-mass bins of the expected calibration error.
ECE_BINS = 15
#: The attributes subgroups are cut by (clean column keys) and their names in reports.
SUBGROUP_ATTRIBUTES: dict[str, str] = {"race": "race", "gender": "gender", "age": "age band"}
#: Groups with fewer patients are pooled ("other (pooled)") within their attribute.
MIN_GROUP_PATIENTS = 200
POOLED = "other (pooled)"
MISSING = "missing"
#: Percentiles of the valid split's risk kept with a model, to place any top-k threshold.
QUANTILE_STEPS = 1_000
INTERVAL = (2.5, 97.5)


# --- the patient bootstrap ---------------------------------------------------------------


def bootstrap_weights(patients: Sequence, resamples: int, seed: int = 0) -> np.ndarray:
    """(resamples, rows): each row's weight in each resample, drawn by patient."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(patients)), sort=False)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(uniques), size=(resamples, len(uniques)))
    counts = np.zeros((resamples, len(uniques)), dtype=np.float64)
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
    return counts[:, codes]


def _interval(values: np.ndarray) -> list[float | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [None, None]
    low, high = np.percentile(finite, INTERVAL)
    return [float(low), float(high)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


def weighted_auc(y: np.ndarray, risk: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of `risk` for `y` under each row of `weights` (ties count half); NaN for a
    resample without both outcomes."""
    weights = np.atleast_2d(weights)
    order = np.argsort(risk, kind="stable")
    sorted_risk = risk[order]
    starts = np.flatnonzero(np.r_[True, sorted_risk[1:] != sorted_risk[:-1]])
    w = weights[:, order]
    positive = y[order].astype(bool)
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (below + 0.5 * neg)).sum(axis=1)
    return _ratio(numerator, pos.sum(axis=1) * neg.sum(axis=1))


# --- calibration -------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _logistic_fit(y: np.ndarray, x: np.ndarray | None, offset: np.ndarray) -> np.ndarray:
    """Maximum-likelihood (intercept[, slope]) of y ~ intercept + slope * x + offset, by
    Newton's method (a few iterations; the problem is small and convex)."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(design @ beta + offset)))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(beta)), gradient)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def expected_calibration_error(y: np.ndarray, risk: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |observed rate - mean risk| over `bins` equal-mass bins of the risk, weighted by
    the bins' sizes."""
    order = np.argsort(risk, kind="stable")
    parts = np.array_split(order, bins)
    gaps = [abs(y[part].mean() - risk[part].mean()) * len(part) for part in parts if len(part)]
    return float(sum(gaps) / len(y))


def calibration(y: np.ndarray, risk: np.ndarray, bins: int = ECE_BINS) -> dict[str, float]:
    """Brier, ECE (equal-mass bins), slope, intercept (calibration-in-the-large), and the
    observed rate against the mean risk."""
    y = np.asarray(y, dtype=float)
    risk = np.asarray(risk, dtype=float)
    logits = _logit(risk)
    slope = _logistic_fit(y, logits, np.zeros(len(y)))[1]
    intercept = _logistic_fit(y, None, logits)[0]
    return {
        "brier": float(np.mean((risk - y) ** 2)),
        "ece": expected_calibration_error(y, risk, bins),
        "slope": float(slope),
        "intercept": float(intercept),
        "observed_rate": float(y.mean()),
        "mean_risk": float(risk.mean()),
    }


def reliability_bins(y: np.ndarray, risk: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Each equal-mass bin: its mean risk, observed rate and size (the reliability diagram)."""
    order = np.argsort(risk, kind="stable")
    return [
        {"mean_risk": float(risk[p].mean()), "observed_rate": float(y[p].mean()), "rows": len(p)}
        for p in np.array_split(order, bins)
        if len(p)
    ]


# --- operating points --------------------------------------------------------------------


def risk_quantiles(risk: np.ndarray, steps: int = QUANTILE_STEPS) -> list[float]:
    """The risk's percentiles on a grid of `steps` + 1 points (0 %, 0.1 %, ... 100 %)."""
    return [
        float(q) for q in np.quantile(np.asarray(risk, dtype=float), np.linspace(0, 1, steps + 1))
    ]


def threshold_for_top(quantiles: Sequence[float], top_percent: float) -> float:
    """The risk at which the top `top_percent` % of the distribution described by
    `quantiles` starts (interpolated on the grid)."""
    if not 0 < top_percent < 100:
        raise ValueError(f"top_percent must be between 0 and 100, not {top_percent}")
    grid = np.linspace(0, 1, len(quantiles))
    return float(np.interp(1 - top_percent / 100, grid, np.asarray(quantiles, dtype=float)))


def _at_threshold(y: np.ndarray, risk: np.ndarray, threshold: float, weights: np.ndarray):
    """Flagged count, sensitivity and PPV at `threshold` under each row of `weights`."""
    flagged = risk >= threshold
    hits = weights @ (flagged & y).astype(float)
    flagged_count = weights @ flagged.astype(float)
    positives = weights @ y.astype(float)
    return flagged_count, _ratio(hits, positives), _ratio(hits, flagged_count)


def _figure(point: float, resampled: np.ndarray) -> dict[str, Any]:
    return {"value": None if not np.isfinite(point) else float(point), "ci95": _interval(resampled)}


def operating_points(
    valid_quantiles: Sequence[float],
    y_test: np.ndarray,
    risk_test: np.ndarray,
    weights: np.ndarray,
    top_percents: Sequence[float] = TOP_PERCENTS,
) -> list[dict[str, Any]]:
    """One row per k: the threshold (from valid), and on test the flagged count,
    sensitivity, PPV and number needed to evaluate, each with its 95 % interval."""
    y_test = np.asarray(y_test, dtype=bool)
    risk_test = np.asarray(risk_test, dtype=float)
    ones = np.ones((1, len(y_test)))
    rows = []
    for k in top_percents:
        threshold = threshold_for_top(valid_quantiles, k)
        (flagged,), (sensitivity,), (ppv,) = _at_threshold(y_test, risk_test, threshold, ones)
        b_flagged, b_sensitivity, b_ppv = _at_threshold(y_test, risk_test, threshold, weights)
        rows.append(
            {
                "top_percent": k,
                "threshold": threshold,
                "flagged": _figure(flagged, b_flagged),
                "flagged_share": float(flagged / len(y_test)),
                "sensitivity": _figure(sensitivity, b_sensitivity),
                "ppv": _figure(ppv, b_ppv),
                "number_needed_to_evaluate": _figure(
                    1 / ppv if ppv else np.nan, _ratio(np.ones_like(b_ppv), b_ppv)
                ),
            }
        )
    return rows


@dataclass(frozen=True)
class RiskTiers:
    """High, medium and low `<30` risk from two "top k %" operating points of a model (its
    thresholds placed on the valid split's risk): what a care team's list is cut by."""

    high_top_percent: float
    medium_top_percent: float
    high_threshold: float
    medium_threshold: float

    @classmethod
    def of(cls, assessed: dict, high_top_percent: float, medium_top_percent: float) -> RiskTiers:
        quantiles = assessed["valid_risk_quantiles"]
        return cls(
            high_top_percent,
            medium_top_percent,
            threshold_for_top(quantiles, high_top_percent),
            threshold_for_top(quantiles, medium_top_percent),
        )

    def tier(self, risk: float) -> str:
        if risk >= self.high_threshold:
            return "high"
        return "medium" if risk >= self.medium_threshold else "low"

    def thresholds(self) -> dict[str, float]:
        """The risk at which each tier starts."""
        return {"high": self.high_threshold, "medium": self.medium_threshold, "low": 0.0}

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            "high": {"top_percent": self.high_top_percent, "threshold": self.high_threshold},
            "medium": {"top_percent": self.medium_top_percent, "threshold": self.medium_threshold},
        }


# --- subgroups ---------------------------------------------------------------------------


def group_labels(values: Sequence, patients: Sequence, min_patients: int) -> np.ndarray:
    """Each row's group: its value, or `POOLED` when the value has fewer than
    `min_patients` patients; missing values are a group of their own (`MISSING`)."""
    labels = pd.Series(np.asarray(values, dtype=object)).fillna(MISSING).astype(str)
    sizes = pd.Series(np.asarray(patients)).groupby(labels.to_numpy()).nunique()
    small = set(sizes[sizes < min_patients].index)
    return np.where(labels.isin(small), POOLED, labels.to_numpy()).astype(object)


def subgroups(
    frame: pd.DataFrame,
    y: np.ndarray,
    risk: np.ndarray,
    patients: Sequence,
    threshold: float,
    weights: np.ndarray,
    min_patients: int = MIN_GROUP_PATIENTS,
    bins: int = ECE_BINS,
) -> list[dict[str, Any]]:
    """One row per attribute and group: patients, encounters, ROC-AUC of `<30`, sensitivity
    and PPV at `threshold`, calibration-in-the-large (observed rate - mean risk) and ECE,
    each figure with its 95 % interval over the patient resamples `weights`."""
    y = np.asarray(y, dtype=bool)
    risk = np.asarray(risk, dtype=float)
    patients = np.asarray(patients)
    rows = []
    for key, attribute in SUBGROUP_ATTRIBUTES.items():
        labels = group_labels(frame[key].to_numpy(dtype=object), patients, min_patients)
        for group in sorted(set(labels), key=lambda g: (g == POOLED, g)):
            mask = labels == group
            gy, grisk, gw = y[mask], risk[mask], weights[:, mask]
            ones = np.ones((1, mask.sum()))
            _, (sensitivity,), (ppv,) = _at_threshold(gy, grisk, threshold, ones)
            _, b_sensitivity, b_ppv = _at_threshold(gy, grisk, threshold, gw)
            totals = gw.sum(axis=1)
            b_citl = _ratio(gw @ gy.astype(float), totals) - _ratio(gw @ grisk, totals)
            rows.append(
                {
                    "attribute": attribute,
                    "group": group,
                    "patients": len(np.unique(patients[mask])),
                    "encounters": int(mask.sum()),
                    "readmitted_lt30": int(gy.sum()),
                    "roc_auc": _figure(
                        weighted_auc(gy, grisk, ones)[0], weighted_auc(gy, grisk, gw)
                    ),
                    "sensitivity": _figure(sensitivity, b_sensitivity),
                    "ppv": _figure(ppv, b_ppv),
                    "calibration_in_the_large": _figure(gy.mean() - grisk.mean(), b_citl),
                    "ece": expected_calibration_error(gy.astype(float), grisk, bins),
                }
            )
    return rows


def largest_gap(rows: list[dict], figure: str = "sensitivity") -> float:
    """The widest difference of `figure` between two groups of one attribute (pooled groups
    excluded, as they mix several)."""
    gaps = [0.0]
    for attribute in SUBGROUP_ATTRIBUTES.values():
        values = [
            r[figure]["value"]
            for r in rows
            if r["attribute"] == attribute
            and r["group"] != POOLED
            and r[figure]["value"] is not None
        ]
        if len(values) > 1:
            gaps.append(max(values) - min(values))
    return float(max(gaps))


def fairness_gate(challenger: list[dict], champion: list[dict], tolerance: float) -> dict:
    """Whether a challenger's subgroup figures allow its promotion over the champion (both
    measured on the same test rows): its widest sensitivity gap between groups at the high
    tier may exceed the champion's by at most `tolerance`, and no group's ROC-AUC may fall
    by more than `tolerance`. Returns `passed`, the `reason` and the figures."""
    gap, champion_gap = largest_gap(challenger), largest_gap(champion)
    before = {
        (r["attribute"], r["group"]): r["roc_auc"]["value"]
        for r in champion
        if r["roc_auc"]["value"] is not None
    }
    falls = {
        f"{r['attribute']}={r['group']}": before[(r["attribute"], r["group"])]
        - r["roc_auc"]["value"]
        for r in challenger
        if (r["attribute"], r["group"]) in before and r["roc_auc"]["value"] is not None
    }
    worst_group, worst_fall = max(falls.items(), key=lambda item: item[1], default=("none", 0.0))
    problems = []
    if gap > champion_gap + tolerance:
        problems.append(
            f"sensitivity gap between groups {gap:.3f} vs champion {champion_gap:.3f} "
            f"(tolerance {tolerance:.3f})"
        )
    if worst_fall > tolerance:
        problems.append(
            f"ROC-AUC of {worst_group} falls by {worst_fall:.3f} (tolerance {tolerance:.3f})"
        )
    return {
        "passed": not problems,
        "reason": "; ".join(problems) or "subgroups within tolerance",
        "sensitivity_gap": gap,
        "champion_sensitivity_gap": champion_gap,
        "largest_auc_fall": float(worst_fall),
        "largest_auc_fall_group": worst_group,
        "tolerance": tolerance,
    }


# --- one model, assessed -----------------------------------------------------------------


def assess(
    risk: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    test_frame: pd.DataFrame,
    test_patients: Sequence,
    high_top_percent: float = 10,
    resamples: int = 200,
    seed: int = 0,
    min_group_patients: int = MIN_GROUP_PATIENTS,
) -> dict[str, Any]:
    """Everything above for one model: `risk` and `y` (is `<30`) for the valid and test
    splits, the test rows' attributes and patients. JSON-serialisable."""
    quantiles = risk_quantiles(risk["valid"])
    weights = bootstrap_weights(test_patients, resamples, seed)
    high = threshold_for_top(quantiles, high_top_percent)
    return {
        "target": LT30,
        "bootstrap": {"resamples": resamples, "unit": "patient", "seed": seed, "interval": 0.95},
        "ece_bins": ECE_BINS,
        "calibration": {split: calibration(y[split], risk[split]) for split in ("valid", "test")},
        "reliability": {
            split: reliability_bins(y[split], risk[split]) for split in ("valid", "test")
        },
        "valid_risk_quantiles": quantiles,
        "operating_points": operating_points(quantiles, y["test"], risk["test"], weights),
        "high_tier": {"top_percent": high_top_percent, "threshold": high},
        "subgroups": subgroups(
            test_frame, y["test"], risk["test"], test_patients, high, weights, min_group_patients
        ),
        "min_group_patients": min_group_patients,
    }


# --- figures -----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(figure) -> bytes:
    plt = _pyplot()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def reliability_png(reliability: dict[str, list[dict]], title: str) -> bytes:
    """The reliability diagram of `<30` (observed rate against mean risk per bin)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.8, 4.4), dpi=110)
    top = max(
        max(b["mean_risk"], b["observed_rate"]) for bins in reliability.values() for b in bins
    )
    axes.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for split, bins in reliability.items():
        axes.plot(
            [b["mean_risk"] for b in bins],
            [b["observed_rate"] for b in bins],
            marker="o",
            markersize=3,
            label=split,
        )
    axes.set_xlabel("mean predicted <30 risk (equal-mass bins)")
    axes.set_ylabel("observed <30 rate")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    return _png(figure)


def roc_pr_png(y: np.ndarray, risk: np.ndarray, title: str) -> bytes:
    """ROC and precision-recall curves of `<30` against the rest."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_curve

    plt = _pyplot()
    figure, (roc, pr) = plt.subplots(1, 2, figsize=(8.4, 4.0), dpi=110)
    fpr, tpr, _ = roc_curve(y, risk)
    auc = weighted_auc(np.asarray(y, dtype=bool), np.asarray(risk, dtype=float), np.ones(len(y)))[0]
    roc.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    roc.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("sensitivity")
    roc.legend(fontsize=8)
    precision, recall, _ = precision_recall_curve(y, risk)
    pr.plot(recall, precision, label=f"AP {average_precision_score(y, risk):.3f}")
    pr.axhline(float(np.mean(y)), color="grey", linestyle="--", linewidth=1, label="prevalence")
    pr.set_xlabel("sensitivity (recall)")
    pr.set_ylabel("PPV (precision)")
    pr.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return _png(figure)
