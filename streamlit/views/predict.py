"""Predict page: a form of one encounter, built from the schema, sent to POST /predict.

The defaults describe a typical patient (`Column.typical`); the answer stays on the page
(session state) until the next submission, with the patient's top factors
(`explain=true`) and the served model's global importance (GET /model/importance).
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from ui_components import client as shared_client
from ui_components import show_api_error, show_factors, show_importance, show_prediction
from ui_logic import (
    ENCOUNTER_LABEL,
    FORM_SECTIONS,
    MEDICATION_COLUMNS,
    PATIENT_LABEL,
    ApiError,
    FormError,
    build_request,
    choices,
    default_choice,
    label_of,
    load_settings,
)

from readmission import schema
from readmission.schema import Column, Kind

RESULT_KEY = "predict_result"
UNEXPLAINED_KEY = "predict_unexplained"
FIELDS_PER_ROW = 3
MEDICATIONS_PER_ROW = 4


def field(column: Column) -> Any:
    """The widget of one column: a dropdown, a bounded number or an ICD-9 code; its value."""
    key = f"form_{column.name}"
    label = label_of(column)
    if column.kind in (Kind.CATEGORY, Kind.CODE):
        options = choices(column)
        index = options.index(default_choice(column))
        return st.selectbox(label, options, index=index, key=key, help=column.description)
    if column.kind is Kind.COUNT:
        return st.number_input(
            label,
            min_value=column.minimum,
            max_value=column.maximum,
            value=int(column.typical),
            step=1,
            key=key,
            help=f"{column.description} ({column.minimum}-{column.maximum})",
        )
    return st.text_input(
        label,
        value=str(column.typical or ""),
        max_chars=10,
        key=key,
        help=f"{column.description}, e.g. 428, 250.83, V57; leave blank if unknown",
    )


def grid(names: tuple[str, ...], per_row: int) -> dict[str, Any]:
    """The widgets of some columns laid out `per_row` a row; their values by UCI name."""
    values: dict[str, Any] = {}
    for start in range(0, len(names), per_row):
        cells = st.columns(per_row)
        for cell, name in zip(cells, names[start : start + per_row], strict=False):
            with cell:
                values[name] = field(schema.BY_NAME[name])
    return values


st.title("Predict a readmission")
st.write(
    "Describe one hospital encounter of a diabetic patient. The form starts from a typical "
    "patient; change what differs and press **Predict**."
)
client = shared_client()

with st.form("predict"):
    values: dict[str, Any] = {}
    for title, names in FORM_SECTIONS:
        st.markdown(f"**{title}**")
        values.update(grid(names, FIELDS_PER_ROW))
    with st.expander(f"Medications ({len(MEDICATION_COLUMNS)}): prescription and dose change"):
        values.update(grid(MEDICATION_COLUMNS, MEDICATIONS_PER_ROW))
    patient_nbr = st.number_input(
        PATIENT_LABEL,
        min_value=0,
        value=None,
        step=1,
        format="%d",
        key="form_patient_nbr",
        help="When given, the API adds the patient's earlier encounters to the prediction.",
    )
    encounter_id = st.number_input(
        ENCOUNTER_LABEL,
        min_value=0,
        value=None,
        step=1,
        format="%d",
        key="form_encounter_id",
        help="When re-scoring a stored encounter, its id: only the patient's encounters "
        "before it count as history (never its own outcome). Leave empty for a new one.",
    )
    submitted = st.form_submit_button("Predict", type="primary", key="predict_submit")


def predict_explained(body: dict[str, Any]):
    """POST /predict?explain=true; a model that cannot be explained (409) is asked again
    without, and the page says why there are no factors."""
    try:
        return client.predict(body, explain=True)
    except ApiError as error:
        if error.status_code != 409:
            raise
        st.session_state[UNEXPLAINED_KEY] = str(error)
        return client.predict(body)


if submitted:
    st.session_state.pop(RESULT_KEY, None)
    st.session_state.pop(UNEXPLAINED_KEY, None)
    try:
        st.session_state[RESULT_KEY] = predict_explained(
            build_request(values, patient_nbr, encounter_id)
        )
    except FormError as error:
        st.error(f"Check the form: {error}", icon="✏️")
    except ApiError as error:
        show_api_error(error)

if (result := st.session_state.get(RESULT_KEY)) is not None:
    show_prediction(result)
    show_factors(result)
    if unexplained := st.session_state.get(UNEXPLAINED_KEY):
        st.info(f"No factors for this prediction: {unexplained}")
    show_importance(load_settings())
