"""shap's dict form of a fitted model's trees, what `readmission.treeshap.Forest.of` reads
(as `explain.py` builds it for the served families): for the tests and bench/treeshap.py,
which check our values against shap's TreeExplainer on the same trees."""

from __future__ import annotations

from typing import Any


def shap_trees(explainer: Any) -> list[dict]:
    """The trees of a `shap.TreeExplainer`, first output only, as `Forest.of` takes them."""
    return [
        {
            "children_left": t.children_left,
            "children_right": t.children_right,
            "children_default": t.children_default,
            "features": t.features,
            "thresholds": t.thresholds,
            "values": t.values[:, :1],
            "node_sample_weight": t.node_sample_weight,
        }
        for t in explainer.model.trees
    ]
