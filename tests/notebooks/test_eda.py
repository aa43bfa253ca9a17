"""The EDA notebook runs top to bottom against a store the pipeline filled."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from readmission import dataset, pipeline, synthetic
from readmission.settings import Settings

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[2] / "jupyter" / "eda.ipynb"


def test_the_eda_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    csv = synthetic.write_csv(synthetic.encounters(3_000, seed=12), tmp_path / "d.csv.gz")
    env = {
        "READMISSION_STATE_DIR": str(tmp_path / "state"),
        "DIABETES_CSV": str(csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(csv),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # no registry: the notebook says so
    }
    settings = Settings(**env)
    pipeline.load_raw_batches(pipeline.plan_raw_load(settings=settings), settings=settings)
    pipeline.clean_new_rows(settings=settings)
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "total          3,000       3,000" in outputs
    assert "registry not reachable" in outputs or "no Production model" in outputs
    assert not any(
        output.get("output_type") == "error"
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def test_the_committed_notebook_carries_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs
            assert cell.execution_count is None
