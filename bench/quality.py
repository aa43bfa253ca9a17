"""Model quality on the patient-grouped test split, and the training DAG's wall time.

Loads and cleans the real file into a throwaway SQLite store, runs
`model_training_pipeline` once with `dag.test()` (the full search of the four families,
in one process, against a throwaway MLflow), then prints every candidate's figures, the
Production model's, the majority-class baseline, and then every decision-support figure
of the Production model: calibration of the `<30` risk (Brier, ECE over 15 equal-mass bins,
slope, intercept; whether recalibration was used), the top-k operating points, the subgroup
table (AUC, sensitivity, PPV, calibration-in-the-large, ECE), all with 95 % patient-bootstrap
intervals, and the targets: on test, macro-F1 >= 0.48, ROC-AUC(`<30` vs rest) >= 0.70, ECE
of `<30` <= 0.01 overall and <= 0.02 in every race, gender and age group of >= 1,000
patients.

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


def _ci(figure: dict, fmt: str = ".3f") -> str:
    low, high = figure["ci95"]
    value = figure["value"]
    if value is None:
        return "n/a"
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]" if low is not None else f"{value:{fmt}}"


def _print_assessment(assessed: dict) -> None:
    """Calibration, operating points and subgroups of one model, as tables."""
    boot = assessed["bootstrap"]
    print(
        f"  intervals: 95 % over {boot['resamples']} resamples of {boot['unit']}s; "
        f"ECE over {assessed['ece_bins']} equal-mass bins"
    )
    print("\n  calibration of <30    brier      ECE    slope  intercept  observed  mean risk")
    for split, c in assessed["calibration"].items():
        print(
            f"  {split:<20} {c['brier']:>7.4f}  {c['ece']:>7.4f}  {c['slope']:>7.3f}  "
            f"{c['intercept']:>9.3f}  {c['observed_rate']:>8.4f}  {c['mean_risk']:>9.4f}"
        )
    recalibration = assessed.get("recalibration")
    if recalibration:
        before, after = recalibration["whole_train"], recalibration["recalibrated"]
        print(
            f"  recalibration {'used' if recalibration['used'] else 'not used'}: valid log-loss "
            f"{before['valid_log_loss']:.4f} -> {after['valid_log_loss']:.4f}, valid ECE "
            f"{before['valid_ece_lt30']:.4f} -> {after['valid_ece_lt30']:.4f}"
        )
    print("\n  operating points (threshold on valid, figures on test)")
    print(
        f"  {'top k':>6} {'threshold':>10} {'flagged':>8} {'sensitivity':>24} {'PPV':>24} "
        f"{'NNE':>22}"
    )
    for p in assessed["operating_points"]:
        print(
            f"  {p['top_percent']:>5g}% {p['threshold']:>10.4f} {p['flagged']['value']:>8,.0f} "
            f"{_ci(p['sensitivity']):>24} {_ci(p['ppv']):>24} "
            f"{_ci(p['number_needed_to_evaluate'], '.2f'):>22}"
        )
    high = assessed["high_tier"]
    print(
        "\n  subgroups (test; sensitivity and PPV at the high tier, "
        f"top {high['top_percent']:g} %, risk >= {high['threshold']:.4f}; "
        f"groups under {assessed['min_group_patients']} patients pooled)"
    )
    print(
        f"  {'attribute':<9} {'group':<16} {'patients':>8} {'ROC-AUC':>22} {'sensitivity':>22} "
        f"{'PPV':>22} {'obs - pred':>24} {'ECE':>7}"
    )
    for r in assessed["subgroups"]:
        print(
            f"  {r['attribute']:<9} {r['group']:<16} {r['patients']:>8,} {_ci(r['roc_auc']):>22} "
            f"{_ci(r['sensitivity']):>22} {_ci(r['ppv']):>22} "
            f"{_ci(r['calibration_in_the_large'], '+.4f'):>24} {r['ece']:>7.4f}"
        )


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
        "test_brier_lt30",
        "test_ece_lt30",
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
    model, _ = models.load_champion()
    assessed = model.assessment_
    _print_assessment(assessed)
    big = [
        r
        for r in assessed["subgroups"]
        if r["patients"] >= 1_000 and r["group"] != "other (pooled)"
    ]
    worst = max(big, key=lambda r: r["ece"])
    targets = (
        ("test_macro_f1", metrics["test_macro_f1"], ">=", 0.48),
        ("test_roc_auc_lt30", metrics["test_roc_auc_lt30"], ">=", 0.70),
        ("test ECE of <30", assessed["calibration"]["test"]["ece"], "<=", 0.01),
        (f"worst group ECE ({worst['attribute']}={worst['group']})", worst["ece"], "<=", 0.02),
    )
    print("\ntargets (test split)")
    for name, value, sense, target in targets:
        met = value >= target if sense == ">=" else value <= target
        print(
            f"  {name:<44} {value:.4f}   (target {sense} {target:.2f})   "
            + ("met" if met else "MISSED")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
