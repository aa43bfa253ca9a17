"""Model quality on the patient-grouped test split, and the training DAG's wall time.

Loads and cleans the real file into a throwaway SQLite store, runs
`model_training_pipeline` once with `dag.test()` (the full search of the three families,
in one process, against a throwaway MLflow), then prints every candidate's figures, the
Production model's, the majority-class baseline, and the issue's targets:
macro-F1 >= 0.45 and ROC-AUC(`<30` vs rest) >= 0.70 on the test split.

    python bench/quality.py [--profile full|quick] [--csv PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from readmission.names import PROFILES  # noqa: E402


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's stdout and stderr (Airflow's task logs) to a file meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as target:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()

    from tests.support.tools import real_csv

    csv = args.csv or real_csv()
    if csv is None:
        print("the real UCI file is needed: set DIABETES_CSV or pass --csv", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="readmission-quality-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "READMISSION_STATE_DIR": str(work / "state"),
            "DIABETES_CSV": str(csv),
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        }
    )
    os.chdir(work)  # MLflow without a server keeps artifacts in ./mlruns
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
    )

    from airflow.dag_processing.dagbag import DagBag

    from readmission import evaluation, pipeline, registry, training

    pipeline.load_raw_batches(pipeline.plan_raw_load())
    pipeline.clean_new_rows()
    dag = DagBag(dag_folder=str(ROOT / "dags")).get_dag("model_training_pipeline")
    log = work / "dag_test.log"
    print(f"running model_training_pipeline ({args.profile}); Airflow's log: {log}", flush=True)
    started = time.perf_counter()
    with _output_to(log):
        run = dag.test(run_conf={"profile": args.profile})
    wall = time.perf_counter() - started
    if run.state != "success":
        print(f"the training DAG run {run.state}", file=sys.stderr)
        return 1

    import mlflow

    models = registry.Registry(os.environ["MLFLOW_TRACKING_URI"])
    experiment = models.client.get_experiment_by_name(registry.EXPERIMENT_NAME)
    with models.activate():
        runs = mlflow.search_runs([experiment.experiment_id], output_format="list")
    data = training.load_training_data(pipeline.engine())
    baseline = evaluation.majority_baseline(data.target("train"), data.target("test"))
    production = models.describe(models.champion())
    print(
        f"training DAG ({args.profile} search, dag.test in one process): {wall:.0f} s wall "
        f"on {os.cpu_count()} cores; rows {json.dumps(data.lineage['rows'])}\n"
    )
    columns = (
        "valid_macro_f1",
        "test_macro_f1",
        "test_roc_auc_lt30",
        "test_roc_auc_ovr",
        "test_accuracy",
        "test_log_loss",
        "test_recall_lt30",
        "training_seconds",
    )
    print(f"{'candidate':<24}" + "".join(f"{c:>19}" for c in columns))
    for found in sorted(runs, key=lambda r: r.data.params.get("family", "")):
        metrics = found.data.metrics
        print(
            f"{found.data.params.get('family', '?'):<24}"
            + "".join(f"{metrics.get(c, float('nan')):>19.4f}" for c in columns)
        )
    print(
        f"{'majority class':<24}{'':>19}{baseline['macro_f1']:>19.4f}{'':>19}{'':>19}"
        f"{baseline['accuracy']:>19.4f}"
    )
    metrics = production["metrics"]
    family = production["tags"].get("family")
    print(f"\nProduction: v{production['version']} ({family})")
    for name, target in (("test_macro_f1", 0.45), ("test_roc_auc_lt30", 0.70)):
        value = metrics[name]
        verdict = "met" if value >= target else "MISSED"
        print(f"  {name:<18} {value:.4f}   (target >= {target:.2f})   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
