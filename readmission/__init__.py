"""Readmission: an MLOps platform for the UCI Diabetes 130-US hospitals data set.

One package holds the domain logic; the Airflow DAGs, the API, Streamlit and Locust only
wire it. Modules are the stages of the life cycle (`dataset`, `ingest`, `cleaning`,
`warehouse`, ...) and every stage is also a command: `python -m readmission --help`.
"""

__version__ = "0.1.0"
