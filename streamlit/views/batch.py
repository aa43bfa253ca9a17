"""Batch page: a CSV of encounters, predicted through POST /predict/batch in chunks of at
most 1,000 rows, then offered for download with the prediction columns added.

The result is kept in session state under the upload's hash, so that the download
button's rerun neither loses it nor predicts again.
"""

from __future__ import annotations

import hashlib
import re

import pandas as pd
import streamlit as st
from ui_client import ApiClient
from ui_components import client as shared_client
from ui_components import show_api_error
from ui_logic import (
    MAX_BATCH_ROWS,
    PREDICTION_COLUMNS,
    PREVIEW_ROWS,
    ApiError,
    CsvError,
    add_predictions,
    chunk_bounds,
    class_counts,
    ignored_columns,
    prediction_row,
    read_encounters,
    to_csv_bytes,
    to_encounters,
)

RESULT_KEY = "batch_result"


def download_name(upload_name: str) -> str:
    """`encounters.csv.gz` -> `encounters_predictions.csv`."""
    stem = re.sub(r"(\.csv)?(\.gz)?$", "", upload_name, flags=re.IGNORECASE) or "encounters"
    return f"{stem}_predictions.csv"


def predict_all(client: ApiClient, frame: pd.DataFrame) -> pd.DataFrame | None:
    """Every row predicted chunk by chunk with a progress bar; None (and the error shown)
    when a chunk fails."""
    total = len(frame)
    progress = st.progress(0.0, text=f"0 of {total:,} rows")
    rows: list[dict[str, object]] = []
    for start, stop in chunk_bounds(total, MAX_BATCH_ROWS):
        try:
            predictions, model = client.predict_batch(
                to_encounters(frame.iloc[start:stop]), row_offset=start
            )
        except ApiError as error:
            progress.empty()
            show_api_error(error)
            st.caption(
                f"Rows {start + 1:,}-{stop:,} of {total:,} failed; nothing can be downloaded "
                "until every row is predicted."
            )
            return None
        rows.extend(prediction_row(p, model) for p in predictions)
        progress.progress(stop / total, text=f"{stop:,} of {total:,} rows")
    progress.empty()
    return add_predictions(frame, rows)


st.title("Predict a CSV of encounters")
st.write(
    "Upload encounters with the UCI column names (`race`, `age`, `admission_type_id`, ...; "
    "`?` or blank for a missing value; other columns are kept but not sent). They are sent "
    f"to the API {MAX_BATCH_ROWS:,} rows at a time, and the same file comes back with "
    + ", ".join(f"`{c}`" for c in PREDICTION_COLUMNS)
    + " added."
)
client = shared_client()
upload = st.file_uploader("CSV of encounters", type=["csv", "gz"], key="batch_upload")
if upload is None:
    st.info("Choose a CSV file (plain or gzip-compressed) to start.", icon="📄")
    st.stop()

data = upload.getvalue()
try:
    frame = read_encounters(data)
except CsvError as error:
    st.error(f"{upload.name}: {error}", icon="📄")
    st.stop()

upload_id = hashlib.sha256(data).hexdigest()
st.write(f"**{upload.name}**: {len(frame):,} rows, {len(frame.columns)} columns.")
if ignored := ignored_columns(frame):
    st.caption("Kept in the download but not sent: " + ", ".join(f"`{c}`" for c in ignored))
st.dataframe(frame.head(PREVIEW_ROWS), hide_index=True)

if st.button(f"Predict {len(frame):,} encounters", type="primary", key="batch_predict"):
    st.session_state.pop(RESULT_KEY, None)
    if (predicted := predict_all(client, frame)) is not None:
        st.session_state[RESULT_KEY] = (upload_id, predicted)

stored = st.session_state.get(RESULT_KEY)
if stored is not None and stored[0] == upload_id:
    predicted = stored[1]
    versions = ", ".join(sorted(predicted["model_version"].astype(str).unique()))
    st.success(f"{len(predicted):,} encounters predicted by model version {versions}.")
    counts, preview = st.columns([1, 2])
    with counts:
        st.bar_chart(
            class_counts(predicted),
            x="class",
            y="encounters",
            horizontal=True,
            sort=False,
            height=200,
        )
    with preview:
        shown = [
            *PREDICTION_COLUMNS,
            *(c for c in predicted.columns if c not in PREDICTION_COLUMNS),
        ]
        st.dataframe(predicted[shown].head(PREVIEW_ROWS), hide_index=True)
    st.download_button(
        "Download the CSV with predictions",
        data=to_csv_bytes(predicted),
        file_name=download_name(upload.name),
        mime="text/csv",
        key="batch_download",
        on_click="ignore",
    )
