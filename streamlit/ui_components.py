"""Streamlit pieces the pages share: the API client and the registry's answers, cached;
showing an API failure and a prediction."""

from __future__ import annotations

from typing import Any

import streamlit as st
from ui_client import ApiClient
from ui_logic import (
    ApiError,
    PredictionResult,
    UiSettings,
    describe_class,
    describe_explanation,
    describe_history,
    describe_tier,
    factor_frame,
    importance_frame,
    load_settings,
    probability_frame,
)

#: How long the answers of GET /model and GET /model/versions are reused by every session
#: (the registry page's Refresh button forgets them sooner); predictions are never cached.
REGISTRY_TTL_SECONDS = 15


@st.cache_resource(show_spinner=False)
def api_client(settings: UiSettings) -> ApiClient:
    """One client, and so one pool of connections, for every session and rerun."""
    return ApiClient(settings)


def client() -> ApiClient:
    """The shared client of the settings in the environment (API_URL, ...)."""
    return api_client(load_settings())


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def served_model(settings: UiSettings) -> dict[str, Any]:
    """GET /model, reused for REGISTRY_TTL_SECONDS (a failure is not cached)."""
    return api_client(settings).model()


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def model_versions(settings: UiSettings) -> list[dict[str, Any]]:
    """GET /model/versions, reused for REGISTRY_TTL_SECONDS (a failure is not cached)."""
    return api_client(settings).model_versions()


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def model_history(settings: UiSettings) -> list[dict[str, Any]]:
    """GET /model/history, reused for REGISTRY_TTL_SECONDS (a failure is not cached)."""
    return api_client(settings).model_history()


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def operating_points(settings: UiSettings) -> dict[str, Any]:
    """GET /model/operating-points, reused for REGISTRY_TTL_SECONDS."""
    return api_client(settings).operating_points()


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def model_card(settings: UiSettings) -> str:
    """GET /model/card?format=markdown, reused for REGISTRY_TTL_SECONDS."""
    return api_client(settings).model_card_markdown()


@st.cache_data(ttl=REGISTRY_TTL_SECONDS, show_spinner=False)
def model_importance(settings: UiSettings) -> dict[str, Any]:
    """GET /model/importance, reused for REGISTRY_TTL_SECONDS (a failure is not cached)."""
    return api_client(settings).importance()


def forget_registry() -> None:
    """Ask the API again at the next call (the registry page's Refresh)."""
    served_model.clear()
    model_versions.clear()
    model_history.clear()
    operating_points.clear()
    model_card.clear()
    model_importance.clear()


def titled_with_refresh(title: str, key: str) -> Any:
    """The page's title, and a Refresh button beside the column it returns (for the page's
    header): Refresh forgets what was read from the API, so the page asks again."""
    st.title(title)
    head, refresh = st.columns([4, 1])
    with refresh:
        if st.button("Refresh", key=key):
            forget_registry()
    return head


#: Streamlit's colour of each class: the sooner the readmission, the hotter.
CLASS_COLORS = {"NO": "green", ">30": "orange", "<30": "red"}


def show_api_error(error: ApiError) -> None:
    """An ApiError as a red error, or a yellow warning when it is a state to wait out (503);
    refused fields as a list under it."""
    show = st.warning if error.severity == "warning" else st.error
    show(str(error), icon="⚠️" if error.severity == "warning" else "🚫")


def show_prediction(result: PredictionResult) -> None:
    """The predicted class, the 30-day risk, the model that answered, and the three
    probabilities as a bar chart."""
    prediction = result.prediction
    st.subheader("Prediction")
    klass, risk, model = st.columns([2, 1, 1])
    with klass:
        color = CLASS_COLORS.get(prediction.predicted_class, "gray")
        st.caption("Predicted class")
        st.markdown(f"### :{color}[{describe_class(prediction.predicted_class)}]")
    risk.metric("30-day readmission risk", f"{prediction.readmission_30d_risk:.1%}")
    model.metric(
        "Model version",
        f"v{result.model.version}",
        help=f"Answered by {result.model.describe()}",
    )
    st.caption(
        f"Answered by **{result.model.describe()}**. The predicted class weighs the "
        "probabilities with per-class decision weights tuned for macro-F1 on the "
        "validation split, so it is not always the most probable class."
    )
    if tier := describe_tier(prediction):
        st.markdown(f"**{tier}**")
    if history := describe_history(prediction.history):
        st.caption(history)
    st.bar_chart(
        probability_frame(prediction.probabilities),
        x="class",
        y="probability",
        x_label="readmission class",
        y_label="probability",
        horizontal=True,
        sort=False,
        height=200,
    )


def show_factors(result: PredictionResult) -> None:
    """The patient's top factors (POST /predict?explain=true), as a table and a chart."""
    explanation = result.prediction.explanation
    if explanation is None:
        return
    st.subheader("Why this patient")
    st.caption(describe_explanation(explanation))
    factors = factor_frame(explanation)
    if factors.empty:
        return
    st.dataframe(factors, hide_index=True)
    st.bar_chart(
        factors,
        x="feature",
        y="contribution",
        color="direction",
        horizontal=True,
        sort=False,
        height=60 + 28 * len(factors),
    )


def show_importance(settings: UiSettings) -> None:
    """The served model's global importance (GET /model/importance) as a chart; a
    caption when the API cannot give it (an older model, no model, the API down)."""
    st.subheader("What the model weighs most, over all patients")
    try:
        found = model_importance(settings)
        table = importance_frame(found)
    except ApiError as error:
        st.caption(f"Global importance unavailable: {error}")
        return
    st.caption(
        f"Mean absolute contribution to the 30-day score ({found.get('unit')}) over "
        f"{found.get('rows', 0):,} encounters of the validation split."
    )
    st.bar_chart(table, x="feature", y="importance", horizontal=True, sort=False, height=420)
