"""The people-facing UI of the readmission platform (Streamlit, port 8501).

Four pages, each in `views/`: a form that predicts one encounter, a CSV batch
prediction, decision support (operating points, calibration, the model card) and
the model registry. The app talks only to the inference API (`API_URL`);
its logic lives in `ui_logic` (pure) and `ui_client` (HTTP) so that tests need no browser.

    API_URL=http://127.0.0.1:8989 streamlit run streamlit/streamlit_app.py
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from ui_logic import load_settings, mlflow_model_url

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="Diabetes readmission", page_icon="🏥", layout="wide")
try:
    settings = load_settings()
except ValueError as error:  # a bad setting: say which, instead of a traceback
    st.error(f"The UI is misconfigured: {error}")
    st.stop()
navigation = st.navigation(
    [
        st.Page(VIEWS / "predict.py", title="Predict", icon=":material/person:", default=True),
        st.Page(VIEWS / "batch.py", title="Batch (CSV)", icon=":material/table:"),
        st.Page(VIEWS / "decision.py", title="Decision support", icon=":material/rule:"),
        st.Page(VIEWS / "registry.py", title="Model registry", icon=":material/inventory_2:"),
    ]
)
with st.sidebar:
    st.caption(f"Inference API: `{settings.api_url}`")
    st.caption(f"[MLflow model registry]({mlflow_model_url(settings.mlflow_ui_url)})")
navigation.run()
