"""Model registry page: the model the API serves (GET /model) and every registered
version with its scores and promotion tags (GET /model/versions), linked to MLflow, and every
promotion and rollback (GET /model/history)."""

from __future__ import annotations

from typing import Any

import streamlit as st
from ui_components import (
    model_history,
    model_versions,
    served_model,
    show_api_error,
    titled_with_refresh,
)
from ui_logic import (
    METRIC_COLUMNS,
    ApiError,
    describe_served,
    history_table,
    load_settings,
    mlflow_model_url,
    registry_table,
    registry_warning,
)

from readmission.registry import MODEL_NAME


def show_served(model: dict[str, Any]) -> None:
    """The served version in a line, its three headline scores, and when it was promoted."""
    st.subheader("Served model")
    st.write(describe_served(model))
    metrics = model.get("metrics") or {}
    for cell, (title, key) in zip(
        st.columns(len(METRIC_COLUMNS)), METRIC_COLUMNS.items(), strict=True
    ):
        value = metrics.get(key)
        cell.metric(title, f"{value:.3f}" if isinstance(value, int | float) else "n/a")
    if warning := registry_warning(model):
        st.warning(warning, icon="⚠️")
    tags = model.get("tags") or {}
    st.caption(
        f"Promoted at {tags.get('promoted_at', 'unknown')}; "
        f"loaded by the API at {model.get('loaded_at', 'unknown')}."
    )


settings = load_settings()
head = titled_with_refresh("Model registry", key="registry_refresh")

served: dict[str, Any] | None = None
try:
    served = served_model(settings)
except ApiError as error:
    show_api_error(error)
else:
    show_served(served)

model_name = str((served or {}).get("name") or MODEL_NAME)
with head:
    st.link_button(
        f"Open {model_name} in the MLflow UI", mlflow_model_url(settings.mlflow_ui_url, model_name)
    )

st.subheader("Versions")
try:
    versions = model_versions(settings)
except ApiError as error:
    show_api_error(error)
    st.stop()
if not versions:
    st.info("No version is registered yet: train one with `make run`.", icon="📭")
    st.stop()

st.dataframe(
    registry_table(versions, served.get("version") if served else None),
    hide_index=True,
    column_config={
        **{title: st.column_config.NumberColumn(format="%.3f") for title in METRIC_COLUMNS},
        "production": st.column_config.CheckboxColumn(help="Stage Production or alias production"),
        "served": st.column_config.CheckboxColumn(help="The version the API answers with"),
        "promoted at": st.column_config.TextColumn(help="Tag promoted_at"),
        "decision": st.column_config.TextColumn(help="Tag promotion_decision"),
    },
)
st.caption(
    "Scores: macro-F1 on the validation and test splits (validation decides promotions), "
    "ROC-AUC of the <30 class on the test split."
)

st.subheader("Production history")
try:
    moves = model_history(settings)
except ApiError as error:
    show_api_error(error)
    st.stop()
if not moves:
    st.info("No move of the production alias is recorded yet.", icon="📭")
    st.stop()
st.dataframe(history_table(moves), hide_index=True)
st.caption(
    "Every promotion and rollback, newest first. Roll back with "
    "`python -m readmission rollback --reason TEXT` (to the previous Production version, or "
    "`--to VERSION`); the API serves it within its poll interval."
)
