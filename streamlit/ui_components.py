"""Streamlit pieces the pages share: showing an API failure and a prediction."""

from __future__ import annotations

import streamlit as st
from ui_logic import (
    ApiError,
    PredictionResult,
    describe_class,
    describe_history,
    probability_frame,
)

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
