"""Explanations over HTTP: POST /predict?explain=true (and the batch) answers why, exactly
as the served model's explainer computes it; plain answers are unchanged; a model without
an explainer still predicts and refuses explain=true with a 409 naming the reason; the
predictor's shared call gives each request what it asked for; GET /model/importance."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from readmission.api.metrics import ApiMetrics
from readmission.api.model_store import LoadedModel
from readmission.api.predictor import ExplanationUnavailableError, Predictor
from readmission.api.schemas import EXAMPLE
from readmission.cleaning import clean
from readmission.explain import Explanation, Factor
from readmission.features import HISTORY
from tests.api.test_predictor import GatedModel, _records

PLAIN_KEYS = {
    "risk_tier",
    "risk_tier_starts",
    "prediction",
    "probabilities",
    "readmission_30d_risk",
    "history",
    "model",
}
ANONYMOUS = {**EXAMPLE, "patient_nbr": None}  # no history look-up: the record is all there is


def _store(world):
    return world.server.app.state.services.store


def test_explain_true_answers_the_served_models_exact_explanation(world):
    answer = world.client.post("/predict", params={"explain": "true"}, json=ANONYMOUS)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    explanation = body["explanation"]
    assert set(body) == {*PLAIN_KEYS, "explanation"}
    assert (explanation["target_class"], explanation["unit"]) == ("<30", "log-odds")
    assert len(explanation["raising"]) + len(explanation["lowering"]) >= 1
    assert len(explanation["raising"]) <= 5
    assert len(explanation["lowering"]) <= 5
    raising = [f["contribution"] for f in explanation["raising"]]
    lowering = [f["contribution"] for f in explanation["lowering"]]
    assert raising == sorted(raising, reverse=True)
    assert all(c > 0 for c in raising)
    assert lowering == sorted(lowering)
    assert all(c < 0 for c in lowering)

    explainer = _store(world).current.explainer
    frame = clean(pd.DataFrame([{**ANONYMOUS}])).assign(**dict.fromkeys(HISTORY, 0.0))
    frame = frame.rename(columns={"A1Cresult": "a1cresult"})
    values, baseline, score = explainer.contributions(frame)
    assert explanation["baseline"] == pytest.approx(baseline[0], abs=1e-9)
    assert explanation["score"] == pytest.approx(score[0], abs=1e-9)
    assert explanation["score"] == pytest.approx(baseline[0] + values[0].sum(), abs=1e-6)
    expected = explainer.explain(frame)[0].to_dict()
    assert explanation["raising"] == expected["raising"]
    assert explanation["lowering"] == expected["lowering"]


def test_the_values_are_what_the_patient_has_in_words(world):
    """Every factor's value as the request said it: codes by their label, not a number."""
    explainer = _store(world).current.explainer
    answer = world.client.post("/predict?explain=true", json=ANONYMOUS).json()["explanation"]
    for factor in (*answer["raising"], *answer["lowering"]):
        assert factor["feature"] in explainer.features
        assert factor["value"] is None or isinstance(factor["value"], str | int | float)
    # admission_type_id 1 is Emergency: shown so wherever the feature is listed
    frame = clean(pd.DataFrame([ANONYMOUS])).assign(**dict.fromkeys(HISTORY, 0.0))
    (found,) = explainer.explain(frame, top=len(explainer.features))
    shown = {f.feature: f.value for f in (*found.raising, *found.lowering)}
    if "admission_type_id_code" in shown:
        assert shown["admission_type_id_code"] == "Emergency"


def test_whole_numbers_are_shown_as_integers(world):
    """A count the patient has (4 inpatient visits) reads 4 in the answer, not 4.0."""
    records = [
        {**ANONYMOUS, "number_inpatient": n, "time_in_hospital": t, "num_medications": m}
        for n, t, m in ((4, 9, 30), (0, 1, 5), (2, 12, 45))
    ]
    answer = world.client.post("/predict/batch?explain=true", json={"encounters": records})
    assert answer.status_code == 200, answer.text
    numbers = [
        factor["value"]
        for prediction in answer.json()["predictions"]
        for way in ("raising", "lowering")
        for factor in prediction["explanation"][way]
        if isinstance(factor["value"], int | float)
    ]
    assert numbers, "no numeric factor among the top ones: the test shows nothing"
    for value in numbers:
        assert isinstance(value, int) or not float(value).is_integer(), numbers


def test_without_explain_the_answer_is_unchanged(world):
    for params in ({}, {"explain": "false"}):
        body = world.client.post("/predict", params=params, json=ANONYMOUS).json()
        assert set(body) == PLAIN_KEYS
    batch = world.client.post("/predict/batch", json={"encounters": [ANONYMOUS] * 2}).json()
    assert all("explanation" not in p for p in batch["predictions"])


def test_the_batch_explains_every_encounter(world):
    other = {**ANONYMOUS, "number_inpatient": 4, "time_in_hospital": 9}
    answer = world.client.post(
        "/predict/batch?explain=true", json={"encounters": [ANONYMOUS, other]}
    )
    assert answer.status_code == 200, answer.text
    first, second = (p["explanation"] for p in answer.json()["predictions"])
    assert first["baseline"] == second["baseline"]
    assert first["score"] != second["score"]


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_an_invalid_explain_value_is_a_422_naming_the_query_parameter(world, value):
    answer = world.client.post("/predict", params={"explain": value}, json=ANONYMOUS)
    assert answer.status_code == 422
    (problem,) = answer.json()["detail"]
    assert problem["field"] == "query.explain"
    assert "boolean" in problem["reason"]


def test_a_model_without_explainer_predicts_and_refuses_explanations_with_409(world):
    store = _store(world)
    serving = store.current
    reason = f"model v{serving.version} cannot be explained: no explanation method for X"
    store.current = dataclasses.replace(serving, explainer=None, explainer_problem=reason)
    try:
        refused = world.client.post("/predict?explain=true", json=ANONYMOUS)
        batch = world.client.post("/predict/batch?explain=1", json={"encounters": [ANONYMOUS]})
        plain = world.client.post("/predict", json=ANONYMOUS)
    finally:
        store.current = serving
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith(reason)
    assert "without explain=true" in refused.json()["detail"]
    assert batch.status_code == 409
    assert plain.status_code == 200
    assert set(plain.json()) == PLAIN_KEYS


def test_the_served_models_global_importance(world):
    answer = world.client.get("/model/importance")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"]["version"] == _store(world).current.version
    assert (body["target_class"], body["unit"]) == ("<30", "log-odds")
    assert 0 < body["rows"] <= 2_000
    values = [f["mean_abs_contribution"] for f in body["features"]]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0
    assert {f["feature"] for f in body["features"]} == set(_store(world).current.explainer.features)


def test_a_model_without_global_importance_is_a_409(world):
    store = _store(world)
    serving = store.current
    bare = SimpleNamespace(classes_=serving.model.classes_)  # no importance_
    store.current = dataclasses.replace(serving, model=bare)
    try:
        answer = world.client.get("/model/importance")
    finally:
        store.current = serving
    assert answer.status_code == 409
    assert "no global importance" in answer.json()["detail"]


class RecordingExplainer:
    """Explains each row by its number of lab procedures; records the rows it was given."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def explain(self, frame):
        labs = [int(v) for v in frame["num_lab_procedures"]]
        self.calls.append(labs)
        return [
            Explanation("log-odds", 0.0, float(v), [Factor("num_lab_procedures", v, float(v))])
            for v in labs
        ]


def test_requests_with_and_without_explain_share_a_call_and_get_what_they_asked():
    model, explainer = GatedModel(), RecordingExplainer()
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer=explainer)
    predictor = Predictor(SimpleNamespace(current=loaded), ApiMetrics())

    async def scenario():
        first = asyncio.ensure_future(predictor.score(_records(1, labs=10)))
        await asyncio.to_thread(model.entered.wait, 30)  # the worker holds the first call
        queued = [
            asyncio.ensure_future(predictor.score(_records(2, labs=20), explain=True)),
            asyncio.ensure_future(predictor.score(_records(1, labs=30))),
            asyncio.ensure_future(predictor.score(_records(1, labs=40), explain=True)),
        ]
        await asyncio.sleep(0.2)
        model.gate.set()
        return await asyncio.gather(first, *queued)

    try:
        first, explained, plain, explained_too = asyncio.run(scenario())
    finally:
        predictor.close()
    assert model.calls[:2] == [1, 4]  # the three queued requests were scored in one call
    assert explainer.calls == [[20, 20, 40]]  # only the rows that asked, in one call
    assert [a.explanation for a in first[0] + plain[0]] == [None, None]
    assert [a.explanation.score for a in explained[0]] == [20.0, 20.0]
    assert explained_too[0][0].explanation.score == 40.0


def test_explain_against_a_model_without_explainer_fails_only_that_request():
    model = GatedModel()
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer_problem="no reason")
    predictor = Predictor(SimpleNamespace(current=loaded), ApiMetrics())

    async def scenario():
        plain = await predictor.score(_records(1))
        with pytest.raises(ExplanationUnavailableError, match="no reason"):
            await predictor.score(_records(1), explain=True)
        return plain

    model.gate.set()
    try:
        plain = asyncio.run(scenario())
    finally:
        predictor.close()
    assert plain[0][0].explanation is None
    assert np.isclose(plain[0][0].risk_30d, 0.2)


class GatedExplainer(RecordingExplainer):
    """A `RecordingExplainer` whose calls wait for `gate` (an explanation that takes long,
    as a deep forest's ~1 s a row does)."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.gate = threading.Event()
        self.entered = threading.Event()

    def explain(self, frame):
        self.entered.set()
        assert self.gate.wait(30)
        return super().explain(frame)


def test_a_slow_explanation_holds_up_no_request_that_did_not_ask_for_one():
    model, explainer = GatedModel(), GatedExplainer()
    model.gate.set()
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer=explainer)
    predictor = Predictor(SimpleNamespace(current=loaded), ApiMetrics())

    async def scenario():
        explained = asyncio.ensure_future(predictor.score(_records(1, labs=20), explain=True))
        await asyncio.to_thread(explainer.entered.wait, 30)  # its explanation is under way
        plain = await asyncio.wait_for(predictor.score(_records(2, labs=30)), 10)
        assert not explained.done()
        explainer.gate.set()
        return plain, await explained

    try:
        plain, explained = asyncio.run(scenario())
    finally:
        predictor.close()
    assert [a.explanation for a in plain[0]] == [None, None]
    assert explained[0][0].explanation.score == 20.0
    assert np.isclose(explained[0][0].risk_30d, 0.2)


def test_a_failing_explanation_fails_only_the_requests_that_asked_for_one():
    model, explainer = GatedModel(), RecordingExplainer()
    model.gate.set()

    def broken(frame):
        raise ValueError("the explainer broke")

    explainer.explain = broken
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer=explainer)
    predictor = Predictor(SimpleNamespace(current=loaded), ApiMetrics())

    async def scenario():
        with pytest.raises(ValueError, match="the explainer broke"):
            await predictor.score(_records(1), explain=True)
        return await predictor.score(_records(1))

    try:
        plain = asyncio.run(scenario())
    finally:
        predictor.close()
    assert plain[0][0].explanation is None


def test_explanations_waiting_beyond_the_queue_bound_refuse_more_but_not_plain_requests():
    from readmission.api.predictor import QueueFullError

    model, explainer = GatedModel(), GatedExplainer()
    model.gate.set()
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer=explainer)
    predictor = Predictor(SimpleNamespace(current=loaded), ApiMetrics(), max_queued_rows=2)

    async def scenario():
        explained = asyncio.ensure_future(predictor.score(_records(2), explain=True))
        await asyncio.to_thread(explainer.entered.wait, 30)  # 2 rows wait for explanations
        with pytest.raises(QueueFullError):
            await predictor.score(_records(1), explain=True)
        plain = await asyncio.wait_for(predictor.score(_records(2)), 10)
        explainer.gate.set()
        await explained
        again = await predictor.score(_records(1), explain=True)  # room again
        return plain, again

    try:
        plain, again = asyncio.run(scenario())
    finally:
        predictor.close()
    assert len(plain[0]) == 2
    assert again[0][0].explanation is not None


def test_a_failure_after_the_answers_does_not_fail_a_request_waiting_for_its_explanation():
    """Something failing after a call is answered (the shadow step, say) is the worker's
    own problem: a request whose explanation is still being computed gets it."""
    model, explainer = GatedModel(), GatedExplainer()
    model.gate.set()
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer=explainer)

    class BrokenShadow(SimpleNamespace):
        @property
        def shadow(self):
            raise RuntimeError("a bug after the answers were sent")

    predictor = Predictor(BrokenShadow(current=loaded), ApiMetrics())

    async def scenario():
        explained = asyncio.ensure_future(predictor.score(_records(1, labs=20), explain=True))
        await asyncio.to_thread(explainer.entered.wait, 30)
        await asyncio.sleep(0.2)  # the worker has met the failure by now
        explainer.gate.set()
        return await asyncio.wait_for(explained, 10)

    try:
        explained = asyncio.run(scenario())
    finally:
        predictor.close()
    assert explained[0][0].explanation.score == 20.0


def test_a_failing_explanation_shared_by_requests_fails_only_the_one_that_broke_it():
    model, explainer = GatedModel(), RecordingExplainer()
    real = explainer.explain

    def breaks_on_99(frame):
        if (frame["num_lab_procedures"] == 99).any():
            raise ValueError("this row cannot be explained")
        return real(frame)

    explainer.explain = breaks_on_99
    loaded = LoadedModel(model, "m", "1", "production", {}, explainer=explainer)
    predictor = Predictor(SimpleNamespace(current=loaded), ApiMetrics())

    async def scenario():
        first = asyncio.ensure_future(predictor.score(_records(1, labs=10)))
        await asyncio.to_thread(model.entered.wait, 30)  # the worker holds the first call
        queued = [
            asyncio.ensure_future(predictor.score(_records(1, labs=labs), explain=True))
            for labs in (20, 99, 40)
        ]
        await asyncio.sleep(0.2)
        model.gate.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    try:
        _, good, bad, other = asyncio.run(scenario())
    finally:
        predictor.close()
    assert isinstance(bad, ValueError)
    assert good[0][0].explanation.score == 20.0
    assert other[0][0].explanation.score == 40.0
    assert explainer.calls[-2:] == [[20], [40]]  # tried alone after the shared call failed
