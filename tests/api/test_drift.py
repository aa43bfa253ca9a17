"""Drift over HTTP: a shifted population raises the PSI of the shifted features past the
threshold on /metrics, while the others stay low."""

from __future__ import annotations

import numpy as np
import pytest

from readmission import schema, synthetic
from readmission.api.schemas import EXAMPLE

pytestmark = pytest.mark.slow


def _encounters(n: int, seed: int, **overrides) -> list[dict]:
    frame = synthetic.encounters(n, seed=seed).drop(columns=["readmitted"])
    for name, values in overrides.items():
        frame[name] = values
    records = frame.to_dict("records")
    for record in records:
        for column in schema.COLUMNS:
            value = record.get(column.name)
            if column.is_integer and value not in (None, "?"):
                record[column.name] = int(value)
    return records


def _psi(world) -> dict[str, float]:
    scores = {}
    for line in world.client.get("/metrics").text.splitlines():
        if line.startswith("api_feature_drift_psi{"):
            feature = line.split('feature="')[1].split('"')[0]
            scores[feature] = float(line.split()[-1])
    return scores


def _send(world, records: list[dict]) -> None:
    for start in range(0, len(records), 500):
        answer = world.client.post(
            "/predict/batch", json={"encounters": records[start : start + 500]}
        )
        assert answer.status_code == 200, answer.text[:300]


def test_the_reference_population_stays_below_the_threshold_a_shifted_one_does_not(world):
    lines = world.client.get("/metrics").text.splitlines()
    threshold = float(
        next(x.split()[-1] for x in lines if x.startswith("api_drift_psi_threshold "))
    )
    assert threshold == world.settings.api.drift_psi_threshold

    _send(world, _encounters(1_000, seed=21))
    world.wait_for(lambda: len(_psi(world)) > 40)  # scores are published at most once a second
    world.client.post("/predict", json=EXAMPLE)
    calm = _psi(world)
    assert max(calm.values()) < threshold, sorted(calm.items(), key=lambda kv: -kv[1])[:3]

    rng = np.random.default_rng(0)
    old_and_often_admitted = _encounters(
        1_000,
        seed=22,
        age=rng.choice(["[80-90)", "[90-100)"], 1_000),
        number_inpatient=rng.integers(6, 13, 1_000),
    )
    _send(world, old_and_often_admitted)

    def shifted() -> bool:
        world.client.post("/predict", json=EXAMPLE)  # triggers a fresh score
        scores = _psi(world)
        return scores.get("age", 0) > threshold and scores.get("number_inpatient", 0) > threshold

    world.wait_for(shifted, timeout=10)
    scores = _psi(world)
    others = {k: v for k, v in scores.items() if k not in ("age", "number_inpatient")}
    assert max(others.values()) < threshold, sorted(others.items(), key=lambda kv: -kv[1])[:3]
    rows = next(
        line
        for line in world.client.get("/metrics").text.splitlines()
        if line.startswith("api_drift_window_rows ")
    )
    assert float(rows.split()[-1]) == world.settings.api.drift_window
