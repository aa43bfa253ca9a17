"""TreeSHAP speed: `readmission/treeshap.py` (linear in the depth, without the GIL) against
shap's TreeExplainer (its C extension, path-dependent), same trees, same rows, same run.

For each forest: the values must agree to 1e-9; then the time a row takes, one thread
each (ours on one thread: `Forest._rows`; shap's is single-threaded), as milliseconds and
as a ratio to shap's. The forests stand for what the API explains: many shallow boosted
trees over many features (as LightGBM's `<30` trees), unbounded random-forest trees, and
deep trees over three features (paths that split on a feature again and again, where the
classic algorithm's cost stays small and this one's follows the depth).

    python bench/treeshap.py [--rows 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _best(run, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300, help="rows explained per timing")
    args = parser.parse_args()

    import shap
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    from readmission.treeshap import Forest
    from tests.support.trees import shap_trees

    rng = np.random.default_rng(1)
    x = rng.normal(size=(5_000, 40))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (
        2 * np.nan_to_num(x[:, 0])
        + np.nan_to_num(x[:, 1] * x[:, 2])
        + np.sin(3 * np.nan_to_num(x[:, 3]))
        + rng.normal(size=len(x))
    )
    cases = [
        (
            "boosting: 300 trees of 31 leaves, 40 features",
            HistGradientBoostingRegressor(
                max_iter=300, max_leaf_nodes=31, early_stopping=False, random_state=0
            ),
            x,
        ),
        (
            "random forest: 20 unbounded trees, 40 features",
            RandomForestRegressor(n_estimators=20, min_samples_leaf=3, random_state=0),
            np.nan_to_num(x),
        ),
        (
            "boosting: 100 trees of 63 leaves, 3 features",
            HistGradientBoostingRegressor(
                max_iter=100, max_leaf_nodes=63, early_stopping=False, random_state=0
            ),
            x[:, :3],
        ),
    ]
    print(f"{args.rows} rows, one thread each; ms a row\n")
    print(f"{'forest':<48} {'nodes':>7} {'depth':>5} {'ours':>7} {'shap':>7} {'ratio':>7}")
    for name, model, data in cases:
        model.fit(data, y)
        explainer = shap.TreeExplainer(model)
        forest = Forest.of(shap_trees(explainer))
        rows = np.ascontiguousarray(data[: args.rows], dtype=np.float64)
        ours = np.zeros(rows.shape)
        forest._rows(rows[:1], ours[:1])  # compiled before the timing
        reference = explainer.shap_values(rows, check_additivity=False)

        def run_ours(rows=rows, out=ours, forest=forest) -> None:
            out[:] = 0.0
            forest._rows(rows, out)

        mine = _best(run_ours) * 1000 / len(rows)

        def run_shap(rows=rows, explainer=explainer) -> None:
            explainer.shap_values(rows, check_additivity=False)

        theirs = _best(run_shap) * 1000 / len(rows)
        gap = float(np.abs(ours - reference).max())
        if gap > 1e-9:
            print(f"{name}: values differ from shap's by {gap:.2e}", file=sys.stderr)
            return 1
        print(
            f"{name:<48} {len(forest.left):>7,} {forest.max_depth:>5} {mine:>7.3f} "
            f"{theirs:>7.3f} {theirs / mine:>6.2f}x"
        )
    print("\nratio: shap's time over ours (above 1: ours is faster); values equal to 1e-9")
    return 0


if __name__ == "__main__":
    sys.exit(main())
