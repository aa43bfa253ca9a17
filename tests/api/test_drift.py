"""Drift over HTTP: a shifted population raises the PSI of the shifted features past the
threshold on /metrics, while the others stay low; the retraining trigger, reading the
prediction log, finds the same figures."""

from __future__ import annotations

import time

import numpy as np
import pytest

from readmission import pipeline, retraining, schema, synthetic
from readmission.api.schemas import EXAMPLE

pytestmark = pytest.mark.slow


def _encounters(n: int, seed: int, **overrides) -> list[dict]:
    frame = synthetic.encounters(n, seed=seed)
    for name, values in overrides.items():
        frame[name] = values
    return schema.request_records(frame.to_dict("records"))


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

    # The retraining trigger reads the same window from the prediction log: the last
    # API_DRIFT_WINDOW encounters served, cleaned and binned as the API does.
    time.sleep(1.1)  # the next scoring publishes the figures again
    last = {**EXAMPLE, "encounter_id": 987_654_321}
    assert world.client.post("/predict", json=last).status_code == 200
    published = _psi(world)
    served = world.server.app.state.services.store.current
    window = world.settings.api.drift_window

    def logged() -> list[dict]:
        with pipeline.engine(world.settings).connect() as conn:
            found = retraining.served_inputs(conn, served.version, window)
        return found if found and found[-1]["encounter_id"] == last["encounter_id"] else []

    records = world.wait_for(logged, timeout=10)
    from_log = retraining.drift_scores(served.model.reference_profile_, records)
    assert from_log == pytest.approx(published, abs=1e-9)
