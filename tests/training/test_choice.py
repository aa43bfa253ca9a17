"""Which configuration a family's search keeps: the cheapest to serve among those its
holdout cannot tell from the best."""

from __future__ import annotations

import numpy as np
import pandas as pd

from readmission import synthetic
from readmission.cleaning import clean
from readmission.estimator import ReadmissionModel
from readmission.features import HISTORY, build_pipeline
from readmission.training import cheapest_within_one_se, model_size


def test_a_smaller_model_within_one_standard_error_of_the_best_is_kept():
    rng = np.random.default_rng(0)
    base = rng.exponential(0.85, 10_000)
    best = base
    close = base + rng.normal(0.0001, 0.05, base.size)  # +0.0001, SE of the difference 0.0005
    assert cheapest_within_one_se([best, close], [500_000, 100_000]) == 1
    assert cheapest_within_one_se([best, close], [100_000, 500_000]) == 0


def test_a_smaller_model_measurably_worse_is_not_kept():
    rng = np.random.default_rng(1)
    base = rng.exponential(0.85, 10_000)
    worse = base + rng.normal(0.003, 0.05, base.size)  # +0.003, six standard errors
    assert cheapest_within_one_se([base, worse], [500_000, 100_000]) == 0


def test_without_sizes_the_lowest_loss_is_kept():
    rng = np.random.default_rng(2)
    base = rng.exponential(0.85, 10_000)
    close = base + rng.normal(0.0001, 0.05, base.size)
    assert cheapest_within_one_se([close, base], [None, None]) == int(close.mean() > base.mean())


def test_model_size_counts_the_tree_nodes_of_each_family():
    frame = clean(synthetic.encounters(1_500, seed=3))
    for name in HISTORY:
        frame[name] = 0.0
    sizes = {}
    params = {
        "hist_gradient_boosting": {"max_iter": 20, "max_leaf_nodes": 7},
        "lightgbm": {"num_leaves": 7, "learning_rate": 0.3},
        "random_forest": {"n_estimators": 5, "min_samples_leaf": 20},
        "logistic_regression": {"max_iter": 200},
    }
    for family, chosen in params.items():
        model = ReadmissionModel(build_pipeline(family, chosen)).fit(frame, frame["readmitted"])
        sizes[family] = model_size(model)
    assert sizes["logistic_regression"] is None
    for family in ("hist_gradient_boosting", "lightgbm", "random_forest"):
        assert sizes[family] > 0
    forest = ReadmissionModel(build_pipeline("random_forest", params["random_forest"]))
    forest.fit(frame, pd.Series(frame["readmitted"]))
    trees = forest.pipeline_.steps[-1][1].estimators_
    assert model_size(forest) == sum(t.tree_.node_count for t in trees)


def test_the_standard_error_is_clustered_by_patient():
    """Rows of one patient move together: the same differences read as many independent
    rows would make a larger model look measurably better than it is."""
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(500), 20)  # 20 rows a patient
    shared = np.repeat(rng.normal(0, 0.05, 500), 20)  # a patient's rows differ alike
    shared -= shared.mean()  # the other model is 0.002 worse on average: 4 row-wise SEs,
    # under one SE of 0.0022 once a patient counts once
    best = rng.exponential(0.85, patients.size)
    other = best + 0.002 + shared
    assert cheapest_within_one_se([best, other], [500_000, 100_000]) == 0  # rows: "worse"
    assert cheapest_within_one_se([best, other], [500_000, 100_000], patients) == 1


def test_identical_losses_keep_the_smaller_and_one_configuration_is_itself():
    loss = np.random.default_rng(4).exponential(0.85, 1_000)
    assert cheapest_within_one_se([loss, loss.copy()], [200, 100]) == 1
    assert cheapest_within_one_se([loss], [100], np.arange(1_000)) == 0


def test_the_cli_trains_any_family_by_name():
    from readmission.__main__ import build_parser
    from readmission.names import FAMILIES

    for family in FAMILIES:
        args = build_parser().parse_args(["train", "--family", family])
        assert args.family == [family]
