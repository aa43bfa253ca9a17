"""How cost grows with the data: raw load, cleaning, training (quick profile) and batch
scoring at 1x, 2x, 4x and 8x the UCI file.

The file is replicated: copy k of every encounter gets `encounter_id + k * 10^9` and
`patient_nbr + k * 10^9`, so every copy is a new encounter of a new patient (the split,
a hash of the patient, is redrawn for each copy). For each factor, a fresh database on a
throwaway PostgreSQL server (fsync on) and a fresh MLflow store take the platform's own
steps in order, each in its own Python process so that its peak memory is its own:

  load     pipeline.plan_raw_load + load_raw_batches (the CLI's path, 2 connections)
  copy     reference: a raw-bytes COPY of the same file into 50 text columns (the issue's
           yardstick for the raw load: ours >= 0.7x its speed)
  clean    pipeline.clean_new_rows: raw_data -> clean_data
  train    pipeline.pin_data, train_candidate per family (quick profile), promote_best;
           at --train-factors only (1 and 2 unless given: see below)
  score    pipeline.score_batch: every clean encounter scored, tiered and explained, by
           the model trained at 1x at every factor, so that its cost is the scoring's and
           not that of a model grown on more data

Prints seconds and peak resident memory of each step's process (and its growth over the
process's memory after imports), then, per step, the exponent b of cost ~ factor^b fitted
over the factors (b = 1: linear; b > 1.15 is flagged as faster than linear).

Copies of an encounter are other patients, so a patient-grouped holdout (the search's,
the boosting's early stopping) holds copies of rows the model is fitted on: the boosting
stops later and the trees grow with the factor, which a real network's new patients would
not cause; the tree nodes of each candidate are printed to show it. Training at 8x takes
over an hour on two cores for that reason.

    python bench/scale.py [--factors 1,2,4,8] [--train-factors 1,2] [--csv PATH]
                          [--steps load,copy,clean,train,score]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("load", "copy", "clean", "train", "score")
#: Added to the identifiers of copy k (times k): above every id of the UCI file (< 5e8).
ID_OFFSET = 10**9


def replicate(source: bytes, factor: int) -> bytes:
    """The file `factor` times over: copy k (0-based) of each data line has its
    encounter_id and patient_nbr (the first two fields) raised by k * ID_OFFSET."""
    lines = source.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    end = b"\r\n" if lines[0].endswith(b"\r") else b"\n"  # the file's own line ends
    header, data = lines[0].rstrip(b"\r"), [line.rstrip(b"\r") for line in lines[1:]]
    out = [header, *data]
    for k in range(1, factor):
        offset = k * ID_OFFSET
        for line in data:
            encounter, patient, rest = line.split(b",", 2)
            out.append(b"%d,%d,%b" % (int(encounter) + offset, int(patient) + offset, rest))
    return end.join(out) + end


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _step(name: str) -> dict:
    """Run one step in this process (the environment says where); its figures."""
    from readmission import dataset, pipeline
    from readmission.settings import get_settings

    settings = get_settings()
    detail: dict = {}
    if name == "score":  # what scoring loads before it starts, as the other steps' imports
        from readmission import scoring  # noqa: F401
    if name == "train":
        from readmission import training  # noqa: F401
    if name == "copy":  # the schema it writes into, as the load finds it
        pipeline.engine(settings)
    start_rss = _rss_mb()
    started = time.perf_counter()
    if name == "load":
        reports = pipeline.load_raw_batches(
            pipeline.plan_raw_load(settings=settings), None, settings
        )
        detail["rows"] = sum(r["rows_inserted"] for r in reports)
    elif name == "copy":
        from bench.ingest import load_copy_bytes

        load_copy_bytes(settings.database_url, dataset.locate(settings).path)
    elif name == "clean":
        detail.update(pipeline.clean_new_rows(settings=settings))
    elif name == "train":
        snapshot = pipeline.pin_data(settings)
        candidates = []
        import mlflow

        for family in pipeline.model_families():
            begun = time.perf_counter()
            candidates.append(
                pipeline.train_candidate(family, "quick", settings=settings, snapshot=snapshot)
            )
            nodes = mlflow.get_run(candidates[-1]["run_id"]).data.metrics.get("tree_nodes")
            detail[family] = f"{time.perf_counter() - begun:.1f} s" + (
                f" {nodes:,.0f} nodes" if nodes else ""
            )
        begun = time.perf_counter()
        decision = pipeline.promote_best(candidates, settings=settings, snapshot=snapshot)
        detail["promote"] = round(time.perf_counter() - begun, 2)
        detail["promoted"] = decision.get("promoted")
    elif name == "score":
        detail.update(pipeline.score_batch(settings))
    else:
        raise SystemExit(f"unknown step {name}")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak, "start_mb": start_rss, "detail": detail}


def _run_step(name: str, env: dict[str, str], work: Path) -> dict:
    """One step in a child process of this script, in `work` (MLflow's ./mlruns)."""
    log = work / f"{name}.log"
    with log.open("ab") as stderr:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--step", name],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=stderr,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"step {name} failed (exit {done.returncode}):\n" + "\n".join(tail))
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _exponent(factors: list[int], values: list[float]) -> float:
    """b of value ~ a * factor^b, least squares in log-log."""
    x, y = np.log(factors), np.log(np.maximum(values, 1e-9))
    return float(np.polyfit(x, y, 1)[0])


def _database(server) -> str:
    import sqlalchemy as sa

    name = f"scale_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return server.url(name)


def _scale_run(
    factor: int, source: bytes, steps: list[str], server, root: Path, models: Path
) -> dict:
    """Every step at `factor` in a fresh database; `models` is the MLflow store the 1x
    run trains into (scoring at every factor uses its model)."""
    from readmission import dataset

    work = root / f"x{factor}"
    (work / "state").mkdir(parents=True)
    csv = work / "diabetic_data.csv"
    csv.write_bytes(replicate(source, factor))
    url = _database(server)
    env = {
        "DIABETES_CSV": str(csv),
        "DIABETES_CSV_SHA256": dataset.sha256_of(csv),
        "DATA_DATABASE_URL": url,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",  # for training here
        "READMISSION_STATE_DIR": str(work / "state"),
        "TRAINING_PROFILE": "quick",
    }
    results = {}
    for name in steps:
        if name == "copy":  # into its own database: the load's tables stay as they are
            results[name] = _run_step(name, {**env, "DATA_DATABASE_URL": _database(server)}, work)
        elif name == "score":  # the 1x model (its artifacts: paths in its store)
            results[name] = _run_step(
                name, {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{models / 'mlflow.db'}"}, models
            )
        else:
            results[name] = _run_step(name, env, work)
        r = results[name]
        print(
            f"  x{factor} {name:<6} {r['seconds']:8.2f} s  peak {r['peak_mb']:7.0f} MB  "
            f"(+{r['peak_mb'] - r['start_mb']:.0f} over {r['start_mb']:.0f})  "
            f"{json.dumps(r['detail'])}",
            flush=True,
        )
    csv.unlink()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default="1,2,4,8")
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--train-factors", default="1,2")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--step", help=argparse.SUPPRESS)  # a child's one step
    args = parser.parse_args()
    if args.step:
        print(json.dumps(_step(args.step), default=str))
        return 0

    from tests.support.pgserver import running_server
    from tests.support.tools import real_csv

    path = args.csv or real_csv()
    if path is None:
        print("the real UCI file is needed: set DIABETES_CSV or pass --csv", file=sys.stderr)
        return 2
    factors = [int(f) for f in args.factors.split(",")]
    train_factors = {int(f) for f in args.train_factors.split(",")}
    steps = [s for s in args.steps.split(",") if s]
    if unknown := sorted(set(steps) - set(STEPS)):
        parser.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    if "score" in steps and (1 not in factors or 1 not in train_factors or "train" not in steps):
        parser.error("scoring uses the model trained at 1x: keep 1 in --factors and training")
    source = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    results: dict[int, dict] = {}
    with (
        tempfile.TemporaryDirectory(prefix="readmission-scale-") as root,
        running_server(durable=True) as server,
    ):
        print(f"scale runs in {root}; PostgreSQL {server.bin_dir.parent.name} (fsync on)")
        models = Path(root) / "x1"
        for factor in sorted(factors):
            here = [s for s in steps if s != "train" or factor in train_factors]
            results[factor] = _scale_run(factor, source, here, server, Path(root), models)
    rows = source.count(b"\n") - 1
    print(f"\n{'step':<7}" + "".join(f"{f'x{f} s':>10}{f'x{f} MB':>9}" for f in factors), end="")
    print(f"{'b time':>8}{'b mem':>7}")
    for name in steps:
        ran = [f for f in factors if name in results[f]]
        seconds = [results[f][name]["seconds"] for f in ran]
        growth = [results[f][name]["peak_mb"] - results[f][name]["start_mb"] for f in ran]
        cells = "".join(
            f"{results[f][name]['seconds']:>10.2f}{results[f][name]['peak_mb']:>9.0f}"
            if f in ran
            else f"{'-':>10}{'-':>9}"
            for f in factors
        )
        b_time = _exponent(ran, seconds) if len(ran) > 1 else float("nan")
        b_mem = _exponent(ran, growth) if len(ran) > 1 else float("nan")
        flag = "  faster than linear" if b_time > 1.15 else ""
        print(f"{name:<7}{cells}{b_time:>8.2f}{b_mem:>7.2f}{flag}")
    print(f"\n(x1 = {rows:,} encounters; MB = peak resident memory of the step's process)")
    if "load" in steps and "copy" in steps:
        print("\nraw load vs a raw-bytes COPY of the same file (target >= 0.7x its speed)")
        for f in factors:
            ratio = results[f]["copy"]["seconds"] / results[f]["load"]["seconds"]
            print(f"  x{f}: {ratio:.2f}x  {'met' if ratio >= 0.7 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
