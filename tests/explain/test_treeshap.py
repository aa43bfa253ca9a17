"""readmission/treeshap.py: path-dependent TreeSHAP compiled without the GIL gives shap's
values (also in `test_explain.py`, for the served families) on shallow and deep trees,
trees that split on a feature again and again, forests of trees of many depths; whatever
the rows are split into; and lets other Python threads run while it computes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import shap
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

from readmission.treeshap import Forest
from tests.support.trees import shap_trees


def _shap_trees(model) -> list[dict]:
    """shap's own dict form of a fitted forest's trees (what explain.py gives Forest)."""
    return shap_trees(shap.TreeExplainer(model))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 8))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take the default child
    y = np.nan_to_num(x[:, 0]) * 2 + np.nan_to_num(x[:, 1] * x[:, 2]) + rng.normal(size=2_000)
    return x, y


@pytest.mark.parametrize(
    ("model", "features"),
    [
        (HistGradientBoostingRegressor(max_iter=40, max_leaf_nodes=31, random_state=0), 8),
        (RandomForestRegressor(n_estimators=15, max_depth=9, random_state=0), 8),
        # unbounded depth (paths of 20 edges and more), of many depths in one forest
        (RandomForestRegressor(n_estimators=8, min_samples_leaf=2, random_state=0), 8),
        # three features for 63 leaves: paths split on the same feature many times
        (HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=63, random_state=0), 3),
    ],
    ids=["gradient_boosting", "random_forest", "deep_forest", "repeated_features"],
)
def test_values_and_expected_value_equal_shaps(model, features, data):
    x, y = data
    x = x[:, :features]
    if isinstance(model, RandomForestRegressor):
        x = np.nan_to_num(x)
    model.fit(x, y)
    reference = shap.TreeExplainer(model)
    forest = Forest.of(_shap_trees(model))
    rows = x[:200]
    expected = reference.shap_values(rows, check_additivity=False)
    np.testing.assert_allclose(forest.contributions(rows), expected, rtol=0, atol=1e-9)
    base = np.ravel(reference.expected_value)[0] - np.ravel(reference.model.base_offset)[0]
    assert forest.expected_value() == pytest.approx(base, abs=1e-9)


def test_an_edge_no_training_row_took_keeps_the_values_additive():
    """shap refuses a leaf of zero cover (path-dependent); here its rows still get values
    that add up, with the expected value, to the tree's output."""
    tree = {
        "children_left": np.array([1, 3, -1, -1, -1]),
        "children_right": np.array([2, 4, -1, -1, -1]),
        "children_default": np.array([1, 3, -1, -1, -1]),
        "features": np.array([0, 1, -2, -2, -2]),
        "thresholds": np.array([0.0, -1.0, 0.0, 0.0, 0.0]),
        "values": np.array([[0.0], [0.0], [5.0], [1.0], [3.0]]),
        "node_sample_weight": np.array([10.0, 10.0, 0.0, 4.0, 6.0]),  # node 2: no rows
    }
    forest = Forest.of([tree])
    x = np.array([[0.5, 0.0], [-2.0, 1.0], [-0.5, -3.0]])  # leaves 2, 4, 3
    values = forest.contributions(x)
    assert np.isfinite(values).all()
    assert forest.expected_value() == pytest.approx(0.4 * 1.0 + 0.6 * 3.0)
    np.testing.assert_allclose(values.sum(axis=1) + forest.expected_value(), [5.0, 3.0, 1.0])


def test_a_batch_split_between_threads_equals_its_rows_one_by_one(data):
    x, y = data
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, y)
    forest = Forest.of(_shap_trees(model))
    for rows in (2, 7, 32):
        batch = forest.contributions(x[:rows])
        alone = np.vstack([forest.contributions(x[i : i + 1]) for i in range(rows)])
        np.testing.assert_array_equal(batch, alone)


def test_other_threads_run_while_it_computes(data):
    """With the GIL held (as shap's C extension holds it) a Python thread could not count
    while the contributions are computed; here it counts all along."""
    x, y = data
    model = HistGradientBoostingRegressor(max_iter=200, max_leaf_nodes=63, random_state=0)
    forest = Forest.of(_shap_trees(model.fit(x, y)))
    forest.contributions(x[:1])  # compiled before the measure
    rows = np.repeat(x[:1], 400, axis=0)
    started = time.perf_counter()
    forest._rows(rows, np.zeros(rows.shape))  # one thread: no helper involved
    alone = time.perf_counter() - started
    assert alone > 0.05, "too quick to show anything"

    done = threading.Event()
    ticks = 0

    def compute():
        forest._rows(rows, np.zeros(rows.shape))
        done.set()

    worker = threading.Thread(target=compute)
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)  # a Python thread's turn: it needs the GIL
    worker.join()
    assert ticks > 100, ticks
