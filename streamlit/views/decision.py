"""Decision support page: where to draw the line (the operating points and the risk tiers of
the served model, with their intervals), how far to trust its risk (calibration), and its
model card (GET /model/operating-points, GET /model/card)."""

from __future__ import annotations

import streamlit as st
from ui_components import model_card, operating_points, show_api_error, titled_with_refresh
from ui_logic import ApiError, load_settings, operating_points_frame

settings = load_settings()
head = titled_with_refresh("Decision support", key="decision_refresh")
with head:
    st.write(
        "If a care manager calls the discharges with the highest 30-day risk first, how many "
        "to call, and what that finds. Thresholds are chosen on the validation split, "
        "figures measured on the test split, 95 % intervals from resampling patients."
    )

try:
    points = operating_points(settings)
except ApiError as error:
    show_api_error(error)
else:
    model = points["model"]
    tiers = points["tiers"]
    st.subheader(f"Operating points of {model['name']} v{model['version']}")
    st.dataframe(operating_points_frame(points["operating_points"]), hide_index=True)
    high, medium = tiers["high"], tiers["medium"]
    st.caption(
        f"Risk tiers of /predict: high from {high['threshold']:.1%} (top "
        f"{high['top_percent']:g} %), medium from {medium['threshold']:.1%} (top "
        f"{medium['top_percent']:g} %), low below. Number needed to evaluate: discharges "
        "called per readmission within 30 days found."
    )
    test = points["calibration"]["test"]
    st.subheader("How far to trust the risk")
    cells = st.columns(4)
    cells[0].metric("Brier score (test)", f"{test['brier']:.4f}")
    cells[1].metric("Calibration error (test)", f"{test['ece']:.4f}", help="ECE, equal-mass bins")
    cells[2].metric("Calibration slope", f"{test['slope']:.2f}", help="1 when calibrated")
    cells[3].metric(
        "Observed vs predicted", f"{test['observed_rate']:.1%} / {test['mean_risk']:.1%}"
    )

st.subheader("Model card")
try:
    st.markdown(model_card(settings))
except ApiError as error:
    show_api_error(error)
